//! Edit and rerun: a user message is replaced, and the conversation continues from it.

use chatd_shared::db::sql::Sql;
use serde_json::Value;
use uuid::Uuid;

use chatd_shared::db::rows::{ChatRow, MessageRow};
use chatd_shared::domain::{ChatStatus, Role};
use chatd_shared::pubsub::ControlKind;

use super::chats::{insert_message, lock_chat};
use super::{update_chat_sql, Transition};
use crate::error::{ApiError, ApiResult};

/// Replaces user message `message_id` of the caller's chat with `content`:
/// - the message and everything after it are soft-deleted (spend history keeps them; a later
///   compaction summary goes with them, so the prompt falls back to the one before);
/// - the queue is cleared; pending client tool calls go with their (deleted) assistant message;
/// - the replacement is inserted (keeping the original's model choice) and the chat becomes
///   `pending` with `attempt` bumped, so a turn still running is fenced out (its worker is
///   told to stop at once) — and `history_epoch` bumped, so every replica's streams send
///   `history_reset`.
///
/// # Locks
/// Row lock on the chat (`lock_chat`) until commit.
pub async fn edit_message(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
    message_id: i64,
    content: &Value,
) -> ApiResult<(Transition, MessageRow)> {
    let transaction = client.transaction().await?;
    let locked = lock_chat(&transaction, chat_id, owner_id).await?;
    if locked.chat.archived {
        return Err(ApiError::Conflict(
            "chat is archived: unarchive it before editing".into(),
        ));
    }
    let original = transaction
        .row_opt(
            "SELECT role, model_config_id FROM chat_messages \
             WHERE id = $1 AND chat_id = $2 AND NOT deleted AND visibility <> 'model'",
            &[&message_id, &chat_id],
        )
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    let role: String = original.get(0);
    if role != Role::User.as_str() {
        return Err(ApiError::field(
            "message_id",
            format!(
                "message_id: only user messages can be edited; message {message_id} is `{role}`"
            ),
        ));
    }
    transaction
        .exec(
            "UPDATE chat_messages SET deleted = true \
             WHERE chat_id = $1 AND id >= $2 AND NOT deleted",
            &[&chat_id, &message_id],
        )
        .await?;
    let queue_cleared = transaction
        .exec(
            "DELETE FROM chat_queued_messages WHERE chat_id = $1",
            &[&chat_id],
        )
        .await?
        > 0;
    let replacement = insert_message(
        &transaction,
        chat_id,
        Role::User,
        content,
        "both",
        Some(owner_id),
        original.get(1),
    )
    .await?;
    let sql = update_chat_sql(
        "status = 'pending', worker_id = NULL, heartbeat_at = NULL, attempt = c.attempt + 1, \
         action_deadline_at = NULL, last_error = NULL, crash_count = 0, \
         history_epoch = c.history_epoch + 1, \
         last_reply_id = (SELECT max(m.id) FROM chat_messages m \
                          WHERE m.chat_id = c.id AND m.role = 'assistant' AND NOT m.deleted)",
    );
    let row = transaction.row(&sql, &[&chat_id]).await?;
    transaction.commit().await?;
    let mut transition = Transition::new(ChatRow::from_row(&row));
    transition.change.messages = true;
    // A history that is no longer append-only: receivers re-read (and see the new epoch).
    transition.change.other = true;
    transition.change.queue = queue_cleared;
    if matches!(
        locked.chat.status,
        ChatStatus::Running | ChatStatus::Interrupting
    ) {
        transition.change.control = locked.worker_id.map(|id| (id, ControlKind::Cancel));
    }
    Ok((transition, replacement))
}
