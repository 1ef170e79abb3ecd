//! The tools of a turn beyond the worker's built-ins (the advisor's scope) and how a step's
//! calls run: the advisor alone, by the turn (it reads the conversation), everything else
//! through `tool::execute`.

use crate::provider::PromptMessage;
use crate::tool::{self, CallOutcome, Toolset};

use super::step::StepOutput;
use super::{TurnContext, TurnDeps};
use tool::execute::CallRequest;

/// The advisor for this turn: root chats only, while it is enabled, on its model (the
/// turn's own when none is set, or when that one cannot be resolved now).
pub async fn advisor_scope(
    deps: &TurnDeps,
    turn: &TurnContext,
) -> Option<tool::advisor::AdvisorScope> {
    if turn.depth > 0 {
        return None;
    }
    let config = deps.models.advisor(&deps.pool).await;
    if !config.enabled {
        return None;
    }
    let model = match config.model_config_id {
        None => turn.model.clone(),
        Some(id) => {
            let resolved = async {
                let client = deps.pool.get().await?;
                anyhow::Ok(
                    deps.models
                        .resolve(&client, Some(id), deps.config.encryption_key.as_ref())
                        .await?,
                )
            }
            .await;
            match resolved {
                Ok(model) if model.model_config_id == id => model,
                Ok(_) | Err(_) => {
                    tracing::warn!(model_config_id = %id, "the advisor's model is not usable; it runs on the chat's");
                    turn.model.clone()
                }
            }
        }
    };
    Some(tool::advisor::AdvisorScope {
        http: deps.http.clone(),
        model,
        config,
        timeout: deps.config.tool_timeout,
    })
}

/// Runs the step's tool calls (none: `Ok(None)`), bounded by the step's deadline (`Err` when
/// it passed).
pub async fn run_tools(
    turn: &TurnContext,
    toolset: &Toolset,
    output: &StepOutput,
    (instructions, prompt): (&[PromptMessage], &[PromptMessage]),
    step_deadline: tokio::time::Instant,
) -> Result<Option<tool::execute::StepExecution>, tokio::time::error::Elapsed> {
    if output.tool_calls.is_empty() {
        return Ok(None);
    }
    if let (Some(advisor), [call]) = (toolset.advisor(), output.tool_calls.as_slice()) {
        if call.name == tool::advisor::ADVISOR {
            // Alone in its step (the exclusive policy refuses it in company): the advisor
            // reads the conversation, which only the turn has.
            let mut conversation = instructions.to_vec();
            conversation.extend_from_slice(prompt);
            let consult = advisor.advise(&call.args, &conversation);
            return tokio::time::timeout_at(step_deadline, async {
                tokio::select! {
                    advice = consult => Some(tool::execute::StepExecution {
                        outcomes: vec![advice.outcome],
                        interrupted: false,
                        children: Vec::new(),
                        usage: advice.usage.map(|usage| (advisor.model.model_config_id, usage)),
                    }),
                    _ = turn.control.token.cancelled() => Some(tool::execute::StepExecution {
                        outcomes: vec![CallOutcome::error(tool::execute::INTERRUPTED_RESULT)],
                        interrupted: true,
                        children: Vec::new(),
                        usage: None,
                    }),
                }
            })
            .await;
        }
    }
    let calls: Vec<CallRequest> = output
        .tool_calls
        .iter()
        .map(|call| CallRequest {
            id: call.id.clone(),
            name: call.name.clone(),
            args: call.args.clone(),
        })
        .collect();
    tokio::time::timeout_at(
        step_deadline,
        tool::execute(
            toolset,
            &calls,
            turn.chat_id,
            turn.owner_id,
            turn.config.tool_timeout,
            &turn.control.token,
        ),
    )
    .await
    .map(Some)
}
