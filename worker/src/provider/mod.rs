//! The provider layer: one streaming call to a model, whatever protocol the provider speaks.
//!
//! Every protocol maps onto the same [`ProviderEvent`] stream so the turn loop never knows which
//! wire format it is talking to. Each protocol is a sibling module (`openai_chat`,
//! `openai_responses`, `anthropic`) built from the shared [`http`] plumbing, the `chatd_shared::sse` decoder
//! and the [`error`] classification.
//!
//! **Invariant:** a successful stream always ends with exactly one [`ProviderEvent::Finish`]; a
//! stream that stops without its protocol's terminal marker yields a retryable "truncated" error
//! instead, so partial output is never mistaken for a complete answer.
//!
//! **Invariant:** nothing here retries. Retrying (and re-sending a request that costs money) is
//! the turn loop's decision, made from [`ProviderError::retryable`] and
//! [`ProviderError::retry_after`]. (The one exception is not a retry: an OpenAI Responses
//! request whose `previous_response_id` the server rejected as unknown — before generating
//! anything — is sent once more with the full history.)

pub mod anthropic;
pub mod error;
pub mod http;
pub mod openai_chat;
pub mod openai_responses;

use std::fmt;
use std::pin::Pin;

use chatd_shared::domain::{ContentPart, ProviderKind, Role};

pub use error::{ErrorKind, ProviderError};

/// Where and how to reach a provider; built from a `providers` row.
#[derive(Clone)]
pub struct ProviderEndpoint {
    pub kind: ProviderKind,
    /// API root including the version segment, e.g. `http://127.0.0.1:9090/v1`; a trailing slash
    /// is tolerated.
    pub base_url: String,
    /// Sent as a bearer token when present; local servers (and the mock) need none.
    pub api_key: Option<String>,
}

/// `Debug` by hand so the API key can never end up in a log line.
impl fmt::Debug for ProviderEndpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ProviderEndpoint")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One model step: the prompt as domain messages, translated per protocol by the client.
///
/// System prompts are `Role::System` messages at the start of `messages`; protocols with a
/// separate field (Anthropic `system`, Responses `instructions`) lift them out.
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    pub model: String,
    pub messages: Vec<PromptMessage>,
    /// Upper bound on generated tokens; `None` leaves it to the provider's default (Anthropic,
    /// which requires one, then sends [`DEFAULT_MAX_OUTPUT_TOKENS`]).
    pub max_output_tokens: Option<u32>,
    /// Function tools the model may call; empty means the request carries no tools.
    pub tools: Vec<ToolSpec>,
    /// OpenAI Responses only: chain onto a stored previous response instead of replaying the
    /// whole history. Other protocols ignore it.
    pub chain: Option<ResponseChain>,
}

/// `max_tokens` for protocols that require one when the model config sets none.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 8192;

/// A function tool as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// Server-side history for OpenAI Responses (`store: true` + `previous_response_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseChain {
    /// The provider id of the response that ended `messages[..new_from]`.
    pub previous_response_id: String,
    /// Index into [`ModelRequest::messages`] of the first message the provider has not seen.
    /// System messages are always re-sent (as `instructions`), whatever their index.
    pub new_from: usize,
}

#[derive(Debug, Clone)]
pub struct PromptMessage {
    pub role: Role,
    /// Blank text/reasoning parts are allowed here; every client drops them before sending.
    pub content: Vec<ContentPart>,
}

