//! `spawn_agent` and `wait_agent` (enabled with `--tools spawn_agent,wait_agent`): a chat's
//! model starts sub-agents — child chats of the same owner that any worker runs — and reads
//! their answers.
//!
//! - `spawn_agent` creates nothing while tools run: it checks the call (depth limit, children
//!   per turn, the model config) and picks the child's id; the child chat and its first
//!   message are inserted by the step's commit, in the same transaction. A step that is never
//!   committed (a crash, a lost lease) leaves no child behind, and a committed step always has
//!   its children.
//! - `wait_agent` answers at once when the sub-agent has ended (its last answer or its error)
//!   or when `timeout_s` is 0; otherwise the call stays pending, the step ends with the chat
//!   `awaiting_agents` (no worker, no slot) and `chatd_shared::db::agents::resolve` answers it
//!   when the sub-agents have ended or at the timeout, making the chat `pending` again.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::{json, Value};
use uuid::Uuid;

use chatd_shared::db::agents::{read_sub_agents, SPAWN_AGENT, WAIT_AGENT};
use chatd_shared::db::sql::Sql;

use super::execute::{CallOutcome, CallRequest};
use crate::provider::ToolSpec;

/// Longest prompt `spawn_agent` accepts, in characters.
pub const MAX_PROMPT_CHARS: usize = 100_000;
/// Longest title, in characters (as for chats created through the API).
pub const MAX_TITLE_CHARS: usize = 200;
/// `wait_agent`'s `timeout_s` when the call gives none, and its largest value.
pub const DEFAULT_WAIT_SECONDS: f64 = 600.0;
pub const MAX_WAIT_SECONDS: f64 = 3600.0;

/// A sub-agent a step starts; inserted by the step's commit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChild {
    pub id: Uuid,
    pub title: String,
    /// The prompt, as the child's first user message (text parts).
    pub content: Value,
    pub model_config_id: Uuid,
}

/// The agent tools of one turn and what they need to know about it.
#[derive(Clone)]
pub struct AgentScope {
    pub pool: Pool,
    pub chat_id: Uuid,
    /// The chat's depth in its tree (a root chat is 0).
    pub depth: i16,
    /// The model config the turn runs on: a child runs on it unless the call names another.
    pub model_config_id: Uuid,
    pub spawn: bool,
    pub wait: bool,
    /// `--max-agent-depth`: a chat at this depth cannot spawn.
    pub max_depth: i16,
    /// `--max-agents-per-turn`: children one turn (one user message) may start.
    pub max_per_turn: usize,
}

