//! Changes that reach beyond one chat: archiving and deleting a chat with all its descendants,
//! pin positions (unique and gap-free per owner), and the read marker.
//!
//! # Locks
//! Every change here that can touch more than one chat first locks the owner's `users` row
//! (`FOR NO KEY UPDATE`: inserts that reference the user still go through), then the chat rows
//! it changes in id order. Single-chat transitions (sends, worker commits) lock one chat row and
//! never the user row, so no lock cycle can form; two tree changes of one owner run one after
//! the other.

use chatd_shared::db::sql::Sql;
use uuid::Uuid;

use chatd_shared::db::rows::ChatRow;
use chatd_shared::domain::ChatStatus;

use crate::error::{ApiError, ApiResult};

/// Serialises the owner's multi-chat changes (see the module's locks).
pub async fn lock_owner(
    transaction: &deadpool_postgres::Transaction<'_>,
    owner_id: Uuid,
) -> ApiResult<()> {
    transaction
        .exec(
            "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE",
            &[&owner_id],
        )
        .await?;
    Ok(())
}

/// One chat of a locked tree.
pub struct TreeChat {
    pub id: Uuid,
    pub parent_chat_id: Option<Uuid>,
    pub status: ChatStatus,
    pub archived: bool,
}

/// Locks `chat_id` and every descendant (through `parent_chat_id`, any depth) that is not
/// deleted, in id order. `NotFound` when the chat is missing, deleted or another user's.
pub async fn lock_tree(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    owner_id: Uuid,
) -> ApiResult<Vec<TreeChat>> {
    let rows = transaction
        .rows(
            "WITH RECURSIVE tree AS ( \
                 SELECT id FROM chats WHERE id = $1 AND owner_id = $2 AND NOT deleted \
                 UNION \
                 SELECT c.id FROM chats c JOIN tree t ON c.parent_chat_id = t.id \
                 WHERE NOT c.deleted) \
             SELECT c.id, c.parent_chat_id, c.status, c.archived FROM chats c \
             JOIN tree USING (id) ORDER BY c.id FOR UPDATE OF c",
            &[&chat_id, &owner_id],
        )
        .await?;
    let tree: Vec<TreeChat> = rows
        .iter()
        .map(|row| TreeChat {
            id: row.get(0),
            parent_chat_id: row.get(1),
            status: ChatStatus::parse(row.get(2)).unwrap_or(ChatStatus::Error),
            archived: row.get(3),
        })
        .collect();
    if !tree.iter().any(|chat| chat.id == chat_id) {
        return Err(ApiError::NotFound("chat"));
    }
    Ok(tree)
}

/// 409 naming the first chat of the tree that is pending, running, interrupting or waiting
/// for client tool results.
fn refuse_if_busy(tree: &[TreeChat], action: &str) -> ApiResult<()> {
    match tree.iter().find(|chat| chat.status.is_busy()) {
        Some(busy) => Err(ApiError::Conflict(format!(
            "chat {} is {}: {action} the chat when every chat of its tree is waiting or in error",
            busy.id,
            busy.status.as_str()
        ))),
        None => Ok(()),
    }
}

