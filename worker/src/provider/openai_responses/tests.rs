//! Recorded-fixture tests of the Responses stream parser. Every fixture is parsed whole, one
//! byte at a time and (by proptest) in random chunkings, with LF, CRLF and CR line endings, and
//! all must agree.

use std::collections::VecDeque;

use proptest::prelude::*;
use serde_json::json;

use super::parser::ResponsesStreamParser;
use crate::provider::http::{ParsedItem, StreamParser};
use crate::provider::{ErrorKind, FinishReason, ProviderEvent, Usage};

/// A parsed item with the error reduced to what tests compare.
pub(super) type Outcome = Result<ProviderEvent, (ErrorKind, bool, String)>;

pub(super) const TEXT: &str = include_str!("fixtures/text.sse");
const REASONING_SUMMARY: &str = include_str!("fixtures/reasoning_summary.sse");
const PARALLEL_FUNCTION_CALLS: &str = include_str!("fixtures/parallel_function_calls.sse");
const INCOMPLETE: &str = include_str!("fixtures/incomplete_max_output_tokens.sse");
const FAILED: &str = include_str!("fixtures/failed.sse");
const ERROR_EVENT: &str = include_str!("fixtures/error_event.sse");
const TRUNCATED: &str = include_str!("fixtures/truncated.sse");
const UNKNOWN_EVENTS: &str = include_str!("fixtures/unknown_events.sse");
const LLAMA_CPP: &str = include_str!("fixtures/llamacpp.sse");

const ALL_FIXTURES: [&str; 9] = [
    TEXT,
    REASONING_SUMMARY,
    PARALLEL_FUNCTION_CALLS,
    INCOMPLETE,
    FAILED,
    ERROR_EVENT,
    TRUNCATED,
    UNKNOWN_EVENTS,
    LLAMA_CPP,
];

pub(super) fn outcomes(items: impl IntoIterator<Item = ParsedItem>) -> Vec<Outcome> {
    items
        .into_iter()
        .map(|item| item.map_err(|error| (error.kind, error.retryable, error.message)))
        .collect()
}

fn run_parser<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Outcome> {
    let mut parser = ResponsesStreamParser::new();
    let mut out = VecDeque::new();
    for chunk in chunks {
        parser.push(chunk, &mut out);
    }
    parser.finish(&mut out);
    outcomes(out)
}

fn run_chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Outcome> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, bytes.len());
        chunks.push(&bytes[start..cut]);
        start = cut;
    }
    chunks.push(&bytes[start..]);
    run_parser(chunks)
}

/// The fixture with LF, CRLF and CR line endings (the JSON in it holds no raw newlines).
fn line_ending_variants(fixture: &str) -> [String; 3] {
    [
        fixture.to_owned(),
        fixture.replace('\n', "\r\n"),
        fixture.replace('\n', "\r"),
    ]
}

/// Parses whole and byte by byte in every line-ending variant, asserts all agree, returns the
/// events.
pub(super) fn parse(fixture: &str) -> Vec<Outcome> {
    let whole = run_parser([fixture.as_bytes()]);
    for variant in line_ending_variants(fixture) {
        let bytes = variant.as_bytes();
        assert_eq!(run_parser([bytes]), whole, "line endings change the events");
        assert_eq!(run_parser(bytes.chunks(1)), whole, "byte-at-a-time differs");
    }
    whole
}

pub(super) fn text(delta: &str) -> Outcome {
    Ok(ProviderEvent::TextDelta(delta.to_owned()))
}

fn reasoning(delta: &str) -> Outcome {
    Ok(ProviderEvent::ReasoningDelta(delta.to_owned()))
}

pub(super) fn start(index: usize, id: &str, name: &str) -> Outcome {
    Ok(ProviderEvent::ToolCallStart {
        index,
        id: id.to_owned(),
        name: name.to_owned(),
    })
}

pub(super) fn args(index: usize, delta: &str) -> Outcome {
    Ok(ProviderEvent::ToolCallArgsDelta {
        index,
        delta: delta.to_owned(),
    })
}

pub(super) fn end(index: usize, args: serde_json::Value) -> Outcome {
    Ok(ProviderEvent::ToolCallEnd { index, args })
}

fn usage(input_tokens: i64, output_tokens: i64) -> Usage {
    Usage {
        input_tokens,
        output_tokens,
        ..Usage::default()
    }
}

pub(super) fn finish(reason: FinishReason, response_id: &str) -> Outcome {
    Ok(ProviderEvent::Finish {
        reason,
        response_id: Some(response_id.to_owned()),
    })
}

