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

mod common;

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
/// (PROTOCOLS.md: "a parser must give the same events however the bytes are chunked"), and
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

// ---------------------------------------------------------------------------------------------
// Recorded answers (always run).

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/worker/tests/fixtures/llamacpp/",
                $name
            ))
            .as_slice(),
        )
    };
}

/// The greedy answer to [`SHORT_PROMPT`], the same on every endpoint.
const RECORDED_SKY: &str =
    "The sky is a deep shade of indigo, a celestial wonder that holds the essence of the universe.";
/// The greedy first five tokens for [`LONG_PROMPT`].
const RECORDED_STORY_START: &str = "Once upon a time,";

#[test]
fn recorded_text_answers_parse_on_every_protocol() {
    // (protocol, fixture, input tokens, cached input tokens): the usage as recorded. Messages'
    // 43 is `input_tokens` 19 + `cache_read_input_tokens` 24 (Anthropic counts them apart).
    let cases = [
        (Protocol::Chat, fixture!("chat_text.sse"), 43, 0),
        (Protocol::Responses, fixture!("responses_text.sse"), 43, 24),
        (Protocol::Messages, fixture!("messages_text.sse"), 43, 24),
        // Without `max_tokens` (Anthropic requires it; llama.cpp does not).
        (
            Protocol::Messages,
            fixture!("messages_no_max_tokens.sse"),
            43,
            42,
        ),
    ];
    for (protocol, (name, body), input_tokens, cached_tokens) in cases {
        let events = replay_fixture(protocol, name, body);
        let (text, usage) = assert_text_answer(name, &events);
        assert_eq!(text, RECORDED_SKY, "{name}");
        assert_eq!(
            (
                usage.input_tokens,
                usage.cache_read_tokens,
                usage.output_tokens
            ),
            (input_tokens, cached_tokens, 21),
            "{name}: {usage:?}"
        );
    }
}

#[test]
fn recorded_system_prompt_answers_parse() {
    for (protocol, (name, body)) in [
        (Protocol::Responses, fixture!("responses_instructions.sse")),
        (Protocol::Messages, fixture!("messages_system.sse")),
    ] {
        let events = replay_fixture(protocol, name, body);
        let (text, usage) = assert_text_answer(name, &events);
        assert_eq!(text, "A colour is a color.", "{name}");
        assert_eq!((usage.input_tokens, usage.output_tokens), (23, 7), "{name}");
    }
}

#[test]
fn recorded_length_answers_finish_with_the_limit() {
    for (protocol, (name, body)) in [
        (Protocol::Chat, fixture!("chat_length.sse")),
        (Protocol::Responses, fixture!("responses_length.sse")),
        (Protocol::Messages, fixture!("messages_length.sse")),
    ] {
        let events = replay_fixture(protocol, name, body);
        let text = assert_length_answer(protocol, name, &events);
        assert_eq!(text, RECORDED_STORY_START, "{name}");
    }
}

#[test]
fn recorded_keepalive_comments_are_ignored() {
    // Long answers from a server sending `:` keep-alive comments every second (the chat one
    // starts with one, before any data).
    for (protocol, (name, body)) in [
        (Protocol::Chat, fixture!("chat_keepalive.sse")),
        (Protocol::Responses, fixture!("responses_keepalive.sse")),
        (Protocol::Messages, fixture!("messages_keepalive.sse")),
    ] {
        let text = utf8(name, body);
        assert!(
            text.lines().any(|line| line == ":"),
            "{name} still holds a keep-alive comment (re-record it if not)"
        );
        let events = replay_fixture(protocol, name, body);
        let (answer, usage, reason) = assert_complete_answer(name, &events);
        assert_eq!(answer, recorded_text(protocol, &text), "{name}");
        // 300 tokens as recorded; record.sh asks for more when an answer carried no keep-alive.
        assert!(usage.output_tokens >= 300, "{name}: {usage:?}");
        if protocol.reports_length() {
            assert_eq!(reason, FinishReason::Length, "{name}");
        }
    }
}

/// The answer text a recorded body holds, read with plain JSON lookups: Chat's
/// `choices[].delta.content`, the output text of Responses' `response.completed`, Messages'
/// `text_delta`s.
fn recorded_text(protocol: Protocol, body: &str) -> String {
    let mut text = String::new();
    for line in body.lines() {
        let Some(Ok(data)) = line
            .strip_prefix("data: ")
            .map(serde_json::from_str::<Value>)
        else {
            continue;
        };
        match protocol {
            Protocol::Chat => {
                for choice in data["choices"].as_array().into_iter().flatten() {
                    text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
                }
            }
            Protocol::Responses if data["type"] == "response.completed" => {
                for item in data["response"]["output"].as_array().into_iter().flatten() {
                    for part in item["content"].as_array().into_iter().flatten() {
                        text.push_str(part["text"].as_str().unwrap_or_default());
                    }
                }
            }
            Protocol::Messages if data["delta"]["type"] == "text_delta" => {
                text.push_str(data["delta"]["text"].as_str().unwrap_or_default());
            }
            _ => {}
        }
    }
    text
}

