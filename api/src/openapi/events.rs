//! The data of each server-sent event, as schemas: `GET /chats/{id}/stream` and
//! `GET /chats/watch` declare their events with these (`text/event-stream`, one schema per
//! event name, the JSON `data` as `contentSchema`). The payloads themselves are built where
//! they are sent (`routes::stream`, `routes::watch`, the worker's `turn::stream`); the
//! schemathesis run in CI validates live streams against these schemas. The API's own
//! events are serialized from these types; `message_part`, `retry` and `error` come from the
//! worker's frames and are relayed as they are.
#![allow(dead_code)] // the worker-built payloads are described, not built, here

use serde::Serialize;
use utoipa::ToSchema;

use chatd_shared::domain::{ChatError, ChatStatus, PendingToolCall};
use chatd_shared::pubsub::OwnerEventKind;

use crate::dto::{Chat, QueuedMessage};

/// `status`: the chat's status changed (`version` grows with every change).
#[derive(Serialize, ToSchema)]
pub struct StatusEvent {
    pub status: ChatStatus,
    pub version: i64,
    /// Present when the status is `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, value_type = Option<ChatError>)]
    pub last_error: Option<serde_json::Value>,
}

/// `message_part`: a streamed preview of the assistant's answer, superseded by the final
/// `message`. `seq` numbers the parts of one attempt from 1.
#[derive(Serialize, ToSchema)]
pub struct MessagePartEvent {
    pub attempt: i32,
    pub seq: i64,
    #[schema(value_type = String, pattern = "^assistant$")]
    pub role: String,
    pub part: StreamPart,
    /// When the worker produced it, µs since the Unix epoch.
    pub ts: i64,
}

/// A delta of one content part.
#[derive(Serialize, ToSchema)]
#[schema(rename_all = "kebab-case")]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum StreamPart {
    Text {
        text: String,
    },
    Reasoning {
        text: String,
    },
    /// Arguments stream as JSON text in pieces; the first delta of a call may be empty.
    ToolCall {
        tool_call_id: String,
        tool_name: String,
        args_delta: String,
    },
}

/// `retry`: the provider failed in a way worth retrying; the worker tries again at
/// `retrying_at`. `message` is cut to 2,048 bytes.
#[derive(Serialize, ToSchema)]
pub struct RetryEvent {
    pub attempt: i32,
    pub seq: i64,
    pub ts: i64,
    pub delay_ms: u64,
    pub kind: String,
    pub message: String,
    pub status_code: Option<u16>,
    #[schema(format = DateTime)]
    pub retrying_at: String,
}

/// `error`: the turn failed; the chat is now `error` (its `last_error` holds the same).
#[derive(Serialize, ToSchema)]
pub struct ErrorEvent {
    pub attempt: i32,
    pub seq: i64,
    pub ts: i64,
    #[serde(flatten)]
    pub error: ChatError,
}

/// `queue`: the chat's queue, whole, after any change.
#[derive(Serialize, ToSchema)]
pub struct QueueEvent {
    pub queued: Vec<QueuedMessage>,
}

/// `attempt_reset`: drop the previews of `attempt` (a new attempt began, or the server hit a
/// hole it cannot fill in the current one); the final `message` is authoritative.
#[derive(Serialize, ToSchema)]
pub struct AttemptResetEvent {
    pub attempt: i32,
}

/// `history_truncated`: only the newest messages were sent; page older ones with
/// `GET /chats/{id}/messages?before_id=`.
#[derive(Serialize, ToSchema)]
pub struct HistoryTruncatedEvent {
    pub before_id: i64,
}

/// `history_reset`: the history changed other than by appending (a user message was edited and
/// the conversation reruns from it). Drop every message and preview shown; the current history
/// follows (the newest messages, then `history_truncated` if there are more), as on a new
/// connection.
#[derive(Serialize, ToSchema)]
pub struct HistoryResetEvent {}

/// `action_required`: the dynamic tool calls waiting for `POST /chats/{id}/tool-results`.
#[derive(Serialize, ToSchema)]
pub struct ActionRequiredEvent {
    pub tool_calls: Vec<PendingToolCall>,
}

/// `title`: the chat's title changed.
#[derive(Serialize, ToSchema)]
pub struct TitleEvent {
    pub title: String,
}

/// `chat` (watch stream): one of the caller's chats changed.
#[derive(Serialize, ToSchema)]
pub struct ChatListEvent {
    pub kind: OwnerEventKind,
    pub chat: Chat,
}

/// `resync` (watch stream): events were dropped for this slow reader; list the chats again.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResyncEvent {}

/// The events of `GET /chats/{id}/stream`, by SSE event name.
pub const CHAT_STREAM_EVENTS: &[(&str, &str)] = &[
    ("status", "StatusEvent"),
    ("message", "Message"),
    ("message_part", "MessagePartEvent"),
    ("queue", "QueueEvent"),
    ("retry", "RetryEvent"),
    ("error", "ErrorEvent"),
    ("attempt_reset", "AttemptResetEvent"),
    ("history_truncated", "HistoryTruncatedEvent"),
    ("history_reset", "HistoryResetEvent"),
    ("action_required", "ActionRequiredEvent"),
    ("title", "TitleEvent"),
];

/// The events of `GET /chats/watch`.
pub const WATCH_EVENTS: &[(&str, &str)] = &[("chat", "ChatListEvent"), ("resync", "ResyncEvent")];
