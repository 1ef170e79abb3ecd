//! Row types read by both the API and the worker, with their column lists.
//!
//! Each row type has a `COLUMNS` constant (the `SELECT` list, in the order `from_row` reads
//! it) so queries in other modules stay in sync with the decoder.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::{ChatStatus, Role};

/// A `chats` row as the API and pub/sub see it (not the lease internals).
#[derive(Debug, Clone)]
pub struct ChatRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub parent_chat_id: Option<Uuid>,
    pub title: String,
    pub status: ChatStatus,
    pub version: i64,
    pub attempt: i32,
    pub model_config_id: Option<Uuid>,
    pub labels: Value,
    pub archived: bool,
    pub pin_order: i32,
    pub last_error: Option<Value>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// An assistant message newer than the owner's read marker exists.
    pub has_unread: bool,
}

impl ChatRow {
    pub const COLUMNS: &'static str = "c.id, c.owner_id, c.parent_chat_id, c.title, c.status, \
        c.version, c.attempt, c.model_config_id, c.labels, c.archived, c.pin_order, \
        c.last_error, c.created_at, c.updated_at, \
        coalesce(c.last_reply_id, 0) > coalesce(c.last_read_message_id, 0)";

    /// How many columns `COLUMNS` selects (queries that select more read them from here).
    pub const LEN: usize = 15;

    /// SQL for "has an unread reply" on the row aliased `c` (filters use the same rule).
    pub const HAS_UNREAD: &'static str =
        "(coalesce(c.last_reply_id, 0) > coalesce(c.last_read_message_id, 0))";

    pub fn from_row(row: &Row) -> ChatRow {
        let status: &str = row.get(4);
        ChatRow {
            id: row.get(0),
            owner_id: row.get(1),
            parent_chat_id: row.get(2),
            title: row.get(3),
            // The CHECK constraint on chats.status makes any other value impossible.
            status: ChatStatus::parse(status).unwrap_or(ChatStatus::Error),
            version: row.get(5),
            attempt: row.get(6),
            model_config_id: row.get(7),
            labels: row.get(8),
            archived: row.get(9),
            pin_order: row.get(10),
            last_error: row.get(11),
            created_at: row.get(12),
            updated_at: row.get(13),
            has_unread: row.get(14),
        }
    }
}

/// A `chat_messages` row. Also decodable from `row_to_json` output (see `chatd_api::store::reads::chat_sync`),
/// and carried inside change hints when small (`ChangeNotice::new_messages`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageRow {
    pub id: i64,
    pub chat_id: Uuid,
    pub role: Role,
    /// JSON array of content parts (`domain::ContentPart`), passed through unparsed.
    pub content: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub model_config_id: Option<Uuid>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub cache_read_tokens: Option<i64>,
    pub cache_write_tokens: Option<i64>,
    pub cost_micros: Option<i64>,
    pub runtime_ms: Option<i64>,
    /// The lease epoch that wrote an assistant/tool row (None for user rows).
    #[serde(default)]
    pub attempt: Option<i32>,
    /// The last seq that attempt had streamed when the row was committed: its previews up to
    /// here precede it (see `stream_order`).
    #[serde(default)]
    pub stream_seq: Option<i64>,
}

impl MessageRow {
    pub const COLUMNS: &'static str = "m.id, m.chat_id, m.role, m.content, m.created_at, \
        m.model_config_id, m.input_tokens, m.output_tokens, m.reasoning_tokens, \
        m.cache_read_tokens, m.cache_write_tokens, m.cost_micros, m.runtime_ms, m.attempt, \
        m.stream_seq";

    /// Where this row stands in its attempt's stream: the previews with a smaller or equal
    /// (attempt, seq) precede it. None for rows no preview precedes (user rows, synthetic
    /// results written by the API).
    pub fn stream_position(&self) -> Option<(i32, i64)> {
        Some((self.attempt?, self.stream_seq?))
    }

    pub fn from_row(row: &Row) -> MessageRow {
        MessageRow::from_row_at(row, 0)
    }

    /// Decodes the columns starting at `offset` (for joins that select other columns first).
    pub fn from_row_at(row: &Row, offset: usize) -> MessageRow {
        let role: &str = row.get(offset + 2);
        MessageRow {
            id: row.get(offset),
            chat_id: row.get(offset + 1),
            role: Role::parse(role).unwrap_or(Role::User),
            content: row.get(offset + 3),
            created_at: row.get(offset + 4),
            model_config_id: row.get(offset + 5),
            input_tokens: row.get(offset + 6),
            output_tokens: row.get(offset + 7),
            reasoning_tokens: row.get(offset + 8),
            cache_read_tokens: row.get(offset + 9),
            cache_write_tokens: row.get(offset + 10),
            cost_micros: row.get(offset + 11),
            runtime_ms: row.get(offset + 12),
            attempt: row.get(offset + 13),
            stream_seq: row.get(offset + 14),
        }
    }
}

/// A `chat_queued_messages` row.
#[derive(Debug, Clone, Deserialize)]
pub struct QueuedRow {
    pub id: i64,
    pub chat_id: Uuid,
    pub content: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl QueuedRow {
    pub const COLUMNS: &'static str = "q.id, q.chat_id, q.content, q.created_at";

    pub fn from_row(row: &Row) -> QueuedRow {
        QueuedRow {
            id: row.get(0),
            chat_id: row.get(1),
            content: row.get(2),
            created_at: row.get(3),
        }
    }
}

/// One row of the resume log `chat_stream_frames`.
#[derive(Debug, Clone, Deserialize)]
pub struct FrameRow {
    pub attempt: i32,
    pub seq_from: i64,
    pub seq_to: i64,
    /// JSON array of `stream::SeqEvent`.
    pub events: Value,
    /// Database clock at insert, microseconds since the Unix epoch (relay latency).
    pub created_at_us: i64,
}
