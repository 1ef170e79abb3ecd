//! The agent loop end to end, once per provider protocol (OpenAI Chat Completions, OpenAI
//! Responses, Anthropic Messages), through real API and worker processes and `chatd mock-llm`:
//! built-in tool calls, the exclusive-tool policy, dynamic (client) tools across replicas,
//! retries (429 then success, partial output then `attempt_reset`, bounded retries ending in a
//! structured error), interruption while a tool runs, compaction, titles and cost figures.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use chatd_client::{content_text, ApiClient};
use chatd_mock_llm::reply_text;
use common::cluster::{
    assistant_texts, chat_status, directive_message, messages, wait_until, Cluster,
};
use common::models::{add_model, create_chat_on, ModelOptions, PROTOCOLS};
use common::sse::{assert_contiguous, Reader};

const TURN: Duration = Duration::from_secs(30);

/// Two API replicas and two workers offering the built-in tools.
async fn tool_cluster() -> Cluster {
    let mut cluster = Cluster::start(2, 0).await;
    for _ in 0..2 {
        cluster
            .add_worker(&[
                "--tools",
                "current_time,sleep",
                "--title-timeout-ms",
                "5000",
                "--max-provider-attempts",
                "2",
                "--startup-timeout-ms",
                "1500",
            ])
            .await
            .expect("start a worker");
    }
    cluster
}

async fn wait_status(api: &ApiClient, chat_id: &str, wanted: &str) {
    wait_until(TURN, &format!("chat status {wanted}"), || async {
        (chat_status(api, chat_id).await == wanted).then_some(())
    })
    .await;
}

fn parts_of<'a>(message: &'a Value, kind: &str) -> Vec<&'a Value> {
    message["content"]
        .as_array()
        .map(|parts| parts.iter().filter(|part| part["type"] == kind).collect())
        .unwrap_or_default()
}

/// A built-in tool call: the step's assistant row holds the call, the tool row its result,
/// and the next step answers with the result quoted.
async fn builtin_tool_turn(cluster: &Cluster, model: &str) {
    let api = cluster.api(0);
    let message = directive_message(
        "what time is it",
        json!({"tool_calls": [{"name": "current_time"}]}),
    );
    let (chat_id, message_id) = create_chat_on(&api, model, &message, json!([])).await;
    let mut reader = Reader::open(
        &cluster.api(1),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    reader.until_turn_done(TURN).await;
    let history = messages(&api, &chat_id).await;
    let roles: Vec<&str> = history.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant"],
        "{history:?}"
    );
    let call = parts_of(&history[1], "tool-call");
    assert_eq!(call.len(), 1);
    assert_eq!(call[0]["tool_name"], "current_time");
    let result = parts_of(&history[2], "tool-result");
    assert_eq!(result[0]["tool_call_id"], call[0]["tool_call_id"]);
    assert_eq!(result[0]["is_error"], false, "{result:?}");
    let now = result[0]["result"].as_str().expect("a time string");
    assert!(now.contains('T') && now.len() >= 20, "{now}");
    let answer = content_text(&history[3]["content"]);
    assert_eq!(answer, format!("Tool results: current_time: {now}"));
    // The stream showed the call being made, and every step's previews in order.
    assert!(reader.seen.iter().any(|event| event.event == "message_part"
        && event.data["part"]["type"] == "tool-call"
        && event.data["part"]["tool_name"] == "current_time"));
    assert_contiguous(&reader.seen);
}

/// Mixing an exclusive tool with another call runs nothing: both calls get the policy error
/// and the turn goes on.
async fn exclusive_tool_policy(cluster: &Cluster, model: &str) {
    let api = cluster.api(0);
    let message = directive_message(
        "wait and tell the time",
        json!({"tool_calls": [{"name": "sleep", "arguments": {"seconds": 30}}, {"name": "current_time"}]}),
    );
    let (chat_id, _) = create_chat_on(&api, model, &message, json!([])).await;
    wait_status(&api, &chat_id, "waiting").await;
    let history = messages(&api, &chat_id).await;
    let results = parts_of(&history[2], "tool-result");
    assert_eq!(results.len(), 2, "{history:?}");
    for result in &results {
        assert_eq!(result["is_error"], true);
        let text = result["result"].as_str().unwrap_or_default();
        assert!(
            text.contains("policy error") && text.contains("sleep"),
            "{text}"
        );
    }
    assert!(content_text(&history[3]["content"]).starts_with("Tool results: sleep: policy error"));
}

