//! The Chat Completions route with raw HTTP: the exact chunk shapes.

use serde_json::{json, Value};

use super::{chat_tool, parse_sse, MockServer, SseEvent, TWO_CALLS};
use chatd_mock_llm::reply_text;

fn chat_body(text: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "m",
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": text}],
    });
    if let (Value::Object(fields), Value::Object(more)) = (&mut body, extra) {
        fields.extend(more);
    }
    body
}

/// The JSON chunks before `[DONE]`, and whether `[DONE]` came last.
fn chunks(events: &[SseEvent]) -> (Vec<Value>, bool) {
    let done = events.last().is_some_and(|event| event.data == "[DONE]");
    let chunks = events
        .iter()
        .filter(|event| event.data != "[DONE]")
        .map(SseEvent::json)
        .collect();
    (chunks, done)
}

#[tokio::test]
async fn chat_usage_reports_cached_tokens_and_reasoning() {
    let server = MockServer::start().await;
    let text =
        "cache me please\n@mock {\"cached_tokens\": 2, \"tokens\": 3, \"reasoning_tokens\": 2}";
    let events = server
        .sse("chat/completions", &chat_body(text, json!({})))
        .await;
    let (chunks, done) = chunks(&events);
    assert!(done);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let reasoning: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"].get("reasoning_content"))
        .collect();
    assert_eq!(reasoning.len(), 2);
    let content: String = chunks[1..]
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, reply_text(text, 3));
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({
            "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 2}
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn chat_stream_error_ends_the_stream_without_done() {
    let server = MockServer::start().await;
    let text = "@mock {\"stream_error_after\": 2, \"stream_error_type\": \"rate_limit\"}";
    let events = server
        .sse("chat/completions", &chat_body(text, json!({})))
        .await;
    let (chunks, done) = chunks(&events);
    assert!(!done, "no [DONE] after an error");
    assert_eq!(chunks.len(), 1 + 2 + 1, "role chunk, two tokens, the error");
    assert_eq!(
        chunks[3],
        json!({"error": {
            "message": "mock stream error: rate limited",
            "type": "requests",
            "code": "rate_limit_exceeded"
        }})
    );
    server.stop().await;
}

#[tokio::test]
async fn chat_tool_calls_need_tools_and_tool_steps_repeat_them() {
    let server = MockServer::start().await;
    let script = r#"use the tool
@mock {"tool_calls": [{"name": "read_file", "arguments": {"path": "a"}}], "tool_steps": 2}"#;
    let finish_of = |events: &[SseEvent]| {
        let (chunks, _) = chunks(events);
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"].clone()
    };
    let no_tools = server
        .sse("chat/completions", &chat_body(script, json!({})))
        .await;
    assert_eq!(finish_of(&no_tools), "stop");

    let tools = json!({"tools": [chat_tool("read_file")]});
    let first = server
        .sse("chat/completions", &chat_body(script, tools.clone()))
        .await;
    assert_eq!(finish_of(&first), "tool_calls");
    let (first_chunks, _) = chunks(&first);
    assert_eq!(
        first_chunks[1]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "call_0", "type": "function",
               "function": {"name": "read_file", "arguments": ""}})
    );

    let step = |number: usize| {
        json!([
            {"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{number}"), "type": "function",
                "function": {"name": "read_file", "arguments": "{\"path\":\"a\"}"}}]},
            {"role": "tool", "tool_call_id": format!("call_{number}"), "content": format!("result {number}")}
        ])
    };
    let mut body = chat_body(script, tools);
    let mut messages = body["messages"].as_array().cloned().unwrap_or_default();
    messages.extend(step(0).as_array().cloned().unwrap_or_default());
    body["messages"] = json!(messages);
    let second = server.sse("chat/completions", &body).await;
    assert_eq!(finish_of(&second), "tool_calls", "tool_steps 2: call again");
    let (second_chunks, _) = chunks(&second);
    assert_eq!(
        second_chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"],
        "call_1"
    );

    messages.extend(step(1).as_array().cloned().unwrap_or_default());
    body["messages"] = json!(messages);
    let third = server.sse("chat/completions", &body).await;
    assert_eq!(finish_of(&third), "stop");
    let (third_chunks, _) = chunks(&third);
    let content: String = third_chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Tool results: read_file: result 1");
    server.stop().await;
}

#[tokio::test]
async fn chat_parallel_calls_non_streaming_and_output_limit() {
    let server = MockServer::start().await;
    let mut body = chat_body(
        TWO_CALLS,
        json!({"tools": [chat_tool("read_file"), chat_tool("sum")]}),
    );
    body["stream"] = json!(false);
    let (status, answer) = server.post_json("chat/completions", &body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let calls = &answer["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["id"], "call_0");
    assert_eq!(calls[1]["function"]["name"], "sum");
    assert_eq!(calls[1]["function"]["arguments"], "{\"a\":1,\"b\":2}");

    let limited = chat_body("@mock {\"tokens\": 8}", json!({"max_tokens": 3}));
    let events = server.sse("chat/completions", &limited).await;
    let (chunks, done) = chunks(&events);
    assert!(done);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(chunks[chunks.len() - 1]["usage"]["completion_tokens"], 3);
    assert_eq!(server.stats().await["requests"]["chat"], 2);
    server.stop().await;
}

#[tokio::test]
async fn sse_text_parses_into_events() {
    let events = parse_sse("event: a\ndata: {}\n\ndata: [DONE]\n\n");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.as_deref(), Some("a"));
    assert_eq!(events[1].data, "[DONE]");
}
