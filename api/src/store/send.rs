//! Sending, queueing, interrupting.

use chatd_shared::db::sql::Sql;
use serde_json::Value;
use uuid::Uuid;

use chatd_shared::db::rows::{ChatRow, MessageRow, QueuedRow};
use chatd_shared::domain::{ChatStatus, Role};
use chatd_shared::pubsub::ControlKind;

use super::chats::{check_model_config, insert_message, lock_chat, LockedChat};
use super::send_batch::{Batched, IdleSend, SendBatcher};
use super::tool_results::close_if_waiting;
use super::{update_chat_sql, Transition};
use crate::dto::BusyBehavior;
use crate::error::{ApiError, ApiResult};

/// Result of a send: inserted into the history (201) or queued (202).
pub enum SendOutcome {
    Sent(MessageRow),
    Queued(QueuedRow),
}

pub struct NewMessage {
    pub chat_id: Uuid,
    pub owner_id: Uuid,
    pub content: Value,
    pub busy_behavior: BusyBehavior,
    pub model_config_id: Option<Uuid>,
}

/// Where a queued message goes.
enum QueueEnd {
    Head,
    Tail,
}

/// Sends `message`: the common case — an idle chat with an empty queue, no model change —
/// through `batcher` (one statement, shared with concurrent sends); everything else, and
/// what the batch left out, as a transaction on `client`.
pub async fn send_message(
    client: &mut deadpool_postgres::Client,
    batcher: &SendBatcher,
    message: NewMessage,
    max_queue_len: i64,
) -> ApiResult<(Transition, SendOutcome)> {
    if message.model_config_id.is_none() && message.busy_behavior == BusyBehavior::Queue {
        let idle = IdleSend {
            chat_id: message.chat_id,
            owner_id: message.owner_id,
            content: message.content.clone(),
        };
        match batcher.send(idle).await {
            Batched::Sent(sent) => {
                let (chat, row) = *sent;
                let mut transition = Transition::new(chat);
                transition.change.messages = true;
                transition.change.new_messages = vec![row.clone()];
                return Ok((transition, SendOutcome::Sent(row)));
            }
            Batched::Failed(error) => return Err(ApiError::Unavailable(error)),
            Batched::NotSent => {}
        }
    }
    let transaction = client.transaction().await?;
    let locked = lock_chat(&transaction, message.chat_id, message.owner_id).await?;
    if locked.chat.archived {
        return Err(ApiError::Conflict(
            "chat is archived: unarchive it before sending".into(),
        ));
    }
    if let Some(model_config_id) = message.model_config_id {
        check_model_config(&transaction, model_config_id, "model_config_id").await?;
    }
    let status = locked.chat.status;
    let idle = matches!(status, ChatStatus::Waiting | ChatStatus::Error);
    let queue_full = || ApiError::TooManyRequests {
        message: format!("the chat's queue is full ({max_queue_len} messages)"),
        retry_after_s: 5,
    };
    let insert = |transaction| {
        insert_message(
            transaction,
            message.chat_id,
            Role::User,
            &message.content,
            "both",
            Some(message.owner_id),
            message.model_config_id,
        )
    };
    let (transition, outcome) = match (message.busy_behavior, status) {
        (BusyBehavior::Queue, _) if !idle || locked.queue_len > 0 => {
            if locked.queue_len >= max_queue_len {
                return Err(queue_full());
            }
            let queued = enqueue(&transaction, &message, QueueEnd::Tail).await?;
            let mut transition = if idle {
                // Idle with a non-empty queue: keep FIFO by running the head now.
                let mut transition =
                    Transition::new(pop_head_and_run(&transaction, &locked).await?);
                transition.change.messages = true;
                transition
            } else {
                Transition::new(bump(&transaction, &locked.chat).await?)
            };
            transition.change.queue = true;
            (transition, SendOutcome::Queued(queued))
        }
        (BusyBehavior::Interrupt, ChatStatus::Running | ChatStatus::Interrupting) => {
            if locked.queue_len >= max_queue_len {
                return Err(queue_full());
            }
            let queued = enqueue(&transaction, &message, QueueEnd::Head).await?;
            let mut transition = Transition::new(
                set_status(&transaction, message.chat_id, ChatStatus::Interrupting).await?,
            );
            if status == ChatStatus::Running {
                transition.change.control = locked.worker_id.map(|id| (id, ControlKind::Interrupt));
            }
            transition.change.queue = true;
            (transition, SendOutcome::Queued(queued))
        }
        _ => {
            // Idle with an empty queue, or interrupt while pending / requires_action / idle.
            let closed = close_if_waiting(&transaction, &locked).await?;
            let row = insert(&transaction).await?;
            let chat = set_status(&transaction, message.chat_id, ChatStatus::Pending).await?;
            let mut transition = Transition::new(chat);
            transition.change.messages = true;
            transition.change.new_messages = closed.into_iter().chain([row.clone()]).collect();
            (transition, SendOutcome::Sent(row))
        }
    };
    transaction.commit().await?;
    Ok((transition, outcome))
}

