//! `requires_action` → `pending`: storing the client's results for the pending dynamic tool
//! calls, and closing pending calls when a chat leaves `requires_action` another way.

use chatd_shared::db::sql::Sql;
use serde_json::Value;
use uuid::Uuid;

use chatd_shared::db::rows::MessageRow;
use chatd_shared::db::tool_calls;
use chatd_shared::domain::{encode_tool_result, ChatStatus, ContentPart};

use super::chats::{lock_chat, LockedChat};
use super::{update_chat_sql, Transition};
use crate::error::{ApiError, ApiResult};

/// One validated result from the client.
pub struct ClientResult {
    pub tool_call_id: String,
    pub output: Value,
    pub is_error: bool,
}

/// Stores the results and makes the chat pending, so any worker resumes the turn.
///
/// The submitted ids must be exactly the pending calls: a missing or unknown id is a 400
/// naming it; a chat not in `requires_action` (including one whose results another request
/// just stored: the first submission wins) is a 409.
///
/// # Locks
/// The chat row (`FOR UPDATE`) for the transaction.
pub async fn submit(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
    owner_id: Uuid,
    results: Vec<ClientResult>,
) -> ApiResult<Transition> {
    let transaction = client.transaction().await?;
    let locked = lock_chat(&transaction, chat_id, owner_id).await?;
    if locked.chat.status != ChatStatus::RequiresAction {
        return Err(ApiError::Conflict(format!(
            "the chat is {}, not requires_action: there are no tool calls waiting for results",
            locked.chat.status.as_str()
        )));
    }
    let pending = tool_calls::load_pending(&transaction, chat_id).await?;
    for (index, result) in results.iter().enumerate() {
        if !pending
            .iter()
            .any(|call| call.tool_call_id == result.tool_call_id)
        {
            return Err(ApiError::Conflict(format!(
                "results[{index}].tool_call_id: `{}` is not a pending tool call of this chat",
                result.tool_call_id
            )));
        }
    }
    let missing: Vec<&str> = pending
        .iter()
        .filter(|call| {
            !results
                .iter()
                .any(|result| result.tool_call_id == call.tool_call_id)
        })
        .map(|call| call.tool_call_id.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::Conflict(format!(
            "results: missing results for pending tool calls: {}",
            missing.join(", ")
        )));
    }
    // In call order, whatever order the client sent them in.
    let parts: Vec<ContentPart> = pending
        .iter()
        .filter_map(|call| {
            let result = results
                .iter()
                .find(|result| result.tool_call_id == call.tool_call_id)?;
            Some(ContentPart::ToolResult {
                tool_call_id: call.tool_call_id.clone(),
                tool_name: call.tool_name.clone(),
                result: encode_tool_result(result.output.clone()),
                is_error: result.is_error,
            })
        })
        .collect();
    let content = serde_json::to_value(parts).map_err(anyhow::Error::from)?;
    let sql = format!(
        "INSERT INTO chat_messages AS m (chat_id, role, content, visibility, created_by) \
         VALUES ($1, 'tool', $2, 'both', $3) RETURNING {}",
        MessageRow::COLUMNS
    );
    let row = transaction
        .row(&sql, &[&chat_id, &content, &owner_id])
        .await?;
    let message = MessageRow::from_row(&row);
    let chat = transaction
        .row(
            &update_chat_sql("status = 'pending', action_deadline_at = NULL, last_error = NULL"),
            &[&chat_id],
        )
        .await?;
    transaction.commit().await?;
    let mut transition = Transition::new(chatd_shared::db::rows::ChatRow::from_row(&chat));
    transition.change.messages = true;
    transition.change.new_messages = vec![message];
    Ok(transition)
}

/// The result the model reads for a client tool call that will never be answered because the
/// user moved on (interrupt, new message, promoted queue entry).
pub const ABANDONED_RESULT: &str = "the user continued without providing this tool call's result";

/// The result a `wait_agent` call gets when the user moves on before the sub-agents end.
pub const ABANDONED_WAIT_RESULT: &str =
    "the user continued before the sub-agents finished (they may still be running)";

/// When `locked` waits for client tool results or for sub-agents, stores synthetic error
/// results for the waiting calls (the caller is about to move the chat out of
/// `requires_action` or `awaiting_agents`). Returns the inserted row.
pub async fn close_if_waiting(
    transaction: &deadpool_postgres::Transaction<'_>,
    locked: &LockedChat,
) -> ApiResult<Option<MessageRow>> {
    let reason = match locked.chat.status {
        ChatStatus::RequiresAction => ABANDONED_RESULT,
        ChatStatus::AwaitingAgents => ABANDONED_WAIT_RESULT,
        _ => return Ok(None),
    };
    Ok(tool_calls::close_pending(transaction, locked.chat.id, reason).await?)
}
