//! The turn: load the prompt, then loop model steps until the model stops asking for tools,
//! persisting each step in one fenced transaction, then finish the turn (DESIGN.md section 6).
//!
//! **Invariant:** no transaction is held open across a provider call or any network wait; a
//! database connection is taken from the pool only around each statement/transaction.

pub mod context;
pub mod control;
pub mod step;
pub mod stream;

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use serde_json::{json, Value};
use tracing::Instrument;
use uuid::Uuid;

use chatd_shared::domain::{ContentPart, Role};

use crate::config::WorkerConfig;
use crate::flusher::StreamFlusher;
use crate::provider::{ModelRequest, PromptMessage, ProviderError};
use crate::store::{self, Claim, NewRow, RowUsage, TurnEnd};
use context::{ContextError, ModelChoice};
use control::{StopReason, TurnControl};
use step::{StepOutput, StepResult};
pub use stream::TurnStream;

/// Everything a running turn needs.
pub struct TurnContext {
    pub config: Arc<WorkerConfig>,
    pub pool: Pool,
    pub http: reqwest::Client,
    pub model: ModelChoice,
    pub control: Arc<TurnControl>,
    /// Publishes this turn's post-commit hints (batched with other turns' under load).
    pub flusher: Arc<StreamFlusher>,
    pub chat_id: Uuid,
    pub owner_id: Uuid,
    /// The lease epoch; changes when a step restarts after partial output.
    attempt: AtomicI32,
}

/// Dependencies of `run_turn` that live as long as the worker.
#[derive(Clone)]
pub struct TurnDeps {
    pub config: Arc<WorkerConfig>,
    pub pool: Pool,
    pub http: reqwest::Client,
    pub flusher: Arc<StreamFlusher>,
    pub models: Arc<context::ModelCache>,
}

impl TurnContext {
    pub fn attempt(&self) -> i32 {
        self.attempt.load(Ordering::Relaxed)
    }

    /// Bumps the lease epoch (fenced); `None` when the lease is gone.
    pub async fn renew_attempt(&self) -> Option<i32> {
        let client = self.pool.get().await.ok()?;
        let renewed =
            store::renew_attempt(&client, self.chat_id, self.config.worker_id, self.attempt())
                .await
                .ok()??;
        let (attempt, version) = renewed;
        self.attempt.store(attempt, Ordering::Relaxed);
        let notices = store::status_notices(
            self.chat_id,
            self.owner_id,
            version,
            chatd_shared::domain::ChatStatus::Running,
            attempt,
        );
        self.flusher.publish_soon(notices);
        Some(attempt)
    }