/// A dynamic tool: the turn ends in `requires_action` with `action_required` on a stream of
/// the other replica; bad submissions are refused; the first good one resumes the turn on
/// any worker; a second gets 409.
async fn dynamic_tool_round_trip(cluster: &Cluster, model: &str) {
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let tools = json!([{"name": "lookup", "description": "Looks a thing up on the client.",
        "schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
    let message = directive_message(
        "look it up",
        json!({"tool_calls": [{"name": "lookup", "arguments": {"q": "rust"}}, {"name": "current_time"}]}),
    );
    let (chat_id, message_id) = create_chat_on(&api_a, model, &message, tools).await;
    let mut reader = Reader::open(&api_b, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    let action = reader
        .until(TURN, |event| event.event == "action_required")
        .await;
    let calls = action.data["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        calls.len(),
        1,
        "only the client tool is pending: {action:?}"
    );
    assert_eq!(calls[0]["tool_name"], "lookup");
    assert_eq!(calls[0]["args"], json!({"q": "rust"}));
    let call_id = calls[0]["tool_call_id"]
        .as_str()
        .expect("call id")
        .to_owned();
    assert_eq!(chat_status(&api_a, &chat_id).await, "requires_action");
    // The built-in call of the same step already has its result.
    let history = messages(&api_a, &chat_id).await;
    let done = parts_of(&history[2], "tool-result");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["tool_name"], "current_time");

    let path = format!("/chats/{chat_id}/tool-results");
    let bad = [
        (json!({"results": []}), "results"),
        (
            json!({"results": [{"tool_call_id": call_id, "output": 1}, {"tool_call_id": call_id, "output": 2}]}),
            "results[1].tool_call_id",
        ),
        (
            json!({"results": [{"tool_call_id": call_id}]}),
            "missing field `output`",
        ),
        (
            json!({"results": [{"tool_call_id": "a\u{0}b", "output": 1}]}),
            "results[0].tool_call_id",
        ),
    ];
    for (body, field) in bad {
        let (status, answer) = api_a.post(&path, &body).await.expect("post tool results");
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer.to_string().contains(field), "{body} → {answer}");
    }
    // Well-formed, but not what the chat waits for: a conflict with its state.
    let unknown = json!({"results": [{"tool_call_id": "nope", "output": 1}]});
    let (status, answer) = api_a
        .post(&path, &unknown)
        .await
        .expect("post tool results");
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer.to_string().contains("results[0].tool_call_id"),
        "{answer}"
    );
    let output = "found: rust\u{0}lang";
    let (status, answer) = api_a
        .post(
            &path,
            &json!({"results": [{"tool_call_id": call_id, "output": output}]}),
        )
        .await
        .expect("post tool results");
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = api_b
        .post(
            &path,
            &json!({"results": [{"tool_call_id": call_id, "output": output}]}),
        )
        .await
        .expect("post tool results again");
    assert_eq!(status, 409, "the first submission wins: {answer}");
    reader.until_turn_done(TURN).await;
    let history = messages(&api_b, &chat_id).await;
    let client_result = parts_of(&history[3], "tool-result");
    assert_eq!(
        client_result[0]["result"], output,
        "NUL survives storage: {history:?}"
    );
    let answer = content_text(&history.last().expect("answer")["content"]);
    assert!(answer.contains("lookup: found: rust"), "{answer}");
}

/// A client that never answers: the deadline fails the chat with synthetic results, and the
/// chat still takes a next message.
async fn dynamic_tool_timeout(cluster: &mut Cluster, model: &str) {
    let api = cluster.api(0);
    let tools = json!([{"name": "approve"}]);
    let message = directive_message("ask", json!({"tool_calls": [{"name": "approve"}]}));
    let (chat_id, _) = create_chat_on(&api, model, &message, tools).await;
    wait_status(&api, &chat_id, "requires_action").await;
    cluster
        .sql()
        .await
        .execute(
            "UPDATE chats SET action_deadline_at = now() - interval '1 second' WHERE id = $1::text::uuid",
            &[&chat_id],
        )
        .await
        .expect("expire the deadline");
    wait_status(&api, &chat_id, "error").await;
    let (_, chat) = api
        .get(&format!("/chats/{chat_id}"))
        .await
        .expect("get chat");
    assert_eq!(
        chat["chat"]["last_error"]["kind"], "action_timeout",
        "{chat}"
    );
    let history = messages(&api, &chat_id).await;
    let synthetic = parts_of(history.last().expect("tool row"), "tool-result");
    assert_eq!(synthetic[0]["is_error"], true);
    let (status, _) = api
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": "go on"}),
        )
        .await
        .expect("send");
    assert_eq!(status, 201);
    wait_status(&api, &chat_id, "waiting").await;
    let texts = assistant_texts(&api, &chat_id).await;
    assert_eq!(
        texts.last().map(String::as_str),
        Some(reply_text("go on", 12).as_str())
    );
}

