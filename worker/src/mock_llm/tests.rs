//! Through-the-boundary tests: the mock on a real socket, called by the real provider client.

use std::time::Duration;

use chatd_shared::domain::{ContentPart, ProviderKind, Role};
use futures::StreamExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{reply_text, run, tool_results_reply};
use crate::provider::{
    self, ErrorKind, FinishReason, ModelRequest, PromptMessage, ProviderEndpoint, ProviderError,
    ProviderEvent,
};

/// Generous bound for conditions that should hold in milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

struct MockServer {
    http: reqwest::Client,
    endpoint: ProviderEndpoint,
    base_url: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl MockServer {
    async fn start() -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let address = listener.local_addr().expect("mock address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(listener, shutdown.clone()));
        let base_url = format!("http://{address}/v1/");
        MockServer {
            http: reqwest::Client::new(),
            endpoint: ProviderEndpoint {
                kind: ProviderKind::Mock,
                base_url: base_url.clone(),
                api_key: Some("test-key".to_owned()),
            },
            base_url,
            shutdown,
            task,
        }
    }

    async fn call(
        &self,
        request: &ModelRequest,
    ) -> Result<Vec<Result<ProviderEvent, ProviderError>>, ProviderError> {
        let stream = provider::stream(&self.http, &self.endpoint, request).await?;
        Ok(tokio::time::timeout(DEADLINE, stream.collect::<Vec<_>>())
            .await
            .expect("stream ends before the deadline"))
    }

    /// A call that must succeed end to end.
    async fn events(&self, request: &ModelRequest) -> Vec<ProviderEvent> {
        self.call(request)
            .await
            .expect("request accepted")
            .into_iter()
            .map(|item| item.expect("no stream error"))
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("mock shuts down before the deadline")
            .expect("mock task does not panic");
        result.expect("mock serves without error");
    }
}

fn message(role: Role, content: Vec<ContentPart>) -> PromptMessage {
    PromptMessage { role, content }
}

fn ask(text: &str) -> ModelRequest {
    ModelRequest {
        model: "mock-model".to_owned(),
        messages: vec![
            message(Role::System, vec![ContentPart::text("You are a test.")]),
            message(Role::User, vec![ContentPart::text(text)]),
        ],
        max_output_tokens: None,
        ..ModelRequest::default()
    }
}

fn text_deltas(events: &[ProviderEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            ProviderEvent::TextDelta(delta) => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

fn finish_reason(events: &[ProviderEvent]) -> Option<&FinishReason> {
    match events.last() {
        Some(ProviderEvent::Finish { reason, .. }) => Some(reason),
        _ => None,
    }
}

#[tokio::test]
async fn default_reply_is_predictable_one_token_per_chunk_with_usage() {
    let server = MockServer::start().await;
    let question = "What is the capital of France?";
    let events = server.events(&ask(question)).await;
    let deltas = text_deltas(&events);
    assert_eq!(deltas.len(), 12);
    assert_eq!(deltas.concat(), reply_text(question, 12));
    assert!(deltas[..11]
        .iter()
        .all(|token| token.ends_with(' ') && token.trim().len() + 1 == token.len()));
    let usage = events.iter().find_map(|event| match event {
        ProviderEvent::Usage(usage) => Some(*usage),
        _ => None,
    });
    let usage = usage.expect("usage event");
    assert_eq!(
        usage.input_tokens,
        4 + 6,
        "words of the system and user messages"
    );
    assert_eq!(usage.output_tokens, 12);
    match events.last() {
        Some(ProviderEvent::Finish {
            reason,
            response_id,
        }) => {
            assert_eq!(reason, &FinishReason::Stop);
            assert!(response_id
                .as_deref()
                .is_some_and(|id| id.starts_with("chatcmpl-mock-")));
        }
        other => panic!("expected finish last, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn tokens_reasoning_pacing_and_stall_keep_the_text_exact() {
    let server = MockServer::start().await;
    let question = "Count for me\n@mock {\"tokens\": 5, \"reasoning_tokens\": 3, \"tokens_per_second\": 500, \"ttft_ms\": 5, \"stall_ms\": 5}";
    let events = server.events(&ask(question)).await;
    let reasoning: Vec<&ProviderEvent> = events
        .iter()
        .filter(|event| matches!(event, ProviderEvent::ReasoningDelta(_)))
        .collect();
    assert_eq!(reasoning.len(), 3);
    assert!(matches!(
        events.first(),
        Some(ProviderEvent::ReasoningDelta(_))
    ));
    assert_eq!(text_deltas(&events).concat(), reply_text(question, 5));
    assert!(events.contains(&ProviderEvent::Usage(provider::Usage {
        input_tokens: 4 + 14,
        output_tokens: 8,
        reasoning_tokens: 3,
        ..provider::Usage::default()
    })));
    server.stop().await;
}

#[tokio::test]
async fn error_status_is_classified_with_retry_after() {
    let server = MockServer::start().await;
    let error = server
        .call(&ask("@mock {\"error_status\": 429, \"retry_after_s\": 7}"))
        .await
        .expect_err("429 answer");
    assert_eq!(error.kind, ErrorKind::RateLimit);
    assert!(error.retryable);
    assert_eq!(error.status_code, Some(429));
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    assert!(error.message.contains("mock error"), "{}", error.message);

    let overloaded = server
        .call(&ask("@mock {\"error_status\": 529}"))
        .await
        .expect_err("529 answer");
    assert_eq!(
        (overloaded.kind, overloaded.retryable),
        (ErrorKind::Overloaded, true)
    );
    assert_eq!(overloaded.retry_after, None);
    server.stop().await;
}

#[tokio::test]
async fn fail_times_fails_identical_requests_then_succeeds() {
    let server = MockServer::start().await;
    let question = "@mock {\"fail_times\": 2}\nflaky";
    for attempt in 0..2 {
        let error = server
            .call(&ask(question))
            .await
            .expect_err("failing attempt");
        assert_eq!(
            (error.kind, error.retryable, error.status_code),
            (ErrorKind::Generic, true, Some(500)),
            "attempt {attempt}"
        );
    }
    let events = server.events(&ask(question)).await;
    assert_eq!(text_deltas(&events).concat(), reply_text(question, 12));
    // A different request body has its own counter.
    let mut other = ask(question);
    other.model = "another-model".to_owned();
    assert!(server.call(&other).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn cut_after_truncates_and_fail_times_turns_it_into_one_bad_attempt() {
    let server = MockServer::start().await;
    let items = server
        .call(&ask("@mock {\"cut_after\": 3, \"tokens\": 10}"))
        .await
        .expect("stream starts");
    assert_eq!(items.len(), 4);
    assert!(items[..3]
        .iter()
        .all(|item| matches!(item, Ok(ProviderEvent::TextDelta(_)))));
    match &items[3] {
        Err(error) => {
            assert_eq!((error.kind, error.retryable), (ErrorKind::Generic, true));
            assert!(error.message.contains("truncated"), "{}", error.message);
        }
        Ok(event) => panic!("expected truncation, got {event:?}"),
    }

    let question = "@mock {\"cut_after\": 2, \"fail_times\": 1}";
    let first = server.call(&ask(question)).await.expect("stream starts");
    assert!(matches!(first.last(), Some(Err(error)) if error.message.contains("truncated")));
    let second = server.events(&ask(question)).await;
    assert_eq!(text_deltas(&second).concat(), reply_text(question, 12));
    server.stop().await;
}

#[tokio::test]
async fn tool_calls_stream_in_fragments_and_follow_up_quotes_results() {
    let server = MockServer::start().await;
    let question = r#"@mock {"tool_calls": [{"name": "read_file", "arguments": {"path": "/tmp/a.txt"}}, {"name": "sum", "arguments": {"a": 1, "b": 2}}]}"#;
    let events = server.events(&ask(question)).await;
    let starts: Vec<(usize, &str, &str)> = events
        .iter()
        .filter_map(|event| match event {
            ProviderEvent::ToolCallStart { index, id, name } => {
                Some((*index, id.as_str(), name.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        vec![(0, "call_0", "read_file"), (1, "call_1", "sum")]
    );
    for (call, expected) in [
        (0, json!({"path": "/tmp/a.txt"})),
        (1, json!({"a": 1, "b": 2})),
    ] {
        let fragments: Vec<&str> = events
            .iter()
            .filter_map(|event| match event {
                ProviderEvent::ToolCallArgsDelta { index, delta } if *index == call => {
                    Some(delta.as_str())
                }
                _ => None,
            })
            .collect();
        assert!((2..=3).contains(&fragments.len()), "{fragments:?}");
        let streamed: serde_json::Value =
            serde_json::from_str(&fragments.concat()).expect("arguments JSON");
        assert_eq!(streamed, expected);
        assert!(events.contains(&ProviderEvent::ToolCallEnd {
            index: call,
            args: expected
        }));
    }
    assert!(text_deltas(&events).is_empty());
    assert_eq!(finish_reason(&events), Some(&FinishReason::ToolCalls));

    let mut follow_up = ask(question);
    follow_up.messages.push(message(
        Role::Assistant,
        vec![
            ContentPart::ToolCall {
                tool_call_id: "call_0".to_owned(),
                tool_name: "read_file".to_owned(),
                args: json!({"path": "/tmp/a.txt"}),
            },
            ContentPart::ToolCall {
                tool_call_id: "call_1".to_owned(),
                tool_name: "sum".to_owned(),
                args: json!({"a": 1, "b": 2}),
            },
        ],
    ));
    follow_up.messages.push(message(
        Role::Tool,
        vec![
            ContentPart::ToolResult {
                tool_call_id: "call_0".to_owned(),
                tool_name: "read_file".to_owned(),
                result: json!("hello  world"),
                is_error: false,
            },
            ContentPart::ToolResult {
                tool_call_id: "call_1".to_owned(),
                tool_name: "sum".to_owned(),
                result: json!({"total": 3}),
                is_error: false,
            },
        ],
    ));
    let events = server.events(&follow_up).await;
    assert_eq!(
        text_deltas(&events).concat(),
        tool_results_reply([("read_file", "hello  world"), ("sum", "{\"total\":3}")])
    );
    assert!(!events
        .iter()
        .any(|event| matches!(event, ProviderEvent::ToolCallStart { .. })));
    assert_eq!(finish_reason(&events), Some(&FinishReason::Stop));
    server.stop().await;
}

#[tokio::test]
async fn bad_directives_are_config_errors() {
    let server = MockServer::start().await;
    let error = server
        .call(&ask("@mock {\"tokenz\": 3}"))
        .await
        .expect_err("400 answer");
    assert_eq!(
        (error.kind, error.retryable, error.status_code),
        (ErrorKind::Config, false, Some(400))
    );
    assert!(
        error.message.contains("unknown field `tokenz`"),
        "{}",
        error.message
    );
    let error = server
        .call(&ask("@mock {tokens"))
        .await
        .expect_err("400 answer");
    assert_eq!(error.kind, ErrorKind::Config);
    assert!(error.message.contains("bad JSON"), "{}", error.message);
    server.stop().await;
}

#[tokio::test]
async fn non_streaming_answer_and_health() {
    let server = MockServer::start().await;
    let health = server
        .http
        .get(server.base_url.replace("/v1/", "/healthz"))
        .send()
        .await
        .expect("healthz answers");
    assert!(health.status().is_success());
    let question = "@mock {\"tokens\": 4, \"reasoning_tokens\": 2}";
    let answer: serde_json::Value = server
        .http
        .post(format!("{}chat/completions", server.base_url))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]}))
        .send()
        .await
        .expect("completion answers")
        .json()
        .await
        .expect("completion JSON");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        reply_text(question, 4)
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["completion_tokens"], 6);
    assert_eq!(
        answer["usage"]["completion_tokens_details"]["reasoning_tokens"],
        2
    );
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_client_stops_its_stream() {
    let server = MockServer::start().await;
    // 1000 tokens at 20 per second would keep the stream open for 50 s.
    let request = ask("@mock {\"tokens\": 1000, \"tokens_per_second\": 20}");
    let mut stream = provider::stream(&server.http, &server.endpoint, &request)
        .await
        .expect("stream starts");
    let first = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("first event in time");
    assert!(matches!(first, Some(Ok(ProviderEvent::TextDelta(_)))));
    drop(stream);
    // Graceful shutdown waits for open responses, so it finishing in time shows that the
    // generator went away with the client.
    server.stop().await;
}
