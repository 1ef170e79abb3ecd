//! Wire types of OpenAI Responses (`POST /responses`), used by the client and available to
//! `chatd mock-llm`.
//!
//! Deserialization is lenient on purpose: llama.cpp omits `sequence_number`, `output_index` and
//! `content_index`, compatible servers omit ids or send `null`s, and OpenAI keeps adding fields and
//! event types. Every field therefore defaults, unknown fields are ignored, and one flat
//! [`StreamEvent`] covers every event the parser handles (which fields are filled depends on
//! `type`).

use serde::{Deserialize, Deserializer, Serialize};

use crate::provider::error::ApiErrorObject;

/// `POST /responses` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    /// The system prompt. Not carried over by `previous_response_id`, so it is sent with every
    /// request, chained or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Conversation items; a plain string input (allowed by the API) deserializes as one user
    /// message.
    #[serde(default, deserialize_with = "string_or_items")]
    pub input: Vec<InputItem>,
    /// Continue the stored response with this id: the server prepends its whole conversation, so
    /// `input` holds only what it has not seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<RequestTool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Absent means a single JSON answer, as in the OpenAI API.
    #[serde(default)]
    pub stream: bool,
    /// Keep the response server-side so a later request can chain onto it. The API default is
    /// `true`; we always send it explicitly.
    #[serde(default = "default_store")]
    pub store: bool,
}

fn default_store() -> bool {
    true
}

/// One item of `input`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputItem {
    /// A `user` or `assistant` (or, from other clients, `system`/`developer`) message.
    Message {
        role: String,
        content: MessageContent,
    },
    /// A call the model made in an earlier step.
    FunctionCall {
        /// Our tool call id; pairs the call with its `function_call_output`.
        call_id: String,
        name: String,
        /// JSON text, as the model produced it.
        arguments: String,
    },
    /// The result of a [`InputItem::FunctionCall`].
    FunctionCallOutput { call_id: String, output: String },
    /// Item types this layer never sends (`reasoning`, `item_reference`, …), accepted when
    /// deserializing requests from other clients.
    #[serde(other)]
    Other,
}

/// Message content: we send plain strings; other clients may send typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<InputContentPart>),
}

impl MessageContent {
    /// The text of the content; text parts are joined with `\n`, other parts are skipped.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|part| part.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// `input_text` / `output_text` (or other) part of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputContentPart {
    #[serde(rename = "type", default)]
    pub part_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `input_image`: a `data:` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// `input_file`: its name and a `data:` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
}

/// `{"type": "function", name, description, parameters}`: flat, unlike Chat Completions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestTool {
    #[serde(rename = "type", default)]
    pub tool_type: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

/// The `data:` object of any streamed event the parser handles; which fields are set depends on
/// `event_type`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// e.g. `response.output_text.delta`; empty when the server only named the event in the SSE
    /// `event:` field.
    #[serde(rename = "type", default)]
    pub event_type: String,
    /// Absent on llama.cpp; never needed, because SSE over one connection is ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_index: Option<u64>,
    /// Reasoning summary events: which summary part of the reasoning item this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_index: Option<u64>,
    /// The output item a delta belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// Text, reasoning or argument fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// `response.function_call_arguments.done`: the complete arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// `response.function_call_arguments.done`: the function name (newer servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `response.output_item.added` / `.done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<OutputItem>,
    /// `response.created`, `.in_progress`, `.completed`, `.incomplete`, `.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseObject>,
    /// `error` events as documented carry `code` and `message` at the top level…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// …while some servers nest an error object instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiErrorObject>,
}

/// An element of `response.output`: `message`, `reasoning`, `function_call`, … Only what the
/// parser needs of function calls is kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputItem {
    #[serde(rename = "type", default)]
    pub item_type: String,
    /// The item id (`fc_…`); some llama.cpp versions omit it on function calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function_call` only: the id a `function_call_output` must answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `function_call` only: JSON text; empty on `output_item.added`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The response object carried by lifecycle events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `in_progress`, `completed`, `incomplete`, `failed`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Set on `response.failed`: `{code, message}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiErrorObject>,
    /// Set on `response.incomplete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_details: Option<IncompleteDetails>,
    #[serde(default, deserialize_with = "crate::provider::null_as_default")]
    pub output: Vec<OutputItem>,
    /// `null` until the response ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter` (older documents say `max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Token usage; `input_tokens` includes the cached ones, `output_tokens` the reasoning ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub input_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens_details: Option<InputTokensDetails>,
    #[serde(default)]
    pub output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_details: Option<OutputTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<i64>,
}

/// `input` is either a string (one user message) or a list of items.
fn string_or_items<'de, D>(deserializer: D) -> Result<Vec<InputItem>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Input {
        Text(String),
        Items(Vec<InputItem>),
    }
    Ok(match Option::<Input>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(Input::Items(items)) => items,
        Some(Input::Text(text)) => vec![InputItem::Message {
            role: "user".to_owned(),
            content: MessageContent::Text(text),
        }],
    })
}