fn stream_error(kind: ErrorKind, retryable: bool, detail: &str) -> Outcome {
    Err((kind, retryable, format!("provider stream error: {detail}")))
}

/// One SSE event as OpenAI frames it.
pub(super) fn event(data: serde_json::Value) -> String {
    let name = data["type"].as_str().unwrap_or("message").to_owned();
    format!("event: {name}\ndata: {data}\n\n")
}

pub(super) fn completed(response_id: &str) -> String {
    event(
        json!({"type": "response.completed", "response": {"id": response_id, "status": "completed", "output": []}}),
    )
}

#[test]
fn plain_text_with_usage() {
    assert_eq!(
        parse(TEXT),
        vec![
            text("Hello"),
            text(" wörld"),
            text("!\n"),
            text("How can I help?"),
            Ok(ProviderEvent::Usage(usage(37, 11))),
            finish(FinishReason::Stop, "resp_68a1f0c2d4e88190a7b3c5d6e7f80912"),
        ]
    );
}

#[test]
fn reasoning_summary_parts_then_text_with_cached_and_reasoning_tokens() {
    assert_eq!(
        parse(REASONING_SUMMARY),
        vec![
            reasoning("**Checking the units**\n\n"),
            reasoning("The user asks for Celsius."),
            reasoning("\n\n**Answering**\n\n"),
            reasoning("Convert and round."),
            text("It is "),
            text("21 °C."),
            Ok(ProviderEvent::Usage(Usage {
                input_tokens: 1432,
                output_tokens: 356,
                reasoning_tokens: 320,
                cache_read_tokens: 1280,
                cache_write_tokens: 0,
            })),
            finish(FinishReason::Stop, "resp_68a1f1aa00c48193b2e5f1c6d7e8f901"),
        ]
    );
}

#[test]
fn parallel_function_calls_with_fragmented_arguments() {
    assert_eq!(
        parse(PARALLEL_FUNCTION_CALLS),
        vec![
            start(0, "call_Qx7pR2mVbN4kT1sZ", "get_weather"),
            args(0, "{\"loc"),
            args(0, "ation\":\"Par"),
            args(0, "is\"}"),
            end(0, json!({"location": "Paris"})),
            start(1, "call_Hk9vL3nWcM5jU2tY", "get_time"),
            args(1, "{\"tz\":"),
            args(1, "\"CET\"}"),
            end(1, json!({"tz": "CET"})),
            Ok(ProviderEvent::Usage(usage(310, 42))),
            finish(
                FinishReason::ToolCalls,
                "resp_68a1f2c0e1f4819282a3b4c5d6e7f8a9"
            ),
        ]
    );
}

#[test]
fn incomplete_at_max_output_tokens_is_a_length_finish() {
    assert_eq!(
        parse(INCOMPLETE),
        vec![
            text("Once upon"),
            text(" a time"),
            Ok(ProviderEvent::Usage(usage(25, 16))),
            finish(
                FinishReason::Length,
                "resp_68a1f3d2b3c4819380e1f2a3b4c5d6e7"
            ),
        ]
    );
}

#[test]
fn other_incomplete_reasons() {
    let cases = [
        (
            json!({"reason": "content_filter"}),
            FinishReason::ContentFilter,
        ),
        (
            json!({"reason": "max_turns"}),
            FinishReason::Other("max_turns".to_owned()),
        ),
        (json!(null), FinishReason::Other("incomplete".to_owned())),
    ];
    for (details, reason) in cases {
        let fixture = event(json!({"type": "response.incomplete", "response": {
            "id": "resp_i", "status": "incomplete", "incomplete_details": details, "usage": null}}));
        assert_eq!(parse(&fixture), vec![finish(reason, "resp_i")]);
    }
}

#[test]
fn failed_response_is_a_classified_error_after_partial_text() {
    assert_eq!(
        parse(FAILED),
        vec![
            text("Partial"),
            stream_error(
                ErrorKind::Generic,
                true,
                "The model failed to generate a response."
            ),
        ]
    );
    let rate_limited = event(
        json!({"type": "response.failed", "response": {"id": "resp_f",
        "status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow down"}}}),
    );
    assert_eq!(
        parse(&rate_limited),
        vec![stream_error(ErrorKind::RateLimit, true, "slow down")]
    );
    let without_error = event(json!({"type": "response.failed", "response": {"id": "resp_f"}}));
    assert_eq!(
        parse(&without_error),
        vec![stream_error(
            ErrorKind::Generic,
            true,
            "the provider reported the response as failed"
        )]
    );
}

