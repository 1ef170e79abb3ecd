//! Request-mapping tests (the whole JSON body asserted, snapshot style) and one round trip over
//! a real socket through [`crate::provider::stream`].

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use chatd_shared::domain::{ContentPart, ProviderKind, Role};
use futures::StreamExt;
use serde_json::{json, Value};

use super::{build_request, input_object, EMPTY_ERROR_RESULT, RAW_ARGUMENTS_KEY};
use crate::provider::{
    self, ErrorKind, FinishReason, ModelRequest, PromptMessage, ProviderEndpoint, ProviderEvent,
    ToolSpec, DEFAULT_MAX_OUTPUT_TOKENS,
};

fn message(role: Role, content: Vec<ContentPart>) -> PromptMessage {
    PromptMessage { role, content }
}

fn tool_call(id: &str, name: &str, args: Value) -> ContentPart {
    ContentPart::ToolCall {
        tool_call_id: id.to_owned(),
        tool_name: name.to_owned(),
        args,
    }
}

fn tool_result(id: &str, result: Value, is_error: bool) -> ContentPart {
    ContentPart::ToolResult {
        tool_call_id: id.to_owned(),
        tool_name: "ignored".to_owned(),
        result,
        is_error,
    }
}

fn reasoning(text: &str, signature: Option<&str>) -> ContentPart {
    ContentPart::Reasoning {
        text: text.to_owned(),
        signature: signature.map(str::to_owned),
    }
}

fn body(messages: Vec<PromptMessage>) -> Value {
    let request = ModelRequest {
        model: "claude-test".to_owned(),
        messages,
        ..ModelRequest::default()
    };
    serde_json::to_value(build_request(&request)).expect("serialize request")
}

#[test]
fn system_is_lifted_roles_merge_and_tool_results_go_first() {
    let request = body(vec![
        message(Role::System, vec![ContentPart::text("Be brief.")]),
        message(Role::User, vec![ContentPart::text("Weather?")]),
        message(Role::User, vec![ContentPart::text("And time?")]),
        message(
            Role::Assistant,
            vec![
                tool_call("toolu_1", "weather", json!({"city": "Paris"})),
                tool_call("toolu_2", "time", json!({})),
            ],
        ),
        message(
            Role::Tool,
            vec![tool_result("toolu_1", json!({"temp": 21}), false)],
        ),
        message(Role::System, vec![ContentPart::text("Answer in French.")]),
        // User text that arrives before the second result is sent after both results.
        message(Role::User, vec![ContentPart::text("Hurry.")]),
        message(
            Role::Tool,
            vec![tool_result("toolu_2", json!("12:00"), false)],
        ),
    ]);
    assert_eq!(
        request,
        json!({
            "model": "claude-test",
            "max_tokens": DEFAULT_MAX_OUTPUT_TOKENS,
            "stream": true,
            "system": "Be brief.\n\nAnswer in French.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "text", "text": "And time?"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "{\"temp\":21}", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "12:00", "is_error": false},
                    {"type": "text", "text": "Hurry."}
                ]}
            ]
        })
    );
}

#[test]
fn assistant_blocks_are_replayed_in_order() {
    let search_results = json!([{"type": "web_search_result", "title": "T", "url": "https://example.com", "encrypted_content": "enc"}]);
    let request = body(vec![
        message(Role::User, vec![ContentPart::text("Search it.")]),
        message(
            Role::Assistant,
            vec![
                reasoning("Let me think.", Some("sig-1")),
                ContentPart::RedactedReasoning {
                    data: "opaque".to_owned(),
                },
                // Unsigned reasoning (another provider, or a stream cut before the signature).
                reasoning("unsigned thoughts", None),
                reasoning("empty signature", Some("")),
                ContentPart::text("Searching."),
                ContentPart::ProviderToolCall {
                    tool_call_id: "srvtoolu_1".to_owned(),
                    tool_name: "web_search".to_owned(),
                    args: json!({"query": "q"}),
                },
                ContentPart::ProviderToolResult {
                    tool_call_id: "srvtoolu_1".to_owned(),
                    block_type: "web_search_tool_result".to_owned(),
                    content: search_results.clone(),
                },
                ContentPart::Source {
                    url: "https://example.com".to_owned(),
                    title: None,
                },
                tool_call("toolu_9", "fetch", json!({"url": "https://example.com"})),
            ],
        ),
        message(
            Role::Tool,
            vec![tool_result("toolu_9", json!("page"), false)],
        ),
    ]);
    assert_eq!(
        request["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Searching."},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": search_results},
            {"type": "tool_use", "id": "toolu_9", "name": "fetch", "input": {"url": "https://example.com"}}
        ]})
    );
}

