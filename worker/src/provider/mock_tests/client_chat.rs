//! The Chat Completions route driven by the real OpenAI chat client (`ProviderKind::Mock`).

use std::time::Duration;

use chatd_shared::domain::ProviderKind;
use futures::StreamExt;
use serde_json::json;

use super::{
    ask, ask_with_tools, finish_reason, text_deltas, two_calls_answered, two_calls_quoted,
    usage_of, MockServer, DEADLINE, TWO_CALLS,
};
use crate::provider::{self, ErrorKind, FinishReason, ProviderEvent};
use chatd_mock_llm::reply_text;

const MOCK: ProviderKind = ProviderKind::Mock;

#[tokio::test]
async fn default_reply_is_predictable_one_token_per_chunk_with_usage() {
    let server = MockServer::start().await;
    let question = "What is the capital of France?";
    let events = server.events(MOCK, &ask(question)).await;
    let deltas = text_deltas(&events);
    assert_eq!(deltas.len(), 12);
    assert_eq!(deltas.concat(), reply_text(question, 12));
    assert!(deltas[..11]
        .iter()
        .all(|token| token.ends_with(' ') && token.trim().len() + 1 == token.len()));
    let usage = usage_of(&events).expect("usage event");
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
    let events = server.events(MOCK, &ask(question)).await;
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
        .call(
            MOCK,
            &ask("@mock {\"error_status\": 429, \"retry_after_s\": 7}"),
        )
        .await
        .expect_err("429 answer");
    assert_eq!(error.kind, ErrorKind::RateLimit);
    assert!(error.retryable);
    assert_eq!(error.status_code, Some(429));
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    assert!(error.message.contains("mock error"), "{}", error.message);

    let overloaded = server
        .call(MOCK, &ask("@mock {\"error_status\": 529}"))
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
            .call(MOCK, &ask(question))
            .await
            .expect_err("failing attempt");
        assert_eq!(
            (error.kind, error.retryable, error.status_code),
            (ErrorKind::Generic, true, Some(500)),
            "attempt {attempt}"
        );
    }
    let events = server.events(MOCK, &ask(question)).await;
    assert_eq!(text_deltas(&events).concat(), reply_text(question, 12));
    // A different request body has its own counter.
    let mut other = ask(question);
    other.model = "another-model".to_owned();
    assert!(server.call(MOCK, &other).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn cut_after_truncates_and_fail_times_turns_it_into_one_bad_attempt() {
    let server = MockServer::start().await;
    let items = server
        .call(MOCK, &ask("@mock {\"cut_after\": 3, \"tokens\": 10}"))
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
    let first = server
        .call(MOCK, &ask(question))
        .await
        .expect("stream starts");
    assert!(matches!(first.last(), Some(Err(error)) if error.message.contains("truncated")));
    let second = server.events(MOCK, &ask(question)).await;
    assert_eq!(text_deltas(&second).concat(), reply_text(question, 12));
    server.stop().await;
}

#[tokio::test]
async fn tool_calls_stream_in_fragments_and_follow_up_quotes_results() {
    let server = MockServer::start().await;
    let question = TWO_CALLS;
    let without_tools = server.events(MOCK, &ask(question)).await;
    assert_eq!(
        finish_reason(&without_tools),
        Some(&FinishReason::Stop),
        "no tools offered, so no tool calls"
    );
    let events = server.events(MOCK, &ask_with_tools(question)).await;
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

    let follow_up = two_calls_answered(ask_with_tools(question));
    let events = server.events(MOCK, &follow_up).await;
    assert_eq!(text_deltas(&events).concat(), two_calls_quoted());
    assert!(!events
        .iter()
        .any(|event| matches!(event, ProviderEvent::ToolCallStart { .. })));
    assert_eq!(finish_reason(&events), Some(&FinishReason::Stop));
    server.stop().await;
}

#[tokio::test]
async fn stream_error_is_classified_and_fail_times_lets_the_retry_succeed() {
    let server = MockServer::start().await;
    let question = "@mock {\"stream_error_after\": 2, \"fail_times\": 1, \"cached_tokens\": 3}";
    let first = server
        .call(MOCK, &ask(question))
        .await
        .expect("stream starts");
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first[..2]
        .iter()
        .all(|item| matches!(item, Ok(ProviderEvent::TextDelta(_)))));
    match &first[2] {
        Err(error) => {
            assert_eq!((error.kind, error.retryable), (ErrorKind::Overloaded, true));
            assert!(
                error.message.contains("mock stream error"),
                "{}",
                error.message
            );
        }
        Ok(event) => panic!("expected the stream error, got {event:?}"),
    }
    let second = server.events(MOCK, &ask(question)).await;
    assert_eq!(text_deltas(&second).concat(), reply_text(question, 12));
    let usage = usage_of(&second).expect("usage event");
    assert_eq!((usage.input_tokens, usage.cache_read_tokens), (4 + 7, 3));
    let limited = provider::ModelRequest {
        max_output_tokens: Some(5),
        ..ask("long answer\n@mock {\"tokens\": 9}")
    };
    let events = server.events(MOCK, &limited).await;
    assert_eq!(text_deltas(&events).len(), 5);
    assert_eq!(finish_reason(&events), Some(&FinishReason::Length));
    server.stop().await;
}

#[tokio::test]
async fn bad_directives_are_config_errors() {
    let server = MockServer::start().await;
    let error = server
        .call(MOCK, &ask("@mock {\"tokenz\": 3}"))
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
        .call(MOCK, &ask("@mock {tokens"))
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
    let mut stream = provider::stream(&server.http, &server.endpoint(MOCK), &request)
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
