//! Domain types shared by the API and the worker.
//!
//! These are *not* the public wire format (that lives in `chatd-api`), but message content parts
//! are stored as JSON in `chat_messages.content`, so their serde shape is the storage format.

use serde::{Deserialize, Serialize};

/// `chats.status`. The state machine is in ARCHITECTURE.md, "State machine and fencing".
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    Waiting,
    Pending,
    Running,
    Interrupting,
    RequiresAction,
    /// A step waits for sub-agents (`wait_agent`): no worker holds the chat; it is `pending`
    /// again when they have ended or at the wait's deadline.
    AwaitingAgents,
    Error,
}

impl ChatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatStatus::Waiting => "waiting",
            ChatStatus::Pending => "pending",
            ChatStatus::Running => "running",
            ChatStatus::Interrupting => "interrupting",
            ChatStatus::RequiresAction => "requires_action",
            ChatStatus::AwaitingAgents => "awaiting_agents",
            ChatStatus::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<ChatStatus> {
        Some(match text {
            "waiting" => ChatStatus::Waiting,
            "pending" => ChatStatus::Pending,
            "running" => ChatStatus::Running,
            "interrupting" => ChatStatus::Interrupting,
            "requires_action" => ChatStatus::RequiresAction,
            "awaiting_agents" => ChatStatus::AwaitingAgents,
            "error" => ChatStatus::Error,
            _ => return None,
        })
    }

    /// A chat is busy while a turn is runnable or running; sends then go to the queue.
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            ChatStatus::Pending
                | ChatStatus::Running
                | ChatStatus::Interrupting
                | ChatStatus::RequiresAction
                | ChatStatus::AwaitingAgents
        )
    }
}

/// `chat_messages.role`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

/// One part of a message's content. The storage format of `chat_messages.content` is a JSON
/// array of these.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ContentPart {
    Text {
        text: String,
    },
    Reasoning {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    ToolCall {
        tool_call_id: String,
        tool_name: String,
        args: serde_json::Value,
    },
    ToolResult {
        tool_call_id: String,
        tool_name: String,
        result: serde_json::Value,
        #[serde(default)]
        is_error: bool,
    },
    /// Reasoning the provider returned encrypted (Anthropic `redacted_thinking`): sent back
    /// verbatim, never shown.
    RedactedReasoning {
        data: String,
    },
    /// A tool the provider ran itself (Anthropic `server_tool_use`, e.g. web search). It stays in
    /// the assistant message with its result; chatd never executes it.
    ProviderToolCall {
        tool_call_id: String,
        tool_name: String,
        args: serde_json::Value,
    },
    /// The result block of a [`ContentPart::ProviderToolCall`], kept as the provider sent it
    /// (`block_type` e.g. `web_search_tool_result`) so it can be replayed exactly.
    ProviderToolResult {
        tool_call_id: String,
        block_type: String,
        content: serde_json::Value,
    },
    /// An attachment: an uploaded file (`file_id`) or inline base64 `data`, of `media_type`
    /// (read from the bytes when it was stored).
    File {
        media_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        /// The uploaded file's name, when it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Source {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

impl ContentPart {
    pub fn text(text: impl Into<String>) -> ContentPart {
        ContentPart::Text { text: text.into() }
    }

    /// Empty or whitespace-only text and reasoning parts must never reach a provider
    /// (Anthropic rejects them), so they are dropped before storage and before prompting.
    pub fn is_blank(&self) -> bool {
        match self {
            ContentPart::Text { text } | ContentPart::Reasoning { text, .. } => {
                text.trim().is_empty()
            }
            _ => false,
        }
    }
}

/// Concatenated text of all `text` parts (what a terminal client prints).
pub fn plain_text(parts: &[ContentPart]) -> String {
    let mut out = String::new();
    for part in parts {
        if let ContentPart::Text { text } = part {
            out.push_str(text);
        }
    }
    out
}

/// Provider kinds known to `providers.kind`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    OpenaiResponses,
    Anthropic,
    OpenaiCompatible,
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiResponses => "openai-responses",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::Mock => "mock",
        }
    }

    pub fn parse(text: &str) -> Option<ProviderKind> {
        Some(match text {
            "openai" => ProviderKind::Openai,
            "openai-responses" => ProviderKind::OpenaiResponses,
            "anthropic" => ProviderKind::Anthropic,
            "openai-compatible" => ProviderKind::OpenaiCompatible,
            "mock" => ProviderKind::Mock,
            _ => return None,
        })
    }
}

