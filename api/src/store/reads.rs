//! The API's reads: stream snapshots and gap fills, hub resyncs (`chat_sync`), chat lookups
//! and the queue.

use chatd_shared::db::sql::Sql;
use uuid::Uuid;

use chatd_shared::db::rows::{ChatRow, FrameRow, MessageRow, QueuedRow};

/// The chat if it exists and belongs to `owner_id` (`None` for both "missing" and "not yours",
/// which callers must answer identically).
pub async fn chat_for_owner(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    owner_id: Uuid,
) -> Result<Option<ChatRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM chats c WHERE c.id = $1 AND c.owner_id = $2 AND NOT c.deleted",
        ChatRow::COLUMNS
    );
    let row = client.row_opt(&sql, &[&chat_id, &owner_id]).await?;
    Ok(row.as_ref().map(ChatRow::from_row))
}

/// The chat regardless of owner (internal fan-out only; never for answering a request).
pub async fn chat_by_id(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
) -> Result<Option<ChatRow>, tokio_postgres::Error> {
    let sql = format!("SELECT {} FROM chats c WHERE c.id = $1", ChatRow::COLUMNS);
    let row = client.row_opt(&sql, &[&chat_id]).await?;
    Ok(row.as_ref().map(ChatRow::from_row))
}

/// The chat unless it is hidden from chat lists (`/v1` Chat Completions and `store: false`
/// chats), regardless of owner (the watch stream's fan-out).
pub async fn listed_chat_by_id(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
) -> Result<Option<ChatRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM chats c WHERE c.id = $1 AND NOT c.hidden",
        ChatRow::COLUMNS
    );
    let row = client.row_opt(&sql, &[&chat_id]).await?;
    Ok(row.as_ref().map(ChatRow::from_row))
}

/// The statement of a page of a chat's messages: its newest `$4` visible rows between the
/// exclusive bounds `$2` (after) and `$3` (before), newest first. The page is read by
/// `chat_messages_newest` (migration 0013), whose plan is the backward scan of the chat's
/// index whatever the statistics: it stops after the page, however long the chat.
pub fn newest_messages_sql() -> String {
    format!(
        "SELECT {} FROM chat_messages_newest($1, $2, $3, $4) m",
        MessageRow::COLUMNS
    )
}

/// The chat's newest `limit` visible messages with `after_id < id < before_id` (`None`: no
/// bound), newest first.
pub async fn newest_messages(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    after_id: Option<i64>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<MessageRow>, tokio_postgres::Error> {
    let rows = client
        .rows(
            &newest_messages_sql(),
            &[&chat_id, &after_id, &before_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(MessageRow::from_row).collect())
}

/// The newest `limit` visible messages after `after_id`, oldest first, and whether older ones
/// after `after_id` were left out.
pub async fn newest_messages_after(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    after_id: i64,
    limit: i64,
) -> Result<(Vec<MessageRow>, bool), tokio_postgres::Error> {
    let mut messages = newest_messages(client, chat_id, Some(after_id), None, limit + 1).await?;
    let truncated = messages.len() as i64 > limit;
    messages.truncate(limit.max(0) as usize);
    messages.reverse();
    Ok((messages, truncated))
}

/// Whether message `message_id` of the chat is still in the visible history (a stream cursor
/// naming one that is not gets `history_reset`).
pub async fn message_visible(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    message_id: i64,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .row_opt(
            "SELECT 1 FROM chat_messages WHERE id = $1 AND chat_id = $2 AND NOT deleted \
             AND visibility <> 'model'",
            &[&message_id, &chat_id],
        )
        .await?;
    Ok(row.is_some())
}

/// The queue in run order.
pub async fn queue(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
) -> Result<Vec<QueuedRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM chat_queued_messages q WHERE q.chat_id = $1 ORDER BY q.position, q.id",
        QueuedRow::COLUMNS
    );
    let rows = client.rows(&sql, &[&chat_id]).await?;
    Ok(rows.iter().map(QueuedRow::from_row).collect())
}

