//! The public wire format (JSON DTOs). Domain rows from `chatd-shared` are converted here;
//! nothing else in the system knows these shapes.

#[allow(unused_imports)] // named by `value_type` below
use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use chatd_shared::db::rows::{ChatRow, MessageRow, QueuedRow};
use chatd_shared::domain::ChatStatus;
#[allow(unused_imports)] // named by `value_type` in the schemas below
use chatd_shared::domain::{ChatError, ContentPart, Role};

use crate::openapi::schemas;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Chat {
    pub id: Uuid,
    pub title: String,
    pub status: ChatStatus,
    pub owner_id: Uuid,
    pub parent_chat_id: Option<Uuid>,
    pub model_config_id: Option<Uuid>,
    /// Label values are free-form strings.
    #[schema(value_type = HashMap<String, String>)]
    pub labels: Value,
    pub archived: bool,
    /// 0: not pinned; 1…n: listed first, in this order.
    pub pin_order: i32,
    /// An assistant message newer than the read marker (`POST /chats/{id}/read`) exists.
    pub has_unread: bool,
    /// Why the last turn failed (status `error`), else `null`.
    #[schema(value_type = Option<ChatError>)]
    pub last_error: Option<Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&ChatRow> for Chat {
    fn from(row: &ChatRow) -> Chat {
        Chat {
            id: row.id,
            title: row.title.clone(),
            status: row.status,
            owner_id: row.owner_id,
            parent_chat_id: row.parent_chat_id,
            model_config_id: row.model_config_id,
            labels: row.labels.clone(),
            archived: row.archived,
            pin_order: row.pin_order,
            has_unread: row.has_unread,
            last_error: row.last_error.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: i64,
    pub chat_id: Uuid,
    #[schema(value_type = Role)]
    pub role: String,
    #[schema(value_type = Vec<ContentPart>)]
    pub content: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub model_config_id: Option<Uuid>,
    pub usage: Option<Usage>,
    pub cost_micros: Option<i64>,
    pub runtime_ms: Option<i64>,
}

impl From<&MessageRow> for Message {
    fn from(row: &MessageRow) -> Message {
        let has_usage = row.input_tokens.is_some() || row.output_tokens.is_some();
        Message {
            id: row.id,
            chat_id: row.chat_id,
            role: row.role.as_str().to_string(),
            content: decode_content(&row.content),
            created_at: row.created_at,
            model_config_id: row.model_config_id,
            usage: has_usage.then(|| Usage {
                input_tokens: row.input_tokens.unwrap_or(0),
                output_tokens: row.output_tokens.unwrap_or(0),
                reasoning_tokens: row.reasoning_tokens.unwrap_or(0),
                cache_read_tokens: row.cache_read_tokens.unwrap_or(0),
                cache_write_tokens: row.cache_write_tokens.unwrap_or(0),
            }),
            cost_micros: row.cost_micros,
            runtime_ms: row.runtime_ms,
        }
    }
}

/// Tool results are stored NUL-safe (`domain::encode_tool_result`); clients get them back
/// exactly as produced. Content without encoded results is returned as stored.
fn decode_content(content: &Value) -> Value {
    let Value::Array(parts) = content else {
        return content.clone();
    };
    let encoded = |part: &Value| {
        part.get("result")
            .and_then(Value::as_object)
            .is_some_and(|result| result.contains_key(chatd_shared::domain::ENCODED_RESULT_KEY))
    };
    if !parts.iter().any(encoded) {
        return content.clone();
    }
    Value::Array(
        parts
            .iter()
            .map(|part| {
                let mut part = part.clone();
                if let Some(result) = part.get_mut("result") {
                    *result = chatd_shared::domain::decode_tool_result(result.take());
                }
                part
            })
            .collect(),
    )
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueuedMessage {
    pub id: i64,
    pub chat_id: Uuid,
    #[schema(value_type = Vec<ContentPart>)]
    pub content: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&QueuedRow> for QueuedMessage {
    fn from(row: &QueuedRow) -> QueuedMessage {
        QueuedMessage {
            id: row.id,
            chat_id: row.chat_id,
            content: decode_content(&row.content),
            created_at: row.created_at,
        }
    }
}

/// One part of a user message: what users may send (`text`, `file`, `source`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum UserPart {
    Text {
        /// Must contain a non-whitespace character; no NUL.
        #[schema(
            max_length = 524288,
            pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$"
        )]
        text: String,
    },
    /// An attachment: an uploaded file (`file_id`, from `POST /files`) or small inline
    /// `data` (base64, at most 512 KiB decoded) — exactly one of them. The type is read from
    /// the bytes; `media_type` only names a `text/*` subtype for inline text.
    File {
        #[schema(max_length = 255, pattern = r"^[^\u0000]*$")]
        media_type: Option<String>,
        #[schema(value_type = Option<Uuid>)]
        file_id: Option<String>,
        /// Base64 (standard alphabet, padded); the document states its exact pattern.
        #[schema(max_length = 699052)]
        data: Option<String>,
    },
    Source {
        #[schema(max_length = 524288, pattern = r"^[^\u0000]*$")]
        url: String,
        #[schema(max_length = 524288, pattern = r"^[^\u0000]*$")]
        title: Option<String>,
    },
}

impl From<UserPart> for ContentPart {
    fn from(part: UserPart) -> ContentPart {
        match part {
            UserPart::Text { text } => ContentPart::Text { text },
            UserPart::File {
                media_type,
                file_id,
                data,
            } => ContentPart::File {
                media_type: media_type.unwrap_or_default(),
                file_id,
                data,
                name: None,
            },
            UserPart::Source { url, title } => ContentPart::Source { url, title },
        }
    }
}

/// `message` / `content` in requests: a plain string or an array of user parts.
/// Its schema is written by hand (`openapi::schemas`): a string or 1 to 100 parts.
#[derive(Debug, Clone)]
pub enum MessageInput {
    Text(String),
    Parts(Vec<UserPart>),
}

impl<'de> Deserialize<'de> for MessageInput {
    /// By hand, so a bad part is named (`[1].type: unknown variant …`) instead of "did not
    /// match any variant".
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MessageInput, D::Error> {
        use serde::de::Error;
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(MessageInput::Text(text)),
            parts @ Value::Array(_) => serde_path_to_error::deserialize(parts)
                .map(MessageInput::Parts)
                .map_err(|error| D::Error::custom(format!("{}: {}", error.path(), error.inner()))),
            _ => Err(D::Error::custom(
                "expected a string or an array of content parts",
            )),
        }
    }
}

pub use chatd_shared::domain::DynamicTool;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChatRequest {
    /// The first message; without it the chat waits.
    pub message: Option<MessageInput>,
    /// Default: the default model config. Unknown or unusable: 404.
    pub model_config_id: Option<Uuid>,
    #[schema(max_length = 65536, pattern = r"^[^\u0000]*$")]
    pub system_prompt: Option<String>,
    #[schema(schema_with = schemas::labels_or_null)]
    pub labels: Option<serde_json::Map<String, Value>>,
    /// Client-executed tools, names unique.
    #[schema(max_items = 128)]
    pub dynamic_tools: Option<Vec<DynamicTool>>,
    /// One of the caller's chats (else 404).
    pub parent_chat_id: Option<Uuid>,
    #[schema(max_length = 200, pattern = r"^[^\u0000]*$")]
    pub title: Option<String>,
    /// The MCP servers whose tools the chat is offered (each must exist and be enabled: 422
    /// naming the entry), besides the `force_on` ones. Absent: the `default_on` servers.
    #[schema(max_items = 32)]
    pub mcp_server_ids: Option<Vec<Uuid>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreateChatResponse {
    pub chat: Chat,
    pub message: Option<Message>,
}

/// What a message sent to a busy chat does: wait in the queue, or interrupt the turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BusyBehavior {
    #[default]
    Queue,
    Interrupt,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    pub content: MessageInput,
    #[serde(default)]
    pub busy_behavior: BusyBehavior,
    /// Run this and later turns on another model config (unknown or unusable: 404).
    pub model_config_id: Option<Uuid>,
}

/// Absent or `null` fields are unchanged.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchChatRequest {
    #[schema(max_length = 200, pattern = r"^[^\u0000]*$")]
    pub title: Option<String>,
    #[schema(schema_with = schemas::labels_or_null)]
    pub labels: Option<serde_json::Map<String, Value>>,
    /// Archives or unarchives the chat and every descendant (409 while any chat of the tree
    /// is busy; a child cannot be unarchived under an archived parent). Archiving unpins.
    pub archived: Option<bool>,
    /// 0 unpins; k ≥ 1 puts the chat at pin position k (past the end: last) and moves the
    /// other pins so positions stay 1…n. Root chats that are not archived only (else 409).
    #[schema(value_type = Option<i32>, minimum = 0)]
    pub pin_order: Option<crate::body::JsonInt<i32>>,
}

/// `POST /chats/{id}/read`: where the read marker goes (default: the newest message).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkReadRequest {
    /// A visible message of the chat; an earlier one marks later replies unread again.
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub message_id: Option<crate::body::JsonInt<i64>>,
}

/// `PATCH /chats/{id}/messages/{message_id}`: the user message's new content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessageRequest {
    pub content: MessageInput,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatList {
    pub items: Vec<Chat>,
    pub has_more: bool,
    pub next: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    pub items: Vec<Message>,
    pub has_more: bool,
    pub next: Option<String>,
    /// The queue, on the first page only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<Vec<QueuedMessage>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatResponse {
    pub chat: Chat,
}

/// `GET /chats/{id}`: the chat and its direct sub-chats.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatDetail {
    pub chat: Chat,
    /// The chats whose `parent_chat_id` is this one (sub-agents), oldest first; deleted ones
    /// are left out.
    pub children: Vec<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageResponse {
    pub message: Message,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueuedResponse {
    pub queued_message: QueuedMessage,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedResponse {
    /// The id of the queued message removed.
    pub deleted: i64,
}
