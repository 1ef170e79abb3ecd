//! Chat creation, reads, listing and updates.

use chatd_shared::db::sql::Sql;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::reads;
use chatd_shared::db::rows::{ChatRow, MessageRow};
use chatd_shared::domain::{ChatStatus, Role};
use chatd_shared::pubsub::OwnerEventKind;

use super::{update_chat_sql, Transition};
use crate::error::{ApiError, ApiResult};

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
    if let Some(parent_id) = new_chat.parent_chat_id {
        let parent = transaction
            .row_opt(
                "SELECT coalesce(root_chat_id, id) FROM chats WHERE id = $1 AND owner_id = $2",
                &[&parent_id, &new_chat.owner_id],
            )
            .await?
            .ok_or_else(|| ApiError::MissingReference {
                field: "parent_chat_id".into(),
                message: "parent_chat_id: no such chat".into(),
            })?;
        root_chat_id = Some(parent.get::<_, Uuid>(0));
    }
    let status = if new_chat.message.is_some() {
        ChatStatus::Pending
    } else {
        ChatStatus::Waiting
    };
    let sql = format!(
        "INSERT INTO chats AS c (owner_id, parent_chat_id, root_chat_id, title, status, \
         model_config_id, labels, dynamic_tools) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
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
         FROM chats c WHERE c.id = $1 AND c.owner_id = $2 FOR UPDATE",
        ChatRow::COLUMNS
    );
    let row = transaction
        .row_opt(&sql, &[&chat_id, &owner_id])
        .await?
        .ok_or(ApiError::NotFound("chat"))?;
    Ok(LockedChat {
        chat: ChatRow::from_row(&row),
        worker_id: row.get(14),
        queue_len: row.get(15),
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
    let locked = lock_chat(&transaction, chat_id, owner_id).await?;
    let mut owner_event = OwnerEventKind::Updated;
    if let Some(archived) = patch.archived {
        if archived != locked.chat.archived {
            if locked.chat.status.is_busy() {
                return Err(ApiError::Conflict(format!(
                    "chat is {}: archive or unarchive it when it is waiting or in error",
                    locked.chat.status.as_str()
                )));
            }
            if !archived {
                if let Some(parent_id) = locked.chat.parent_chat_id {
                    let parent_archived = transaction
                        .row("SELECT archived FROM chats WHERE id = $1", &[&parent_id])
                        .await?
                        .get::<_, bool>(0);
                    if parent_archived {
                        return Err(ApiError::Conflict(
                            "the parent chat is archived: unarchive it first".into(),
                        ));
                    }
                }
            }
            owner_event = OwnerEventKind::Archived;
            transaction
                .exec(
                    concat!(
                        "UPDATE chats c SET archived = $2, ",
                        chatd_shared::bump_chat_version!(),
                        " WHERE c.root_chat_id = $1"
                    ),
                    &[&chat_id, &archived],
                )
                .await?;
        }
    }
    if patch.title.is_some() && patch.archived.is_none() {
        owner_event = OwnerEventKind::Title;
    }
    let sql = update_chat_sql(
        "title = coalesce($2, c.title), labels = coalesce($3, c.labels), \
         archived = coalesce($4, c.archived), pin_order = coalesce($5, c.pin_order)",
    );
    let row = transaction
        .row(
            &sql,
            &[
                &chat_id,
                &patch.title,
                &patch.labels,
                &patch.archived,
                &patch.pin_order,
            ],
        )
        .await?;
    transaction.commit().await?;
    let mut transition = Transition::new(ChatRow::from_row(&row));
    transition.change.other = true;
    transition.change.owner_event = owner_event;
    Ok(transition)
}

/// Keyset position in the chat list (newest first).
pub struct ChatListCursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

pub async fn list_chats(
    client: &deadpool_postgres::Client,
    owner_id: Uuid,
    archived: bool,
    labels: &Value,
    after: Option<&ChatListCursor>,
    limit: i64,
) -> ApiResult<Vec<ChatRow>> {
    let sql = format!(
        "SELECT {} FROM chats c WHERE c.owner_id = $1 AND c.parent_chat_id IS NULL \
         AND c.archived = $2 AND c.labels @> $3 \
         AND ($4::timestamptz IS NULL OR (c.created_at, c.id) < ($4, $5)) \
         ORDER BY c.created_at DESC, c.id DESC LIMIT $6",
        ChatRow::COLUMNS
    );
    let after_time = after.map(|cursor| cursor.created_at);
    let after_id = after.map(|cursor| cursor.id).unwrap_or_default();
    let rows = client
        .rows(
            &sql,
            &[&owner_id, &archived, labels, &after_time, &after_id, &limit],
        )
        .await?;
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// Messages newest first, before `before_id`.
pub async fn list_messages(
    client: &deadpool_postgres::Client,
    chat_id: Uuid,
    before_id: Option<i64>,
    limit: i64,
) -> ApiResult<Vec<MessageRow>> {
    let sql = format!(
        "SELECT {} FROM chat_messages m WHERE m.chat_id = $1 AND NOT m.deleted \
         AND m.visibility <> 'model' AND ($2::bigint IS NULL OR m.id < $2) \
         ORDER BY m.id DESC LIMIT $3",
        MessageRow::COLUMNS
    );
    let rows = client.rows(&sql, &[&chat_id, &before_id, &limit]).await?;
    Ok(rows.iter().map(MessageRow::from_row).collect())
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