/// running → interrupting; pending, requires_action and awaiting_agents → waiting; otherwise
/// nothing — for the chat and every busy descendant (its sub-agents, at any depth). Returns
/// the chat and the transitions to publish.
///
/// # Locks
/// The chat row; with descendants, the owner row and then the tree's rows in id order (see
/// `tree`).
pub async fn interrupt(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
) -> ApiResult<(ChatRow, Vec<Transition>)> {
    let transaction = client.transaction().await?;
    let has_children = transaction
        .row(
            "SELECT EXISTS (SELECT 1 FROM chats WHERE parent_chat_id = $1 AND NOT deleted)",
            &[&chat_id],
        )
        .await?
        .get::<_, bool>(0);
    let mut ids = vec![chat_id];
    if has_children {
        super::tree::lock_owner(&transaction, owner_id).await?;
        let tree = super::tree::lock_tree(&transaction, chat_id, owner_id).await?;
        ids.extend(
            tree.iter()
                .filter(|chat| chat.id != chat_id && chat.status.is_busy())
                .map(|chat| chat.id),
        );
    }
    let mut chat = None;
    let mut transitions = Vec::new();
    for id in ids {
        let locked = lock_chat(&transaction, id, owner_id).await?;
        let transition = interrupt_locked(&transaction, &locked).await?;
        if id == chat_id {
            chat = Some(match &transition {
                Some(transition) => transition.chat.clone(),
                None => locked.chat,
            });
        }
        transitions.extend(transition);
    }
    transaction.commit().await?;
    Ok((chat.ok_or(ApiError::NotFound("chat"))?, transitions))
}

/// The interrupt of one locked chat (see [`interrupt`]).
async fn interrupt_locked(
    transaction: &deadpool_postgres::Transaction<'_>,
    locked: &LockedChat,
) -> ApiResult<Option<Transition>> {
    let chat_id = locked.chat.id;
    if matches!(
        locked.chat.status,
        ChatStatus::Running | ChatStatus::Pending | ChatStatus::AwaitingAgents
    ) {
        // The `/v1` response (or AI SDK turn) this stops ends `cancelled`.
        transaction
            .exec(
                "UPDATE responses r SET cancelled = true WHERE r.chat_id = $1 \
                 AND r.input_first_id = (SELECT max(input_first_id) FROM responses \
                     WHERE chat_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM chat_messages m WHERE m.chat_id = $1 \
                     AND m.id > r.input_last_id AND m.role = 'user' AND NOT m.deleted)",
                &[&chat_id],
            )
            .await?;
    }
    Ok(match locked.chat.status {
        ChatStatus::Running => {
            let chat = set_status(transaction, chat_id, ChatStatus::Interrupting).await?;
            let mut transition = Transition::new(chat);
            transition.change.control = locked.worker_id.map(|id| (id, ControlKind::Interrupt));
            Some(transition)
        }
        ChatStatus::Pending | ChatStatus::RequiresAction | ChatStatus::AwaitingAgents => {
            let closed = close_if_waiting(transaction, locked).await?;
            let mut transition =
                Transition::new(set_status(transaction, chat_id, ChatStatus::Waiting).await?);
            transition.change.messages = closed.is_some();
            transition.change.new_messages = closed.into_iter().collect();
            Some(transition)
        }
        _ => None,
    })
}

/// Deletes a queued message. Locks the chat row first so a concurrent auto-promotion by the
/// worker cannot resurrect it.
pub async fn delete_queued(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
    queued_id: i64,
) -> ApiResult<Transition> {
    let transaction = client.transaction().await?;
    let locked = lock_chat(&transaction, chat_id, owner_id).await?;
    let deleted = transaction
        .exec(
            "DELETE FROM chat_queued_messages WHERE id = $1 AND chat_id = $2",
            &[&queued_id, &chat_id],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound("queued message"));
    }
    let mut transition = Transition::new(bump(&transaction, &locked.chat).await?);
    transaction.commit().await?;
    transition.change.queue = true;
    Ok(transition)
}

