//! Recorded-fixture tests of the Anthropic Messages stream parser. Fixtures live in
//! `fixtures/*.sse`, written after Anthropic's documented streams. Every fixture must give the
//! same events whole, one byte at a time, in any chunking (proptest) and with CRLF or CR line
//! endings.

use std::collections::VecDeque;

use proptest::prelude::*;
use serde_json::json;

use super::parse_body;
use super::parser::AnthropicStreamParser;
use crate::provider::http::StreamParser;
use crate::provider::{ErrorKind, FinishReason, ProviderEvent, Usage};

/// A parsed item with the error reduced to what tests compare.
type Outcome = Result<ProviderEvent, (ErrorKind, bool, String)>;

const TEXT: &str = include_str!("fixtures/text.sse");
const THINKING: &str = include_str!("fixtures/thinking.sse");
const TOOL_USE: &str = include_str!("fixtures/tool_use.sse");
const USAGE_CUMULATIVE: &str = include_str!("fixtures/usage_cumulative.sse");
const SERVER_TOOL: &str = include_str!("fixtures/server_tool.sse");
const ERROR_MID_STREAM: &str = include_str!("fixtures/error_mid_stream.sse");
const TRUNCATED: &str = include_str!("fixtures/truncated.sse");
const UNKNOWN_EVENTS: &str = include_str!("fixtures/unknown_events.sse");
/// `__STOP_REASON__` is replaced by each stop reason in turn.
const STOP_REASON_TEMPLATE: &str = include_str!("fixtures/stop_reason_template.sse");

const STOP_REASONS: &[&str] = &[
    "end_turn",
    "stop_sequence",
    "max_tokens",
    "tool_use",
    "refusal",
    "pause_turn",
    "model_context_window_exceeded",
];

fn stop_reason_fixture(reason: &str) -> String {
    STOP_REASON_TEMPLATE.replace("__STOP_REASON__", reason)
}

/// Every fixture, templates instantiated: what the chunking property runs over.
fn all_fixtures() -> Vec<String> {
    let mut fixtures: Vec<String> = [
        TEXT,
        THINKING,
        TOOL_USE,
        USAGE_CUMULATIVE,
        SERVER_TOOL,
        ERROR_MID_STREAM,
        TRUNCATED,
        UNKNOWN_EVENTS,
    ]
    .iter()
    .map(|fixture| (*fixture).to_owned())
    .collect();
    fixtures.extend(
        STOP_REASONS
            .iter()
            .map(|reason| stop_reason_fixture(reason)),
    );
    fixtures
}

fn run_chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Outcome> {
    let mut parser = AnthropicStreamParser::new();
    let mut out = VecDeque::new();
    let mut start = 0;
    for &cut in cuts {
        let cut = cut.clamp(start, bytes.len());
        parser.push(&bytes[start..cut], &mut out);
        start = cut;
    }
    parser.push(&bytes[start..], &mut out);
    parser.finish(&mut out);
    out.into_iter()
        .map(|item| item.map_err(|error| (error.kind, error.retryable, error.message)))
        .collect()
}

fn run_whole(bytes: &[u8]) -> Vec<Outcome> {
    run_chunked(bytes, &[])
}

fn run_byte_by_byte(bytes: &[u8]) -> Vec<Outcome> {
    let cuts: Vec<usize> = (1..bytes.len()).collect();
    run_chunked(bytes, &cuts)
}

/// The fixture with every `\n` line ending turned into `\r\n`, and into `\r`. JSON payloads
/// hold no raw newlines, so only line endings change.
fn line_ending_variants(fixture: &str) -> [String; 2] {
    [fixture.replace('\n', "\r\n"), fixture.replace('\n', "\r")]
}

/// Parses whole, byte by byte, and with CRLF and CR line endings (whole and byte by byte);
/// asserts all agree and returns the events.
fn parse(fixture: &str) -> Vec<Outcome> {
    let whole = run_whole(fixture.as_bytes());
    assert_eq!(
        run_byte_by_byte(fixture.as_bytes()),
        whole,
        "byte-at-a-time differs"
    );
    for variant in line_ending_variants(fixture) {
        assert_eq!(run_whole(variant.as_bytes()), whole, "line endings differ");
        assert_eq!(
            run_byte_by_byte(variant.as_bytes()),
            whole,
            "line endings byte-at-a-time differ"
        );
    }
    whole
}