/// The protocol-independent stream of one model step.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    TextDelta(String),
    /// Reasoning text. Deltas after a [`ProviderEvent::ReasoningSignature`] start a new block.
    ReasoningDelta(String),
    /// Ends the current reasoning block with the provider's signature (Anthropic
    /// `signature_delta`), which must be sent back with the block in later requests.
    ReasoningSignature(String),
    /// An encrypted reasoning block (Anthropic `redacted_thinking`), replayed verbatim.
    RedactedReasoning(String),
    /// A complete call of a tool the provider executes itself (Anthropic `server_tool_use`).
    ProviderToolCall {
        id: String,
        name: String,
        args: serde_json::Value,
    },
    /// The provider's result block of such a call (e.g. `web_search_tool_result`).
    ProviderToolResult {
        tool_call_id: String,
        block_type: String,
        content: serde_json::Value,
    },
    /// The first fragment of a tool call; `index` identifies the call in later events.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolCallArgsDelta {
        index: usize,
        delta: String,
    },
    /// Emitted once per call when the call is complete (at the end of the step for Chat
    /// Completions, at the call's done/stop event for Responses and Anthropic), always before
    /// [`ProviderEvent::Finish`], with the concatenated arguments parsed.
    /// Arguments that are not valid JSON are kept verbatim as a JSON string value so nothing the
    /// model said is lost; empty arguments become `{}`.
    ToolCallEnd {
        index: usize,
        args: serde_json::Value,
    },
    /// Emitted at most once, before [`ProviderEvent::Finish`].
    Usage(Usage),
    /// Always the last event of a successful stream.
    Finish {
        reason: FinishReason,
        /// The provider's id of the response (OpenAI chat: the chunk `id`), for accounting.
        response_id: Option<String>,
    },
}

/// Token counts of one step, normalised across providers.
///
/// `input_tokens` is the whole prompt *including* cached tokens (`cache_read_tokens` and
/// `cache_write_tokens` are subsets of it), and `output_tokens` includes `reasoning_tokens`, so
/// `input_tokens` alone says how full the context window is (compaction) and cost maths
/// subtracts the cached parts before applying the plain input price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    /// The output hit `max_output_tokens` (or the provider's limit).
    Length,
    /// The model wants tool results before it continues.
    ToolCalls,
    ContentFilter,
    /// A reason this layer does not know, kept verbatim.
    Other(String),
}

/// A boxed stream so callers need not name each protocol's stream type.
pub type EventStream =
    Pin<Box<dyn futures::Stream<Item = Result<ProviderEvent, ProviderError>> + Send>>;

/// Sends the request and returns the event stream once response headers arrived with 2xx.
///
/// A non-2xx answer becomes `Err(ProviderError)` classified from the status, the body and the
/// retry headers. Errors after that point (in-stream error objects, truncation, a dropped
/// connection) arrive as the stream's final `Err` item.
pub async fn stream(
    http: &reqwest::Client,
    endpoint: &ProviderEndpoint,
    request: &ModelRequest,
) -> Result<EventStream, ProviderError> {
    match endpoint.kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible | ProviderKind::Mock => {
            openai_chat::stream(http, endpoint, request).await
        }
        ProviderKind::Anthropic => anthropic::stream(http, endpoint, request).await,
        ProviderKind::OpenaiResponses => openai_responses::stream(http, endpoint, request).await,
    }
}

#[cfg(test)]
mod mock_tests;

/// Treats an explicit `null` like an absent field: compatible servers send `"choices": null`,
/// `"output": null` and the like where OpenAI omits the field.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(deserializer)?.unwrap_or_default())
}

/// A text attachment (`text/*`) as the text part a provider without text documents gets:
/// `<name> (<type>):` and the decoded text. `None` for other parts (and undecodable text).
pub fn attachment_as_text(part: &ContentPart) -> Option<String> {
    use base64::Engine;
    let ContentPart::File {
        media_type,
        data: Some(data),
        name,
        ..
    } = part
    else {
        return None;
    };
    if !media_type.starts_with("text/") {
        return None;
    }
    let bytes = chatd_shared::files::BASE64.decode(data.as_bytes()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let name = name
        .as_deref()
        .filter(|name| !name.is_empty())
        .unwrap_or("attachment");
    Some(format!("{name} ({media_type}):\n{text}"))
}

/// `data:<type>;base64,<data>` of a file part with its bytes.
pub fn data_url(part: &ContentPart) -> Option<String> {
    match part {
        ContentPart::File {
            media_type,
            data: Some(data),
            ..
        } => Some(format!("data:{media_type};base64,{data}")),
        _ => None,
    }
}
