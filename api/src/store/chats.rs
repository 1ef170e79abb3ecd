//! Chat creation, reads, listing and updates.

use chatd_shared::db::sql::Sql;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::reads;
use chatd_shared::db::rows::{ChatRow, MessageRow};
use chatd_shared::domain::{ChatStatus, Role};
use chatd_shared::pubsub::OwnerEventKind;

use super::{tree, update_chat_sql, Transition};
use crate::error::{ApiError, ApiResult};
use chatd_shared::pubsub::ChatChange;

/// Validated input of `POST /chats`.
pub struct NewChat {
    pub owner_id: Uuid,
    pub title: String,
    /// Storage form of the first user message, if any.
    pub message: Option<Value>,
    pub model_config_id: Option<Uuid>,
    pub system_prompt: Option<String>,
    pub labels: Value,
    pub dynamic_tools: Value,
    pub parent_chat_id: Option<Uuid>,
    /// `None`: the `default_on` MCP servers.
    pub mcp_server_ids: Option<Vec<Uuid>>,
}

/// Inserts a message row. The caller holds the chat row lock (or created the chat in the
/// same transaction), which keeps per-chat message ids in commit order.
pub async fn insert_message(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    role: Role,
    content: &Value,
    visibility: &str,
    created_by: Option<Uuid>,
    model_config_id: Option<Uuid>,
) -> Result<MessageRow, tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO chat_messages AS m (chat_id, role, content, visibility, created_by, \
         model_config_id) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {}",
        MessageRow::COLUMNS
    );
    let row = transaction
        .row(
            &sql,
            &[
                &chat_id,
                &role.as_str(),
                content,
                &visibility,
                &created_by,
                &model_config_id,
            ],
        )
        .await?;
    Ok(MessageRow::from_row(&row))
}

/// Checks that a model config can be chosen (exists, enabled, not deleted).
pub async fn check_model_config(
    client: &impl chatd_shared::db::sql::Sql,
    model_config_id: Uuid,
    field: &str,
) -> ApiResult<()> {
    let found = client
        .row_opt(
            concat!(
                "SELECT 1 FROM model_configs mc WHERE mc.id = $1 AND ",
                chatd_shared::usable_model_config!()
            ),
            &[&model_config_id],
        )
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(ApiError::MissingReference {
            field: field.to_string(),
            message: format!("{field}: no usable model config with this id (it must exist, be enabled and not deleted, and its provider be enabled)"),
        }),
    }
}

/// ∅ → pending (with a message) or waiting (without).
pub async fn create_chat(
    client: &mut deadpool_postgres::Client,
    new_chat: NewChat,
) -> ApiResult<(Transition, Option<MessageRow>)> {
    let transaction = client.transaction().await?;
    if let Some(model_config_id) = new_chat.model_config_id {
        check_model_config(&transaction, model_config_id, "model_config_id").await?;
    }
    let mut root_chat_id = None;
    let mut depth: i16 = 0;
    if let Some(parent_id) = new_chat.parent_chat_id {
        // FOR SHARE: the parent cannot be archived or deleted until this child exists (and
        // then the cascade finds it).
        let parent = transaction
            .row_opt(
                "SELECT coalesce(root_chat_id, id), archived, depth FROM chats \
                 WHERE id = $1 AND owner_id = $2 AND NOT deleted FOR SHARE",
                &[&parent_id, &new_chat.owner_id],
            )
            .await?
            .ok_or_else(|| ApiError::MissingReference {
                field: "parent_chat_id".into(),
                message: "parent_chat_id: no such chat".into(),
            })?;
        if parent.get::<_, bool>(1) {
            return Err(ApiError::Conflict(
                "the parent chat is archived: unarchive it first".into(),
            ));
        }
        root_chat_id = Some(parent.get::<_, Uuid>(0));
        depth = parent.get::<_, i16>(2).saturating_add(1);
    }
    let mcp_server_ids =
        chatd_shared::db::mcp::pick_for_chat(&transaction, new_chat.mcp_server_ids.as_deref())
            .await?;
    let status = if new_chat.message.is_some() {
        ChatStatus::Pending
    } else {
        ChatStatus::Waiting
    };
    let sql = format!(
        "INSERT INTO chats AS c (owner_id, parent_chat_id, root_chat_id, title, status, \
         model_config_id, labels, dynamic_tools, depth, mcp_server_ids) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         RETURNING {}",
        ChatRow::COLUMNS
    );
    let row = transaction
        .row(
            &sql,
            &[
                &new_chat.owner_id,
                &new_chat.parent_chat_id,
                &root_chat_id,
                &new_chat.title,
                &status.as_str(),
                &new_chat.model_config_id,
                &new_chat.labels,
                &new_chat.dynamic_tools,
                &depth,
                &mcp_server_ids,
            ],
        )
        .await?;
    let chat = ChatRow::from_row(&row);
    if let Some(prompt) = &new_chat.system_prompt {
        let content = serde_json::json!([{"type": "text", "text": prompt}]);
        insert_message(
            &transaction,
            chat.id,
            Role::System,
            &content,
            "model",
            Some(new_chat.owner_id),
            None,
        )
        .await?;
    }
    let mut first_message = None;
    if let Some(content) = &new_chat.message {
        first_message = Some(
            insert_message(
                &transaction,
                chat.id,
                Role::User,
                content,
                "both",
                Some(new_chat.owner_id),
                new_chat.model_config_id,
            )
            .await?,
        );
    }
    transaction.commit().await?;
    let mut transition = Transition::new(chat);
    transition.change.messages = first_message.is_some();
    transition.change.new_messages = first_message.iter().cloned().collect();
    transition.change.owner_event = OwnerEventKind::Created;
    Ok((transition, first_message))
}