#[test]
fn recorded_truncated_streams_are_retryable_errors() {
    // The same real answers cut before their end: never a success. (Chat counts a finish
    // reason at EOF as complete, so its cut comes before the finish chunk, not `[DONE]`.)
    for (protocol, (name, body), cut_before) in [
        (
            Protocol::Chat,
            fixture!("chat_text.sse"),
            r#"data: {"choices":[{"finish_reason":"stop""#,
        ),
        (
            Protocol::Responses,
            fixture!("responses_text.sse"),
            "event: response.completed",
        ),
        (
            Protocol::Messages,
            fixture!("messages_text.sse"),
            "event: message_delta",
        ),
    ] {
        let text = std::str::from_utf8(body).expect("fixtures are UTF-8");
        let cut = text
            .find(cut_before)
            .unwrap_or_else(|| panic!("{name} has {cut_before:?}"));
        let items = protocol.replay(&body[..cut], 64);
        assert!(
            !items
                .iter()
                .any(|item| matches!(item, Ok(ProviderEvent::Finish { .. }))),
            "{name} cut before {cut_before:?}: no Finish: {items:?}"
        );
        match items.last() {
            Some(Err(error)) => assert!(error.retryable, "{name}: {error:?}"),
            other => panic!("{name} cut before {cut_before:?} ends with an error: {other:?}"),
        }
    }
}

#[test]
fn recorded_error_bodies_are_classified() {
    // (fixture, HTTP status as recorded in statuses.txt, text the message must quote)
    let bad_requests = [
        (
            fixture!("chat_context_error.json"),
            "exceeds the available context size",
        ),
        (
            fixture!("responses_context_error.json"),
            "exceeds the available context size",
        ),
        (
            fixture!("messages_context_error.json"),
            "exceeds the available context size",
        ),
        (fixture!("chat_bad_json_error.json"), "parse error"),
        (
            fixture!("chat_missing_messages_error.json"),
            "'messages' is required",
        ),
        (
            fixture!("responses_missing_input_error.json"),
            "'input' is required",
        ),
        (
            fixture!("responses_previous_response_id_error.json"),
            "does not support 'previous_response_id'",
        ),
    ];
    for ((name, body), quoted) in bad_requests {
        let error = ProviderError::from_http(400, &HeaderMap::new(), &utf8(name, body));
        assert_bad_request(name, &error, 400, quoted);
    }
    // llama.cpp answers a Messages request without `messages` with a 500: classified by its
    // status like any server error (chatd always sends `messages`).
    let (name, body) = fixture!("messages_missing_messages_error.json");
    let error = ProviderError::from_http(500, &HeaderMap::new(), &utf8(name, body));
    assert_eq!(error.status_code, Some(500), "{name}: {error:?}");
    assert!(error.retryable, "{name}: a 5xx is retryable: {error:?}");
    assert!(
        error.message.contains("'messages' is required"),
        "{name}: {error:?}"
    );
}

#[test]
fn recorded_statuses_match_the_fixture_list() {
    // Keeps the statuses used above honest: they are the ones record.sh saw.
    let (_, statuses) = fixture!("statuses.txt");
    let statuses = utf8("statuses.txt", statuses);
    for line in statuses.lines() {
        let (file, status) = line.split_once(' ').expect("`file status` lines");
        let expected = match file {
            "messages_missing_messages_error.json" => "500",
            file if file.ends_with("_error.json") => "400",
            _ => "200",
        };
        assert_eq!(status, expected, "{file}");
    }
}

fn utf8(name: &str, body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).unwrap_or_else(|_| panic!("{name} is UTF-8"))
}

// ---------------------------------------------------------------------------------------------
// A live server (run when LLAMA_URL is set).