/// Archives or unarchives `chat_id` and all its descendants. Returns the rows that changed
/// (unarchiving leaves pins at 0; archiving unpins). The caller holds the owner lock.
pub async fn set_archived(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    owner_id: Uuid,
    archived: bool,
) -> ApiResult<Vec<ChatRow>> {
    let tree = lock_tree(transaction, chat_id, owner_id).await?;
    refuse_if_busy(&tree, if archived { "archive" } else { "unarchive" })?;
    if !archived {
        let parent = tree
            .iter()
            .find(|chat| chat.id == chat_id)
            .and_then(|chat| chat.parent_chat_id);
        if let Some(parent_id) = parent {
            let parent_archived = transaction
                .row_opt(
                    "SELECT archived FROM chats WHERE id = $1 AND NOT deleted",
                    &[&parent_id],
                )
                .await?
                .is_some_and(|row| row.get::<_, bool>(0));
            if parent_archived {
                return Err(ApiError::Conflict(format!(
                    "the parent chat {parent_id} is archived: unarchive it first"
                )));
            }
        }
    }
    let ids: Vec<Uuid> = tree
        .iter()
        .filter(|chat| chat.archived != archived)
        .map(|chat| chat.id)
        .collect();
    let sql = format!(
        concat!(
            "UPDATE chats c SET archived = $2, \
             pin_order = CASE WHEN $2 THEN 0 ELSE c.pin_order END, ",
            chatd_shared::bump_chat_version!(),
            " WHERE c.id = ANY($1) RETURNING {}"
        ),
        ChatRow::COLUMNS
    );
    let rows = transaction.rows(&sql, &[&ids, &archived]).await?;
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// Hides `chat_id` and its descendants from every route (their messages stay for spend
/// history). Returns the rows deleted. The caller holds the owner lock.
pub async fn delete_tree(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    owner_id: Uuid,
) -> ApiResult<Vec<ChatRow>> {
    let tree = lock_tree(transaction, chat_id, owner_id).await?;
    refuse_if_busy(&tree, "delete")?;
    let ids: Vec<Uuid> = tree.iter().map(|chat| chat.id).collect();
    // Queued messages of a deleted chat would never run; its files are no longer used by it
    // (they stay their owner's).
    transaction
        .exec(
            "DELETE FROM chat_queued_messages WHERE chat_id = ANY($1)",
            &[&ids],
        )
        .await?;
    transaction
        .exec("DELETE FROM chat_files WHERE chat_id = ANY($1)", &[&ids])
        .await?;
    let sql = format!(
        concat!(
            "UPDATE chats c SET deleted = true, pin_order = 0, ",
            chatd_shared::bump_chat_version!(),
            " WHERE c.id = ANY($1) RETURNING {}"
        ),
        ChatRow::COLUMNS
    );
    let rows = transaction.rows(&sql, &[&ids]).await?;
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// Puts `chat_id` at pin position `position` (0 unpins; past the end means last) and moves
/// the owner's other pinned chats so positions stay 1…n without duplicates or holes. Also
/// closes the holes archiving or deleting left. Returns every row whose position changed,
/// `chat_id`'s included. The caller holds the owner lock.
///
/// A pin move bumps `version` (chat lists hear of it) but not `updated_at` (it is not
/// activity: the list's order below the pins stays as it was).
pub async fn set_pin(
    transaction: &deadpool_postgres::Transaction<'_>,
    owner_id: Uuid,
    chat_id: Uuid,
    position: i32,
) -> ApiResult<Vec<ChatRow>> {
    let sql = format!(
        "WITH others AS ( \
             SELECT id, row_number() OVER (ORDER BY pin_order, id)::int AS n FROM chats \
             WHERE owner_id = $1 AND pin_order > 0 AND id <> $2), \
         target AS ( \
             SELECT least($3::int, (SELECT count(*)::int + 1 FROM others)) AS n), \
         wanted AS ( \
             SELECT o.id, CASE WHEN t.n > 0 AND o.n >= t.n THEN o.n + 1 ELSE o.n END AS n \
             FROM others o LEFT JOIN target t ON true \
             UNION ALL SELECT $2, t.n FROM target t) \
         UPDATE chats c SET pin_order = w.n, version = c.version + 1 FROM wanted w \
         WHERE c.id = w.id AND c.pin_order <> w.n RETURNING {}",
        ChatRow::COLUMNS
    );
    let rows = transaction
        .rows(&sql, &[&owner_id, &chat_id, &position])
        .await?;
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// Renumbers the owner's pins 1…n (after archiving or deleting pinned chats). Returns the
/// rows whose position changed.
pub async fn close_pin_holes(
    transaction: &deadpool_postgres::Transaction<'_>,
    owner_id: Uuid,
) -> ApiResult<Vec<ChatRow>> {
    let sql = format!(
        "UPDATE chats c SET pin_order = r.n, version = c.version + 1 FROM ( \
             SELECT id, row_number() OVER (ORDER BY pin_order, id)::int AS n FROM chats \
             WHERE owner_id = $1 AND pin_order > 0) r \
         WHERE c.id = r.id AND c.pin_order <> r.n RETURNING {}",
        ChatRow::COLUMNS
    );
    let rows = transaction.rows(&sql, &[&owner_id]).await?;
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// Moves the owner's read marker of `chat_id` to `message_id` (a visible message of the chat)
/// or, when `None`, to the newest visible message. Bumps `version` but not `updated_at`.
pub async fn mark_read(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
    message_id: Option<i64>,
) -> ApiResult<ChatRow> {
    let transaction = client.transaction().await?;
    let locked = super::chats::lock_chat(&transaction, chat_id, owner_id).await?;
    let marker = match message_id {
        Some(message_id) => {
            let found = transaction
                .row_opt(
                    "SELECT 1 FROM chat_messages WHERE id = $1 AND chat_id = $2 AND NOT deleted \
                     AND visibility <> 'model'",
                    &[&message_id, &chat_id],
                )
                .await?;
            if found.is_none() {
                // The chat exists; what the body names does not: 422, not 404 (a 404 would
                // say the chat is missing — schemathesis's ST302 took it so).
                return Err(ApiError::MissingReference {
                    field: "message_id".into(),
                    message: "message_id: no visible message of this chat has this id".into(),
                });
            }
            Some(message_id)
        }
        None => transaction
            .row(
                "SELECT max(id) FROM chat_messages WHERE chat_id = $1 AND NOT deleted \
                 AND visibility <> 'model'",
                &[&chat_id],
            )
            .await?
            .get(0),
    };
    let sql = format!(
        "UPDATE chats c SET last_read_message_id = $2, version = c.version + 1 \
         WHERE c.id = $1 RETURNING {}",
        ChatRow::COLUMNS
    );
    let row = transaction.row(&sql, &[&locked.chat.id, &marker]).await?;
    transaction.commit().await?;
    Ok(ChatRow::from_row(&row))
}
