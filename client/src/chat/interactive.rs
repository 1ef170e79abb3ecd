//! `chatd chat` without a message: an interactive session in the terminal, like `ollama run`.
//! Type a message and the answer streams as it comes; Ctrl-C interrupts the turn (what was
//! said so far is kept) and a second Ctrl-C leaves; at the prompt, Ctrl-C twice or Ctrl-D
//! leaves. Commands: `/new` (the next message starts a new chat), `/model [name]` (list the
//! models, or pick one for the next messages), `/chats [n|id]` (list recent chats, or switch
//! to one and show its latest messages), `/help`, `/bye`.
//!
//! Lines are read with `rustyline` (editing and the session's input history with the arrow
//! keys) on a blocking thread; Ctrl-C during a turn is the process's SIGINT, forwarded to the
//! turn being followed.

use serde_json::Value;
use tokio::sync::mpsc;

use super::{follow, Followed};
use crate::{content_text, error_message, ApiClient};

const HELP: &str = "commands: /new (a new chat), /model [name] (list or pick the model), \
/chats [n|id] (list recent chats, or switch), /help, /bye — Ctrl-C interrupts an answer";

/// What the prompt thread hands over.
enum Input {
    Line(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Ctrl-D, or stdin ended.
    End,
}

struct Session {
    client: ApiClient,
    chat_id: Option<String>,
    model: Option<(String, String)>,
    /// The last `/chats` listing, for `/chats <n>`.
    listed: Vec<String>,
}

pub async fn run(client: ApiClient, chat_id: Option<String>) -> anyhow::Result<()> {
    let mut session = Session {
        client,
        chat_id,
        model: None,
        listed: Vec::new(),
    };
    println!("chatd — {HELP}");
    if let Some(chat_id) = session.chat_id.clone() {
        session.show_history(&chat_id).await?;
    }
    // Ctrl-C presses while a turn streams (the prompt reads its own, as a key, on a terminal).
    let (presses, mut interrupts) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if presses.send(()).is_err() {
                break;
            }
        }
    });
    let (lines, mut inputs) = mpsc::channel::<Input>(1);
    let (ready, prompts) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || read_lines(prompts, lines));
    let mut interrupted_at_prompt = false;
    // The prompt thread reads one line per request; a Ctrl-C delivered as a signal leaves the
    // request standing.
    let mut prompting = false;
    loop {
        while interrupts.try_recv().is_ok() {} // presses from a finished turn
        if !prompting {
            if ready.send(()).is_err() {
                return Ok(());
            }
            prompting = true;
        }
        let input = tokio::select! {
            input = inputs.recv() => {
                prompting = false;
                input.unwrap_or(Input::End)
            }
            Some(()) = interrupts.recv() => Input::Interrupted,
        };
        let line = match input {
            Input::End => return Ok(()),
            Input::Interrupted if interrupted_at_prompt => return Ok(()),
            Input::Interrupted => {
                interrupted_at_prompt = true;
                println!("(Ctrl-C again, Ctrl-D or /bye to leave)");
                continue;
            }
            Input::Line(line) => line,
        };
        interrupted_at_prompt = false;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let outcome = if let Some(command) = line.strip_prefix('/') {
            match session.command(command).await {
                Ok(true) => Ok(Followed::Answered),
                Ok(false) => return Ok(()),
                Err(error) => Err(error),
            }
        } else {
            session.send(line, &mut interrupts).await
        };
        match outcome {
            Ok(Followed::Exit) => return Ok(()),
            Ok(_) => {}
            Err(error) => eprintln!("error: {error:#}"),
        }
    }
}

/// The prompt thread: one line per `()` received on `prompts`.
fn read_lines(prompts: std::sync::mpsc::Receiver<()>, lines: mpsc::Sender<Input>) {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            eprintln!("error: cannot read the terminal: {error}");
            let _ = lines.blocking_send(Input::End);
            return;
        }
    };
    while prompts.recv().is_ok() {
        let input = match editor.readline(">>> ") {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                Input::Line(line)
            }
            Err(rustyline::error::ReadlineError::Interrupted) => Input::Interrupted,
            Err(_) => Input::End,
        };
        let end = matches!(input, Input::End);
        if lines.blocking_send(input).is_err() || end {
            return;
        }
    }
}

impl Session {
    /// Sends `text` (creating the chat first when there is none) and follows the answer.
    async fn send(
        &mut self,
        text: &str,
        interrupts: &mut mpsc::UnboundedReceiver<()>,
    ) -> anyhow::Result<Followed> {
        let model = self.model.as_ref().map(|(id, _)| id.as_str());
        let (chat_id, cursor) =
            super::post_message(&self.client, self.chat_id.as_deref(), text, model).await?;
        self.chat_id = Some(chat_id.clone());
        let followed = follow(&self.client, &chat_id, cursor.as_deref(), Some(interrupts)).await?;
        if followed == Followed::Interrupted {
            println!("[interrupted]");
        }
        Ok(followed)
    }

