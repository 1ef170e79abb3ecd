//! Recorded-fixture tests of the Chat Completions parser and the request mapping. Every fixture
//! is parsed twice, whole and one byte at a time, and both must agree.

use std::collections::VecDeque;

use chatd_shared::domain::{ContentPart, Role};
use serde_json::json;

use super::parser::ChatStreamParser;
use super::{build_request, parse_body};
use crate::provider::http::StreamParser;
use crate::provider::{ErrorKind, FinishReason, ModelRequest, PromptMessage, ProviderEvent, Usage};

/// A parsed item with the error reduced to what tests compare.
type Outcome = Result<ProviderEvent, (ErrorKind, bool, String)>;

fn run_parser(chunks: &[&[u8]]) -> Vec<Outcome> {
    let mut parser = ChatStreamParser::new();
    let mut out = VecDeque::new();
    for chunk in chunks {
        parser.push(chunk, &mut out);
    }
    parser.finish(&mut out);
    out.into_iter()
        .map(|item| item.map_err(|error| (error.kind, error.retryable, error.message)))
        .collect()
}

/// Parses whole and byte by byte, asserts both agree, returns the events.
fn parse(fixture: &str) -> Vec<Outcome> {
    let bytes = fixture.as_bytes();
    let whole = run_parser(&[bytes]);
    let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run_parser(&single_bytes), whole, "byte-at-a-time differs");
    whole
}

fn text(delta: &str) -> Outcome {
    Ok(ProviderEvent::TextDelta(delta.to_owned()))
}

fn finish(reason: FinishReason, response_id: &str) -> Outcome {
    Ok(ProviderEvent::Finish {
        reason,
        response_id: Some(response_id.to_owned()),
    })
}

const TEXT_STREAM: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}

: keep-alive

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" wörld\n"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1736000000,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}

data: [DONE]

"#;

#[test]
fn text_stream_with_usage() {
    assert_eq!(
        parse(TEXT_STREAM),
        vec![
            text("Hello"),
            text(" wörld\n"),
            Ok(ProviderEvent::Usage(Usage {
                input_tokens: 9,
                output_tokens: 3,
                reasoning_tokens: 0,
                cache_read_tokens: 4,
                cache_write_tokens: 0,
            })),
            finish(FinishReason::Stop, "chatcmpl-1"),
        ]
    );
}

#[test]
fn reasoning_content_before_text_with_crlf_framing() {
    let fixture = concat!(
        "data: {\"id\":\"r1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Think\"}}]}\r\n\r\n",
        "data: {\"id\":\"r1\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"ing.\",\"content\":null}}]}\r\n\r\n",
        "data: {\"id\":\"r1\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"More.\"}}]}\r\n\r\n",
        "data: {\"id\":\"r1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Answer\"},\"finish_reason\":\"stop\"}]}\r\n\r\n",
        "data: {\"id\":\"r1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"completion_tokens_details\":{\"reasoning_tokens\":3}}}\r\n\r\n",
        "data: [DONE]\r\n\r\n",
    );
    assert_eq!(
        parse(fixture),
        vec![
            Ok(ProviderEvent::ReasoningDelta("Think".to_owned())),
            Ok(ProviderEvent::ReasoningDelta("ing.".to_owned())),
            Ok(ProviderEvent::ReasoningDelta("More.".to_owned())),
            text("Answer"),
            Ok(ProviderEvent::Usage(Usage {
                input_tokens: 5,
                output_tokens: 7,
                reasoning_tokens: 3,
                ..Usage::default()
            })),
            finish(FinishReason::Stop, "r1"),
        ]
    );
}

const PARALLEL_TOOL_CALLS: &str = r#"data: {"id":"chatcmpl-t","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-t","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"loc"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-t","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-t","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ation\": \"Paris\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-t","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\":"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-t","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\"CET\"}"}}]},"finish_reason":null}]}

data: {"id":"chatcmpl-t","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"id":"chatcmpl-t","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50}}

data: [DONE]

"#;