/// Locks the caller's chat row (`SELECT … FOR UPDATE`) and returns it with its queue length
/// and current worker. `NotFound` for missing and foreign chats alike.
///
/// # Locks
/// Row lock on `chats.id = chat_id` until the transaction ends.
pub async fn lock_chat(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    owner_id: Uuid,
) -> ApiResult<LockedChat> {
    let sql = format!(
        "SELECT {}, c.worker_id, \
         (SELECT count(*) FROM chat_queued_messages q WHERE q.chat_id = c.id) \
         FROM chats c WHERE c.id = $1 AND c.owner_id = $2 AND NOT c.deleted FOR UPDATE",
        ChatRow::COLUMNS
    );
    let row = transaction
        .row_opt(&sql, &[&chat_id, &owner_id])
        .await?
        .ok_or(ApiError::NotFound("chat"))?;
    Ok(LockedChat {
        chat: ChatRow::from_row(&row),
        worker_id: row.get(ChatRow::LEN),
        queue_len: row.get(ChatRow::LEN + 1),
    })
}

pub struct LockedChat {
    pub chat: ChatRow,
    pub worker_id: Option<Uuid>,
    pub queue_len: i64,
}

/// Validated input of `PATCH /chats/{id}`.
pub struct ChatPatch {
    pub title: Option<String>,
    pub labels: Option<Value>,
    pub archived: Option<bool>,
    pub pin_order: Option<i32>,
}

pub async fn patch_chat(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
    patch: ChatPatch,
) -> ApiResult<Transition> {
    let transaction = client.transaction().await?;
    if patch.archived.is_some() || patch.pin_order.is_some() {
        // These change other chats too (the tree, other pins): owner lock first.
        tree::lock_owner(&transaction, owner_id).await?;
    }
    let locked = lock_chat(&transaction, chat_id, owner_id).await?;
    let mut changed = ChangedRows::default();
    if let Some(archived) = patch.archived {
        if archived != locked.chat.archived {
            let rows = tree::set_archived(&transaction, chat_id, owner_id, archived).await?;
            let unpinned = archived && rows.iter().any(|row| row.pin_order == 0);
            changed.extend(rows, OwnerEventKind::Archived);
            if unpinned {
                let rows = tree::close_pin_holes(&transaction, owner_id).await?;
                changed.extend(rows, OwnerEventKind::Updated);
            }
        }
    }
    if let Some(position) = patch.pin_order {
        let current = changed.row(chat_id).unwrap_or(&locked.chat);
        if position > 0 && current.parent_chat_id.is_some() {
            return Err(ApiError::Conflict(
                "only root chats are listed, so only they can be pinned".into(),
            ));
        }
        if position > 0 && current.archived {
            return Err(ApiError::Conflict(
                "the chat is archived: unarchive it before pinning it".into(),
            ));
        }
        let rows = tree::set_pin(&transaction, owner_id, chat_id, position).await?;
        changed.extend(rows, OwnerEventKind::Updated);
    }
    if patch.title.is_some() || patch.labels.is_some() {
        let sql = update_chat_sql("title = coalesce($2, c.title), labels = coalesce($3, c.labels)");
        let row = transaction
            .row(&sql, &[&chat_id, &patch.title, &patch.labels])
            .await?;
        let kind = if patch.title.is_some() {
            OwnerEventKind::Title
        } else {
            OwnerEventKind::Updated
        };
        changed.extend([ChatRow::from_row(&row)], kind);
    }
    transaction.commit().await?;
    Ok(changed.into_transition(locked.chat))
}

