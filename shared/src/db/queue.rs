//! The queue head's promotion into the history, shared by the API (send, promote) and the
//! recovery sweep. (The worker's step commit does the same inside its single statement.)

use crate::db::sql::Sql;
use uuid::Uuid;

use super::rows::MessageRow;

/// Moves the head of `chat_id`'s queue into `chat_messages` as a user message, in one
/// statement; `None` when the queue is empty.
///
/// # Locks
/// The caller must hold the chat row lock (per-chat message ids stay in commit order, and a
/// concurrent delete of the queued message cannot race the promotion).
pub async fn promote_head(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
) -> Result<Option<MessageRow>, tokio_postgres::Error> {
    let sql = format!(
        "WITH head AS ( \
             DELETE FROM chat_queued_messages WHERE id = ( \
                 SELECT id FROM chat_queued_messages WHERE chat_id = $1 \
                 ORDER BY position, id LIMIT 1) \
             RETURNING chat_id, content, model_config_id, created_by) \
         INSERT INTO chat_messages AS m (chat_id, role, content, visibility, created_by, \
             model_config_id) \
         SELECT chat_id, 'user', content, 'both', created_by, model_config_id FROM head \
         RETURNING {}",
        MessageRow::COLUMNS
    );
    let row = transaction.row_opt(&sql, &[&chat_id]).await?;
    Ok(row.as_ref().map(MessageRow::from_row))
}