/// 429 with Retry-After, then success: one `retry` event, one complete answer.
async fn retry_after_429(cluster: &Cluster, model: &str) {
    let api = cluster.api(0);
    let message = directive_message(
        "flaky",
        json!({"error_status": 429, "fail_times": 1, "retry_after_s": 1}),
    );
    let (chat_id, message_id) = create_chat_on(&api, model, &message, json!([])).await;
    let mut reader = Reader::open(
        &cluster.api(1),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    reader.until_turn_done(TURN).await;
    let retries: Vec<&Value> = reader
        .seen
        .iter()
        .filter(|event| event.event == "retry")
        .map(|event| &event.data)
        .collect();
    assert_eq!(retries.len(), 1, "{:?}", reader.seen);
    assert_eq!(retries[0]["kind"], "rate_limit");
    assert_eq!(retries[0]["delay_ms"], 1000, "Retry-After is honoured");
    let texts = assistant_texts(&api, &chat_id).await;
    assert_eq!(texts, [reply_text(&message, 12)]);
}

/// Retries are bounded: an overloaded provider (529) and a silent one (startup timeout) are
/// retried once (`--max-provider-attempts 2`), then the turn ends in `error` with a structured
/// `error` event and `last_error`.
async fn retries_exhausted(cluster: &Cluster, model: &str) {
    let api = cluster.api(0);
    let cases = [
        (
            json!({"error_status": 529, "retry_after_s": 1}),
            "overloaded",
            Some(529),
        ),
        (json!({"ttft_ms": 4000}), "startup_timeout", None),
    ];
    for (directive, kind, status_code) in cases {
        let message = directive_message("doomed", directive);
        let (chat_id, message_id) = create_chat_on(&api, model, &message, json!([])).await;
        let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
        let error = reader.until(TURN, |event| event.event == "error").await;
        assert_eq!(error.data["kind"], kind, "{error:?}");
        assert_eq!(error.data["retryable"], true);
        assert_eq!(error.data["status_code"], json!(status_code));
        let retries = reader
            .seen
            .iter()
            .filter(|event| event.event == "retry")
            .count();
        assert_eq!(retries, 1, "{:?}", reader.seen);
        wait_status(&api, &chat_id, "error").await;
        let (_, chat) = api
            .get(&format!("/chats/{chat_id}"))
            .await
            .expect("get chat");
        assert_eq!(chat["chat"]["last_error"]["kind"], kind, "{chat}");
    }
}

/// A stream cut after partial output: the step starts over in a new attempt; clients get
/// `attempt_reset`, and the streamed text of the last attempt equals the stored answer.
async fn retry_after_partial_output(cluster: &Cluster, model: &str) {
    let api = cluster.api(0);
    let message = directive_message(
        "cut me",
        json!({"tokens": 10, "cut_after": 4, "fail_times": 1, "tokens_per_second": 20}),
    );
    let (chat_id, message_id) = create_chat_on(&api, model, &message, json!([])).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader.until_turn_done(TURN).await;
    assert!(
        reader
            .seen
            .iter()
            .any(|event| event.event == "attempt_reset"),
        "{:?}",
        reader.seen
    );
    let streamed = assert_contiguous(&reader.seen);
    let expected = reply_text(&message, 10);
    assert_eq!(streamed, expected);
    let texts = assistant_texts(&api, &chat_id).await;
    assert_eq!(texts, [expected]);
}

/// Interrupting while a tool runs: the call gets a synthetic result at once, the chat waits,
/// and the next message produces a valid provider request.
async fn interrupt_during_tool(cluster: &Cluster, model: &str) {
    let api = cluster.api(0);
    let message = directive_message(
        "nap",
        json!({"tool_calls": [{"name": "sleep", "arguments": {"seconds": 120}}]}),
    );
    let (chat_id, message_id) = create_chat_on(&api, model, &message, json!([])).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader
        .until(TURN, |event| {
            event.event == "message_part" && event.data["part"]["tool_name"] == "sleep"
        })
        .await;
    // The call is streamed before the tool starts; give the step a moment to reach the tool.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = api
        .post(&format!("/chats/{chat_id}/interrupt"), &json!({}))
        .await
        .expect("interrupt");
    assert_eq!(status, 200);
    wait_status(&api, &chat_id, "waiting").await;
    let history = messages(&api, &chat_id).await;
    let roles: Vec<&str> = history.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool"], "{history:?}");
    let result = parts_of(&history[2], "tool-result");
    assert_eq!(result[0]["is_error"], true);
    assert!(result[0]["result"]
        .as_str()
        .unwrap_or_default()
        .contains("interrupted"));
    let (status, _) = api
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": "never mind"}),
        )
        .await
        .expect("send");
    assert_eq!(status, 201);
    wait_status(&api, &chat_id, "waiting").await;
    let last = messages(&api, &chat_id).await;
    let last = last.last().expect("answer");
    assert_eq!(last["role"], "assistant", "{last}");
    assert_eq!(content_text(&last["content"]), reply_text("never mind", 12));
}