/// A tool call that still waits for its result.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingToolCall {
    pub tool_call_id: String,
    pub tool_name: String,
    pub args: serde_json::Value,
}

/// The calls of the first assistant message in `messages` (role, parts; oldest first) that no
/// later tool result answers, in call order. Pass the latest assistant message and what
/// follows it.
pub fn pending_tool_calls<'a>(
    messages: impl IntoIterator<Item = (&'a str, &'a [ContentPart])>,
) -> Vec<PendingToolCall> {
    let mut pending: Vec<PendingToolCall> = Vec::new();
    let mut seen_assistant = false;
    for (role, parts) in messages {
        if role == "assistant" {
            if seen_assistant {
                break;
            }
            seen_assistant = true;
            pending = parts
                .iter()
                .filter_map(|part| match part {
                    ContentPart::ToolCall {
                        tool_call_id,
                        tool_name,
                        args,
                    } => Some(PendingToolCall {
                        tool_call_id: tool_call_id.clone(),
                        tool_name: tool_name.clone(),
                        args: args.clone(),
                    }),
                    _ => None,
                })
                .collect();
            continue;
        }
        for part in parts {
            if let ContentPart::ToolResult { tool_call_id, .. } = part {
                pending.retain(|call| &call.tool_call_id != tool_call_id);
            }
        }
    }
    pending
}

/// Key of the wrapper object that stores a tool result containing NUL characters.
///
/// PostgreSQL's `jsonb` cannot hold `\u0000`, but tool output (a binary file read as text, a
/// process's output) legitimately can. Such a result is stored as `{"$chatd_json": "<the JSON
/// text of the result>"}`, where the NULs are the six characters `\u0000` inside a string.
/// A result that happens to be an object with exactly this one key is wrapped too, so decoding
/// is always exact.
pub const ENCODED_RESULT_KEY: &str = "$chatd_json";

/// The storage form of a tool result (see [`ENCODED_RESULT_KEY`]).
pub fn encode_tool_result(result: serde_json::Value) -> serde_json::Value {
    let needs_wrapping = contains_nul(&result)
        || matches!(&result, serde_json::Value::Object(map)
            if map.len() == 1 && map.contains_key(ENCODED_RESULT_KEY));
    if !needs_wrapping {
        return result;
    }
    let mut wrapper = serde_json::Map::new();
    wrapper.insert(
        ENCODED_RESULT_KEY.to_owned(),
        serde_json::Value::String(result.to_string()),
    );
    serde_json::Value::Object(wrapper)
}

/// Inverse of [`encode_tool_result`].
pub fn decode_tool_result(stored: serde_json::Value) -> serde_json::Value {
    if let serde_json::Value::Object(map) = &stored {
        if map.len() == 1 {
            if let Some(serde_json::Value::String(text)) = map.get(ENCODED_RESULT_KEY) {
                if let Ok(decoded) = serde_json::from_str(text) {
                    return decoded;
                }
            }
        }
    }
    stored
}

/// Whether any string (or object key) inside `value` contains a NUL character.
pub fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || contains_nul(item)),
        _ => false,
    }
}

/// `value` with every NUL character (in strings and keys) replaced by U+FFFD: for model output
/// and event data, which cannot be refused but must be storable.
pub fn replace_nul(value: serde_json::Value) -> serde_json::Value {
    let fix = |text: String| {
        if text.contains('\0') {
            text.replace('\0', "\u{FFFD}")
        } else {
            text
        }
    };
    match value {
        serde_json::Value::String(text) => serde_json::Value::String(fix(text)),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(replace_nul).collect())
        }
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(key, item)| (fix(key), replace_nul(item)))
                .collect(),
        ),
        other => other,
    }
}

/// Decodes every tool result of `parts` in place (storage form → what providers and clients
/// see).
pub fn decode_parts(parts: &mut [ContentPart]) {
    for part in parts {
        if let ContentPart::ToolResult { result, .. } = part {
            *result = decode_tool_result(std::mem::take(result));
        }
    }
}