#[test]
fn blank_parts_and_messages_left_empty_are_dropped() {
    let request = body(vec![
        message(Role::System, vec![ContentPart::text("  \n")]),
        message(
            Role::User,
            vec![
                ContentPart::text(""),
                ContentPart::text("Hi"),
                ContentPart::text(" \t"),
            ],
        ),
        message(
            Role::Assistant,
            vec![
                ContentPart::text("   "),
                // Signed but blank: never reaches the provider either.
                reasoning(" ", Some("sig")),
                ContentPart::text("Hello."),
            ],
        ),
        // Only blank content, and parts a user message cannot carry: dropped entirely, so the
        // assistant messages around it merge.
        message(
            Role::User,
            vec![
                ContentPart::text("\n"),
                reasoning("user reasoning", Some("sig")),
                tool_call("toolu_x", "f", json!({})),
            ],
        ),
        message(Role::Assistant, vec![ContentPart::text("More.")]),
        message(Role::Assistant, vec![ContentPart::text("")]),
    ]);
    assert_eq!(
        request,
        json!({
            "model": "claude-test",
            "max_tokens": DEFAULT_MAX_OUTPUT_TOKENS,
            "stream": true,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Hello."},
                    {"type": "text", "text": "More."}
                ]}
            ]
        })
    );
}

#[test]
fn tool_results_empty_and_failed() {
    let request = body(vec![message(
        Role::Tool,
        vec![
            tool_result("toolu_1", json!(""), false),
            tool_result("toolu_2", json!(" "), true),
            tool_result("toolu_3", json!("boom"), true),
            tool_result("toolu_4", json!(null), false),
        ],
    )]);
    assert_eq!(
        request["messages"],
        json!([{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": false},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": EMPTY_ERROR_RESULT, "is_error": true},
            {"type": "tool_result", "tool_use_id": "toolu_3", "content": "boom", "is_error": true},
            {"type": "tool_result", "tool_use_id": "toolu_4", "content": "null", "is_error": false}
        ]}])
    );
}

#[test]
fn non_object_arguments_are_sent_as_objects() {
    assert_eq!(input_object(&json!({"a": 1})), json!({"a": 1}));
    assert_eq!(input_object(&Value::Null), json!({}));
    assert_eq!(input_object(&json!("  ")), json!({}));
    // A string holding an object (arguments kept as text by another protocol) is unpacked.
    assert_eq!(input_object(&json!("{\"a\": 1}")), json!({"a": 1}));
    // Invalid JSON kept verbatim, and JSON that is not an object, are wrapped.
    assert_eq!(
        input_object(&json!("{broken")),
        json!({RAW_ARGUMENTS_KEY: "{broken"})
    );
    assert_eq!(
        input_object(&json!("[1]")),
        json!({RAW_ARGUMENTS_KEY: "[1]"})
    );
    assert_eq!(
        input_object(&json!([1, 2])),
        json!({RAW_ARGUMENTS_KEY: [1, 2]})
    );
    let request = body(vec![message(
        Role::Assistant,
        vec![tool_call("toolu_1", "f", json!("{broken"))],
    )]);
    assert_eq!(
        request["messages"][0]["content"][0]["input"],
        json!({RAW_ARGUMENTS_KEY: "{broken"})
    );
}