fn text(delta: &str) -> Outcome {
    Ok(ProviderEvent::TextDelta(delta.to_owned()))
}

fn reasoning(delta: &str) -> Outcome {
    Ok(ProviderEvent::ReasoningDelta(delta.to_owned()))
}

fn usage(input: i64, output: i64, cache_read: i64, cache_write: i64) -> Outcome {
    Ok(ProviderEvent::Usage(Usage {
        input_tokens: input,
        output_tokens: output,
        reasoning_tokens: 0,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
    }))
}

fn finish(reason: FinishReason, response_id: &str) -> Outcome {
    Ok(ProviderEvent::Finish {
        reason,
        response_id: Some(response_id.to_owned()),
    })
}

fn tool_start(index: usize, id: &str, name: &str) -> Outcome {
    Ok(ProviderEvent::ToolCallStart {
        index,
        id: id.to_owned(),
        name: name.to_owned(),
    })
}

fn tool_args(index: usize, delta: &str) -> Outcome {
    Ok(ProviderEvent::ToolCallArgsDelta {
        index,
        delta: delta.to_owned(),
    })
}

fn tool_end(index: usize, args: serde_json::Value) -> Outcome {
    Ok(ProviderEvent::ToolCallEnd { index, args })
}

fn assert_truncated(outcome: Option<&Outcome>) {
    match outcome {
        Some(Err((ErrorKind::Generic, true, message))) => assert!(message.contains("truncated")),
        other => panic!("expected a truncation error, got {other:?}"),
    }
}

#[test]
fn text_stream_with_pings() {
    assert_eq!(
        parse(TEXT),
        vec![
            text("Hello"),
            text(" wörld! ✓\n"),
            text("Bye."),
            usage(25, 15, 0, 0),
            finish(FinishReason::Stop, "msg_01XFDUDYJgAACzvnptvVoYEL"),
        ]
    );
}

#[test]
fn thinking_with_signature_then_redacted_thinking_then_text() {
    assert_eq!(
        parse(THINKING),
        vec![
            reasoning(
                "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n\
                 1071 = 2 × 462 + 147"
            ),
            reasoning("\n462 = 3 × 147 + 21\n147 = 7 × 21 + 0"),
            Ok(ProviderEvent::ReasoningSignature(
                "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds+pLSq/+lQxcWJS2nUzuVNmCE6pj\
                 MVACmHr9zHkACiN4sJ4fXN14s9BU0RFRQD7aVP6K1FCcQ=="
                    .to_owned()
            )),
            Ok(ProviderEvent::RedactedReasoning(
                "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4\
                 mPnZ5sQ7vB9URj2pLmN0R8="
                    .to_owned()
            )),
            text("The greatest common divisor of 1071 and 462 is **21**."),
            usage(40, 212, 0, 0),
            finish(FinishReason::Stop, "msg_01Thinking7xZ"),
        ]
    );
}

