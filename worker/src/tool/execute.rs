//! Running one step's tool calls: the exclusive-tool policy, concurrency, timeouts, panics and
//! interruption, with results in call order.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::agents::NewChild;
use super::{ToolContext, ToolKind, Toolset};

/// One call as the model made it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    pub id: String,
    pub name: String,
    pub args: Value,
}

/// What became of one call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// A result for the model (errors included: they are results the model can read).
    Done { result: Value, is_error: bool },
    /// A dynamic tool: the client executes it (`requires_action`).
    Pending,
    /// `wait_agent` on a busy sub-agent: answered when it ends or after `timeout`
    /// (`awaiting_agents`).
    AwaitAgent { chat_id: Uuid, timeout: Duration },
}

impl CallOutcome {
    /// Whether the call has no result yet (the client's or a sub-agent's).
    pub fn is_waiting(&self) -> bool {
        matches!(self, CallOutcome::Pending | CallOutcome::AwaitAgent { .. })
    }

    pub(crate) fn error(message: impl Into<String>) -> CallOutcome {
        CallOutcome::Done {
            result: Value::String(message.into()),
            is_error: true,
        }
    }
}

/// The outcomes of a step's calls, in call order.
#[derive(Debug)]
pub struct StepExecution {
    pub outcomes: Vec<CallOutcome>,
    /// The turn was interrupted while tools ran; unfinished calls got synthetic results.
    pub interrupted: bool,
    /// Sub-agents `spawn_agent` started: the step's commit inserts them.
    pub children: Vec<NewChild>,
    /// What the step's tools cost (the advisor's model call), stored on the tool row.
    pub usage: Option<(uuid::Uuid, crate::store::RowUsage)>,
}

/// The result every unfinished call gets when the turn is interrupted.
pub const INTERRUPTED_RESULT: &str = "the turn was interrupted before this tool call finished";

/// Runs the built-in calls concurrently (each bounded by `timeout`), marks dynamic ones
/// pending, and answers everything else with an error result. Cancelling `cancel` stops the
/// running tools; their calls get [`INTERRUPTED_RESULT`].
pub async fn execute(
    toolset: &Toolset,
    calls: &[CallRequest],
    chat_id: Uuid,
    owner_id: Uuid,
    timeout: Duration,
    cancel: &CancellationToken,
) -> StepExecution {
    if calls.len() > 1 {
        if let Some(exclusive) = calls.iter().find(|call| toolset.is_exclusive(&call.name)) {
            let message = format!(
                "policy error: `{}` must be called on its own, but this step made {} calls; \
                 none of them was executed. Call `{}` alone, then the other tools.",
                exclusive.name,
                calls.len(),
                exclusive.name
            );
            return StepExecution {
                outcomes: calls.iter().map(|_| CallOutcome::error(&message)).collect(),
                interrupted: false,
                children: Vec::new(),
                usage: None,
            };
        }
    }
    // The agent tools first: quick database reads, and `wait_agent` must know whether the
    // step also waits for the client.
    let (mut agent_outcomes, children) = match toolset.agents() {
        Some(scope) if calls.iter().any(|call| scope.handles(&call.name)) => {
            let has_client_calls = calls
                .iter()
                .any(|call| matches!(toolset.lookup(&call.name), Some(ToolKind::Dynamic(_))));
            let with_object_args: Vec<CallRequest> = calls
                .iter()
                .map(|call| match &call.args {
                    // Unparsable arguments get the JSON error below.
                    Value::String(_) => CallRequest {
                        name: String::new(),
                        ..call.clone()
                    },
                    _ => call.clone(),
                })
                .collect();
            scope.run(&with_object_args, has_client_calls).await
        }
        _ => (vec![None; calls.len()], Vec::new()),
    };
    let mut running = Vec::with_capacity(calls.len());
    for (index, call) in calls.iter().enumerate() {
        let slot = match (toolset.lookup(&call.name), &call.args) {
            (None, _) => Slot::Ready(CallOutcome::error(unknown_tool(toolset, &call.name))),
            (Some(_), Value::String(raw)) => Slot::Ready(CallOutcome::error(format!(
                "the arguments of `{}` are not valid JSON: {raw}",
                call.name
            ))),
            (Some(ToolKind::Dynamic(_)), _) => Slot::Ready(CallOutcome::Pending),
            // Called alone, the advisor never reaches here (the turn runs it itself).
            (Some(ToolKind::Advisor), _) => {
                Slot::Ready(CallOutcome::error("`advisor` must be called on its own"))
            }
            (Some(ToolKind::Agent), _) => Slot::Ready(
                agent_outcomes
                    .get_mut(index)
                    .and_then(Option::take)
                    .unwrap_or_else(|| CallOutcome::error(unknown_tool(toolset, &call.name))),
            ),
            (Some(ToolKind::Builtin(tool)), args) => {
                let future = tool.call(
                    args.clone(),
                    ToolContext {
                        chat_id,
                        owner_id,
                        tool_call_id: call.id.clone(),
                    },
                );
                Slot::Running(tokio::spawn(tokio::time::timeout(timeout, future)))
            }
        };
        running.push(slot);
    }
    let mut outcomes = Vec::with_capacity(calls.len());
    let mut interrupted = false;
    for (slot, call) in running.into_iter().zip(calls) {
        let outcome = match slot {
            Slot::Ready(outcome) => outcome,
            Slot::Running(mut handle) if !interrupted => {
                tokio::select! {
                    joined = &mut handle => outcome_of(joined, &call.name, timeout),
                    _ = cancel.cancelled() => {
                        handle.abort();
                        interrupted = true;
                        CallOutcome::error(INTERRUPTED_RESULT)
                    }
                }
            }
            Slot::Running(handle) => {
                handle.abort();
                CallOutcome::error(INTERRUPTED_RESULT)
            }
        };
        outcomes.push(outcome);
    }
    StepExecution {
        outcomes,
        interrupted,
        children,
        usage: None,
    }
}