    /// Runs a `/command`; `false` ends the session.
    async fn command(&mut self, command: &str) -> anyhow::Result<bool> {
        let (name, argument) = match command.split_once(char::is_whitespace) {
            Some((name, argument)) => (name, Some(argument.trim()).filter(|a| !a.is_empty())),
            None => (command, None),
        };
        match name {
            "bye" | "exit" | "quit" => return Ok(false),
            "help" | "?" => println!("{HELP}"),
            "new" => {
                self.chat_id = None;
                println!("[the next message starts a new chat]");
            }
            "model" => self.model_command(argument).await?,
            "chats" => self.chats_command(argument).await?,
            other => println!("unknown command /{other} — {HELP}"),
        }
        Ok(true)
    }

    async fn models(&self) -> anyhow::Result<Vec<Value>> {
        let response = self
            .client
            .http
            .get(format!("{}/v1/models", self.client.base_url))
            .bearer_auth(&self.client.token)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            anyhow::bail!(error_message(status, &body));
        }
        Ok(body["data"].as_array().cloned().unwrap_or_default())
    }

    async fn model_command(&mut self, argument: Option<&str>) -> anyhow::Result<()> {
        let models = self.models().await?;
        let Some(wanted) = argument else {
            for model in &models {
                let current = self
                    .model
                    .as_ref()
                    .is_some_and(|(id, _)| model["chatd"]["model_config_id"] == id.as_str())
                    || (self.model.is_none() && model["chatd"]["is_default"] == true);
                println!(
                    "{} {}  ({})",
                    if current { "*" } else { " " },
                    model["id"].as_str().unwrap_or(""),
                    model["chatd"]["display_name"].as_str().unwrap_or("")
                );
            }
            return Ok(());
        };
        let found = models.iter().find(|model| {
            model["id"] == wanted
                || model["chatd"]["model_config_id"] == wanted
                || model["chatd"]["display_name"] == wanted
        });
        match found {
            Some(model) => {
                let id = model["chatd"]["model_config_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let name = model["id"].as_str().unwrap_or_default().to_string();
                println!("[model: {name}]");
                self.model = Some((id, name));
            }
            None => println!("no model `{wanted}` (/model lists them)"),
        }
        Ok(())
    }

    async fn chats_command(&mut self, argument: Option<&str>) -> anyhow::Result<()> {
        if let Some(wanted) = argument {
            let chat_id = match wanted.parse::<usize>() {
                Ok(n) if (1..=self.listed.len()).contains(&n) => self.listed[n - 1].clone(),
                Ok(_) => {
                    println!("no chat #{wanted} (/chats lists them)");
                    return Ok(());
                }
                Err(_) => wanted.to_string(),
            };
            let (status, body) = self.client.get(&format!("/chats/{chat_id}")).await?;
            if status != 200 {
                anyhow::bail!(error_message(status, &body));
            }
            println!("[chat {chat_id}: {}]", title(&body["chat"]));
            self.chat_id = Some(chat_id.clone());
            return self.show_history(&chat_id).await;
        }
        let (status, body) = self.client.get("/chats?limit=20").await?;
        if status != 200 {
            anyhow::bail!(error_message(status, &body));
        }
        self.listed.clear();
        for (index, chat) in body["items"].as_array().into_iter().flatten().enumerate() {
            let id = chat["id"].as_str().unwrap_or_default().to_string();
            let current = self.chat_id.as_deref() == Some(id.as_str());
            println!(
                "{}{:>3}. {}  {}  [{}]",
                if current { "*" } else { " " },
                index + 1,
                title(chat),
                id,
                chat["status"].as_str().unwrap_or("")
            );
            self.listed.push(id);
        }
        if self.listed.is_empty() {
            println!("no chats yet");
        }
        Ok(())
    }

    /// The chat's latest messages (at most 10).
    async fn show_history(&self, chat_id: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .client
            .get(&format!("/chats/{chat_id}/messages?limit=10"))
            .await?;
        if status != 200 {
            anyhow::bail!(error_message(status, &body));
        }
        let mut messages: Vec<&Value> = body["items"].as_array().into_iter().flatten().collect();
        messages.sort_by_key(|message| message["id"].as_i64());
        for message in messages {
            let text = content_text(&message["content"]);
            match message["role"].as_str() {
                Some("user") => println!(">>> {text}"),
                Some("assistant") if !text.is_empty() => println!("{text}\n"),
                _ => {}
            }
        }
        Ok(())
    }
}

fn title(chat: &Value) -> &str {
    match chat["title"].as_str() {
        Some("") | None => "(untitled)",
        Some(title) => title,
    }
}