    /// Commits `rows` and `end` fenced by the lease, retrying transient database errors.
    /// Returns false when the lease was lost (or the database stayed unreachable: then the
    /// lease expires and the sweep hands the chat to another worker).
    /// `last_seq`: the last seq this attempt published (carried in the hint so API replicas can
    /// tell whether they missed a frame notification).
    async fn commit(&self, rows: &[NewRow], end: TurnEnd, last_seq: Option<i64>) -> bool {
        let mut delay = Duration::from_millis(100);
        let mut end = Some(end);
        for _ in 0..6 {
            let result = async {
                let client = self.pool.get().await?;
                let committed = store::commit(
                    &client,
                    self.chat_id,
                    self.config.worker_id,
                    self.attempt(),
                    rows,
                    clone_end(end.as_ref()),
                )
                .await?;
                if let Some(committed) = &committed {
                    let mut committed = committed.clone();
                    committed.last_seq = last_seq;
                    let notices = store::change_notices(self.chat_id, self.owner_id, &committed);
                    self.flusher.publish_soon(notices);
                }
                anyhow::Ok(committed.is_some())
            }
            .await;
            match result {
                Ok(owned) => {
                    if !owned {
                        tracing::info!("lease lost; the step was not written");
                    }
                    return owned;
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "commit the step; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        end.take();
        false
    }
}

fn clone_end(end: Option<&TurnEnd>) -> TurnEnd {
    match end {
        None | Some(TurnEnd::Continue) => TurnEnd::Continue,
        Some(TurnEnd::Done) => TurnEnd::Done,
        Some(TurnEnd::Interrupted) => TurnEnd::Interrupted,
        Some(TurnEnd::Failed(error)) => TurnEnd::Failed(error.clone()),
        Some(TurnEnd::Released) => TurnEnd::Released,
    }
}

/// Runs one claimed turn to its end. Never panics on bad data; every exit path either
/// commits a terminal state or leaves the lease to expire (lost lease, database outage).
pub async fn run_turn(deps: TurnDeps, claim: Claim, control: Arc<TurnControl>) {
    let span = tracing::info_span!("turn", chat_id = %claim.chat_id, attempt = claim.attempt,
        worker_id = %deps.config.worker_id);
    let started = Instant::now();
    metrics::gauge!("chatd_active_turns").increment(1.0);
    run_turn_inner(deps, claim, control).instrument(span).await;
    metrics::gauge!("chatd_active_turns").decrement(1.0);
    metrics::histogram!("chatd_turn_duration_seconds").record(started.elapsed().as_secs_f64());
}

async fn run_turn_inner(deps: TurnDeps, claim: Claim, control: Arc<TurnControl>) {
    let prepared = prepare(&deps, &claim).await;
    let (model, mut prompt) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            let message = error.to_string();
            tracing::warn!(error = %message, "turn cannot start");
            fail_without_model(&deps, &claim, &message).await;
            return;
        }
    };
    let turn = TurnContext {
        config: deps.config.clone(),
        pool: deps.pool.clone(),
        http: deps.http.clone(),
        model,
        control,
        flusher: deps.flusher.clone(),
        chat_id: claim.chat_id,
        owner_id: claim.owner_id,
        attempt: AtomicI32::new(claim.attempt),
    };
    if claim.crash_count > deps.config.max_crash_count {
        let error = json!({"kind": "crash_loop", "message": format!(
            "the turn was started {} times without finishing; giving up", claim.crash_count - 1)});
        turn.commit(&[], TurnEnd::Failed(error), None).await;
        return;
    }
    let mut stream = TurnStream::new(deps.flusher.clone(), claim.chat_id, claim.attempt);
    for _ in 0..deps.config.max_steps {
        let step_started = Instant::now();
        let request = ModelRequest {
            model: turn.model.model.clone(),
            messages: std::mem::take(&mut prompt),
            max_output_tokens: turn.model.max_output_tokens,
            ..ModelRequest::default()
        };
        let result = step::run_step(&turn, &mut stream, &request).await;
        prompt = request.messages;
        metrics::counter!("chatd_steps_total").increment(1);
        let runtime_ms = step_started.elapsed().as_millis() as i64;
        match result {
            StepResult::Done(output) => {
                let (rows, assistant, tool_messages) = step_rows(&turn, &output, runtime_ms, false);
                let end = if output.tool_calls.is_empty() {
                    TurnEnd::Done
                } else {
                    TurnEnd::Continue
                };
                let finished = !matches!(end, TurnEnd::Continue);
                stream.flush().await;
                if !turn.commit(&rows, end, Some(stream.last_seq())).await || finished {
                    return;
                }
                prompt.push(assistant);
                prompt.extend(tool_messages);
            }
            StepResult::Stopped(partial) => {
                match turn.control.reason() {
                    Some(StopReason::Interrupt) => {
                        let (rows, _, _) = step_rows(&turn, &partial, runtime_ms, true);
                        stream.flush().await;
                        turn.commit(&rows, TurnEnd::Interrupted, Some(stream.last_seq()))
                            .await;
                    }
                    Some(StopReason::Shutdown) => {
                        turn.commit(&[], TurnEnd::Released, None).await;
                    }
                    Some(StopReason::LeaseLost) | None => {}
                }
                return;
            }
            StepResult::Failed(error) => {
                fail(&turn, &mut stream, &error).await;
                return;
            }
            StepResult::LeaseLost => return,
        }
    }
    let error = json!({"kind": "max_steps", "message": format!(
        "the turn reached the limit of {} steps", deps.config.max_steps)});
    turn.commit(&[], TurnEnd::Failed(error), Some(stream.last_seq()))
        .await;
}

async fn prepare(
    deps: &TurnDeps,
    claim: &Claim,
) -> Result<(ModelChoice, Vec<PromptMessage>), ContextError> {
    let client = deps
        .pool
        .get()
        .await
        .map_err(|error| ContextError::Config(format!("database connection: {error}")))?;
    let (prompt, wanted) = context::load_prompt(&client, claim.chat_id).await?;
    let model = deps
        .models
        .resolve(&client, wanted, deps.config.encryption_key.as_ref())
        .await?;
    Ok((model, prompt))
}

/// The assistant row (and tool rows) of a step, plus the prompt messages they become.
fn step_rows(
    turn: &TurnContext,
    output: &StepOutput,
    runtime_ms: i64,
    interrupted: bool,
) -> (Vec<NewRow>, PromptMessage, Vec<PromptMessage>) {
    let mut parts = Vec::new();
    if !output.reasoning.trim().is_empty() {
        parts.push(ContentPart::Reasoning {
            text: output.reasoning.clone(),
            signature: None,
        });
    }
    if !output.text.trim().is_empty() {
        parts.push(ContentPart::text(output.text.clone()));
    }
    let mut tool_parts = Vec::new();
    for call in &output.tool_calls {
        if call.id.is_empty() {
            continue;
        }
        parts.push(ContentPart::ToolCall {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            args: call.args.clone(),
        });
        // Tools arrive with the next issue; until then every call gets an error result the
        // model can read, which keeps the history valid for every provider.
        let message = if interrupted {
            "the turn was interrupted before this tool ran".to_string()
        } else {
            format!("tool `{}` is not available", call.name)
        };
        tool_parts.push(ContentPart::ToolResult {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            result: Value::String(message),
            is_error: true,
        });
    }
    let usage = &output.usage;
    let cost = cost_micros(&turn.model, usage.input_tokens, usage.output_tokens);
    let mut rows = Vec::new();
    if !parts.is_empty() {
        rows.push(NewRow {
            role: Role::Assistant,
            content: serde_json::to_value(&parts).unwrap_or(Value::Array(Vec::new())),
            model_config_id: Some(turn.model.model_config_id),
            usage: Some(RowUsage {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                reasoning_tokens: usage.reasoning_tokens,
                cache_read_tokens: usage.cache_read_tokens,
                cache_write_tokens: usage.cache_write_tokens,
                cost_micros: cost,
            }),
            runtime_ms: Some(runtime_ms),
            provider_response_id: output.response_id.clone(),
        });
    }
    if !tool_parts.is_empty() {
        rows.push(NewRow {
            role: Role::Tool,
            content: serde_json::to_value(&tool_parts).unwrap_or(Value::Array(Vec::new())),
            model_config_id: Some(turn.model.model_config_id),
            usage: None,
            runtime_ms: None,
            provider_response_id: None,
        });
    }
    let assistant = PromptMessage {
        role: Role::Assistant,
        content: parts,
    };
    let tools = if tool_parts.is_empty() {
        Vec::new()
    } else {
        vec![PromptMessage {
            role: Role::Tool,
            content: tool_parts,
        }]
    };
    (rows, assistant, tools)
}

/// Cost in micro-dollars, rounded up; `None` when the model has no prices.
pub fn cost_micros(model: &ModelChoice, input_tokens: i64, output_tokens: i64) -> Option<i64> {
    if model.input_price_micros.is_none() && model.output_price_micros.is_none() {
        return None;
    }
    let total = input_tokens as i128 * model.input_price_micros.unwrap_or(0) as i128
        + output_tokens as i128 * model.output_price_micros.unwrap_or(0) as i128;
    Some(((total + 999_999) / 1_000_000) as i64)
}

/// Publishes the `error` event, then commits the `error` state with `last_error`.
async fn fail(turn: &TurnContext, stream: &mut TurnStream, error: &ProviderError) {
    let data = json!({
        "kind": error.kind,
        "message": error.message,
        "retryable": error.retryable,
        "provider": turn.model.endpoint.kind.as_str(),
        "status_code": error.status_code,
    });
    stream.error(data.clone());
    stream.flush().await;
    turn.commit(&[], TurnEnd::Failed(data), Some(stream.last_seq()))
        .await;
}

/// A turn that could not even resolve its model fails with a config error.
async fn fail_without_model(deps: &TurnDeps, claim: &Claim, message: &str) {
    let Ok(client) = deps.pool.get().await else {
        return;
    };
    let error = json!({"kind": "config", "message": message, "retryable": false});
    if let Ok(Some(committed)) = store::commit(
        &client,
        claim.chat_id,
        deps.config.worker_id,
        claim.attempt,
        &[],
        TurnEnd::Failed(error),
    )
    .await
    {
        let notices = store::change_notices(claim.chat_id, claim.owner_id, &committed);
        deps.flusher.publish_soon(notices);
    }
}
