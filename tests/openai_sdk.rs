//! The OpenAI-compatible front door (`/v1`) through clients nobody here wrote: the official
//! `openai` packages from PyPI and npm, unmodified, pointed at two API replicas of one cluster
//! with `base_url` (tests/openai_sdk/*.py, *.mjs: streaming helpers, background + resume with
//! `starting_after` on the other replica, cancel, function-call round trips, chained and forked
//! `previous_response_id`, Chat Completions streaming, models, error classes), and the AI SDK
//! UI message stream read by the `ai` package's own transport and reducer. What the SDKs
//! cannot see is in tests/openai_compat.rs.

mod common;

use common::cluster::Cluster;
use common::sdks;
use std::path::PathBuf;
use std::process::Command;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/openai_sdk")
        .join(name)
}

/// Runs an SDK script to its end and asserts every scenario said `ok`.
fn run(mut command: Command, scenarios: &[&str]) {
    let output = command.output().expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for scenario in scenarios {
        assert!(
            stdout.contains(&format!("ok {scenario}\n")),
            "{scenario} did not pass\n{stdout}\n{stderr}"
        );
    }
}

/// Two API replicas and two workers, plus a third replica that allows one request per second
/// (for the SDK's `RateLimitError`).
async fn cluster() -> Cluster {
    let mut cluster = Cluster::start(2, 2).await;
    cluster
        .add_api_with(&["--rate-limit-per-second", "1", "--rate-limit-burst", "1"])
        .await
        .expect("limited api");
    cluster
}

fn urls(cluster: &Cluster) -> [(&'static str, String); 4] {
    [
        ("CHATD_A", cluster.apis[0].url.clone()),
        ("CHATD_B", cluster.apis[1].url.clone()),
        ("CHATD_LIMITED", cluster.apis[2].url.clone()),
        ("CHATD_TOKEN", cluster.token.clone()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_against_two_replicas() {
    let python = sdks::openai_python();
    let cluster = cluster().await;
    let mut command = Command::new(python);
    command.arg(script("python_sdk.py")).envs(urls(&cluster));
    let scenarios = [
        "stream_helper",
        "create_stream",
        "background_resume",
        "cancel",
        "function_call",
        "chain_and_fork",
        "chat_completions",
        "models",
        "errors",
    ];
    tokio::task::spawn_blocking(move || run(command, &scenarios))
        .await
        .expect("join");

    // Chat Completions chats are hidden from the chat list; stored responses are listed.
    let sql = cluster.sql().await;
    let hidden: Vec<String> = sql
        .query("SELECT id::text FROM chats WHERE hidden", &[])
        .await
        .expect("hidden")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        hidden.len() >= 3,
        "the Chat Completions requests ran as hidden chats: {hidden:?}"
    );
    let (status, list) = cluster.api(0).get("/chats?limit=100").await.expect("list");
    assert_eq!(status, 200, "{list}");
    let listed: Vec<&str> = list["items"]
        .as_array()
        .expect("chats")
        .iter()
        .filter_map(|chat| chat["id"].as_str())
        .collect();
    assert!(
        listed.len() >= 10,
        "stored responses are chats of the list: {}",
        listed.len()
    );
    for id in &hidden {
        assert!(!listed.contains(&id.as_str()), "hidden chat {id} listed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_against_two_replicas() {
    let modules = sdks::npm_packages(
        &format!("openai-node-{}", sdks::OPENAI_NODE),
        &[&format!("openai@{}", sdks::OPENAI_NODE)],
    );
    let cluster = cluster().await;
    let mut command = Command::new("node");
    command
        .arg(script("node_sdk.mjs"))
        .env("NODE_PATH", &modules)
        .envs(urls(&cluster));
    let scenarios = [
        "streamHelper",
        "backgroundResume",
        "functionCall",
        "chatCompletions",
        "modelsAndErrors",
    ];
    tokio::task::spawn_blocking(move || run(command, &scenarios))
        .await
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_sdk_reads_the_ui_message_stream_on_two_replicas() {
    let modules = sdks::npm_packages(
        &format!("ai-sdk-{}", sdks::AI_SDK),
        &[&format!("ai@{}", sdks::AI_SDK)],
    );
    let cluster = cluster().await;
    let mut command = Command::new("node");
    command
        .arg(script("ai_sdk_ui.mjs"))
        .env("NODE_PATH", &modules)
        .envs(urls(&cluster));
    let scenarios = [
        "createAndStream",
        "resumeOnTheOtherReplica",
        "clientToolRoundTrip",
        "stopButton",
    ];
    tokio::task::spawn_blocking(move || run(command, &scenarios))
        .await
        .expect("join");
}