/// Deletes the chat and its descendants (`tree::delete_tree`) and closes the pin holes.
pub async fn delete_chat(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
) -> ApiResult<Transition> {
    let transaction = client.transaction().await?;
    tree::lock_owner(&transaction, owner_id).await?;
    let locked = lock_chat(&transaction, chat_id, owner_id).await?;
    let mut changed = ChangedRows::default();
    let rows = tree::delete_tree(&transaction, chat_id, owner_id).await?;
    let unpinned = rows.iter().any(|row| row.pin_order != 0) || locked.chat.pin_order != 0;
    changed.extend(rows, OwnerEventKind::Deleted);
    if unpinned {
        let rows = tree::close_pin_holes(&transaction, owner_id).await?;
        changed.extend(rows, OwnerEventKind::Updated);
    }
    transaction.commit().await?;
    Ok(changed.into_transition(locked.chat))
}

/// The rows one transaction changed, newest version of each chat, with the owner event each
/// chat's change is announced as (the first specific one: `archived` wins over a pin shift).
#[derive(Default)]
pub struct ChangedRows {
    rows: Vec<(ChatRow, OwnerEventKind)>,
}

impl ChangedRows {
    pub fn extend(&mut self, rows: impl IntoIterator<Item = ChatRow>, kind: OwnerEventKind) {
        for row in rows {
            match self.rows.iter_mut().find(|(known, _)| known.id == row.id) {
                Some((known, known_kind)) => {
                    *known = row;
                    if *known_kind == OwnerEventKind::Updated {
                        *known_kind = kind;
                    }
                }
                None => self.rows.push((row, kind)),
            }
        }
    }

    pub fn row(&self, chat_id: Uuid) -> Option<&ChatRow> {
        self.rows
            .iter()
            .find(|(row, _)| row.id == chat_id)
            .map(|(row, _)| row)
    }

    /// The transition of `unchanged.id` (its row as it is now), with every other changed chat
    /// in `others`. Nothing changed: the chat as it was, and nothing to publish.
    pub fn into_transition(self, unchanged: ChatRow) -> Transition {
        let chat_id = unchanged.id;
        let mut main = None;
        let mut others = Vec::new();
        for (row, kind) in self.rows {
            let change = ChatChange::of_row(&row).with_other().with_owner_event(kind);
            if row.id == chat_id {
                main = Some((row, change));
            } else {
                others.push(change);
            }
        }
        let mut transition = match main {
            Some((row, change)) => {
                let mut transition = Transition::new(row);
                transition.change = change;
                transition
            }
            None => {
                let mut transition = Transition::new(unchanged);
                transition.change.owner_event = OwnerEventKind::Updated;
                transition.unchanged = true;
                transition
            }
        };
        transition.others = others;
        transition
    }
}

/// Keyset position in the chat list: the last chat of the previous page's place in the order
/// (pinned first by `pin_order`, then the rest by `updated_at` descending, ties by id).
pub struct ChatListCursor {
    pub pin_order: i32,
    pub updated_at: OffsetDateTime,
    pub id: Uuid,
}