#[test]
fn parallel_tool_calls_with_fragmented_arguments() {
    let args = |index: usize, delta: &str| {
        Ok(ProviderEvent::ToolCallArgsDelta {
            index,
            delta: delta.to_owned(),
        })
    };
    assert_eq!(
        parse(PARALLEL_TOOL_CALLS),
        vec![
            Ok(ProviderEvent::ToolCallStart {
                index: 0,
                id: "call_a".to_owned(),
                name: "get_weather".to_owned(),
            }),
            args(0, "{\"loc"),
            Ok(ProviderEvent::ToolCallStart {
                index: 1,
                id: "call_b".to_owned(),
                name: "get_time".to_owned(),
            }),
            args(0, "ation\": \"Paris\"}"),
            args(1, "{\"tz\":"),
            args(1, "\"CET\"}"),
            Ok(ProviderEvent::ToolCallEnd {
                index: 0,
                args: json!({"location": "Paris"}),
            }),
            Ok(ProviderEvent::ToolCallEnd {
                index: 1,
                args: json!({"tz": "CET"}),
            }),
            Ok(ProviderEvent::Usage(Usage {
                input_tokens: 20,
                output_tokens: 30,
                ..Usage::default()
            })),
            finish(FinishReason::ToolCalls, "chatcmpl-t"),
        ]
    );
}

#[test]
fn whole_calls_without_index_and_invalid_arguments() {
    // Ollama-style: whole calls in one fragment, no `index`, finish_reason "stop".
    let fixture = r#"data: {"id":"o1","choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_x","function":{"name":"add","arguments":"{\"n\":1}"}}]}}]}

data: {"id":"o1","choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_y","function":{"name":"noop","arguments":""}},{"id":"call_z","function":{"name":"broken","arguments":"not json"}}]}}]}

data: {"id":"o1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: [DONE]
"#;
    let start = |index: usize, id: &str, name: &str| {
        Ok(ProviderEvent::ToolCallStart {
            index,
            id: id.to_owned(),
            name: name.to_owned(),
        })
    };
    let end =
        |index: usize, args: serde_json::Value| Ok(ProviderEvent::ToolCallEnd { index, args });
    assert_eq!(
        parse(fixture),
        vec![
            start(0, "call_x", "add"),
            Ok(ProviderEvent::ToolCallArgsDelta {
                index: 0,
                delta: "{\"n\":1}".to_owned(),
            }),
            start(1, "call_y", "noop"),
            start(2, "call_z", "broken"),
            Ok(ProviderEvent::ToolCallArgsDelta {
                index: 2,
                delta: "not json".to_owned(),
            }),
            end(0, json!({"n": 1})),
            end(1, json!({})),
            end(2, json!("not json")),
            finish(FinishReason::ToolCalls, "o1"),
        ]
    );
}

#[test]
fn every_finish_reason() {
    let cases = [
        ("stop", FinishReason::Stop),
        ("length", FinishReason::Length),
        ("tool_calls", FinishReason::ToolCalls),
        ("content_filter", FinishReason::ContentFilter),
        ("eos_token", FinishReason::Other("eos_token".to_owned())),
    ];
    for (wire, reason) in cases {
        let fixture = format!(
            "data: {{\"id\":\"f\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"x\"}},\"finish_reason\":null}}]}}\n\n\
             data: {{\"id\":\"f\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"{wire}\"}}]}}\n\n\
             data: [DONE]\n\n"
        );
        assert_eq!(
            parse(&fixture),
            vec![text("x"), finish(reason, "f")],
            "{wire}"
        );
    }
}

#[test]
fn in_stream_error_object_ends_the_stream() {
    let fixture = r#"data: {"id":"e1","choices":[{"index":0,"delta":{"content":"par"}}]}

data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","code":null}}

data: {"id":"e1","choices":[{"index":0,"delta":{"content":"ignored"}}]}

data: [DONE]

"#;
    assert_eq!(
        parse(fixture),
        vec![
            text("par"),
            Err((
                ErrorKind::Generic,
                true,
                "provider stream error: The server had an error while processing your request."
                    .to_owned()
            )),
        ]
    );
    let rate_limited =
        "event: error\ndata: {\"type\":\"rate_limit_error\",\"message\":\"slow down\"}\n\n";
    assert_eq!(
        parse(rate_limited),
        vec![Err((
            ErrorKind::RateLimit,
            true,
            "provider stream error: slow down".to_owned()
        ))]
    );
}

