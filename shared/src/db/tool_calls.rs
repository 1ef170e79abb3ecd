//! Pending (client-executed) tool calls of a chat in `requires_action`, and the synthetic
//! results that close them when the chat leaves that state any other way than through
//! `POST /chats/{id}/tool-results` (interrupt, a new message, the action deadline).
//!
//! **Invariant:** a provider never sees a tool call without a result. Every transition out of
//! `requires_action` either stores the client's results or [`close_pending`]'s synthetic ones,
//! in the same transaction as the status change.

use crate::db::sql::Sql;
use serde_json::Value;
use uuid::Uuid;

use super::rows::MessageRow;
use crate::domain::{pending_tool_calls, ContentPart, PendingToolCall};

/// The calls of the latest assistant row that have no result yet, in call order.
///
/// # Locks
/// None; callers that act on the answer hold the chat row lock.
pub async fn load_pending<C: crate::db::sql::Sql>(
    client: &C,
    chat_id: Uuid,
) -> Result<Vec<PendingToolCall>, tokio_postgres::Error> {
    let rows = client
        .rows(
            "SELECT role, content FROM chat_messages WHERE chat_id = $1 AND NOT deleted \
             AND id >= coalesce((SELECT max(id) FROM chat_messages \
                 WHERE chat_id = $1 AND role = 'assistant' AND NOT deleted), 0) ORDER BY id",
            &[&chat_id],
        )
        .await?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        let role: String = row.get(0);
        let content: Value = row.get(1);
        let parts: Vec<ContentPart> = serde_json::from_value(content).unwrap_or_default();
        messages.push((role, parts));
    }
    Ok(pending_tool_calls(
        messages
            .iter()
            .map(|(role, parts)| (role.as_str(), parts.as_slice())),
    ))
}

/// Stores an error result for every pending call (`reason` is what the model reads) and
/// returns the inserted tool row, or `None` when nothing was pending.
///
/// # Locks
/// The caller holds the chat row lock.
pub async fn close_pending(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    reason: &str,
) -> Result<Option<MessageRow>, tokio_postgres::Error> {
    let pending = load_pending(transaction, chat_id).await?;
    if pending.is_empty() {
        return Ok(None);
    }
    let parts: Vec<ContentPart> = pending
        .iter()
        .map(|call| ContentPart::ToolResult {
            tool_call_id: call.tool_call_id.clone(),
            tool_name: call.tool_name.clone(),
            result: Value::String(reason.to_owned()),
            is_error: true,
        })
        .collect();
    Ok(Some(insert_results(transaction, chat_id, parts).await?))
}

/// Inserts a tool row holding `results` (tool-result parts, in call order) written by chatd
/// itself (no `created_by`).
///
/// # Locks
/// The caller holds the chat row lock.
pub async fn insert_results(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    results: Vec<ContentPart>,
) -> Result<MessageRow, tokio_postgres::Error> {
    let content = serde_json::to_value(results).unwrap_or(Value::Array(Vec::new()));
    let sql = format!(
        "INSERT INTO chat_messages AS m (chat_id, role, content, visibility) \
         VALUES ($1, 'tool', $2, 'both') RETURNING {}",
        MessageRow::COLUMNS
    );
    let row = transaction.row(&sql, &[&chat_id, &content]).await?;
    Ok(MessageRow::from_row(&row))
}
