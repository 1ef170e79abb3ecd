//! Sub-agents: what a `wait_agent` call reads of a sub-agent, and the resolution of a chat
//! that waits for its sub-agents (`awaiting_agents`).
//!
//! A step whose `wait_agent` calls name sub-agents that are still busy ends with those calls
//! pending and the chat `awaiting_agents` (no worker holds it, so it takes no slot). Whoever
//! sees that the wait may be over calls [`resolve`]: the worker that ends a sub-agent's turn
//! (for the sub-agent's parent), the worker that just committed the wait (the sub-agents may
//! have ended before it), and the recovery sweep (deadlines, and crashes between a sub-agent's
//! end and its parent's resolution).
//!
//! **Invariant:** the pending `wait_agent` calls of a step are answered together, in one
//! transaction with the chat's move to `pending`, under the chat's row lock: when every
//! sub-agent they name has ended, or at the wait's deadline (then the busy ones are reported
//! still running). A provider never sees a call without its result.

use serde_json::{json, Value};
use uuid::Uuid;

use super::sql::Sql;
use super::tool_calls::load_pending;
use crate::domain::{encode_tool_result, plain_text, ChatError, ChatStatus, ContentPart};
use crate::pubsub::ChatChange;

/// The built-in tool that starts a sub-agent.
pub const SPAWN_AGENT: &str = "spawn_agent";
/// The built-in tool that waits for a sub-agent's answer.
pub const WAIT_AGENT: &str = "wait_agent";

/// Longest answer a wait result quotes, in characters (the rest is cut, and the result says
/// so): a sub-agent's report goes into its parent's prompt.
pub const MAX_ANSWER_CHARS: usize = 32_000;

/// A sub-agent as a wait reads it.
#[derive(Debug, Clone)]
pub struct SubAgent {
    pub chat_id: Uuid,
    /// `None`: deleted (or not a sub-agent of the waiting chat).
    pub status: Option<ChatStatus>,
    pub last_error: Option<ChatError>,
    /// The text of its latest assistant message.
    pub answer: Option<String>,
}

impl SubAgent {
    /// Whether the sub-agent has ended: idle, failed, or gone.
    pub fn ended(&self) -> bool {
        self.status.is_none_or(|status| !status.is_busy())
    }

    /// The result a `wait_agent` call gets for this sub-agent: its answer when it ended, its
    /// error when it failed, "still running" otherwise. `(result, is_error)`.
    pub fn wait_result(&self, waited_seconds: Option<f64>) -> (Value, bool) {
        let chat_id = self.chat_id.to_string();
        match self.status {
            None => (
                json!({"chat_id": chat_id, "status": "deleted",
                       "message": "this sub-agent chat does not exist (or was deleted)"}),
                true,
            ),
            Some(ChatStatus::Error) => {
                let error = self.last_error.as_ref();
                (
                    json!({
                        "chat_id": chat_id,
                        "status": "error",
                        "error": {
                            "kind": error.map_or("generic", |error| error.kind.as_str()),
                            "message": error.map_or("the sub-agent failed", |error| error.message.as_str()),
                        },
                        "answer": self.answer.as_deref().map(cut_answer),
                    }),
                    true,
                )
            }
            Some(status) if status.is_busy() => {
                let waited = waited_seconds
                    .map(|seconds| format!(" after {seconds:.0} s"))
                    .unwrap_or_default();
                (
                    json!({
                        "chat_id": chat_id,
                        "status": status.as_str(),
                        "message": format!("the sub-agent is still running{waited}; call wait_agent again to keep waiting"),
                    }),
                    false,
                )
            }
            Some(_) => (
                json!({
                    "chat_id": chat_id,
                    "status": "completed",
                    "answer": self.answer.as_deref().map(cut_answer).unwrap_or_default(),
                }),
                false,
            ),
        }
    }
}

