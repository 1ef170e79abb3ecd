//! The `advisor` tool (`/config/advisor`): the agent asks a question, and a nested, tool-less,
//! one-step model call that sees the conversation so far answers it — advice for the agent,
//! never shown as an answer to the user. Offered to root chats only while enabled; it must
//! run alone (exclusive); a turn may consult it `max_uses_per_turn` times (later calls get a
//! `limit_reached` result); its tokens and cost are stored on the tool result's row, so they
//! count in spend. A failing advisor is an error result: it never fails the turn.

use std::time::Duration;

use serde_json::{json, Value};

use chatd_shared::db::advisor::AdvisorConfig;
use chatd_shared::domain::{ContentPart, Role};

use super::execute::CallOutcome;
use crate::provider::{ModelRequest, PromptMessage, ToolSpec};
use crate::store::RowUsage;
use crate::turn::context::ModelChoice;

/// The tool's name.
pub const ADVISOR: &str = "advisor";
/// Longest question, in characters.
pub const MAX_QUESTION_CHARS: usize = 20_000;

/// What the advisor's model is told it is.
pub const ADVISOR_INSTRUCTION: &str = "You are the advisor of an AI agent. The agent is \
working on the conversation above and asks you a question. Give it strategic advice: what to \
do next, what to check, what it may have missed, and which approach is likely to work. Be \
concrete and brief. You cannot call tools; the agent acts on your advice. Address the agent, \
not the user.";

/// The system part that tells the agent the advisor exists (sent only when it is offered).
pub const ADVISOR_NOTE: &str = "You can consult an advisor with the `advisor` tool: give it \
a question and it answers with strategic advice, having read this conversation. Use it when \
you are stuck or facing a hard decision; call it on its own, not with other tools.";

/// The advisor of one turn: its settings and the model it runs on.
#[derive(Clone)]
pub struct AdvisorScope {
    pub http: reqwest::Client,
    pub model: ModelChoice,
    pub config: AdvisorConfig,
    /// Bound on one consultation (the worker's tool timeout).
    pub timeout: Duration,
}

/// A consultation's outcome, and what it cost (stored on the tool result's row).
pub struct Advice {
    pub outcome: CallOutcome,
    pub usage: Option<RowUsage>,
}

impl AdvisorScope {
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: ADVISOR.to_owned(),
            description: format!(
                "Asks an advisor who has read this conversation for strategic advice. At most \
                 {} times per turn; call it on its own.",
                self.config.max_uses_per_turn
            ),
            parameters: json!({
                "type": "object",
                "properties": {"question": {"type": "string", "description": "What you want advice on."}},
                "required": ["question"],
                "additionalProperties": false
            }),
        }
    }

    /// Answers one `advisor` call made after `conversation` (the prompt so far, system parts
    /// first).
    pub async fn advise(&self, args: &Value, conversation: &[PromptMessage]) -> Advice {
        let question = match args.get("question") {
            Some(Value::String(question)) if !question.trim().is_empty() => question,
            _ => return error("advisor: `question` must be a non-empty string"),
        };
        if question.chars().count() > MAX_QUESTION_CHARS {
            return error(format!(
                "advisor: `question` is longer than {MAX_QUESTION_CHARS} characters"
            ));
        }
        let used = uses_this_turn(conversation);
        if used >= self.config.max_uses_per_turn as usize {
            return Advice {
                outcome: CallOutcome::Done {
                    result: json!({
                        "error": "limit_reached",
                        "message": format!(
                            "the advisor was consulted {used} times this turn, the limit; go on without it"
                        ),
                    }),
                    is_error: true,
                },
                usage: None,
            };
        }
        let mut messages = vec![PromptMessage {
            role: Role::System,
            content: vec![ContentPart::text(ADVISOR_INSTRUCTION)],
        }];
        messages.extend_from_slice(conversation);
        messages.push(PromptMessage {
            role: Role::User,
            content: vec![ContentPart::text(format!(
                "The agent asks for your advice:\n\n{question}"
            ))],
        });
        let request = ModelRequest {
            model: self.model.model.clone(),
            messages,
            max_output_tokens: Some(self.config.max_output_tokens.max(1) as u32),
            ..ModelRequest::default()
        };
        match crate::turn::summary::collect_text(&self.http, &self.model, &request, self.timeout)
            .await
        {
            Ok((advice, usage)) => Advice {
                outcome: CallOutcome::Done {
                    result: json!({"advice": advice.trim().replace('\0', "\u{FFFD}")}),
                    is_error: false,
                },
                usage: Some(crate::turn::rows::billed(&self.model, &usage)),
            },
            Err(failure) => error(format!("the advisor is unavailable: {}", failure.message)),
        }
    }
}

fn error(message: impl Into<String>) -> Advice {
    Advice {
        outcome: CallOutcome::error(message),
        usage: None,
    }
}

/// `advisor` calls since the conversation's latest user message.
fn uses_this_turn(conversation: &[PromptMessage]) -> usize {
    let start = conversation
        .iter()
        .rposition(|message| message.role == Role::User)
        .map_or(0, |index| index + 1);
    conversation[start..]
        .iter()
        .filter(|message| message.role == Role::Assistant)
        .flat_map(|message| &message.content)
        .filter(
            |part| matches!(part, ContentPart::ToolCall { tool_name, .. } if tool_name == ADVISOR),
        )
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str) -> ContentPart {
        ContentPart::ToolCall {
            tool_call_id: "c".into(),
            tool_name: name.into(),
            args: json!({}),
        }
    }

    #[test]
    fn uses_are_counted_from_the_latest_user_message() {
        let message = |role, content| PromptMessage { role, content };
        let conversation = vec![
            message(Role::User, vec![ContentPart::text("first")]),
            message(Role::Assistant, vec![call(ADVISOR)]),
            message(Role::User, vec![ContentPart::text("second")]),
            message(Role::Assistant, vec![call(ADVISOR), call("other")]),
            message(Role::Tool, vec![]),
            message(Role::Assistant, vec![call(ADVISOR)]),
        ];
        assert_eq!(uses_this_turn(&conversation), 2);
        assert_eq!(uses_this_turn(&conversation[..3]), 0);
    }
}