impl AgentScope {
    /// The specs offered to the model: `spawn_agent` only below the depth limit.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = Vec::new();
        if self.spawn && self.depth < self.max_depth {
            specs.push(ToolSpec {
                name: SPAWN_AGENT.to_owned(),
                description: format!(
                    "Starts a sub-agent: a new chat that works on `prompt` on its own, with \
                     the same tools, and returns its `chat_id` at once. Use it for \
                     independent pieces of work that can run in parallel; read the answer \
                     with wait_agent. At most {} sub-agents per turn.",
                    self.max_per_turn
                ),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "prompt": {"type": "string", "description": "The task, complete: the sub-agent sees nothing else of this chat."},
                        "title": {"type": "string", "description": "A short title for the sub-agent's chat."},
                        "model_config_id": {"type": "string", "description": "Run the sub-agent on this model config instead of this chat's."}
                    },
                    "required": ["prompt"],
                    "additionalProperties": false
                }),
            });
        }
        if self.wait {
            specs.push(ToolSpec {
                name: WAIT_AGENT.to_owned(),
                description: format!(
                    "Waits until the sub-agent `chat_id` (from spawn_agent) has finished and \
                     returns its final answer or its error; after `timeout_s` seconds \
                     (default {DEFAULT_WAIT_SECONDS}, at most {MAX_WAIT_SECONDS}; 0 only \
                     checks) it returns that the sub-agent is still running."
                ),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "chat_id": {"type": "string"},
                        "timeout_s": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS}
                    },
                    "required": ["chat_id"],
                    "additionalProperties": false
                }),
            });
        }
        specs
    }

    pub fn handles(&self, name: &str) -> bool {
        (self.spawn && self.depth < self.max_depth && name == SPAWN_AGENT)
            || (self.wait && name == WAIT_AGENT)
    }

    /// Answers the step's agent calls (`None` for the others), and the children to insert
    /// with the step. `has_client_calls`: the step also calls client-executed tools, whose
    /// wait for the client cannot be combined with a wait for sub-agents.
    pub async fn run(
        &self,
        calls: &[CallRequest],
        has_client_calls: bool,
    ) -> (Vec<Option<CallOutcome>>, Vec<NewChild>) {
        let mut outcomes = Vec::with_capacity(calls.len());
        let mut children = Vec::new();
        let mut spawned_before: Option<usize> = None;
        for call in calls {
            let outcome = match call.name.as_str() {
                name if !self.handles(name) => None,
                SPAWN_AGENT => Some(
                    self.spawn(&call.args, &mut children, &mut spawned_before)
                        .await
                        .unwrap_or_else(error),
                ),
                _ => Some(
                    self.wait(&call.args, &children, has_client_calls)
                        .await
                        .unwrap_or_else(error),
                ),
            };
            outcomes.push(outcome);
        }
        (outcomes, children)
    }

    async fn spawn(
        &self,
        args: &Value,
        children: &mut Vec<NewChild>,
        spawned_before: &mut Option<usize>,
    ) -> Result<CallOutcome, String> {
        let prompt = match args.get("prompt") {
            Some(Value::String(prompt)) if !prompt.trim().is_empty() => prompt,
            _ => return Err("spawn_agent: `prompt` must be a non-empty string".to_owned()),
        };
        if prompt.chars().count() > MAX_PROMPT_CHARS {
            return Err(format!(
                "spawn_agent: `prompt` is longer than {MAX_PROMPT_CHARS} characters"
            ));
        }
        let title = match args.get("title") {
            None | Some(Value::Null) => first_line(prompt),
            Some(Value::String(title)) if title.chars().count() <= MAX_TITLE_CHARS => {
                let title: String = title.chars().filter(|c| !c.is_control()).collect();
                if title.trim().is_empty() {
                    first_line(prompt)
                } else {
                    title
                }
            }
            Some(_) => {
                return Err(format!(
                    "spawn_agent: `title` must be a string of at most {MAX_TITLE_CHARS} characters"
                ))
            }
        };
        let model_config_id = match args.get("model_config_id") {
            None | Some(Value::Null) => self.model_config_id,
            Some(Value::String(text)) => {
                let id = Uuid::parse_str(text).map_err(|_| {
                    "spawn_agent: `model_config_id` must be a model config id (a UUID)".to_owned()
                })?;
                if !self.usable_model_config(id).await? {
                    return Err(format!(
                        "spawn_agent: no usable model config `{id}` (it must exist, be enabled and not deleted)"
                    ));
                }
                id
            }
            Some(_) => return Err("spawn_agent: `model_config_id` must be a string".to_owned()),
        };
        let before = match spawned_before {
            Some(count) => *count,
            None => *spawned_before.insert(self.children_this_turn().await?),
        };
        if before + children.len() >= self.max_per_turn {
            return Err(format!(
                "spawn_agent: this turn has started {} sub-agents, the limit per turn; wait \
                 for them (wait_agent) and use their answers",
                before + children.len()
            ));
        }
        let id = Uuid::new_v4();
        let content = json!([{"type": "text", "text": prompt}]);
        children.push(NewChild {
            id,
            title: title.clone(),
            content,
            model_config_id,
        });
        Ok(CallOutcome::Done {
            result: json!({"chat_id": id.to_string(), "status": "started", "title": title}),
            is_error: false,
        })
    }

    async fn wait(
        &self,
        args: &Value,
        children: &[NewChild],
        has_client_calls: bool,
    ) -> Result<CallOutcome, String> {
        let id = args
            .get("chat_id")
            .and_then(Value::as_str)
            .and_then(|text| Uuid::parse_str(text).ok())
            .ok_or_else(|| {
                "wait_agent: `chat_id` must be the id spawn_agent returned (a UUID)".to_owned()
            })?;
        let timeout_s = match args.get("timeout_s") {
            None | Some(Value::Null) => DEFAULT_WAIT_SECONDS,
            Some(value) => match value.as_f64() {
                Some(seconds) if (0.0..=MAX_WAIT_SECONDS).contains(&seconds) => seconds,
                _ => {
                    return Err(format!(
                        "wait_agent: `timeout_s` must be a number from 0 to {MAX_WAIT_SECONDS}"
                    ))
                }
            },
        };
        let waits = |seconds: f64| {
            if has_client_calls {
                Err(
                    "wait_agent: a step that calls client-executed tools cannot also wait for \
                     sub-agents; call wait_agent again in a step of its own"
                        .to_owned(),
                )
            } else {
                Ok(CallOutcome::AwaitAgent {
                    chat_id: id,
                    timeout: Duration::from_secs_f64(seconds),
                })
            }
        };
        if children.iter().any(|child| child.id == id) {
            // Started by this very step: it cannot have ended.
            return if timeout_s == 0.0 {
                Ok(CallOutcome::Done {
                    result: json!({"chat_id": id.to_string(), "status": "pending",
                        "message": "the sub-agent was just started; call wait_agent again to wait for it"}),
                    is_error: false,
                })
            } else {
                waits(timeout_s)
            };
        }
        let client = self.pool.get().await.map_err(unavailable)?;
        let agent = read_sub_agents(&*client, self.chat_id, &[id])
            .await
            .map_err(unavailable)?
            .remove(0);
        if agent.status.is_none() {
            return Err(format!(
                "wait_agent: `{id}` is not a sub-agent of this chat (use the chat_id spawn_agent returned)"
            ));
        }
        if agent.ended() || timeout_s == 0.0 {
            let (result, is_error) = agent.wait_result(None);
            return Ok(CallOutcome::Done { result, is_error });
        }
        waits(timeout_s)
    }

    /// Children of this chat started since its latest user message (this turn).
    async fn children_this_turn(&self) -> Result<usize, String> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client
            .row(
                "SELECT count(*) FROM chats k WHERE k.parent_chat_id = $1 AND k.created_at >= \
                 coalesce((SELECT m.created_at FROM chat_messages m WHERE m.chat_id = $1 \
                    AND m.role = 'user' AND NOT m.deleted ORDER BY m.id DESC LIMIT 1), \
                    '-infinity'::timestamptz)",
                &[&self.chat_id],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.get::<_, i64>(0) as usize)
    }

    async fn usable_model_config(&self, id: Uuid) -> Result<bool, String> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let found = client
            .row_opt(
                concat!(
                    "SELECT 1 FROM model_configs mc WHERE mc.id = $1 AND ",
                    chatd_shared::usable_model_config!()
                ),
                &[&id],
            )
            .await
            .map_err(unavailable)?;
        Ok(found.is_some())
    }
}

fn error(message: String) -> CallOutcome {
    CallOutcome::Done {
        result: Value::String(message),
        is_error: true,
    }
}

fn unavailable(error: impl std::fmt::Display) -> String {
    tracing::warn!(%error, "agent tool: database");
    format!("the sub-agent store is unavailable right now ({error}); try again")
}

/// A title from the prompt: its first non-blank line, at most 80 characters.
fn first_line(prompt: &str) -> String {
    let line = prompt
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("sub-agent");
    let mut title: String = line.chars().filter(|c| !c.is_control()).take(80).collect();
    if line.chars().count() > 80 {
        title.push('…');
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_line_of_the_prompt() {
        assert_eq!(first_line("\n  Find the bug\nin main.rs"), "Find the bug");
        assert_eq!(first_line(" \n"), "sub-agent");
        let long = "x".repeat(100);
        assert_eq!(first_line(&long).chars().count(), 81);
    }
}
