//! `chatd chat` without a message: the interactive session, driven as a person would — lines
//! on its standard input (not a terminal, so the line editor reads plain lines) and Ctrl-C as
//! SIGINT — against a real cluster: the answer streams, `/new`, `/chats` (list and switch,
//! with the chat's history), `/model`, Ctrl-C interrupts the turn (what was said is kept), and
//! Ctrl-C twice at the prompt leaves.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::cluster::{assistant_texts, chat_status, wait_until, Cluster};

/// Everything the session printed so far.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the output after byte `from` contains `needle`; returns the output's length.
    async fn wait_for(&self, from: usize, needle: &str) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text();
            if text[from.min(text.len())..].contains(needle) {
                return text.len();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{needle}` was not printed after byte {from}; the session printed:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn chat_ids(text: &str) -> Vec<String> {
    text.match_indices("[chat ")
        .map(|(at, _)| text[at + 6..at + 42].to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_session_streams_switches_chats_and_interrupts() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("chat")
        .env("CHATD_URL", &cluster.apis[0].url)
        .env("CHATD_TOKEN", &cluster.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chatd chat");
    let mut stdin = child.stdin.take().expect("stdin");
    let output = Output::default();
    for mut stream in [
        Box::new(child.stdout.take().expect("stdout"))
            as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let output = output.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stream.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                output
                    .0
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
    }
    let mut say = async |line: &str| {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        stdin.flush().await.expect("flush");
    };

    // A first message creates a chat; its answer streams to the terminal.
    let mark = output.text().len();
    say(r#"@mock {"tokens": 5}"#).await;
    output.wait_for(mark, "[chat ").await;
    let first = chat_ids(&output.text())[0].clone();
    let answer = wait_until(Duration::from_secs(30), "the first answer", || async {
        assistant_texts(&api, &first).await.into_iter().next()
    })
    .await;
    output.wait_for(mark, &answer).await;

    // /new: the next message starts another chat.
    let mark = output.text().len();
    say("/new").await;
    output.wait_for(mark, "new chat").await;
    say(r#"@mock {"tokens": 3}"#).await;
    output.wait_for(mark, "[chat ").await;
    let second = chat_ids(&output.text())[1].clone();
    assert_ne!(first, second);
    let second_answer = wait_until(Duration::from_secs(30), "the second answer", || async {
        assistant_texts(&api, &second).await.into_iter().next()
    })
    .await;
    output.wait_for(mark, &second_answer).await;

    // /chats lists both (newest first); /chats 2 switches back and shows the history.
    let mark = output.text().len();
    say("/chats").await;
    output.wait_for(mark, &first).await;
    let listing = output.text()[mark..].to_string();
    assert!(listing.contains(&second), "{listing}");
    let mark = output.text().len();
    say("/chats 2").await;
    output.wait_for(mark, &format!("[chat {first}")).await;
    output.wait_for(mark, &answer).await;

    // /model lists the models, the default marked; an unknown one is named.
    let mark = output.text().len();
    say("/model").await;
    output.wait_for(mark, "* mock").await;
    say("/model nope").await;
    output.wait_for(mark, "no model `nope`").await;

    // Ctrl-C during an answer interrupts the turn; what was streamed is kept, in `first`.
    let mark = output.text().len();
    say(r#"@mock {"tokens": 400, "tokens_per_second": 20}"#).await;
    wait_until(Duration::from_secs(30), "the answer streaming", || async {
        (output.text().len() > mark + 40).then_some(())
    })
    .await;
    let pid = child.id().expect("pid") as i32;
    // SAFETY: a signal to a child process this test spawned and still owns.
    unsafe { libc::kill(pid, libc::SIGINT) };
    output.wait_for(mark, "[interrupted]").await;
    assert_eq!(chat_status(&api, &first).await, "waiting");
    let replies = assistant_texts(&api, &first).await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    let partial = replies
        .iter()
        .find(|reply| **reply != answer)
        .expect("the interrupted reply");
    let words = partial.split_whitespace().count();
    assert!(words > 0 && words < 400, "{words} words kept");

    // Ctrl-C twice at the prompt leaves (once the session is back at its prompt).
    let mark = output.text().len();
    say("/help").await;
    let mark = output.wait_for(mark, "commands:").await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    output.wait_for(mark, "Ctrl-C again").await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the session ended")
        .expect("wait");
    assert!(status.success(), "{status:?}\n{}", output.text());
}