/// A step that fills the window past the threshold: the turn summarises, stores a visible
/// summary row, and continues from it within the same turn.
async fn compaction(cluster: &Cluster, kind: &str) {
    let model = add_model(
        cluster,
        kind,
        ModelOptions {
            context_limit: 40,
            compression_threshold: 50,
            ..ModelOptions::default()
        },
    )
    .await;
    let api = cluster.api(0);
    let long = "please remember these words one two three four five six seven eight nine ten \
                eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let message = directive_message(long, json!({"tool_calls": [{"name": "current_time"}]}));
    let (chat_id, _) = create_chat_on(&api, &model, &message, json!([])).await;
    wait_status(&api, &chat_id, "waiting").await;
    let history = messages(&api, &chat_id).await;
    let roles: Vec<&str> = history.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "user", "assistant"],
        "{history:?}"
    );
    let summary = content_text(&history[3]["content"]);
    assert!(
        summary.starts_with("[Conversation summarised]"),
        "{summary}"
    );
    // The step after the summary saw only the summary: the mock answers it like a new
    // question (no tool results to quote).
    let answer = content_text(&history[4]["content"]);
    assert!(!answer.starts_with("Tool results"), "{answer}");
    assert!(!answer.is_empty());
}

/// Cost per assistant row from its usage and the model's prices, rounded up; the chat's
/// cost route sums them.
async fn cost_figures(cluster: &Cluster, kind: &str) {
    let model = add_model(
        cluster,
        kind,
        ModelOptions {
            input_price_micros: Some(3_000_000),
            output_price_micros: Some(15_000_000),
            ..ModelOptions::default()
        },
    )
    .await;
    let api = cluster.api(0);
    let message = directive_message(
        "price me",
        json!({"tool_calls": [{"name": "current_time"}]}),
    );
    let (chat_id, _) = create_chat_on(&api, &model, &message, json!([])).await;
    wait_status(&api, &chat_id, "waiting").await;
    let history = messages(&api, &chat_id).await;
    let mut total = 0;
    let mut steps = 0;
    for message in history.iter().filter(|m| m["role"] == "assistant") {
        let usage = &message["usage"];
        let input = usage["input_tokens"].as_i64().expect("input tokens");
        let output = usage["output_tokens"].as_i64().expect("output tokens");
        assert!(input > 0 && output > 0, "{message}");
        let expected = (input * 3_000_000 + output * 15_000_000 + 999_999) / 1_000_000;
        assert_eq!(message["cost_micros"], expected, "{message}");
        assert!(message["runtime_ms"].as_i64().is_some());
        total += expected;
        steps += 1;
    }
    assert_eq!(steps, 2);
    // The title request (in the background, after the first exchange) is billed too: a usage
    // record of the chat, priced like a step.
    let sql = cluster.sql().await;
    let title_cost: i64 = wait_until(TURN, "the title's usage record", || async {
        let row = sql
            .query_opt(
                "SELECT input_tokens, output_tokens, cost_micros FROM usage_records \
                 WHERE chat_id = $1::text::uuid AND kind = 'title'",
                &[&chat_id],
            )
            .await
            .expect("read usage records")?;
        let (input, output): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            row.get::<_, Option<i64>>(2),
            Some((input * 3_000_000 + output * 15_000_000 + 999_999) / 1_000_000)
        );
        row.get(2)
    })
    .await;
    let (status, cost) = api
        .get(&format!("/chats/{chat_id}/cost"))
        .await
        .expect("cost");
    assert_eq!(status, 200, "{cost}");
    assert_eq!(cost["cost_micros"], total + title_cost, "{cost}");
    assert_eq!(cost["messages"], 3, "two steps and the title: {cost}");
}