#[test]
fn parallel_tool_use_with_fragmented_input_dense_indexes_and_cache_usage() {
    // Block indexes 2, 3, 4 become tool indexes 0, 1, 2; empty partials emit nothing; input
    // tokens include the cache reads and writes.
    assert_eq!(
        parse(TOOL_USE),
        vec![
            reasoning("Weather and time: two independent calls."),
            Ok(ProviderEvent::ReasoningSignature(
                "ErUBCkYIBxgCIkB0aGlua2luZyBzaWduYXR1cmU=".to_owned()
            )),
            text("I'll check both."),
            tool_start(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
            tool_args(0, "{\"loca"),
            tool_args(0, "tion\": \"Par"),
            tool_args(0, "is\", \"unit\": \"°C\"}"),
            tool_end(0, json!({"location": "Paris", "unit": "°C"})),
            tool_start(1, "toolu_01DsWbGmN6a1RL3hQaE5ti7K", "get_time"),
            tool_args(1, "{\"timezone\":"),
            tool_args(1, " \"Europe/Paris\"}"),
            tool_end(1, json!({"timezone": "Europe/Paris"})),
            tool_start(2, "toolu_01Vq3D4zcHeq6SqFf9hKuJXc", "list_alerts"),
            tool_end(2, json!({})),
            usage(472 + 3000 + 1024, 89, 3000, 1024),
            finish(FinishReason::ToolCalls, "msg_014p7gG3wDgGV9EUtLvnow3U"),
        ]
    );
}

#[test]
fn usage_is_cumulative_and_the_last_value_wins() {
    // Added up, output would be 1 + 30 + 64 and input would count the cache read twice.
    assert_eq!(
        parse(USAGE_CUMULATIVE),
        vec![
            text("Cached."),
            usage(7 + 2048, 64, 2048, 0),
            finish(FinishReason::Length, "msg_01CumulativeUsage"),
        ]
    );
}

#[test]
fn server_tool_use_and_its_result_block() {
    assert_eq!(
        parse(SERVER_TOOL),
        vec![
            text("Let me search for that."),
            Ok(ProviderEvent::ProviderToolCall {
                id: "srvtoolu_014hJH82Qum7Td6UV8gDXThB".to_owned(),
                name: "web_search".to_owned(),
                args: json!({"query": "rust 1.90 release date"}),
            }),
            Ok(ProviderEvent::ProviderToolResult {
                tool_call_id: "srvtoolu_014hJH82Qum7Td6UV8gDXThB".to_owned(),
                block_type: "web_search_tool_result".to_owned(),
                content: json!([{
                    "type": "web_search_result",
                    "title": "Announcing Rust 1.90.0",
                    "url": "https://blog.rust-lang.org/2025/09/18/Rust-1.90.0/",
                    "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5LTQ1NGUtODgxNC1kNjNjNTk1ZWI3Y2US",
                    "page_age": "September 18, 2025"
                }]),
            }),
            text("Rust 1.90.0 was released on September 18, 2025."),
            usage(10682, 510, 0, 0),
            finish(FinishReason::Stop, "msg_01WebSearch4q"),
        ]
    );
}

#[test]
fn every_stop_reason() {
    let expected = |reason: &str| match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    };
    for reason in STOP_REASONS {
        assert_eq!(
            parse(&stop_reason_fixture(reason)),
            vec![
                text("x"),
                usage(11, 2, 0, 0),
                finish(expected(reason), "msg_01StopReason"),
            ],
            "{reason}"
        );
    }
}

#[test]
fn mid_stream_error_event_is_classified_and_ends_the_stream() {
    assert_eq!(
        parse(ERROR_MID_STREAM),
        vec![
            text("Partial answ"),
            Err((
                ErrorKind::Overloaded,
                true,
                "provider stream error: Overloaded".to_owned()
            )),
        ]
    );
    let error_event = |error_type: &str| {
        format!(
            "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{error_type}\",\"message\":\"m\"}}}}\n\n"
        )
    };
    let classified = |fixture: &str| match &parse(fixture)[..] {
        [Err((kind, retryable, _))] => (*kind, *retryable),
        other => panic!("expected one error, got {other:?}"),
    };
    assert_eq!(
        classified(&error_event("rate_limit_error")),
        (ErrorKind::RateLimit, true)
    );
    assert_eq!(
        classified(&error_event("api_error")),
        (ErrorKind::Generic, true)
    );
    assert_eq!(
        classified(&error_event("invalid_request_error")),
        (ErrorKind::Config, false)
    );
    // An error object without the `type: error` envelope is classified all the same.
    assert_eq!(
        classified("event: error\ndata: {\"error\":{\"type\":\"overloaded_error\"}}\n\n"),
        (ErrorKind::Overloaded, true)
    );
    // An error event whose payload is not JSON still fails the stream, quoting it.
    assert_eq!(
        parse("event: error\ndata: upstream exploded\n\n"),
        vec![Err((
            ErrorKind::Generic,
            true,
            "provider stream error: upstream exploded".to_owned()
        ))]
    );
}

