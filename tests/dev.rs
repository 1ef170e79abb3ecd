//! `chatd dev`, the newcomer's one command: embedded PostgreSQL, migrations, the mock LLM, an
//! API and a worker in one process. It must answer a chat, stop cleanly on Ctrl-C, and start
//! again on its own data (the mock's port changes every run, so the seeded provider must be
//! re-pointed rather than duplicated).

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use chatd_client::ApiClient;
use common::cluster::{create_chat, messages, wait_until};

const STARTUP: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn chatd_dev_answers_and_starts_again_on_its_own_data() {
    let data_dir = std::env::temp_dir().join(format!("chatd-dev-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).expect("create the data folder");
    for run in 1..=2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["dev", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .env_remove("CHATD_TEST_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chatd dev");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut url, mut token) = (None, None);
        let read = async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(value) = line.trim().strip_prefix("URL:") {
                    url = Some(value.trim().to_owned());
                } else if let Some(value) = line.trim().strip_prefix("token:") {
                    token = Some(value.trim().to_owned());
                }
                if url.is_some() && token.is_some() {
                    return;
                }
            }
        };
        tokio::time::timeout(STARTUP, read)
            .await
            .unwrap_or_else(|_| panic!("run {run}: chatd dev printed no URL and token"));
        let (url, token) = (url.expect("URL"), token.expect("token"));
        let api = ApiClient::new(&url, &token, reqwest::Client::new());

        let (chat_id, _) = create_chat(&api, &format!("hello from run {run}")).await;
        let answer = wait_until(Duration::from_secs(30), "the dev answer", || async {
            messages(&api, &chat_id)
                .await
                .into_iter()
                .find(|message| message["role"] == "assistant")
        })
        .await;
        assert!(
            !chatd_client::content_text(&answer["content"]).is_empty(),
            "run {run}: {answer}"
        );
        // The printed URL opens the web UI.
        let page = reqwest::get(&url).await.expect("GET the dev URL");
        assert_eq!(page.status(), 200, "run {run}: the dev URL serves no page");
        assert!(
            page.text().await.unwrap().contains("/js/main.js"),
            "run {run}: the dev URL is not the web UI"
        );
        let (status, providers) = api.get("/providers").await.expect("list providers");
        assert_eq!(status, 200, "{providers}");
        assert_eq!(
            providers["items"].as_array().map(Vec::len),
            Some(1),
            "run {run}: the dev provider is re-pointed, not duplicated: {providers}"
        );

        let pid = child.id().expect("pid") as i32;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("chatd dev stops on Ctrl-C")
            .expect("wait for chatd dev");
        assert!(
            status.success(),
            "run {run}: chatd dev exited with {status}"
        );
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}
