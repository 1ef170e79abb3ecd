//! The Responses and Anthropic routes driven by the real provider clients
//! (`ProviderKind::OpenaiResponses`, `ProviderKind::Anthropic`).

use std::time::Duration;

use chatd_shared::domain::{ContentPart, ProviderKind, Role};
use serde_json::json;

use super::{
    ask, ask_with_tools, finish_reason, message, text_deltas, two_calls_answered, two_calls_quoted,
    usage_of, MockServer, TWO_CALLS,
};
use crate::provider::{ErrorKind, FinishReason, ProviderEvent, ResponseChain};
use chatd_mock_llm::reply::{count_words, reasoning_signature, reasoning_text};
use chatd_mock_llm::reply_text;

const ANTHROPIC: ProviderKind = ProviderKind::Anthropic;
const RESPONSES: ProviderKind = ProviderKind::OpenaiResponses;

fn reasoning_deltas(events: &[ProviderEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            ProviderEvent::ReasoningDelta(delta) => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

fn tool_starts(events: &[ProviderEvent]) -> Vec<(usize, &str, &str)> {
    events
        .iter()
        .filter_map(|event| match event {
            ProviderEvent::ToolCallStart { index, id, name } => {
                Some((*index, id.as_str(), name.as_str()))
            }
            _ => None,
        })
        .collect()
}

fn tool_ends(events: &[ProviderEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|event| match event {
            ProviderEvent::ToolCallEnd { args, .. } => Some(args.clone()),
            _ => None,
        })
        .collect()
}

fn response_id(events: &[ProviderEvent]) -> Option<String> {
    match events.last() {
        Some(ProviderEvent::Finish { response_id, .. }) => response_id.clone(),
        _ => None,
    }
}

const THINK: &str =
    "Think first\n@mock {\"tokens\": 3, \"reasoning_tokens\": 2, \"cached_tokens\": 2}";

#[tokio::test]
async fn anthropic_client_streams_thinking_text_usage_and_tool_calls() {
    let server = MockServer::start().await;
    let events = server.events(ANTHROPIC, &ask(THINK)).await;
    let thinking = reasoning_text(THINK, 2);
    assert_eq!(reasoning_deltas(&events), thinking);
    assert!(
        events.contains(&ProviderEvent::ReasoningSignature(reasoning_signature(
            &thinking
        )))
    );
    assert_eq!(text_deltas(&events).concat(), reply_text(THINK, 3));
    let usage = usage_of(&events).expect("usage event");
    assert_eq!(
        (
            usage.input_tokens,
            usage.cache_read_tokens,
            usage.output_tokens
        ),
        (4 + count_words(THINK) as i64, 2, 5)
    );
    assert_eq!(finish_reason(&events), Some(&FinishReason::Stop));
    assert!(response_id(&events).is_some_and(|id| id.starts_with("msg_mock_")));

    let calls = server.events(ANTHROPIC, &ask_with_tools(TWO_CALLS)).await;
    assert_eq!(
        tool_starts(&calls),
        [(0, "toolu_0", "read_file"), (1, "toolu_1", "sum")]
    );
    assert_eq!(
        tool_ends(&calls),
        [json!({"path": "/tmp/a.txt"}), json!({"a": 1, "b": 2})]
    );
    assert_eq!(finish_reason(&calls), Some(&FinishReason::ToolCalls));

    let answer = server
        .events(ANTHROPIC, &two_calls_answered(ask_with_tools(TWO_CALLS)))
        .await;
    assert_eq!(text_deltas(&answer).concat(), two_calls_quoted());
    assert_eq!(finish_reason(&answer), Some(&FinishReason::Stop));
    server.stop().await;
}

#[tokio::test]
async fn anthropic_client_drops_blank_parts_that_the_api_rejects() {
    let server = MockServer::start().await;
    let mut request = ask("hello");
    request
        .messages
        .insert(1, message(Role::System, vec![ContentPart::text(" ")]));
    request.messages.push(message(
        Role::Assistant,
        vec![ContentPart::text("earlier answer"), ContentPart::text("\n")],
    ));
    request.messages.push(message(
        Role::User,
        vec![ContentPart::text("  "), ContentPart::text("follow-up")],
    ));
    let events = server.events(ANTHROPIC, &request).await;
    assert_eq!(text_deltas(&events).concat(), reply_text("follow-up", 12));
    server.stop().await;
}

#[tokio::test]
async fn anthropic_client_classifies_errors_stream_errors_and_cuts() {
    let server = MockServer::start().await;
    let limited = server
        .call(
            ANTHROPIC,
            &ask("@mock {\"error_status\": 429, \"retry_after_s\": 7}"),
        )
        .await
        .expect_err("429 answer");
    assert_eq!(
        (limited.kind, limited.retryable, limited.retry_after),
        (ErrorKind::RateLimit, true, Some(Duration::from_secs(7)))
    );
    let overloaded = server
        .call(ANTHROPIC, &ask("@mock {\"error_status\": 529}"))
        .await
        .expect_err("529 answer");
    assert_eq!(
        (overloaded.kind, overloaded.retryable),
        (ErrorKind::Overloaded, true)
    );

    let items = server
        .call(ANTHROPIC, &ask("@mock {\"stream_error_after\": 1}"))
        .await
        .expect("stream starts");
    assert!(matches!(
        items.first(),
        Some(Ok(ProviderEvent::TextDelta(_)))
    ));
    match items.last() {
        Some(Err(error)) => {
            assert_eq!((error.kind, error.retryable), (ErrorKind::Overloaded, true))
        }
        other => panic!("expected the stream error last, got {other:?}"),
    }
    let cut = server
        .call(ANTHROPIC, &ask("@mock {\"cut_after\": 2}"))
        .await
        .expect("stream starts");
    assert!(matches!(cut.last(), Some(Err(error)) if error.message.contains("truncated")));
    server.stop().await;
}

#[tokio::test]
async fn responses_client_streams_reasoning_text_usage_and_tool_calls() {
    let server = MockServer::start().await;
    let events = server.events(RESPONSES, &ask(THINK)).await;
    assert_eq!(reasoning_deltas(&events), reasoning_text(THINK, 2));
    assert_eq!(text_deltas(&events).concat(), reply_text(THINK, 3));
    let usage = usage_of(&events).expect("usage event");
    assert_eq!(
        (
            usage.input_tokens,
            usage.cache_read_tokens,
            usage.output_tokens,
            usage.reasoning_tokens
        ),
        (4 + count_words(THINK) as i64, 2, 5, 2)
    );
    assert_eq!(finish_reason(&events), Some(&FinishReason::Stop));
    assert!(response_id(&events).is_some_and(|id| id.starts_with("resp_mock_")));

    let calls = server.events(RESPONSES, &ask_with_tools(TWO_CALLS)).await;
    assert_eq!(
        tool_starts(&calls),
        [(0, "call_0", "read_file"), (1, "call_1", "sum")]
    );
    assert_eq!(
        tool_ends(&calls),
        [json!({"path": "/tmp/a.txt"}), json!({"a": 1, "b": 2})]
    );
    assert_eq!(finish_reason(&calls), Some(&FinishReason::ToolCalls));

    let items = server
        .call(RESPONSES, &ask("@mock {\"stream_error_after\": 1}"))
        .await
        .expect("stream starts");
    match items.last() {
        Some(Err(error)) => {
            assert_eq!((error.kind, error.retryable), (ErrorKind::Overloaded, true))
        }
        other => panic!("expected the stream error last, got {other:?}"),
    }
    let limited = server
        .call(RESPONSES, &ask("@mock {\"error_status\": 429}"))
        .await
        .expect_err("429 answer");
    assert_eq!(limited.kind, ErrorKind::RateLimit);
    server.stop().await;
}

#[tokio::test]
async fn responses_client_chains_and_replays_history_when_the_chain_is_gone() {
    let server = MockServer::start().await;
    let first = server.events(RESPONSES, &ask_with_tools(TWO_CALLS)).await;
    let previous_response_id = response_id(&first).expect("response id");

    // Messages: system, user, assistant calls, tool results; only the results are new.
    let mut chained = two_calls_answered(ask_with_tools(TWO_CALLS));
    chained.chain = Some(ResponseChain {
        previous_response_id,
        new_from: 3,
    });
    let answer = server.events(RESPONSES, &chained).await;
    assert_eq!(text_deltas(&answer).concat(), two_calls_quoted());
    let usage = usage_of(&answer).expect("usage event");
    assert_eq!(
        usage.input_tokens,
        4 + count_words(TWO_CALLS) as i64 + 3,
        "the stored history counts as input"
    );
    let stats = server.stats().await;
    assert_eq!(stats["requests"]["responses"], 2);
    assert_eq!(stats["requests"]["responses_chained"], 1);

    let forgotten = server
        .http
        .post(format!("{}/mock/forget", server.root))
        .send()
        .await
        .expect("forget answers");
    assert!(forgotten.status().is_success());
    let replayed = server.events(RESPONSES, &chained).await;
    assert_eq!(text_deltas(&replayed).concat(), two_calls_quoted());
    let stats = server.stats().await;
    assert_eq!(
        stats["requests"]["responses"], 4,
        "the refused chained request, then the whole history"
    );
    assert_eq!(stats["requests"]["responses_chained"], 1);
    server.stop().await;
}
