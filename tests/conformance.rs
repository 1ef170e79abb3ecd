//! Conformance against a real server nobody here wrote: llama.cpp's server (PyPI `xllamacpp`)
//! serving SmolLM2-135M, which speaks OpenAI Chat Completions, OpenAI Responses and Anthropic
//! Messages. Its deviations from the official formats are listed in
//! `worker/tests/fixtures/llamacpp/README.md`.
//!
//! Two layers:
//! - `recorded_*` tests replay bodies recorded from that server (byte for byte) through chatd's
//!   stream parsers and error classifier. They always run.
//! - `live_*` tests talk to a running server through chatd's provider layer, and
//!   `live_cluster_*` run two chat turns per protocol through a real cluster (API and worker
//!   processes, a provider and model created with `chatd admin`). They need `LLAMA_URL` (e.g.
//!   `export LLAMA_URL=$(scripts/llama-server start)`); without it each prints a loud "skipped"
//!   line straight to stderr (past the test harness's capture) and returns.
//!
//! The server samples greedily (`scripts/llama-server`), so answers are stable, but live tests
//! assert properties rather than exact text: numerics may differ between CPUs.

#[path = "conformance/cluster.rs"]
mod cluster;
mod common;
#[path = "conformance/live.rs"]
mod live;
#[path = "conformance/recorded.rs"]
mod recorded;

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use chatd_shared::domain::{ContentPart, ProviderKind, Role};
use chatd_worker::provider::anthropic::AnthropicStreamParser;
use chatd_worker::provider::http::{ParsedItem, StreamParser};
use chatd_worker::provider::openai_chat::ChatStreamParser;
use chatd_worker::provider::openai_responses::ResponsesStreamParser;
use chatd_worker::provider::{
    self, FinishReason, ModelRequest, PromptMessage, ProviderEndpoint, ProviderError,
    ProviderEvent, ResponseChain, Usage,
};
use common::cluster::Cluster;
use common::sse::Reader;

/// The environment variable naming the server's API root, e.g. `http://127.0.0.1:8089/v1`.
const LLAMA_URL_ENV: &str = "LLAMA_URL";

/// The model alias `scripts/llama-server` gives the server (it accepts any name anyway).
const MODEL: &str = "smollm2-135m";

/// A prompt the model answers in one sentence and stops.
const SHORT_PROMPT: &str = "Reply with one short sentence: what colour is the sky?";

/// A prompt the model would answer at length; cut at [`LENGTH_LIMIT`] tokens.
const LONG_PROMPT: &str = "Write a long story about a dragon.";
const LENGTH_LIMIT: u32 = 5;

/// Any prompt goes through the model's chat template, which alone is more than this many
/// tokens; a smaller `input_tokens` means the cached prefix was left out.
const MIN_PROMPT_TOKENS: i64 = 10;

/// Upper bound on one live provider call (the server answers these in well under a second).
const LIVE_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound on one chat turn through the cluster.
const TURN_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Chat,
    Responses,
    Messages,
}

impl Protocol {
    fn kind(self) -> ProviderKind {
        match self {
            Protocol::Chat => ProviderKind::OpenaiCompatible,
            Protocol::Responses => ProviderKind::OpenaiResponses,
            Protocol::Messages => ProviderKind::Anthropic,
        }
    }

    /// Feeds `body` to a fresh parser of this protocol in chunks of `chunk_size` bytes.
    fn replay(self, body: &[u8], chunk_size: usize) -> Vec<ParsedItem> {
        match self {
            Protocol::Chat => replay_with(ChatStreamParser::new(), body, chunk_size),
            Protocol::Responses => replay_with(ResponsesStreamParser::new(), body, chunk_size),
            Protocol::Messages => replay_with(AnthropicStreamParser::new(), body, chunk_size),
        }
    }

    /// Whether a `max_output_tokens` cut must be reported as [`FinishReason::Length`].
    ///
    /// llama.cpp's Responses endpoint ends a cut answer with `response.completed`, `status:
    /// "completed"` (never `response.incomplete`), so a parser can only report `Stop` there; the
    /// usage then shows the limit was reached.
    fn reports_length(self) -> bool {
        self != Protocol::Responses
    }
}

fn replay_with<P: StreamParser>(mut parser: P, body: &[u8], chunk_size: usize) -> Vec<ParsedItem> {
    let mut out = VecDeque::new();
    for chunk in body.chunks(chunk_size) {
        if parser.is_done() {
            break;
        }
        parser.push(chunk, &mut out);
    }
    parser.finish(&mut out);
    out.into_iter().collect()
}