/// Promotes a queued message: idle → inserted and pending; busy → queue head (+ interrupt
/// when running).
pub async fn promote_queued(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
    queued_id: i64,
) -> ApiResult<(Transition, SendOutcome)> {
    let transaction = client.transaction().await?;
    let locked = lock_chat(&transaction, chat_id, owner_id).await?;
    let sql = format!(
        "UPDATE chat_queued_messages q SET position = \
         (SELECT min(position) - 1 FROM chat_queued_messages WHERE chat_id = $2) \
         WHERE q.id = $1 AND q.chat_id = $2 RETURNING {}",
        QueuedRow::COLUMNS
    );
    let moved = transaction
        .row_opt(&sql, &[&queued_id, &chat_id])
        .await?
        .ok_or(ApiError::NotFound("queued message"))?;
    let moved = QueuedRow::from_row(&moved);
    if locked.chat.archived {
        return Err(ApiError::Conflict(
            "chat is archived: unarchive it before promoting a queued message".into(),
        ));
    }
    let (mut transition, outcome) = match locked.chat.status {
        ChatStatus::Waiting
        | ChatStatus::Error
        | ChatStatus::RequiresAction
        | ChatStatus::AwaitingAgents => {
            close_if_waiting(&transaction, &locked).await?;
            let (chat, message) = pop_head(&transaction, &locked).await?;
            let mut transition = Transition::new(chat);
            transition.change.messages = true;
            let message = message.ok_or(ApiError::NotFound("queued message"))?;
            (transition, SendOutcome::Sent(message))
        }
        ChatStatus::Running => {
            let chat = set_status(&transaction, chat_id, ChatStatus::Interrupting).await?;
            let mut transition = Transition::new(chat);
            transition.change.control = locked.worker_id.map(|id| (id, ControlKind::Interrupt));
            (transition, SendOutcome::Queued(moved))
        }
        ChatStatus::Pending | ChatStatus::Interrupting => (
            Transition::new(bump(&transaction, &locked.chat).await?),
            SendOutcome::Queued(moved),
        ),
    };
    transaction.commit().await?;
    transition.change.queue = true;
    Ok((transition, outcome))
}

async fn enqueue(
    transaction: &deadpool_postgres::Transaction<'_>,
    message: &NewMessage,
    end: QueueEnd,
) -> ApiResult<QueuedRow> {
    let position = match end {
        QueueEnd::Head => {
            "coalesce((SELECT min(position) FROM chat_queued_messages WHERE chat_id = $1), 0) - 1"
        }
        QueueEnd::Tail => {
            "coalesce((SELECT max(position) FROM chat_queued_messages WHERE chat_id = $1), 0) + 1"
        }
    };
    let sql = format!(
        "INSERT INTO chat_queued_messages AS q (chat_id, content, model_config_id, created_by, \
         position) VALUES ($1, $2, $3, $4, {position}) RETURNING {}",
        QueuedRow::COLUMNS
    );
    let row = transaction
        .row(
            &sql,
            &[
                &message.chat_id,
                &message.content,
                &message.model_config_id,
                &message.owner_id,
            ],
        )
        .await?;
    Ok(QueuedRow::from_row(&row))
}

/// Moves the queue head into the history and makes the chat pending.
async fn pop_head_and_run(
    transaction: &deadpool_postgres::Transaction<'_>,
    locked: &LockedChat,
) -> ApiResult<ChatRow> {
    Ok(pop_head(transaction, locked).await?.0)
}

async fn pop_head(
    transaction: &deadpool_postgres::Transaction<'_>,
    locked: &LockedChat,
) -> ApiResult<(ChatRow, Option<MessageRow>)> {
    let chat_id = locked.chat.id;
    let message = chatd_shared::db::queue::promote_head(transaction, chat_id).await?;
    let chat = set_status(transaction, chat_id, ChatStatus::Pending).await?;
    Ok((chat, message))
}

/// Sets the status (clearing `last_error` when leaving `error`) and bumps the version.
async fn set_status(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    status: ChatStatus,
) -> ApiResult<ChatRow> {
    let sql = update_chat_sql(
        "status = $2, last_error = CASE WHEN $2 = 'pending' THEN NULL ELSE c.last_error END, \
         action_deadline_at = CASE WHEN $2 IN ('pending', 'waiting') THEN NULL ELSE c.action_deadline_at END",
    );
    let row = transaction.row(&sql, &[&chat_id, &status.as_str()]).await?;
    Ok(ChatRow::from_row(&row))
}

/// Bumps the version only (the queue changed).
async fn bump(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat: &ChatRow,
) -> ApiResult<ChatRow> {
    let row = transaction
        .row(&update_chat_sql("title = c.title"), &[&chat.id])
        .await?;
    Ok(ChatRow::from_row(&row))
}