fn cut_answer(text: &str) -> String {
    let total = text.chars().count();
    if total <= MAX_ANSWER_CHARS {
        return text.to_owned();
    }
    let kept: String = text.chars().take(MAX_ANSWER_CHARS).collect();
    format!("{kept}\n… (cut: the answer has {total} characters; the whole of it is in the sub-agent's chat)")
}

/// Reads the sub-agents `ids` of `parent_id` (missing or deleted ones come back with no
/// status), in the order of `ids`.
///
/// # Locks
/// None.
pub async fn read_sub_agents<C: Sql>(
    client: &C,
    parent_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<SubAgent>, tokio_postgres::Error> {
    let rows = client
        .rows(
            "SELECT c.id, c.status, c.last_error, \
                 (SELECT m.content FROM chat_messages m WHERE m.chat_id = c.id \
                  AND m.role = 'assistant' AND NOT m.deleted ORDER BY m.id DESC LIMIT 1) \
             FROM chats c WHERE c.id = ANY($1) AND c.parent_chat_id = $2 AND NOT c.deleted",
            &[&ids, &parent_id],
        )
        .await?;
    Ok(ids
        .iter()
        .map(|id| {
            let row = rows.iter().find(|row| row.get::<_, Uuid>(0) == *id);
            SubAgent {
                chat_id: *id,
                status: row.and_then(|row| ChatStatus::parse(row.get(1))),
                last_error: row
                    .and_then(|row| row.get::<_, Option<Value>>(2))
                    .and_then(|value| serde_json::from_value(value).ok()),
                answer: row
                    .and_then(|row| row.get::<_, Option<Value>>(3))
                    .and_then(|value| serde_json::from_value::<Vec<ContentPart>>(value).ok())
                    .map(|parts| plain_text(&parts)),
            }
        })
        .collect())
}

/// The sub-agent a `wait_agent` call names (`None` when its `chat_id` is not a UUID; the
/// worker answered such calls at once, so none stays pending).
pub fn waited_id(args: &Value) -> Option<Uuid> {
    args.get("chat_id")
        .and_then(Value::as_str)
        .and_then(|text| Uuid::parse_str(text).ok())
}

/// If `chat_id` is `awaiting_agents` and its wait is over (every sub-agent its pending
/// `wait_agent` calls name has ended, or the deadline has passed), answers those calls and
/// makes the chat `pending`, returning the change to publish; `None` when there is nothing to
/// do (another status, or still waiting).
///
/// # Locks
/// The chat row (`FOR UPDATE`) for the transaction.
pub async fn resolve(
    client: &mut deadpool_postgres::Client,
    chat_id: Uuid,
) -> Result<Option<ChatChange>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let resolved = resolve_in(&transaction, chat_id).await?;
    transaction.commit().await?;
    Ok(resolved)
}

