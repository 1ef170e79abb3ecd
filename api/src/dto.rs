//! The public wire format (JSON DTOs). Domain rows from `chatd-shared` are converted here;
//! nothing else in the system knows these shapes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use chatd_shared::db::rows::{ChatRow, MessageRow, QueuedRow};
use chatd_shared::domain::{ChatStatus, ContentPart};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chat {
    pub id: Uuid,
    pub title: String,
    pub status: ChatStatus,
    pub owner_id: Uuid,
    pub parent_chat_id: Option<Uuid>,
    pub model_config_id: Option<Uuid>,
    pub labels: Value,
    pub archived: bool,
    pub pin_order: i32,
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
            last_error: row.last_error.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub id: i64,
    pub chat_id: Uuid,
    pub role: String,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub id: i64,
    pub chat_id: Uuid,
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

/// `message` / `content` in requests: a plain string or an array of content parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageInput {
    Text(String),
    Parts(Vec<ContentPart>),
}

pub use chatd_shared::domain::DynamicTool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateChatRequest {
    pub message: Option<MessageInput>,
    pub model_config_id: Option<Uuid>,
    pub system_prompt: Option<String>,
    pub labels: Option<serde_json::Map<String, Value>>,
    pub dynamic_tools: Option<Vec<DynamicTool>>,
    pub parent_chat_id: Option<Uuid>,
    pub title: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CreateChatResponse {
    pub chat: Chat,
    pub message: Option<Message>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusyBehavior {
    #[default]
    Queue,
    Interrupt,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    pub content: MessageInput,
    #[serde(default)]
    pub busy_behavior: BusyBehavior,
    pub model_config_id: Option<Uuid>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchChatRequest {
    pub title: Option<String>,
    pub labels: Option<serde_json::Map<String, Value>>,
    pub archived: Option<bool>,
    pub pin_order: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChatList {
    pub items: Vec<Chat>,
    pub has_more: bool,
    pub next: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MessageList {
    pub items: Vec<Message>,
    pub has_more: bool,
    pub next: Option<String>,
    /// The queue, on the first page only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<Vec<QueuedMessage>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChatResponse {
    pub chat: Chat,
}