#[test]
fn eof_without_done_or_finish_is_truncation() {
    let fixture =
        "data: {\"id\":\"t\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"half\"}}]}\n\n";
    let outcome = parse(fixture);
    assert_eq!(outcome.len(), 2);
    assert_eq!(outcome[0], text("half"));
    match &outcome[1] {
        Err((ErrorKind::Generic, true, message)) => assert!(message.contains("truncated")),
        other => panic!("expected a truncation error, got {other:?}"),
    }
    // An empty body is truncated too.
    assert!(matches!(
        &parse("")[..],
        [Err((ErrorKind::Generic, true, _))]
    ));
}

#[test]
fn eof_after_finish_reason_is_success_and_last_event_needs_no_blank_line() {
    let fixture = "data: {\"id\":\"n\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"length\"}]}";
    assert_eq!(
        parse(fixture),
        vec![text("ok"), finish(FinishReason::Length, "n")]
    );
}

#[test]
fn malformed_chunk_is_a_retryable_error() {
    let outcome = parse("data: {\"choices\": [\n\n");
    assert!(
        matches!(&outcome[..], [Err((ErrorKind::Generic, true, message))] if message.contains("malformed"))
    );
}

#[tokio::test]
async fn body_stream_gives_the_same_events_as_the_parser() {
    let pieces: Vec<reqwest::Result<bytes::Bytes>> = TEXT_STREAM
        .as_bytes()
        .chunks(7)
        .map(|chunk| Ok(bytes::Bytes::copy_from_slice(chunk)))
        .collect();
    let items: Vec<_> =
        futures::StreamExt::collect::<Vec<_>>(parse_body(futures::stream::iter(pieces))).await;
    let outcomes: Vec<Outcome> = items
        .into_iter()
        .map(|item| item.map_err(|error| (error.kind, error.retryable, error.message)))
        .collect();
    assert_eq!(outcomes, parse(TEXT_STREAM));
}

#[test]
fn request_mapping() {
    let request = ModelRequest {
        model: "gpt-test".to_owned(),
        max_output_tokens: Some(256),
        messages: vec![
            PromptMessage {
                role: Role::System,
                content: vec![ContentPart::text("Be brief.")],
            },
            PromptMessage {
                role: Role::User,
                content: vec![
                    ContentPart::text("What is the weather?"),
                    ContentPart::text("  "),
                    ContentPart::text("And the time?"),
                ],
            },
            PromptMessage {
                role: Role::Assistant,
                content: vec![
                    ContentPart::Reasoning {
                        text: "secret".to_owned(),
                        signature: None,
                    },
                    ContentPart::text("Checking."),
                    ContentPart::ToolCall {
                        tool_call_id: "call_1".to_owned(),
                        tool_name: "weather".to_owned(),
                        args: json!({"city": "Paris"}),
                    },
                    ContentPart::ToolCall {
                        tool_call_id: "call_2".to_owned(),
                        tool_name: "time".to_owned(),
                        args: json!("{broken"),
                    },
                ],
            },
            PromptMessage {
                role: Role::Tool,
                content: vec![
                    ContentPart::ToolResult {
                        tool_call_id: "call_1".to_owned(),
                        tool_name: "weather".to_owned(),
                        result: json!({"temp": 21}),
                        is_error: false,
                    },
                    ContentPart::ToolResult {
                        tool_call_id: "call_2".to_owned(),
                        tool_name: "time".to_owned(),
                        result: json!("12:00"),
                        is_error: false,
                    },
                ],
            },
            PromptMessage {
                role: Role::Assistant,
                content: vec![
                    ContentPart::text(""),
                    ContentPart::Reasoning {
                        text: "only thoughts".to_owned(),
                        signature: None,
                    },
                ],
            },
        ],
        ..ModelRequest::default()
    };
    let body = serde_json::to_value(build_request(&request)).expect("serialize request");
    assert_eq!(
        body,
        json!({
            "model": "gpt-test",
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 256,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the weather?\nAnd the time?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{broken"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}"},
                {"role": "tool", "tool_call_id": "call_2", "content": "12:00"}
            ]
        })
    );
}