/// [`resolve`] inside the caller's transaction.
pub async fn resolve_in(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
) -> Result<Option<ChatChange>, tokio_postgres::Error> {
    let Some(chat) = transaction
        .row_opt(
            "SELECT owner_id, action_deadline_at <= now(), \
                 extract(epoch FROM now() - updated_at)::float8 \
             FROM chats WHERE id = $1 AND status = 'awaiting_agents' FOR UPDATE",
            &[&chat_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let owner_id: Uuid = chat.get(0);
    let at_deadline: bool = chat.get::<_, Option<bool>>(1).unwrap_or(true);
    let waited: f64 = chat.get(2);
    let pending = load_pending(transaction, chat_id).await?;
    let ids: Vec<Uuid> = pending
        .iter()
        .filter_map(|call| waited_id(&call.args))
        .collect();
    let agents = read_sub_agents(transaction, chat_id, &ids).await?;
    if !at_deadline && !agents.iter().all(SubAgent::ended) {
        return Ok(None);
    }
    let parts: Vec<ContentPart> = pending
        .iter()
        .map(|call| {
            let agent = waited_id(&call.args)
                .and_then(|id| agents.iter().find(|agent| agent.chat_id == id));
            let (result, is_error) = match agent {
                Some(agent) => agent.wait_result(Some(waited)),
                // Not a wait (a chat in this status has only `wait_agent` calls pending).
                None => (
                    Value::String(format!("`{}` got no result", call.tool_name)),
                    true,
                ),
            };
            ContentPart::ToolResult {
                tool_call_id: call.tool_call_id.clone(),
                tool_name: call.tool_name.clone(),
                result: encode_tool_result(result),
                is_error,
            }
        })
        .collect();
    let mut change_rows = Vec::new();
    if !parts.is_empty() {
        change_rows.push(super::tool_calls::insert_results(transaction, chat_id, parts).await?);
    }
    let row = transaction
        .row(
            concat!(
                "UPDATE chats c SET status = 'pending', action_deadline_at = NULL, ",
                crate::bump_chat_version!(),
                " WHERE c.id = $1 RETURNING c.version, c.attempt"
            ),
            &[&chat_id],
        )
        .await?;
    tracing::info!(%chat_id, at_deadline, "the wait for sub-agents is over");
    Ok(Some(
        ChatChange::status_only(
            chat_id,
            owner_id,
            row.get(0),
            ChatStatus::Pending,
            row.get(1),
        )
        .with_messages(change_rows),
    ))
}

/// Chats whose wait may be over without anyone having said so: past their deadline, or
/// waiting for a second with no busy sub-agent (a crash between a sub-agent's end and its
/// parent's resolution). The sweep resolves them.
///
/// # Locks
/// `FOR UPDATE SKIP LOCKED` on the candidates, in the caller's transaction.
pub async fn overdue(
    transaction: &deadpool_postgres::Transaction<'_>,
) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let rows = transaction
        .rows(
            "SELECT p.id FROM chats p WHERE p.status = 'awaiting_agents' \
             AND (p.action_deadline_at < now() OR (p.updated_at < now() - interval '1 second' \
                  AND NOT EXISTS (SELECT 1 FROM chats k WHERE k.parent_chat_id = p.id \
                      AND k.status IN ('pending', 'running', 'interrupting', 'requires_action', \
                                       'awaiting_agents') AND NOT k.deleted))) \
             ORDER BY p.action_deadline_at FOR UPDATE SKIP LOCKED LIMIT 50",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(status: Option<ChatStatus>, answer: Option<&str>) -> SubAgent {
        SubAgent {
            chat_id: Uuid::nil(),
            status,
            last_error: None,
            answer: answer.map(str::to_owned),
        }
    }

    #[test]
    fn wait_results_say_what_became_of_the_sub_agent() {
        let (done, error) = agent(Some(ChatStatus::Waiting), Some("42")).wait_result(None);
        assert_eq!(done["status"], "completed");
        assert_eq!(done["answer"], "42");
        assert!(!error);
        let (running, error) = agent(Some(ChatStatus::Running), None).wait_result(Some(3.0));
        assert_eq!(running["status"], "running");
        assert!(running["message"].as_str().unwrap().contains("after 3 s"));
        assert!(!error);
        let (failed, error) = agent(Some(ChatStatus::Error), Some("half")).wait_result(None);
        assert_eq!(failed["status"], "error");
        assert_eq!(failed["answer"], "half");
        assert!(error);
        let (gone, error) = agent(None, None).wait_result(None);
        assert_eq!(gone["status"], "deleted");
        assert!(error);
        assert!(agent(None, None).ended());
        assert!(!agent(Some(ChatStatus::AwaitingAgents), None).ended());
    }

    #[test]
    fn long_answers_are_cut_and_say_so() {
        let long = "é".repeat(MAX_ANSWER_CHARS + 5);
        let cut = cut_answer(&long);
        assert!(cut.starts_with(&"é".repeat(MAX_ANSWER_CHARS)));
        assert!(cut.contains(&format!("{} characters", MAX_ANSWER_CHARS + 5)));
        assert_eq!(cut_answer("short"), "short");
    }
}
