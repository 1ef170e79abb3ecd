//! The Anthropic Messages route with raw HTTP: blocks, deltas, usage, validation, errors.

use serde_json::{json, Value};

use super::{event_names, events_named, MockServer, SseEvent, TWO_CALLS};
use chatd_mock_llm::reply::{count_words, reasoning_signature, reasoning_text};
use chatd_mock_llm::reply_text;

fn messages_body(content: Value) -> Value {
    json!({
        "model": "claude-mock", "max_tokens": 1024, "stream": true,
        "system": "You are a test.",
        "messages": [{"role": "user", "content": content}]
    })
}

fn deltas(events: &[SseEvent], delta_type: &str, field: &str) -> Vec<String> {
    events_named(events, "content_block_delta")
        .iter()
        .filter(|event| event["delta"]["type"] == delta_type)
        .filter_map(|event| event["delta"][field].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn messages_stream_thinking_text_and_cumulative_usage() {
    let server = MockServer::start().await;
    let text = "Think\n@mock {\"tokens\": 3, \"reasoning_tokens\": 2, \"cached_tokens\": 3}";
    let events = server.sse("messages", &messages_body(json!(text))).await;
    for event in &events {
        assert_eq!(event.json()["type"].as_str(), event.event.as_deref());
    }
    assert_eq!(
        event_names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let prompt = 4 + count_words(text);
    let start = &events[0].json()["message"];
    assert_eq!(start["model"], "claude-mock");
    assert_eq!(
        start["usage"],
        json!({"input_tokens": prompt - 3, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 3, "output_tokens": 1})
    );
    let blocks = events_named(&events, "content_block_start");
    assert_eq!(
        blocks[0],
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
    );
    assert_eq!(blocks[1]["index"], 1);
    assert_eq!(blocks[1]["content_block"]["type"], "text");
    let thinking = reasoning_text(text, 2);
    assert_eq!(
        deltas(&events, "thinking_delta", "thinking").concat(),
        thinking
    );
    assert_eq!(
        deltas(&events, "signature_delta", "signature"),
        [reasoning_signature(&thinking)]
    );
    assert!(reasoning_signature(&thinking).starts_with("sig-"));
    assert_eq!(
        deltas(&events, "text_delta", "text").concat(),
        reply_text(text, 3)
    );
    let message_delta = &events_named(&events, "message_delta")[0];
    assert_eq!(
        message_delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(
        message_delta["usage"],
        json!({"input_tokens": prompt - 3, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 3, "output_tokens": 5})
    );
    server.stop().await;
}

#[tokio::test]
async fn messages_tool_use_blocks_stream_fragments_and_results_are_quoted() {
    let server = MockServer::start().await;
    let mut body = messages_body(json!([{"type": "text", "text": TWO_CALLS}]));
    body["tools"] = json!([
        {"name": "read_file", "input_schema": {"type": "object"}},
        {"name": "sum", "input_schema": {"type": "object"}}
    ]);
    let events = server.sse("messages", &body).await;
    let blocks = events_named(&events, "content_block_start");
    assert_eq!(blocks.len(), 2);
    let expected = [json!({"path": "/tmp/a.txt"}), json!({"a": 1, "b": 2})];
    for (index, (block, name)) in blocks.iter().zip(["read_file", "sum"]).enumerate() {
        assert_eq!(
            block["content_block"],
            json!({"type": "tool_use", "id": format!("toolu_{index}"), "name": name, "input": {}})
        );
        let fragments: Vec<String> = events_named(&events, "content_block_delta")
            .iter()
            .filter(|delta| delta["index"] == index)
            .filter_map(|delta| delta["delta"]["partial_json"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(fragments[0], "", "the first input_json_delta is empty");
        assert!((3..=4).contains(&fragments.len()), "{fragments:?}");
        let input: Value = serde_json::from_str(&fragments.concat()).expect("input JSON");
        assert_eq!(input, expected[index]);
    }
    let message_delta = &events_named(&events, "message_delta")[0];
    assert_eq!(message_delta["delta"]["stop_reason"], "tool_use");

    let messages = body["messages"].as_array_mut().expect("messages");
    messages.push(json!({"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_0", "name": "read_file", "input": expected[0]},
        {"type": "tool_use", "id": "toolu_1", "name": "sum", "input": expected[1]}
    ]}));
    messages.push(json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_0", "content": "hello  world"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "{\"total\":3}"}]}
    ]}));
    body["stream"] = json!(false);
    let (status, answer) = server.post_json("messages", &body).await;
    assert_eq!(status, 200);
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(answer["content"][0]["text"], super::two_calls_quoted());
    server.stop().await;
}

#[tokio::test]
async fn messages_reject_missing_max_tokens_and_blank_text_blocks() {
    let server = MockServer::start().await;
    let mut no_max = messages_body(json!("hi"));
    no_max
        .as_object_mut()
        .expect("object body")
        .remove("max_tokens");
    let (status, body) = server.post_json("messages", &no_max).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "invalid_request_error",
                                          "message": "max_tokens: Field required"}})
    );
    for blank in ["", " \n\t"] {
        let content = json!([{"type": "text", "text": "fine"}, {"type": "text", "text": blank}]);
        let (status, body) = server.post_json("messages", &messages_body(content)).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(
            body["error"]["message"],
            "messages.0.content.1.text: text content blocks must be non-empty"
        );
    }
    assert_eq!(server.stats().await["requests"]["messages"], 3);
    server.stop().await;
}

#[tokio::test]
async fn messages_errors_use_anthropic_shapes_in_and_out_of_streams() {
    let server = MockServer::start().await;
    for (status, error_type) in [
        (429, "rate_limit_error"),
        (529, "overloaded_error"),
        (503, "overloaded_error"),
        (500, "api_error"),
    ] {
        let directive = format!("@mock {{\"error_status\": {status}, \"retry_after_s\": 2}}");
        let response = server
            .post("messages", &messages_body(json!(directive)))
            .await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()),
            Some("2")
        );
        let body: Value = response.json().await.expect("error JSON");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], error_type);
    }

    let failing = messages_body(json!("@mock {\"stream_error_after\": 2}"));
    let events = server.sse("messages", &failing).await;
    let last = events.last().expect("events");
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(
        last.json(),
        json!({"type": "error", "error": {"type": "overloaded_error",
                                          "message": "mock stream error: overloaded"}})
    );
    assert_eq!(deltas(&events, "text_delta", "text").len(), 2);
    assert!(events_named(&events, "message_stop").is_empty());

    let cut = messages_body(json!("@mock {\"cut_after\": 1}"));
    let events = server.sse("messages", &cut).await;
    assert_eq!(event_names(&events).last(), Some(&"content_block_delta"));

    let mut limited = messages_body(json!("@mock {\"tokens\": 6}"));
    limited["max_tokens"] = json!(4);
    let events = server.sse("messages", &limited).await;
    let message_delta = &events_named(&events, "message_delta")[0];
    assert_eq!(message_delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(message_delta["usage"]["output_tokens"], 4);
    server.stop().await;
}
