//! Reads shared by the API (snapshots, fan-out) and the worker.

use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::rows::{ChatRow, FrameRow, MessageRow, QueuedRow};

/// The chat if it exists and belongs to `owner_id` (`None` for both "missing" and "not yours",
/// which callers must answer identically).
pub async fn chat_for_owner(
    client: &impl GenericClient,
    chat_id: Uuid,
    owner_id: Uuid,
) -> Result<Option<ChatRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM chats c WHERE c.id = $1 AND c.owner_id = $2",
        ChatRow::COLUMNS
    );
    let row = client.query_opt(&sql, &[&chat_id, &owner_id]).await?;
    Ok(row.as_ref().map(ChatRow::from_row))
}

/// The chat regardless of owner (internal fan-out only; never for answering a request).
pub async fn chat_by_id(
    client: &impl GenericClient,
    chat_id: Uuid,
) -> Result<Option<ChatRow>, tokio_postgres::Error> {
    let sql = format!("SELECT {} FROM chats c WHERE c.id = $1", ChatRow::COLUMNS);
    let row = client.query_opt(&sql, &[&chat_id]).await?;
    Ok(row.as_ref().map(ChatRow::from_row))
}

/// Visible messages with `id > after_id`, oldest first.
///
/// Safe as a cursor within one chat because every insert into `chat_messages` happens under
/// the chat row lock (DESIGN.md section 3, per-chat cursor safety).
pub async fn messages_after(
    client: &impl GenericClient,
    chat_id: Uuid,
    after_id: i64,
) -> Result<Vec<MessageRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM chat_messages m WHERE m.chat_id = $1 AND m.id > $2 AND NOT m.deleted \
         AND m.visibility <> 'model' ORDER BY m.id",
        MessageRow::COLUMNS
    );
    let rows = client.query(&sql, &[&chat_id, &after_id]).await?;
    Ok(rows.iter().map(MessageRow::from_row).collect())
}

/// The queue in run order.
pub async fn queue(
    client: &impl GenericClient,
    chat_id: Uuid,
) -> Result<Vec<QueuedRow>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {} FROM chat_queued_messages q WHERE q.chat_id = $1 ORDER BY q.position, q.id",
        QueuedRow::COLUMNS
    );
    let rows = client.query(&sql, &[&chat_id]).await?;
    Ok(rows.iter().map(QueuedRow::from_row).collect())
}

/// Frames of `attempt` whose events end after `after_seq`, in seq order.
pub async fn frames_after(
    client: &impl GenericClient,
    chat_id: Uuid,
    attempt: i32,
    after_seq: i64,
) -> Result<Vec<FrameRow>, tokio_postgres::Error> {
    let rows = client
        .query(
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
    client: &impl GenericClient,
    chat_id: Uuid,
    attempt: i32,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(max(seq_to), 0) FROM chat_stream_frames \
             WHERE chat_id = $1 AND attempt = $2",
            &[&chat_id, &attempt],
        )
        .await?;
    Ok(row.get(0))
}