/// The server's API root, or `None` after printing a loud notice.
fn llama_url(test: &str) -> Option<String> {
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

fn endpoint(protocol: Protocol, base_url: &str) -> ProviderEndpoint {
    ProviderEndpoint {
        kind: protocol.kind(),
        base_url: base_url.to_owned(),
        api_key: None,
    }
}

fn user_text(text: &str) -> PromptMessage {
    PromptMessage {
        role: Role::User,
        content: vec![ContentPart::Text {
            text: text.to_owned(),
        }],
    }
}

fn request(messages: Vec<PromptMessage>, max_output_tokens: Option<u32>) -> ModelRequest {
    ModelRequest {
        model: MODEL.to_owned(),
        messages,
        max_output_tokens,
        ..ModelRequest::default()
    }
}

/// Runs one model step; panics on a transport or HTTP error, returns every stream item.
async fn live_step(protocol: Protocol, base_url: &str, request: &ModelRequest) -> Vec<ParsedItem> {
    let http = reqwest::Client::new();
    let call = async {
        let stream = match provider::stream(&http, &endpoint(protocol, base_url), request).await {
            Ok(stream) => stream,
            Err(error) => panic!("{protocol:?}: request refused: {error:?}"),
        };
        stream.collect::<Vec<_>>().await
    };
    tokio::time::timeout(LIVE_CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{protocol:?}: no complete answer within {LIVE_CALL_TIMEOUT:?}"))
}

fn successful_events(label: &str, items: Vec<ParsedItem>) -> Vec<ProviderEvent> {
    items
        .into_iter()
        .map(|item| item.unwrap_or_else(|error| panic!("{label}: stream error {error:?}")))
        .collect()
}

async fn live_text_answer(protocol: Protocol) {
    let Some(url) = llama_url(&format!("live_text_answer({protocol:?})")) else {
        return;
    };
    let label = format!("live {protocol:?} text");
    let step = request(vec![user_text(SHORT_PROMPT)], Some(200));
    let events = successful_events(&label, live_step(protocol, &url, &step).await);
    assert_text_answer(&label, &events);
}

async fn live_length_answer(protocol: Protocol) {
    let Some(url) = llama_url(&format!("live_length_answer({protocol:?})")) else {
        return;
    };
    let label = format!("live {protocol:?} length");
    let step = request(vec![user_text(LONG_PROMPT)], Some(LENGTH_LIMIT));
    let events = successful_events(&label, live_step(protocol, &url, &step).await);
    assert_length_answer(protocol, &label, &events);
}

/// A prompt larger than the server's context window is refused with a 400 before any output.
async fn live_bad_request(protocol: Protocol) {
    let Some(url) = llama_url(&format!("live_bad_request({protocol:?})")) else {
        return;
    };
    let label = format!("live {protocol:?} oversized prompt");
    // About 10,000 tokens; `scripts/llama-server` serves an 8,192-token context.
    let step = request(vec![user_text(&"word ".repeat(10_000))], Some(5));
    let http = reqwest::Client::new();
    let endpoint = endpoint(protocol, &url);
    let call = provider::stream(&http, &endpoint, &step);
    let result = tokio::time::timeout(LIVE_CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{label}: no answer within {LIVE_CALL_TIMEOUT:?}"));
    match result {
        Ok(_) => panic!("{label}: the server accepted a prompt larger than its context"),
        Err(error) => assert_bad_request(&label, &error, 400, "exceeds the available context size"),
    }
}

#[tokio::test]
async fn live_openai_chat_text_answer_streams() {
    live_text_answer(Protocol::Chat).await;
}

#[tokio::test]
async fn live_openai_responses_text_answer_streams() {
    live_text_answer(Protocol::Responses).await;
}

#[tokio::test]
async fn live_anthropic_text_answer_streams() {
    live_text_answer(Protocol::Messages).await;
}

#[tokio::test]
async fn live_openai_chat_max_tokens_finishes_with_length() {
    live_length_answer(Protocol::Chat).await;
}

#[tokio::test]
async fn live_openai_responses_max_tokens_finishes_with_length() {
    live_length_answer(Protocol::Responses).await;
}

#[tokio::test]
async fn live_anthropic_max_tokens_finishes_with_length() {
    live_length_answer(Protocol::Messages).await;
}

#[tokio::test]
async fn live_openai_chat_bad_request_is_final() {
    live_bad_request(Protocol::Chat).await;
}

#[tokio::test]
async fn live_openai_responses_bad_request_is_final() {
    live_bad_request(Protocol::Responses).await;
}

#[tokio::test]
async fn live_anthropic_bad_request_is_final() {
    live_bad_request(Protocol::Messages).await;
}

/// llama.cpp refuses `previous_response_id` outright (400 "llama.cpp does not support
/// 'previous_response_id'."); a chained step must still get its answer by re-sending the whole
/// history.
#[tokio::test]
async fn live_openai_responses_chained_step_falls_back_to_full_history() {
    let Some(url) = llama_url("live_openai_responses_chained_step_falls_back_to_full_history")
    else {
        return;
    };
    let label = "live Responses chained step";
    let mut step = request(
        vec![
            user_text("Name a colour."),
            PromptMessage {
                role: Role::Assistant,
                content: vec![ContentPart::Text {
                    text: "Blue.".to_owned(),
                }],
            },
            user_text(SHORT_PROMPT),
        ],
        Some(200),
    );
    step.chain = Some(ResponseChain {
        previous_response_id: "resp_from_an_earlier_step".to_owned(),
        new_from: 2,
    });
    let events = successful_events(label, live_step(Protocol::Responses, &url, &step).await);
    assert_complete_answer(label, &events);
}

// ---------------------------------------------------------------------------------------------
// Through a real cluster: API and worker processes, a provider and model per protocol.

#[tokio::test(flavor = "multi_thread")]
async fn live_cluster_openai_chat_runs_two_turns() {
    live_cluster_two_turns(Protocol::Chat).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_cluster_openai_responses_runs_two_turns() {
    live_cluster_two_turns(Protocol::Responses).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_cluster_anthropic_runs_two_turns() {
    live_cluster_two_turns(Protocol::Messages).await;
}

/// A chat on a model served by llama.cpp over `protocol`: two turns, the second replaying the
/// first answer in the protocol's own history format (and, for Responses, chaining onto it).
async fn live_cluster_two_turns(protocol: Protocol) {
    let Some(url) = llama_url(&format!("live_cluster_two_turns({protocol:?})")) else {
        return;
    };
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let model_config_id = create_llama_model(&cluster, protocol, &url).await;
    let (status, created) = api
        .post(
            "/chats",
            &json!({
                "message": SHORT_PROMPT,
                "model_config_id": model_config_id,
                "system_prompt": "You are a helpful assistant. Answer in one sentence.",
            }),
        )
        .await
        .expect("create a chat");
    assert_eq!(status, 201, "{protocol:?}: create chat: {created}");
    let chat_id = created["chat"]["id"].as_str().expect("chat id").to_owned();
    let message_id = created["message"]["id"].as_i64().expect("message id");
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    wait_turn(protocol, &mut reader, 1).await;

    let (status, sent) = api
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": "Thank you. And what colour is grass?",
                    "model_config_id": model_config_id}),
        )
        .await
        .expect("send a message");
    assert_eq!(status, 201, "{protocol:?}: send: {sent}");
    wait_turn(protocol, &mut reader, 2).await;

    let answers: Vec<Value> = common::cluster::messages(&api, &chat_id)
        .await
        .into_iter()
        .filter(|message| message["role"] == "assistant")
        .collect();
    assert_eq!(answers.len(), 2, "{protocol:?}: two answers: {answers:?}");
    for answer in &answers {
        let text = chatd_api::client::content_text(&answer["content"]);
        assert!(
            !text.trim().is_empty(),
            "{protocol:?}: empty answer {answer}"
        );
        let usage = &answer["usage"];
        assert!(
            usage["input_tokens"].as_i64().unwrap_or(0) >= MIN_PROMPT_TOKENS
                && usage["output_tokens"].as_i64().unwrap_or(0) > 0,
            "{protocol:?}: usage recorded: {answer}"
        );
        assert_eq!(
            answer["model_config_id"], model_config_id,
            "{protocol:?}: {answer}"
        );
    }
}

/// Creates a provider of `protocol`'s kind at `url` and a model on it with `chatd admin`, as an
/// operator would; returns the model config id.
async fn create_llama_model(cluster: &Cluster, protocol: Protocol, url: &str) -> Value {
    let provider_id = chatd_admin(&[
        "create-provider",
        "--database-url",
        &cluster.db.url,
        "--kind",
        protocol.kind().as_str(),
        "--base-url",
        url,
    ])
    .await;
    let model_config_id = chatd_admin(&[
        "create-model",
        "--database-url",
        &cluster.db.url,
        "--provider",
        &provider_id,
        "--model",
        MODEL,
        "--context-limit",
        "8192",
    ])
    .await;
    Value::String(model_config_id)
}

/// Runs `chatd admin ARGS…` and returns its printed id.
async fn chatd_admin(args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .arg("admin")
        .args(args)
        .output()
        .await
        .expect("run chatd admin");
    assert!(
        output.status.success(),
        "chatd admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "chatd admin {args:?} printed an id: {id:?}"
    );
    id
}

/// Reads the chat's stream until `answers` assistant messages arrived and the chat waits again;
/// fails at once when the chat goes to `error`.
async fn wait_turn(protocol: Protocol, reader: &mut Reader, answers: usize) {
    let deadline = tokio::time::Instant::now() + TURN_TIMEOUT;
    let mut answered = reader
        .seen
        .iter()
        .filter(|event| event.event == "message" && event.data["role"] == "assistant")
        .count();
    let mut status = String::new();
    while !(answered >= answers && status == "waiting") {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = reader.next(left.max(Duration::from_millis(1))).await;
        match event.event.as_str() {
            "message" if event.data["role"] == "assistant" => answered += 1,
            "status" => {
                status = event.data["status"].as_str().unwrap_or_default().to_owned();
                assert_ne!(
                    status, "error",
                    "{protocol:?}: turn {answers} failed: {}",
                    event.data
                );
            }
            _ => {}
        }
    }
}