/// After the first exchange the chat gets a title, published on its stream and on the
/// owner's watch stream.
async fn automatic_title(cluster: &Cluster, model: &str) {
    let api = cluster.api(0);
    let mut watch = cluster.watch(1).await;
    let (chat_id, message_id) = create_chat_on(&api, model, "name this chat", json!([])).await;
    let mut reader = Reader::open(
        &cluster.api(1),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    let event = reader.until(TURN, |event| event.event == "title").await;
    let title = event.data["title"].as_str().unwrap_or_default().to_owned();
    assert!(!title.is_empty() && title.chars().count() <= 80, "{title}");
    let (_, chat) = api
        .get(&format!("/chats/{chat_id}"))
        .await
        .expect("get chat");
    assert_eq!(chat["chat"]["title"], title);
    loop {
        let event = tokio::time::timeout(TURN, futures::StreamExt::next(&mut watch))
            .await
            .expect("a watch event")
            .expect("the watch stream is open")
            .expect("read the watch stream");
        let data: Value = event.data;
        // The watch stream relays chat state by version: the title arrives in a `title` event,
        // or already inside an earlier notice's event when its read saw the new title.
        if data["chat"]["id"] == chat_id.as_str() && data["chat"]["title"] == title.as_str() {
            break;
        }
    }
}

async fn agent_loop_for(kind: &str) {
    let mut cluster = tool_cluster().await;
    let model = add_model(&cluster, kind, ModelOptions::default()).await;
    builtin_tool_turn(&cluster, &model).await;
    exclusive_tool_policy(&cluster, &model).await;
    dynamic_tool_round_trip(&cluster, &model).await;
    dynamic_tool_timeout(&mut cluster, &model).await;
    retry_after_429(&cluster, &model).await;
    retry_after_partial_output(&cluster, &model).await;
    retries_exhausted(&cluster, &model).await;
    interrupt_during_tool(&cluster, &model).await;
    compaction(&cluster, kind).await;
    cost_figures(&cluster, kind).await;
    automatic_title(&cluster, &model).await;
    if kind == "openai-responses" {
        // Follow-up steps chained onto the stored response instead of replaying the history.
        let stats: Value = cluster
            .http
            .get(format!("{}/mock/stats", cluster.mock_url))
            .send()
            .await
            .expect("mock stats")
            .json()
            .await
            .expect("mock stats JSON");
        let chained = stats["requests"]["responses_chained"].as_i64().unwrap_or(0);
        assert!(chained > 0, "no chained Responses request: {stats}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_loop_openai_chat() {
    agent_loop_for(PROTOCOLS[0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_loop_openai_responses() {
    agent_loop_for(PROTOCOLS[1]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_loop_anthropic() {
    agent_loop_for(PROTOCOLS[2]).await;
}