#[test]
fn error_event_is_classified_by_code() {
    assert_eq!(
        parse(ERROR_EVENT),
        vec![stream_error(
            ErrorKind::RateLimit,
            true,
            "Rate limit reached for gpt-4.1 on tokens per min (TPM): Limit 30000, Used 29500, \
             Requested 900. Please try again in 800ms."
        )]
    );
    // The nested shape, a quota error (not retryable).
    let nested = event(json!({"type": "error", "sequence_number": 3, "error": {
        "type": "insufficient_quota", "code": "insufficient_quota", "message": "quota"}}));
    assert_eq!(
        parse(&nested),
        vec![stream_error(ErrorKind::RateLimit, false, "quota")]
    );
    // No `type` in the data: the SSE event name, or an `error` object, says what it is.
    let named_only = "event: error\ndata: {\"code\":\"server_error\",\"message\":\"boom\"}\n\n";
    assert_eq!(
        parse(named_only),
        vec![stream_error(ErrorKind::Generic, true, "boom")]
    );
    let bare = "data: {\"error\":{\"message\":\"context too long\",\"type\":\"invalid_request_error\"}}\n\n";
    assert_eq!(
        parse(bare),
        vec![stream_error(ErrorKind::Config, false, "context too long")]
    );
}

#[test]
fn eof_before_a_terminal_event_is_truncation() {
    let truncated = Err((
        ErrorKind::Generic,
        true,
        crate::provider::ProviderError::truncated().message,
    ));
    // The fixture is cut off in the middle of an event's JSON.
    assert_eq!(
        parse(TRUNCATED),
        vec![text("Hello"), text(" there"), truncated.clone()]
    );
    assert_eq!(parse(""), vec![truncated.clone()]);
    // A `[DONE]` is no terminal event in this protocol.
    assert_eq!(
        parse(
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"a\"}\n\ndata: [DONE]\n\n"
        ),
        vec![text("a"), truncated]
    );
}

#[test]
fn unknown_events_comments_and_trailing_done_are_ignored() {
    assert_eq!(
        parse(UNKNOWN_EVENTS),
        vec![
            text("Sunny, "),
            text("22 °C."),
            Ok(ProviderEvent::Usage(usage(2100, 60))),
            finish(FinishReason::Stop, "resp_68a1f7b6f7089193c4c5d6e7f8091a2b"),
        ]
    );
}

#[test]
fn llama_cpp_stream_without_sequence_numbers_or_indexes() {
    assert_eq!(
        parse(LLAMA_CPP),
        vec![
            reasoning("The user"),
            reasoning(" wants the weather."),
            text("Let me"),
            text(" check."),
            start(0, "call_7mXo2aHt9Q", "get_weather"),
            args(0, "{\"location\":"),
            args(0, " \"Paris\"}"),
            end(0, json!({"location": "Paris"})),
            Ok(ProviderEvent::Usage(Usage {
                input_tokens: 48,
                output_tokens: 31,
                cache_read_tokens: 32,
                ..Usage::default()
            })),
            finish(
                FinishReason::ToolCalls,
                "resp_Zq3fW8yUeX1pL0aK7tB2nR5sV9cM4dHj"
            ),
        ]
    );
}

#[tokio::test]
async fn body_stream_gives_the_same_events_as_the_parser() {
    let pieces: Vec<reqwest::Result<bytes::Bytes>> = REASONING_SUMMARY
        .as_bytes()
        .chunks(7)
        .map(|chunk| Ok(bytes::Bytes::copy_from_slice(chunk)))
        .collect();
    let body = crate::provider::http::parse_body(
        futures::stream::iter(pieces),
        ResponsesStreamParser::new(),
    );
    let items: Vec<ParsedItem> = futures::StreamExt::collect(body).await;
    assert_eq!(outcomes(items), parse(REASONING_SUMMARY));
}

proptest! {
    #[test]
    fn any_chunking_of_any_fixture_gives_the_same_events(
        fixture_index in 0..ALL_FIXTURES.len(),
        line_ending in 0usize..3,
        cuts in proptest::collection::vec(0usize..8000, 0..24),
    ) {
        let fixture = ALL_FIXTURES[fixture_index];
        let variants = line_ending_variants(fixture);
        let bytes = variants[line_ending].as_bytes();
        let mut cuts = cuts;
        cuts.sort_unstable();
        prop_assert_eq!(run_chunked(bytes, &cuts), run_parser([fixture.as_bytes()]));
    }
}
