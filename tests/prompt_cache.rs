//! Workers keep the prompts of the chats they ran and read only what is new (issue 14, B8).
//! The check: the same scripted conversation — plain turns, a client tool round trip, an
//! edit that rewrites the history, a compaction summary — run on a cluster whose workers cache prompts (two workers, affinity on)
//! and on one whose workers read every prompt whole, gives every step the same prompt: the
//! mock's input token count of every assistant message (the words of everything the
//! provider received) is identical, and so is the whole history.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use chatd_client::ApiClient;
use common::cluster::{chat_status, directive_message, messages, wait_until, Cluster};
use common::models::{add_model, ModelOptions};

/// Sends `text` and waits for the turn to end (answering a client tool call on the way).
async fn turn(api: &ApiClient, chat_id: &str, text: &str) {
    let (status, body) = api
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": text}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    settle(api, chat_id).await;
}

/// Waits until the chat is idle, answering pending client tool calls.
async fn settle(api: &ApiClient, chat_id: &str) {
    loop {
        let status = wait_until(Duration::from_secs(30), "an idle chat", || async {
            let status = chat_status(api, chat_id).await;
            matches!(status.as_str(), "waiting" | "requires_action" | "error").then_some(status)
        })
        .await;
        assert_ne!(status, "error", "the turn failed");
        if status == "waiting" {
            return;
        }
        let history = messages(api, chat_id).await;
        let calls: Vec<Value> = history
            .last()
            .and_then(|message| message["content"].as_array())
            .map(|parts| {
                parts
                    .iter()
                    .filter(|part| part["type"] == "tool-call")
                    .map(|part| {
                        json!({"tool_call_id": part["tool_call_id"],
                               "output": "found three books about lease fencing", "is_error": false})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (status, body) = api
            .post(
                &format!("/chats/{chat_id}/tool-results"),
                &json!({"results": calls}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

/// The scripted conversation; returns its history as (role, text, input tokens).
async fn converse(cluster: &Cluster) -> Vec<(String, String, Option<i64>)> {
    let model = add_model(
        cluster,
        "openai-compatible",
        ModelOptions {
            context_limit: 300,
            compression_threshold: 50,
            ..ModelOptions::default()
        },
    )
    .await;
    let api = cluster.api(0);
    let (status, body) = api
        .post(
            "/chats",
            &json!({
                "model_config_id": model,
                "system_prompt": "You are a careful assistant.",
                "message": "turn one: tell me about leases",
                "dynamic_tools": [{"name": "lookup", "description": "Search the catalogue",
                                   "schema": {"type": "object"}}],
            }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let chat_id = body["chat"]["id"].as_str().unwrap().to_string();
    settle(&api, &chat_id).await;
    for k in 2..=4 {
        turn(
            &api,
            &chat_id,
            &format!("turn {k}: and what about fencing tokens"),
        )
        .await;
    }
    let lookup = directive_message(
        "turn 5: look it up",
        json!({"tool_calls": [{"name": "lookup", "arguments": {"q": "fencing"}}]}),
    );
    turn(&api, &chat_id, &lookup).await;
    turn(&api, &chat_id, "turn 6: thanks, and heartbeats").await;
    // An edit rewrites the history: the rows after turn 3 leave it (history_epoch moves).
    let history = messages(&api, &chat_id).await;
    let third = history
        .iter()
        .find(|message| chatd_client::content_text(&message["content"]).starts_with("turn 3"))
        .expect("turn 3");
    let (status, body) = api
        .patch(
            &format!("/chats/{chat_id}/messages/{}", third["id"]),
            &json!({"content": "turn 3 edited: what about leases after a crash"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    settle(&api, &chat_id).await;
    // Long turns until the window fills and the model summarises.
    for k in 7..=14 {
        turn(
            &api,
            &chat_id,
            &directive_message(
                &format!("turn {k}: tell me more about the recovery sweep"),
                json!({"tokens": 40}),
            ),
        )
        .await;
    }
    // A built-in tool step continues the turn, and the full window makes it summarise.
    turn(
        &api,
        &chat_id,
        &directive_message(
            "turn 15: what time is it",
            json!({"tool_calls": [{"name": "current_time"}]}),
        ),
    )
    .await;
    turn(&api, &chat_id, "turn 16: after the summary").await;
    messages(&api, &chat_id)
        .await
        .iter()
        .map(|message| {
            (
                message["role"].as_str().unwrap_or_default().to_string(),
                // The clock tool's answer differs between the runs, not its shape.
                digits_hidden(&chatd_client::content_text(&message["content"])),
                message["usage"]["input_tokens"].as_i64(),
            )
        })
        .collect()
}

fn digits_hidden(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_prompt_is_the_prompt_a_full_read_gives() {
    let mut whole = Cluster::start(1, 0).await;
    for _ in 0..2 {
        whole
            .add_worker(&[
                "--prompt-cache-bytes",
                "0",
                "--affinity-grace-ms",
                "0",
                "--tools",
                "current_time",
            ])
            .await
            .unwrap();
    }
    let mut cached = Cluster::start(1, 0).await;
    let mut metrics = Vec::new();
    for _ in 0..2 {
        let addr = format!("127.0.0.1:{}", common::cluster::free_port());
        cached
            .add_worker(&["--metrics-addr", &addr, "--tools", "current_time"])
            .await
            .unwrap();
        metrics.push(format!("http://{addr}/metrics"));
    }
    let (expected, got) = tokio::join!(converse(&whole), converse(&cached));
    assert!(
        expected
            .iter()
            .any(|(role, text, _)| role == "user" && text.starts_with("[Conversation summarised]")),
        "the script never compacted: {expected:#?}"
    );
    assert!(
        expected
            .iter()
            .any(|(_, text, _)| text.starts_with("turn # edited")),
        "{expected:#?}"
    );
    assert_eq!(got, expected);

    // The cached cluster's turns found their chat's prompt in the worker that ran them (the
    // chat goes back to the worker that ran it last): most loads were hits.
    let mut loads = [0.0, 0.0]; // hit, miss
    for url in &metrics {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        for line in text.lines() {
            for (index, label) in ["cache=\"hit\"", "cache=\"miss\""].iter().enumerate() {
                if line.starts_with("chatd_prompt_loads_total") && line.contains(label) {
                    loads[index] += line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
                }
            }
        }
    }
    let [hits, misses] = loads;
    eprintln!("prompt loads: {hits} hits, {misses} misses");
    assert!(
        hits + misses >= 15.0,
        "prompt loads: {hits} hits, {misses} misses"
    );
    // Misses: the first turn and the one after the edit (a new epoch); a little slack for a
    // turn that found its last worker busy past the affinity grace.
    assert!(misses <= 4.0, "prompt loads: {hits} hits, {misses} misses");
}