#[test]
fn eof_without_message_stop_is_truncation() {
    // Even after the stop reason and usage arrived.
    let outcome = parse(TRUNCATED);
    assert_eq!(outcome.len(), 2, "{outcome:?}");
    assert_eq!(outcome[0], text("All of it"));
    assert_truncated(outcome.get(1));
    // A tool call cut mid-arguments never gets its end.
    let cut_call = concat!(
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
    );
    let outcome = parse(cut_call);
    assert_eq!(
        outcome[..2],
        [tool_start(0, "toolu_1", "f"), tool_args(0, "{\"a\":")]
    );
    assert_truncated(outcome.get(2));
    assert_eq!(outcome.len(), 3);
    // An empty body is truncated too.
    assert_truncated(parse("").first());
}

#[test]
fn unknown_events_blocks_and_deltas_are_ignored() {
    assert_eq!(
        parse(UNKNOWN_EVENTS),
        vec![
            text("Still here."),
            usage(3, 5, 0, 0),
            finish(
                FinishReason::Other("pause_turn".to_owned()),
                "msg_01FutureStuff"
            ),
        ]
    );
}

#[test]
fn malformed_known_event_is_a_retryable_error() {
    for fixture in [
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":\"zero\"}\n\n",
        "event: message_delta\ndata: {not json\n\n",
        "data: {\"type\":\"message_start\",\"message\":\"not an object\"}\n\n",
    ] {
        let outcome = parse(fixture);
        assert!(
            matches!(&outcome[..], [Err((ErrorKind::Generic, true, message))] if message.contains("malformed")),
            "{fixture}: {outcome:?}"
        );
    }
}

#[test]
fn lenient_with_compatible_servers() {
    // No `event:` lines, no message id, no usage, a whole tool input in `content_block_start`,
    // `end_turn` while calling a tool, a block never stopped, and a signature without a start.
    let fixture = concat!(
        "data: {\"type\":\"message_start\",\"message\":{}}\n\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"\",\"name\":\"add\",\"input\":{\"a\":1}}}\n\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"broken\"}}\n\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{oops\"}}\n\n",
        "data: {\"type\":\"content_block_delta\",\"index\":7,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\"}}\n\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
        "data: {\"type\":\"message_stop\"}",
    );
    assert_eq!(
        parse(fixture),
        vec![
            tool_start(0, "toolu_0", "add"),
            tool_args(0, "{\"a\":1}"),
            tool_end(0, json!({"a": 1})),
            tool_start(1, "toolu_b", "broken"),
            tool_args(1, "{oops"),
            tool_end(1, json!("{oops")),
            Ok(ProviderEvent::ReasoningSignature("sig".to_owned())),
            Ok(ProviderEvent::Finish {
                reason: FinishReason::ToolCalls,
                response_id: None,
            }),
        ]
    );
}

#[test]
fn nothing_is_emitted_after_message_stop() {
    let fixture = format!("{TEXT}event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"late\"}}}}\n\n");
    assert_eq!(parse(&fixture), parse(TEXT));
}

#[tokio::test]
async fn body_stream_gives_the_same_events_as_the_parser() {
    let pieces: Vec<reqwest::Result<bytes::Bytes>> = TOOL_USE
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
    assert_eq!(outcomes, parse(TOOL_USE));
}

proptest! {
    #[test]
    fn any_chunking_and_line_ending_gives_the_same_events(
        fixture_choice in any::<prop::sample::Index>(),
        line_ending in 0usize..3,
        cut_choices in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let fixtures = all_fixtures();
        let fixture = fixture_choice.get(&fixtures);
        let expected = run_whole(fixture.as_bytes());
        let input = match line_ending {
            0 => fixture.clone(),
            variant => line_ending_variants(fixture)[variant - 1].clone(),
        };
        let mut cuts: Vec<usize> = cut_choices
            .iter()
            .map(|choice| choice.index(input.len() + 1))
            .collect();
        cuts.sort_unstable();
        prop_assert_eq!(run_chunked(input.as_bytes(), &cuts), expected);
    }
}