/// Frames of `attempt` whose events end after `after_seq`, in seq order.
pub async fn frames_after(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    attempt: i32,
    after_seq: i64,
) -> Result<Vec<FrameRow>, tokio_postgres::Error> {
    let rows = client
        .rows(
            "SELECT attempt, seq_from, seq_to, events, \
             (extract(epoch FROM created_at) * 1000000)::bigint \
             FROM chat_stream_frames WHERE chat_id = $1 AND attempt = $2 AND seq_to > $3 \
             ORDER BY seq_from",
            &[&chat_id, &attempt, &after_seq],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| FrameRow {
            attempt: row.get(0),
            seq_from: row.get(1),
            seq_to: row.get(2),
            events: row.get(3),
            created_at_us: row.get(4),
        })
        .collect())
}

/// The last seq written for `attempt` (0 when none, or already trimmed).
pub async fn max_frame_seq(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    attempt: i32,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .row(
            "SELECT coalesce(max(seq_to), 0) FROM chat_stream_frames \
             WHERE chat_id = $1 AND attempt = $2",
            &[&chat_id, &attempt],
        )
        .await?;
    Ok(row.get(0))
}

/// Everything an API replica's hub needs after a change, read in one statement.
pub struct ChatSync {
    pub chat: ChatRow,
    /// Visible messages after the given id, oldest first.
    pub messages: Vec<MessageRow>,
    /// The queue in run order, when asked for.
    pub queue: Option<Vec<QueuedRow>>,
    /// Frames of the chat's current attempt after the given position, in seq order.
    pub frames: Vec<FrameRow>,
    /// Bumped by every edit-and-rerun (`history_reset`).
    pub history_epoch: i32,
}

/// One read for a hub resync: the chat, its messages after `after_message_id`, the queue (when
/// `with_queue`), and the current attempt's frames after `after_seq` (counted from 0 when the
/// current attempt is not `known_attempt`). `None` when the chat is gone or deleted.
pub async fn chat_sync(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    after_message_id: i64,
    with_queue: bool,
    known_attempt: i32,
    after_seq: i64,
) -> Result<Option<ChatSync>, SyncError> {
    let sql = format!(
        "SELECT {chat_columns}, \
           (SELECT coalesce(json_agg(m ORDER BY m.id), '[]'::json) FROM ( \
              SELECT m.id, m.chat_id, m.role, m.content, m.created_at, m.model_config_id, \
                  m.input_tokens, m.output_tokens, m.reasoning_tokens, m.cache_read_tokens, \
                  m.cache_write_tokens, m.cost_micros, m.runtime_ms, m.attempt, m.stream_seq \
              FROM chat_messages m WHERE m.chat_id = c.id AND m.id > $2::bigint AND NOT m.deleted \
              AND m.visibility <> 'model') m), \
           CASE WHEN $3::bool THEN (SELECT coalesce(json_agg(q ORDER BY q.position, q.id), '[]'::json) \
              FROM (SELECT q.id, q.chat_id, q.content, q.created_at, q.position \
                    FROM chat_queued_messages q WHERE q.chat_id = c.id) q) END, \
           (SELECT coalesce(json_agg(f ORDER BY f.attempt, f.seq_from), '[]'::json) FROM ( \
              SELECT f.attempt, f.seq_from, f.seq_to, f.events, \
                  (extract(epoch FROM f.created_at) * 1000000)::bigint AS created_at_us \
              FROM chat_stream_frames f WHERE f.chat_id = c.id \
              AND ((f.attempt = $4::int AND f.seq_to > $5::bigint) OR f.attempt > $4::int)) f), \
           c.history_epoch \
         FROM chats c WHERE c.id = $1 AND NOT c.deleted",
        chat_columns = ChatRow::COLUMNS
    );
    let row = client
        .row_opt(
            &sql,
            &[
                &chat_id,
                &after_message_id,
                &with_queue,
                &known_attempt,
                &after_seq,
            ],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let messages: serde_json::Value = row.get(ChatRow::LEN);
    let queue: Option<serde_json::Value> = row.get(ChatRow::LEN + 1);
    let frames: serde_json::Value = row.get(ChatRow::LEN + 2);
    let history_epoch: i32 = row.get(ChatRow::LEN + 3);
    Ok(Some(ChatSync {
        chat: ChatRow::from_row(&row),
        messages: serde_json::from_value(messages)?,
        queue: queue.map(serde_json::from_value).transpose()?,
        frames: serde_json::from_value(frames)?,
        history_epoch,
    }))
}

/// Why `chat_sync` failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error("decode the chat sync row: {0}")]
    Decode(#[from] serde_json::Error),
}
