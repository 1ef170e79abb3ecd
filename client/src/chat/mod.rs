//! `chatd chat`: create or continue a chat and print the answer as it streams; without a
//! message, an interactive session (`interactive.rs`).

mod interactive;

use std::io::Write;

use futures::StreamExt;
use serde_json::json;

use super::{content_text, error_message, ApiClient};

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The message to send; without it, an interactive session (like `ollama run`).
    pub message: Option<String>,
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
    let Some(message) = args.message.clone() else {
        return interactive::run(client, args.chat_id).await;
    };
    let (chat_id, cursor) = post_message(&client, args.chat_id.as_deref(), &message, None).await?;
    follow(&client, &chat_id, cursor.as_deref(), None)
        .await
        .map(|_| ())
}

/// Sends `text` to the chat (or creates one with it, announcing its id on stderr, so stdout
/// holds only the answer) on `model` (a model
/// config id; `None`: the chat's); returns the chat and the stream cursor after the message
/// (`None` when the chat was busy and queued it).
pub(crate) async fn post_message(
    client: &ApiClient,
    chat_id: Option<&str>,
    text: &str,
    model: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    let (path, mut body) = match chat_id {
        None => ("/chats".to_string(), json!({"message": text})),
        Some(chat_id) => (
            format!("/chats/{chat_id}/messages"),
            json!({"content": text}),
        ),
    };
    if let Some(model) = model {
        body["model_config_id"] = json!(model);
    }
    let (status, body) = client.post(&path, &body).await?;
    let cursor =
        |body: &serde_json::Value| body["message"]["id"].as_i64().map(|id| format!("{id}-0-0"));
    match (chat_id, status) {
        (None, 201) => {
            let chat_id = body["chat"]["id"].as_str().unwrap_or_default().to_string();
            eprintln!("[chat {chat_id}]");
            Ok((chat_id, cursor(&body)))
        }
        (Some(chat_id), 201) => Ok((chat_id.to_string(), cursor(&body))),
        (Some(chat_id), 202) => {
            eprintln!(
                "[the chat is busy: message queued (#{}); waiting for it to run]",
                body["queued_message"]["id"]
            );
            Ok((chat_id.to_string(), None))
        }
        _ => anyhow::bail!(error_message(status, &body)),
    }
}

/// How a followed turn ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Followed {
    Answered,
    Interrupted,
    /// A second Ctrl-C: the user wants out.
    Exit,
}

/// Prints streamed text until the turn after our message ends. With `interrupts` (Ctrl-C
/// presses), the first interrupts the turn (what was said so far is kept) and the second
/// gives up on it.
pub(crate) async fn follow(
    client: &ApiClient,
    chat_id: &str,
    cursor: Option<&str>,
    mut interrupts: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>,
) -> anyhow::Result<Followed> {
    let mut events = client.stream(chat_id, cursor).await?;
    let mut stdout = std::io::stdout();
    let mut streamed_since_message = false;
    let mut answered = false;
    let mut interrupted = false;
    loop {
        let interrupt = async {
            match interrupts.as_mut() {
                Some(presses) => presses.recv().await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            event = events.next() => event,
            Some(()) = interrupt => {
                if interrupted {
                    println!();
                    return Ok(Followed::Exit);
                }
                interrupted = true;
                eprintln!("\n[interrupting — Ctrl-C again to leave]");
                let (status, body) = client.post(&format!("/chats/{chat_id}/interrupt"), &json!({})).await?;
                if status != 200 {
                    anyhow::bail!(error_message(status, &body));
                }
                continue;
            }
        };
        let Some(event) = event else { break };
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
                Some("waiting") if interrupted => {
                    println!();
                    return Ok(Followed::Interrupted);
                }
                Some("waiting") | Some("requires_action") if answered => {
                    println!();
                    return Ok(Followed::Answered);
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
