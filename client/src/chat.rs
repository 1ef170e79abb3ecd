//! `chatd chat`: create or continue a chat and print the answer as it streams.

use std::io::Write;

use futures::StreamExt;
use serde_json::json;

use super::{content_text, error_message, ApiClient};

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The message to send.
    pub message: String,
    /// Continue this chat instead of creating one.
    #[arg(long = "chat")]
    pub chat_id: Option<String>,
    /// API base URL.
    #[arg(long, env = "CHATD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token (printed by `chatd dev` or `chatd admin create-token`).
    #[arg(long, env = "CHATD_TOKEN", hide_env_values = true)]
    pub token: String,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url, &args.token, reqwest::Client::new());
    let (chat_id, after_message) = match &args.chat_id {
        None => {
            let (status, body) = client
                .post("/chats", &json!({"message": args.message}))
                .await?;
            if status != 201 {
                anyhow::bail!(error_message(status, &body));
            }
            let chat_id = body["chat"]["id"].as_str().unwrap_or_default().to_string();
            eprintln!("chat {chat_id}");
            (chat_id, body["message"]["id"].as_i64())
        }
        Some(chat_id) => {
            let (status, body) = client
                .post(
                    &format!("/chats/{chat_id}/messages"),
                    &json!({"content": args.message}),
                )
                .await?;
            match status {
                201 => (chat_id.clone(), body["message"]["id"].as_i64()),
                202 => {
                    eprintln!(
                        "the chat is busy: message queued (#{}); waiting for it to run",
                        body["queued_message"]["id"]
                    );
                    (chat_id.clone(), None)
                }
                _ => anyhow::bail!(error_message(status, &body)),
            }
        }
    };
    let cursor = after_message.map(|id| format!("{id}-0-0"));
    follow(&client, &chat_id, cursor.as_deref()).await
}

/// Prints streamed text until the turn after our message ends.
async fn follow(client: &ApiClient, chat_id: &str, cursor: Option<&str>) -> anyhow::Result<()> {
    let mut events = client.stream(chat_id, cursor).await?;
    let mut stdout = std::io::stdout();
    let mut streamed_since_message = false;
    let mut answered = false;
    while let Some(event) = events.next().await {
        let event = event?;
        match event.event.as_str() {
            "message_part" if event.data["part"]["type"] == "text" => {
                if let Some(text) = event.data["part"]["text"].as_str() {
                    print!("{text}");
                    let _ = stdout.flush();
                    streamed_since_message = true;
                }
            }
            "attempt_reset" => {
                if streamed_since_message {
                    println!("\n[the answer restarted]");
                }
                streamed_since_message = false;
            }
            "message" => {
                if event.data["role"] == "assistant" {
                    if !streamed_since_message {
                        print!("{}", content_text(&event.data["content"]));
                    }
                    answered = true;
                }
                streamed_since_message = false;
            }
            "retry" => eprintln!(
                "\n[retrying: {}]",
                event.data["message"].as_str().unwrap_or("")
            ),
            "status" => match event.data["status"].as_str() {
                Some("waiting") | Some("requires_action") if answered => {
                    println!();
                    return Ok(());
                }
                Some("error") => {
                    println!();
                    let message = event.data["last_error"]["message"]
                        .as_str()
                        .unwrap_or("unknown error");
                    anyhow::bail!("the turn failed: {message}");
                }
                _ => {}
            },
            _ => {}
        }
    }
    anyhow::bail!("the stream ended before the answer finished")
}