/// A client-executed tool declared at chat creation: the request shape of `dynamic_tools` and
/// the storage shape of `chats.dynamic_tools` (a JSON array of these), read by the worker.
/// Requests may also use the vendors' shapes (`crate::tool_decl`); storage is always this one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DynamicTool {
    /// 1 to 64 characters of `[A-Za-z0-9_-]`, unique within the chat.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9_-]{1,64}(?!\n)$"))]
    pub name: String,
    /// At most 16,384 characters, no NUL.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 16384, pattern = r"^[^\u0000]*$")
    )]
    pub description: String,
    /// JSON Schema of the arguments (default: any object). Free-form; its strings must not
    /// contain NUL.
    #[serde(default = "object_schema")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: serde_json::Value,
    /// "Must run alone": a step mixing it with other calls runs nothing and every call gets a
    /// policy error the model can read.
    #[serde(default)]
    pub exclusive: bool,
}

pub(crate) fn object_schema() -> serde_json::Value {
    serde_json::json!({"type": "object"})
}

/// Longest `message` (bytes) of a `ChatError` and of a `retry` event: a provider's error body
/// can be megabytes, and no single stream event may pass the NOTIFY payload limit (I9).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 2048;

/// Why a turn failed: `chats.last_error` and the data of the `error` stream event. One shape for
/// every failure — provider errors, timeouts, configuration, crash loops, the step limit,
/// client tool deadlines.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatError {
    /// `overloaded`, `rate_limit`, `timeout`, `startup_timeout`, `auth`, `config`,
    /// `invalid_response`, `generic` (provider failures), `crash_loop`, `max_steps`,
    /// `action_timeout`.
    pub kind: String,
    /// At most [`MAX_ERROR_MESSAGE_BYTES`] (longer ones end in `… (truncated, N bytes)`).
    pub message: String,
    /// Whether sending the message again may succeed.
    pub retryable: bool,
    /// The provider kind, when a provider failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's HTTP status, when it answered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

impl ChatError {
    /// A failure outside any provider call, not retryable.
    pub fn new(kind: &str, message: impl AsRef<str>) -> ChatError {
        ChatError {
            kind: kind.to_owned(),
            message: truncate_message(message.as_ref()),
            retryable: false,
            provider: None,
            status_code: None,
        }
    }

    /// The stored and streamed JSON object.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// `text` if it fits [`MAX_ERROR_MESSAGE_BYTES`]; otherwise its head (cut at a character
/// boundary) followed by `… (truncated, N bytes)`, N being the original length, the whole
/// within the cap.
pub fn truncate_message(text: &str) -> String {
    if text.len() <= MAX_ERROR_MESSAGE_BYTES {
        return text.to_owned();
    }
    let suffix = format!("… (truncated, {} bytes)", text.len());
    let mut cut = MAX_ERROR_MESSAGE_BYTES - suffix.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_results_round_trip_and_plain_results_stay_unchanged() {
        for value in [
            json!("bin\u{0}ary"),
            json!({"out": ["a\u{0}", 1], "k\u{0}": true}),
            json!({"$chatd_json": "looks encoded"}),
        ] {
            let stored = encode_tool_result(value.clone());
            assert!(!contains_nul(&stored), "{stored}");
            assert_eq!(decode_tool_result(stored), value);
        }
        let plain = json!({"ok": true, "$chatd_json": 1});
        assert_eq!(encode_tool_result(plain.clone()), plain);
        assert_eq!(decode_tool_result(plain.clone()), plain);
    }

    #[test]
    fn pending_calls_are_those_without_results() {
        let assistant = vec![
            ContentPart::text("calling"),
            ContentPart::ToolCall {
                tool_call_id: "a".into(),
                tool_name: "x".into(),
                args: json!({}),
            },
            ContentPart::ToolCall {
                tool_call_id: "b".into(),
                tool_name: "y".into(),
                args: json!({"n": 1}),
            },
        ];
        let results = vec![ContentPart::ToolResult {
            tool_call_id: "a".into(),
            tool_name: "x".into(),
            result: json!("done"),
            is_error: false,
        }];
        let pending = pending_tool_calls([
            ("assistant", assistant.as_slice()),
            ("tool", results.as_slice()),
        ]);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].tool_call_id, "b");
        assert!(pending_tool_calls([("user", results.as_slice())]).is_empty());
    }
}