#[test]
fn tools_and_max_tokens() {
    let request = ModelRequest {
        model: "claude-test".to_owned(),
        max_output_tokens: Some(256),
        messages: vec![message(Role::User, vec![ContentPart::text("Hi")])],
        tools: vec![
            ToolSpec {
                name: "weather".to_owned(),
                description: "Current weather".to_owned(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            },
            ToolSpec {
                name: "untyped".to_owned(),
                description: String::new(),
                parameters: json!({"properties": {}}),
            },
            ToolSpec {
                name: "no_schema".to_owned(),
                description: String::new(),
                parameters: Value::Null,
            },
        ],
        ..ModelRequest::default()
    };
    let body = serde_json::to_value(build_request(&request)).expect("serialize request");
    assert_eq!(body["max_tokens"], json!(256));
    assert_eq!(
        body["tools"],
        json!([
            {"name": "weather", "description": "Current weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "untyped", "input_schema": {"type": "object", "properties": {}}},
            {"name": "no_schema", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
}

/// What the test server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// Serves `status` + `body` on every path over a real socket, recording the requests.
async fn serve_once(
    status: StatusCode,
    content_type: &'static str,
    response_body: &'static str,
) -> (String, Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&seen);
    let router = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let recorder = Arc::clone(&recorder);
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                recorder.lock().expect("recorder lock").push(Seen {
                    path: uri.path().to_owned(),
                    headers,
                    body,
                });
                (
                    status,
                    [(axum::http::header::CONTENT_TYPE, content_type)],
                    response_body,
                )
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind test server");
    let address = listener.local_addr().expect("test server address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{address}/v1/"), seen, server)
}

fn endpoint(base_url: String, api_key: Option<&str>) -> ProviderEndpoint {
    ProviderEndpoint {
        kind: ProviderKind::Anthropic,
        base_url,
        api_key: api_key.map(str::to_owned),
    }
}

#[tokio::test]
async fn stream_sends_headers_and_body_and_parses_the_answer() {
    let (base_url, seen, server) = serve_once(
        StatusCode::OK,
        "text/event-stream",
        include_str!("fixtures/text.sse"),
    )
    .await;
    let request = ModelRequest {
        model: "claude-test".to_owned(),
        messages: vec![message(Role::User, vec![ContentPart::text("Hi")])],
        ..ModelRequest::default()
    };
    let http = reqwest::Client::new();
    let events: Vec<_> = provider::stream(
        &http,
        &endpoint(base_url.clone(), Some("sk-ant-test")),
        &request,
    )
    .await
    .expect("stream starts")
    .collect()
    .await;
    let events: Vec<ProviderEvent> = events
        .into_iter()
        .map(|event| event.expect("no stream error"))
        .collect();
    assert_eq!(
        events.first(),
        Some(&ProviderEvent::TextDelta("Hello".to_owned()))
    );
    assert_eq!(
        events.last(),
        Some(&ProviderEvent::Finish {
            reason: FinishReason::Stop,
            response_id: Some("msg_01XFDUDYJgAACzvnptvVoYEL".to_owned()),
        })
    );
    let header = |seen: &Seen, name: &str| {
        seen.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    {
        let seen = seen.lock().expect("recorder lock");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/v1/messages");
        assert_eq!(
            header(&seen[0], "x-api-key").as_deref(),
            Some("sk-ant-test")
        );
        assert_eq!(
            header(&seen[0], "anthropic-version").as_deref(),
            Some("2023-06-01")
        );
        assert_eq!(header(&seen[0], "authorization"), None);
        assert_eq!(seen[0].body, body(request.messages.clone()));
    }
    // Without a key no `x-api-key` header is sent.
    let _ = provider::stream(&http, &endpoint(base_url, None), &request)
        .await
        .expect("stream starts");
    assert_eq!(
        header(&seen.lock().expect("recorder lock")[1], "x-api-key"),
        None
    );
    server.abort();
}

#[tokio::test]
async fn error_answer_is_classified_from_the_anthropic_body() {
    let (base_url, _seen, server) = serve_once(
        StatusCode::from_u16(529).expect("status 529"),
        "application/json",
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    )
    .await;
    let request = ModelRequest {
        model: "claude-test".to_owned(),
        messages: vec![message(Role::User, vec![ContentPart::text("Hi")])],
        ..ModelRequest::default()
    };
    let result =
        provider::stream(&reqwest::Client::new(), &endpoint(base_url, None), &request).await;
    match result {
        Err(error) => {
            assert_eq!((error.kind, error.retryable), (ErrorKind::Overloaded, true));
            assert_eq!(error.status_code, Some(529));
            assert_eq!(error.message, "provider returned HTTP 529: Overloaded");
        }
        Ok(_) => panic!("a 529 answer must be an error"),
    }
    server.abort();
}

/// Base URLs work as Anthropic's SDKs take them (no `/v1`) and with the version alike.
#[test]
fn the_messages_url_takes_base_urls_with_or_without_the_version() {
    use super::messages_url;
    for base in [
        "https://api.anthropic.com",
        "https://api.anthropic.com/",
        "https://api.anthropic.com/v1",
        "https://api.anthropic.com/v1/",
    ] {
        assert_eq!(
            messages_url(base),
            "https://api.anthropic.com/v1/messages",
            "{base}"
        );
    }
    assert_eq!(
        messages_url("http://127.0.0.1:9090/proxy"),
        "http://127.0.0.1:9090/proxy/v1/messages"
    );
}