/// What `GET /chats` filters on.
pub struct ChatFilter {
    pub archived: bool,
    /// Labels the chat must all have (`@>`).
    pub labels: Value,
    /// Case-insensitive substring of the title.
    pub title: Option<String>,
    pub unread: Option<bool>,
}

/// Escapes `%`, `_` and `\` for a `LIKE` pattern.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

/// The owner's root chats: pinned first by `pin_order`, then by `updated_at` descending.
pub async fn list_chats(
    client: &deadpool_postgres::Client,
    owner_id: Uuid,
    filter: &ChatFilter,
    after: Option<&ChatListCursor>,
    limit: i64,
) -> ApiResult<Vec<ChatRow>> {
    // After a pinned chat: later pins, then every unpinned chat; after an unpinned one: the
    // unpinned chats below it.
    let keyset = match after {
        None => "true",
        Some(cursor) if cursor.pin_order > 0 => {
            "(c.pin_order = 0 OR c.pin_order > $7 OR (c.pin_order = $7 AND \
             (c.updated_at, c.id) < ($8, $9)))"
        }
        Some(_) => "(c.pin_order = 0 AND (c.updated_at, c.id) < ($8, $9))",
    };
    // The labels index covers labelled chats only (migration 0011): a filter says so.
    let labelled = if filter
        .labels
        .as_object()
        .is_some_and(|labels| !labels.is_empty())
    {
        "AND c.labels <> '{}'::jsonb"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {columns} FROM chats c WHERE c.owner_id = $1 AND c.parent_chat_id IS NULL \
         AND NOT c.deleted AND NOT c.hidden AND c.archived = $2 AND c.labels @> $3 {labelled} \
         AND ($4::text IS NULL OR c.title ILIKE $4) \
         AND ($5::bool IS NULL OR {unread} = $5) AND {keyset} \
         ORDER BY c.pin_order = 0, c.pin_order, c.updated_at DESC, c.id DESC LIMIT $6",
        columns = ChatRow::COLUMNS,
        unread = ChatRow::HAS_UNREAD,
    );
    let title = filter.title.as_deref().map(like_pattern);
    let rows = match after {
        None => {
            client
                .rows(
                    &sql,
                    &[
                        &owner_id,
                        &filter.archived,
                        &filter.labels,
                        &title,
                        &filter.unread,
                        &limit,
                    ],
                )
                .await?
        }
        Some(cursor) if cursor.pin_order > 0 => {
            client
                .rows(
                    &sql,
                    &[
                        &owner_id,
                        &filter.archived,
                        &filter.labels,
                        &title,
                        &filter.unread,
                        &limit,
                        &cursor.pin_order,
                        &cursor.updated_at,
                        &cursor.id,
                    ],
                )
                .await?
        }
        Some(cursor) => {
            let sql = sql.replace("$8", "$7").replace("$9", "$8");
            client
                .rows(
                    &sql,
                    &[
                        &owner_id,
                        &filter.archived,
                        &filter.labels,
                        &title,
                        &filter.unread,
                        &limit,
                        &cursor.updated_at,
                        &cursor.id,
                    ],
                )
                .await?
        }
    };
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// Messages newest first, before `before_id`.
pub async fn list_messages(
    client: &deadpool_postgres::Client,
    chat_id: Uuid,
    before_id: Option<i64>,
    limit: i64,
) -> ApiResult<Vec<MessageRow>> {
    Ok(reads::newest_messages(client, chat_id, None, before_id, limit).await?)
}

/// The caller's chat, or `NotFound`.
pub async fn get_chat(
    client: &deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
) -> ApiResult<ChatRow> {
    reads::chat_for_owner(client, chat_id, owner_id)
        .await?
        .ok_or(ApiError::NotFound("chat"))
}

/// The chat's direct sub-chats, oldest first (not deleted).
pub async fn children(client: &deadpool_postgres::Client, chat_id: Uuid) -> ApiResult<Vec<Uuid>> {
    let rows = client
        .rows(
            "SELECT id FROM chats WHERE parent_chat_id = $1 AND NOT deleted \
             ORDER BY created_at, id",
            &[&chat_id],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