/// Replays a recorded body whole and in several chunkings; all must give the same events
/// (a parser must give the same events however the bytes are chunked), and
/// none may be an error.
fn replay_fixture(protocol: Protocol, name: &str, body: &[u8]) -> Vec<ProviderEvent> {
    let whole = protocol.replay(body, body.len().max(1));
    let whole_text = format!("{whole:?}");
    for chunk_size in [1, 2, 7, 64, 1000] {
        let chunked = format!("{:?}", protocol.replay(body, chunk_size));
        assert_eq!(
            chunked, whole_text,
            "{name}: chunks of {chunk_size} bytes give other events than the whole body"
        );
    }
    whole
        .into_iter()
        .map(|item| item.unwrap_or_else(|error| panic!("{name}: parser error {error:?}")))
        .collect()
}

/// What every successful answer must look like; returns the text and the usage.
fn assert_complete_answer(label: &str, events: &[ProviderEvent]) -> (String, Usage, FinishReason) {
    let text: String = events
        .iter()
        .filter_map(|event| match event {
            ProviderEvent::TextDelta(delta) => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        events
            .iter()
            .any(|event| matches!(event, ProviderEvent::TextDelta(delta) if !delta.is_empty())),
        "{label}: at least one non-empty text delta: {events:?}"
    );
    let finishes: Vec<usize> = positions(events, |event| {
        matches!(event, ProviderEvent::Finish { .. })
    });
    assert_eq!(
        finishes,
        vec![events.len() - 1],
        "{label}: exactly one Finish, as the last event: {events:?}"
    );
    let usages: Vec<usize> = positions(events, |event| matches!(event, ProviderEvent::Usage(_)));
    assert_eq!(usages.len(), 1, "{label}: exactly one Usage: {events:?}");
    let ProviderEvent::Usage(usage) = events[usages[0]] else {
        unreachable!("positions() found a Usage there");
    };
    let ProviderEvent::Finish { reason, .. } = &events[events.len() - 1] else {
        unreachable!("positions() found a Finish there");
    };
    assert!(
        usage.input_tokens >= MIN_PROMPT_TOKENS,
        "{label}: input_tokens counts the whole prompt, cached prefix included: {usage:?}"
    );
    assert!(
        usage.cache_read_tokens <= usage.input_tokens,
        "{label}: cached tokens are a subset of input_tokens: {usage:?}"
    );
    assert!(
        usage.output_tokens > 0,
        "{label}: output counted: {usage:?}"
    );
    assert!(
        !events.iter().any(|event| matches!(
            event,
            ProviderEvent::ToolCallStart { .. }
                | ProviderEvent::ToolCallArgsDelta { .. }
                | ProviderEvent::ToolCallEnd { .. }
        )),
        "{label}: no tool calls were offered, none may appear: {events:?}"
    );
    (text, usage, reason.clone())
}

fn positions(events: &[ProviderEvent], predicate: impl Fn(&ProviderEvent) -> bool) -> Vec<usize> {
    events
        .iter()
        .enumerate()
        .filter(|(_, event)| predicate(event))
        .map(|(index, _)| index)
        .collect()
}

/// A short answer that ended by itself.
fn assert_text_answer(label: &str, events: &[ProviderEvent]) -> (String, Usage) {
    let (text, usage, reason) = assert_complete_answer(label, events);
    assert_eq!(reason, FinishReason::Stop, "{label}: {events:?}");
    (text, usage)
}

/// An answer cut at [`LENGTH_LIMIT`] tokens.
fn assert_length_answer(protocol: Protocol, label: &str, events: &[ProviderEvent]) -> String {
    let (text, usage, reason) = assert_complete_answer(label, events);
    assert_eq!(
        usage.output_tokens,
        i64::from(LENGTH_LIMIT),
        "{label}: the answer used the whole limit: {usage:?}"
    );
    if protocol.reports_length() {
        assert_eq!(reason, FinishReason::Length, "{label}: {events:?}");
    } else {
        assert!(
            matches!(reason, FinishReason::Length | FinishReason::Stop),
            "{label}: a cut answer finishes with Length (or Stop, llama.cpp's Responses \
             deviation): {events:?}"
        );
    }
    text
}

/// Asserts a 4xx answer was classified as a final (not retryable) error quoting the server.
fn assert_bad_request(label: &str, error: &ProviderError, status: u16, quoted: &str) {
    assert_eq!(error.status_code, Some(status), "{label}: {error:?}");
    assert!(
        !error.retryable,
        "{label}: a bad request is final: {error:?}"
    );
    assert!(
        error.message.contains(quoted),
        "{label}: the server's message ({quoted:?}) reaches the error: {error:?}"
    );
}

/// The server's API root, or `None` after printing a loud notice.
pub(crate) fn llama_url(test: &str) -> Option<String> {
    match std::env::var(LLAMA_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            // Written to the process's stderr directly: the test harness captures `eprintln!`
            // of passing tests, and a skip must not look like a pass.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! {test}: skipped: set {LLAMA_URL_ENV} (scripts/llama-server start) !!!"
            );
            None
        }
    }
}