enum Slot {
    Ready(CallOutcome),
    Running(tokio::task::JoinHandle<Result<Result<Value, String>, tokio::time::error::Elapsed>>),
}

fn outcome_of(
    joined: Result<
        Result<Result<Value, String>, tokio::time::error::Elapsed>,
        tokio::task::JoinError,
    >,
    name: &str,
    timeout: Duration,
) -> CallOutcome {
    match joined {
        Ok(Ok(Ok(result))) => CallOutcome::Done {
            result,
            is_error: false,
        },
        Ok(Ok(Err(message))) => CallOutcome::error(message),
        Ok(Err(_)) => CallOutcome::error(format!(
            "`{name}` did not finish within {} s",
            timeout.as_secs()
        )),
        Err(error) if error.is_panic() => {
            tracing::error!(tool = name, "tool panicked");
            CallOutcome::error(format!(
                "`{name}` failed with an internal error (it panicked)"
            ))
        }
        Err(_) => CallOutcome::error(INTERRUPTED_RESULT),
    }
}

fn unknown_tool(toolset: &Toolset, name: &str) -> String {
    let available: Vec<String> = toolset.specs().into_iter().map(|spec| spec.name).collect();
    if available.is_empty() {
        format!("unknown tool `{name}`: no tools are available")
    } else {
        format!(
            "unknown tool `{name}`; available tools: {}",
            available.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::BoxFuture;
    use futures::FutureExt;
    use serde_json::json;

    use super::*;
    use crate::provider::ToolSpec;
    use crate::tool::{DynamicTool, Tool};

    /// A scripted tool: `{"mode": "ok"|"fail"|"panic"|"hang", "value": …}`.
    struct Scripted;

    impl Tool for Scripted {
        fn spec(&self) -> ToolSpec {
            ToolSpec {
                name: "scripted".into(),
                description: String::new(),
                parameters: json!({"type": "object"}),
            }
        }

        fn call(&self, args: Value, _: ToolContext) -> BoxFuture<'static, Result<Value, String>> {
            async move {
                match args.get("mode").and_then(Value::as_str) {
                    Some("fail") => Err("it failed".to_owned()),
                    Some("panic") => panic!("scripted panic"),
                    Some("hang") => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(Value::Null)
                    }
                    _ => Ok(args.get("value").cloned().unwrap_or(Value::Null)),
                }
            }
            .boxed()
        }
    }

    fn toolset() -> Toolset {
        let builtin: Vec<Arc<dyn Tool>> = vec![
            Arc::new(Scripted),
            crate::tool::builtin::by_name("sleep").expect("sleep exists"),
        ];
        let dynamic = vec![
            DynamicTool {
                name: "client_tool".into(),
                description: String::new(),
                schema: json!({"type": "object"}),
                exclusive: false,
            },
            DynamicTool {
                name: "deploy".into(),
                description: String::new(),
                schema: json!({"type": "object"}),
                exclusive: true,
            },
        ];
        Toolset::new(builtin, dynamic)
    }

    fn call(id: &str, name: &str, args: Value) -> CallRequest {
        CallRequest {
            id: id.into(),
            name: name.into(),
            args,
        }
    }

    async fn run(calls: &[CallRequest], cancel: &CancellationToken) -> StepExecution {
        execute(
            &toolset(),
            calls,
            Uuid::nil(),
            Uuid::nil(),
            Duration::from_secs(5),
            cancel,
        )
        .await
    }

    fn error_text(outcome: &CallOutcome) -> &str {
        match outcome {
            CallOutcome::Done {
                result: Value::String(text),
                is_error: true,
            } => text,
            other => panic!("expected an error result, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn results_keep_call_order_and_failures_become_error_results() {
        let calls = [
            call("1", "scripted", json!({"value": 1})),
            call("2", "scripted", json!({"mode": "fail"})),
            call("3", "scripted", json!({"mode": "panic"})),
            call("4", "nope", json!({})),
            call("5", "scripted", json!("{not json")),
            call("6", "client_tool", json!({"x": 1})),
            call("7", "scripted", json!({"value": "last"})),
        ];
        let execution = run(&calls, &CancellationToken::new()).await;
        assert!(!execution.interrupted);
        let outcomes = &execution.outcomes;
        assert_eq!(
            outcomes[0],
            CallOutcome::Done {
                result: json!(1),
                is_error: false
            }
        );
        assert_eq!(error_text(&outcomes[1]), "it failed");
        assert!(error_text(&outcomes[2]).contains("panicked"));
        assert!(error_text(&outcomes[3]).contains("unknown tool `nope`"));
        assert!(error_text(&outcomes[3]).contains("scripted"));
        assert!(error_text(&outcomes[4]).contains("not valid JSON"));
        assert_eq!(outcomes[5], CallOutcome::Pending);
        assert_eq!(
            outcomes[6],
            CallOutcome::Done {
                result: json!("last"),
                is_error: false
            }
        );
    }

    #[tokio::test]
    async fn an_exclusive_tool_with_company_runs_nothing() {
        for exclusive in ["sleep", "deploy"] {
            let calls = [
                call("1", exclusive, json!({"seconds": 0})),
                call("2", "scripted", json!({"mode": "panic"})),
            ];
            let execution = run(&calls, &CancellationToken::new()).await;
            assert_eq!(execution.outcomes.len(), 2);
            for outcome in &execution.outcomes {
                let text = error_text(outcome);
                assert!(text.contains("policy error"), "{text}");
                assert!(text.contains(exclusive), "{text}");
            }
        }
        let alone = run(
            &[call("1", "sleep", json!({"seconds": 0}))],
            &CancellationToken::new(),
        )
        .await;
        assert!(matches!(
            alone.outcomes[0],
            CallOutcome::Done {
                is_error: false,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn interruption_gives_unfinished_calls_synthetic_results() {
        let cancel = CancellationToken::new();
        let calls = [
            call("1", "scripted", json!({"value": "quick"})),
            call("2", "scripted", json!({"mode": "hang"})),
            call("3", "scripted", json!({"mode": "hang"})),
        ];
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            canceller.cancel();
        });
        let execution = run(&calls, &cancel).await;
        assert!(execution.interrupted);
        assert_eq!(
            execution.outcomes[0],
            CallOutcome::Done {
                result: json!("quick"),
                is_error: false
            }
        );
        assert_eq!(error_text(&execution.outcomes[1]), INTERRUPTED_RESULT);
        assert_eq!(error_text(&execution.outcomes[2]), INTERRUPTED_RESULT);
    }

    #[tokio::test]
    async fn a_slow_tool_times_out() {
        let execution = execute(
            &toolset(),
            &[call("1", "scripted", json!({"mode": "hang"}))],
            Uuid::nil(),
            Uuid::nil(),
            Duration::from_millis(20),
            &CancellationToken::new(),
        )
        .await;
        assert!(error_text(&execution.outcomes[0]).contains("did not finish"));
    }
}
