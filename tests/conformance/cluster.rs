//! A live llama.cpp server through a real chatd cluster: API and worker processes, a provider
//! and model per protocol created with `chatd admin` (run when `LLAMA_URL` is set).

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn live_cluster_openai_chat_runs_two_turns() {
    live_cluster_two_turns(Protocol::Chat).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_cluster_openai_responses_runs_two_turns() {
    live_cluster_two_turns(Protocol::Responses).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_cluster_anthropic_runs_two_turns() {
    live_cluster_two_turns(Protocol::Messages).await;
}

/// A chat on a model served by llama.cpp over `protocol`: two turns, the second replaying the
/// first answer in the protocol's own history format (and, for Responses, chaining onto it).
async fn live_cluster_two_turns(protocol: Protocol) {
    let Some(url) = llama_url(&format!("live_cluster_two_turns({protocol:?})")) else {
        return;
    };
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let model_config_id = create_llama_model(&cluster, protocol, &url).await;
    let (status, created) = api
        .post(
            "/chats",
            &json!({
                "message": SHORT_PROMPT,
                "model_config_id": model_config_id,
                "system_prompt": "You are a helpful assistant. Answer in one sentence.",
            }),
        )
        .await
        .expect("create a chat");
    assert_eq!(status, 201, "{protocol:?}: create chat: {created}");
    let chat_id = created["chat"]["id"].as_str().expect("chat id").to_owned();
    let message_id = created["message"]["id"].as_i64().expect("message id");
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    wait_turn(protocol, &mut reader, 1).await;

    let (status, sent) = api
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": "Thank you. And what colour is grass?",
                    "model_config_id": model_config_id}),
        )
        .await
        .expect("send a message");
    assert_eq!(status, 201, "{protocol:?}: send: {sent}");
    wait_turn(protocol, &mut reader, 2).await;

    let answers: Vec<Value> = common::cluster::messages(&api, &chat_id)
        .await
        .into_iter()
        .filter(|message| message["role"] == "assistant")
        .collect();
    assert_eq!(answers.len(), 2, "{protocol:?}: two answers: {answers:?}");
    for answer in &answers {
        let text = chatd_client::content_text(&answer["content"]);
        assert!(
            !text.trim().is_empty(),
            "{protocol:?}: empty answer {answer}"
        );
        let usage = &answer["usage"];
        assert!(
            usage["input_tokens"].as_i64().unwrap_or(0) >= MIN_PROMPT_TOKENS
                && usage["output_tokens"].as_i64().unwrap_or(0) > 0,
            "{protocol:?}: usage recorded: {answer}"
        );
        assert_eq!(
            answer["model_config_id"], model_config_id,
            "{protocol:?}: {answer}"
        );
    }
}

/// Creates a provider of `protocol`'s kind at `url` and a model on it with `chatd admin`, as an
/// operator would; returns the model config id.
async fn create_llama_model(cluster: &Cluster, protocol: Protocol, url: &str) -> Value {
    let provider_id = chatd_admin(&[
        "create-provider",
        "--database-url",
        &cluster.db.url,
        "--kind",
        protocol.kind().as_str(),
        "--base-url",
        url,
    ])
    .await;
    let model_config_id = chatd_admin(&[
        "create-model",
        "--database-url",
        &cluster.db.url,
        "--provider",
        &provider_id,
        "--model",
        MODEL,
        "--context-limit",
        "8192",
    ])
    .await;
    Value::String(model_config_id)
}

/// Runs `chatd admin ARGS…` and returns its printed id.
async fn chatd_admin(args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("admin")
        .args(args)
        .output()
        .await
        .expect("run chatd admin");
    assert!(
        output.status.success(),
        "chatd admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "chatd admin {args:?} printed an id: {id:?}"
    );
    id
}

/// Reads the chat's stream until `answers` assistant messages arrived and the chat waits again;
/// fails at once when the chat goes to `error`.
async fn wait_turn(protocol: Protocol, reader: &mut Reader, answers: usize) {
    let deadline = tokio::time::Instant::now() + TURN_TIMEOUT;
    let mut answered = reader
        .seen
        .iter()
        .filter(|event| event.event == "message" && event.data["role"] == "assistant")
        .count();
    let mut status = String::new();
    while !(answered >= answers && status == "waiting") {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = reader.next(left.max(Duration::from_millis(1))).await;
        match event.event.as_str() {
            "message" if event.data["role"] == "assistant" => answered += 1,
            "status" => {
                status = event.data["status"].as_str().unwrap_or_default().to_owned();
                assert_ne!(
                    status, "error",
                    "{protocol:?}: turn {answers} failed: {}",
                    event.data
                );
            }
            _ => {}
        }
    }
}
