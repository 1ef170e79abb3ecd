//! The turn: load the prompt, then loop model steps until the model stops asking for tools,
//! persisting each step in one fenced transaction, then finish the turn (DESIGN.md section 6).
//!
//! **Invariant:** no transaction is held open across a provider call or any network wait; a
//! database connection is taken from the pool only around each statement/transaction.

pub mod compaction;
pub mod context;
pub mod control;
pub mod rows;
pub mod step;
pub mod stream;
pub mod summary;
pub mod title;

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tracing::Instrument;
use uuid::Uuid;

use chatd_shared::domain::{ChatError, ContentPart, Role};

use crate::config::WorkerConfig;
use crate::flusher::StreamFlusher;
use crate::provider::{ModelRequest, PromptMessage, ProviderError, ResponseChain};
use crate::store::{self, Claim, NewRow, TurnEnd};
use crate::tool::{self, execute::CallRequest, CallOutcome, Tool, Toolset};
use context::{ContextError, LoadedChat, ModelChoice};
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
    /// The built-in tools this worker offers (`--tools`).
    pub builtin_tools: Arc<Vec<Arc<dyn Tool>>>,
}

impl TurnContext {
    pub fn attempt(&self) -> i32 {
        self.attempt.load(Ordering::Relaxed)
    }

    /// Bumps the lease epoch (fenced, idempotent), retrying transient database errors.
    pub async fn renew_attempt(&self) -> store::Renewal {
        let key = Uuid::new_v4();
        let mut delay = Duration::from_millis(100);
        for _ in 0..COMMIT_TRIES {
            let result = async {
                let client = self.pool.get().await?;
                anyhow::Ok(
                    store::renew_attempt(
                        &client,
                        self.chat_id,
                        self.config.worker_id,
                        self.attempt(),
                        key,
                    )
                    .await?,
                )
            }
            .await;
            match result {
                Ok(store::Renewal::Renewed(attempt, version)) => {
                    self.attempt.store(attempt, Ordering::Relaxed);
                    let notices = store::status_change(
                        self.chat_id,
                        self.owner_id,
                        version,
                        chatd_shared::domain::ChatStatus::Running,
                        attempt,
                    )
                    .notices();
                    self.flusher.publish_soon(notices);
                    return store::Renewal::Renewed(attempt, version);
                }
                Ok(other) => return other,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "renew the attempt; retrying");
                    if self.sleep_unless_lost(delay).await {
                        return store::Renewal::LeaseLost;
                    }
                    delay = (delay * 2).min(MAX_COMMIT_DELAY);
                }
            }
        }
        store::Renewal::LeaseLost
    }

    /// Sleeps `delay`; true when the lease was lost meanwhile (stop retrying).
    async fn sleep_unless_lost(&self, delay: Duration) -> bool {
        tokio::time::sleep(delay).await;
        self.control.reason() == Some(StopReason::LeaseLost)
    }

    /// Commits `rows` and `end` fenced by the lease, retrying transient database errors with
    /// the same idempotency key (a retry after a lost reply writes nothing twice). Returns
    /// `Lost` when the lease was lost (or the database stayed unreachable: then the lease
    /// expires and another worker takes the chat).
    /// `last_seq`: the last seq this attempt published (carried in the hint so API replicas can
    /// tell whether they missed a frame notification).
    async fn commit_outcome(&self, rows: &[NewRow], end: TurnEnd, last_seq: Option<i64>) -> Commit {
        let key = Uuid::new_v4();
        let mut delay = Duration::from_millis(100);
        let mut changed = 0;
        let mut tries = 0;
        while tries < COMMIT_TRIES {
            let result = async {
                let client = self.pool.get().await?;
                anyhow::Ok(
                    store::commit(
                        &client,
                        store::Lease {
                            chat_id: self.chat_id,
                            worker_id: self.config.worker_id,
                            attempt: self.attempt(),
                        },
                        rows,
                        &end,
                        key,
                        last_seq,
                    )
                    .await?,
                )
            }
            .await;
            match result {
                Ok(store::CommitOutcome::Committed(change))
                | Ok(store::CommitOutcome::AlreadyCommitted(change)) => {
                    let notices = change.with_last_seq(last_seq).notices();
                    self.flusher.publish_soon(notices);
                    return Commit::Owned;
                }
                Ok(store::CommitOutcome::Changed) if changed < MAX_CHANGED_RETRIES => {
                    // Someone committed while we waited for the row lock: look again at once.
                    changed += 1;
                }
                Ok(store::CommitOutcome::Changed) => {
                    tracing::warn!("the chat kept changing under the commit; giving up");
                    return Commit::Lost;
                }
                Ok(store::CommitOutcome::Interrupting) => return Commit::Interrupting,
                Ok(store::CommitOutcome::LeaseLost) => {
                    tracing::info!("lease lost; the step was not written");
                    return Commit::Lost;
                }
                Err(error) => {
                    tries += 1;
                    tracing::warn!(error = format!("{error:#}"), "commit the step; retrying");
                    if self.sleep_unless_lost(delay).await {
                        return Commit::Lost;
                    }
                    delay = (delay * 2).min(MAX_COMMIT_DELAY);
                }
            }
        }
        Commit::Lost
    }

    /// [`TurnContext::commit_outcome`] for ends that cannot meet `Interrupting` (only
    /// `RequiresAction` can): true while the lease is held.
    async fn commit(&self, rows: &[NewRow], end: TurnEnd, last_seq: Option<i64>) -> bool {
        matches!(
            self.commit_outcome(rows, end, last_seq).await,
            Commit::Owned | Commit::Interrupting
        )
    }
}

/// Tries of a commit or renewal on database errors (with backoff up to
/// [`MAX_COMMIT_DELAY`]); together about a minute, past `stale_after`'s default of 30 s, so
/// a turn gives up only once its lease is surely gone.
const COMMIT_TRIES: usize = 12;
const MAX_COMMIT_DELAY: Duration = Duration::from_secs(8);
/// Immediate re-runs of a commit whose row changed under it (each sees the newer row).
const MAX_CHANGED_RETRIES: usize = 20;

/// How a commit ended for the turn.
enum Commit {
    Owned,
    /// Nothing was written: a `requires_action` end found the chat `interrupting`.
    Interrupting,
    Lost,
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
    let (model, loaded) = match prepared {
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
        let error = ChatError::new(
            "crash_loop",
            format!(
                "the turn was started {} times without finishing; giving up",
                claim.crash_count - 1
            ),
        );
        turn.commit(&[], TurnEnd::Failed(error), None).await;
        return;
    }
    let toolset = Toolset::new(deps.builtin_tools.to_vec(), loaded.dynamic_tools);
    let tools = toolset.specs();
    let mut prompt = loaded.prompt;
    let mut chain = loaded
        .last_response
        .filter(|(_, model_config_id, _)| *model_config_id == Some(turn.model.model_config_id))
        .map(|(previous_response_id, _, new_from)| ResponseChain {
            previous_response_id,
            new_from,
        });
    let title_question = loaded.untitled.then(|| last_user_text(&prompt));
    let mut stream = TurnStream::new(deps.flusher.clone(), claim.chat_id, claim.attempt);
    for _ in 0..deps.config.max_steps {
        let step_started = Instant::now();
        // Streaming and tools together; expiry fails the turn (not retried).
        let step_deadline = tokio::time::Instant::now() + deps.config.step_timeout;
        let request = ModelRequest {
            model: turn.model.model.clone(),
            messages: std::mem::take(&mut prompt),
            max_output_tokens: turn.model.max_output_tokens,
            tools: tools.clone(),
            chain: chain.take(),
        };
        let result =
            tokio::time::timeout_at(step_deadline, step::run_step(&turn, &mut stream, &request))
                .await
                .unwrap_or_else(|_| {
                    StepResult::Failed(step_timeout_error(deps.config.step_timeout))
                });
        prompt = request.messages;
        metrics::counter!("chatd_steps_total").increment(1);
        let output = match result {
            StepResult::Done(output) => output,
            StepResult::Stopped(partial) => {
                let runtime_ms = step_started.elapsed().as_millis() as i64;
                stop(&turn, &mut stream, &partial, &[], runtime_ms).await;
                return;
            }
            StepResult::Failed(error) => {
                fail(&turn, &mut stream, &error).await;
                return;
            }
            StepResult::LeaseLost => return,
        };
        let calls: Vec<CallRequest> = output
            .tool_calls
            .iter()
            .map(|call| CallRequest {
                id: call.id.clone(),
                name: call.name.clone(),
                args: call.args.clone(),
            })
            .collect();
        let execution = if calls.is_empty() {
            None
        } else {
            let execution = tokio::time::timeout_at(
                step_deadline,
                tool::execute(
                    &toolset,
                    &calls,
                    turn.chat_id,
                    turn.owner_id,
                    deps.config.tool_timeout,
                    &turn.control.token,
                ),
            )
            .await;
            match execution {
                Ok(execution) => Some(execution),
                Err(_) => {
                    fail(
                        &turn,
                        &mut stream,
                        &step_timeout_error(deps.config.step_timeout),
                    )
                    .await;
                    return;
                }
            }
        };
        let runtime_ms = step_started.elapsed().as_millis() as i64;
        let outcomes = execution
            .as_ref()
            .map_or(&[][..], |execution| execution.outcomes.as_slice());
        if execution
            .as_ref()
            .is_some_and(|execution| execution.interrupted)
        {
            stop(&turn, &mut stream, &output, outcomes, runtime_ms).await;
            return;
        }
        let built = rows::step_rows(
            &turn.model,
            &output,
            outcomes,
            tool::execute::INTERRUPTED_RESULT,
            runtime_ms,
        );
        let pending = outcomes
            .iter()
            .any(|outcome| matches!(outcome, CallOutcome::Pending));
        let end = if pending {
            TurnEnd::RequiresAction(deps.config.action_timeout)
        } else if calls.is_empty() {
            TurnEnd::Done
        } else {
            TurnEnd::Continue
        };
        let continues = matches!(end, TurnEnd::Continue);
        stream.flush().await;
        match turn
            .commit_outcome(&built.rows, end, Some(stream.last_seq()))
            .await
        {
            Commit::Owned => {}
            Commit::Lost => return,
            Commit::Interrupting => {
                // Interrupted while the client calls were being stored: the interrupt wins
                // (the calls get synthetic results, a queued message runs next).
                turn.control.stop(StopReason::Interrupt);
                stop(&turn, &mut stream, &output, outcomes, runtime_ms).await;
                return;
            }
        }
        if !continues {
            if let (false, Some(question)) = (pending, title_question) {
                let answer = output
                    .parts
                    .iter()
                    .filter_map(|part| match part {
                        ContentPart::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect::<String>();
                title::spawn(
                    deps.clone(),
                    turn.chat_id,
                    turn.owner_id,
                    turn.model.clone(),
                    (question, answer),
                );
            }
            return;
        }
        let seen = prompt.len()
            + built
                .prompt
                .iter()
                .take_while(|message| message.role == Role::Assistant)
                .count();
        prompt.extend(built.prompt);
        chain = output
            .response_id
            .clone()
            .map(|previous_response_id| ResponseChain {
                previous_response_id,
                new_from: seen,
            });
        if compaction::should_compact(&turn.model, &output.usage) {
            let summary = tokio::select! {
                summary = compaction::summarise(&turn.http, &turn.model, &prompt) => summary,
                _ = turn.control.token.cancelled() => None,
            };
            if let Some(compaction) = summary {
                if !turn
                    .commit(&[compaction.row], TurnEnd::Continue, None)
                    .await
                {
                    return;
                }
                prompt = compaction.prompt;
                chain = None;
            }
        }
    }
    let error = ChatError::new(
        "max_steps",
        format!(
            "the turn reached the limit of {} steps",
            deps.config.max_steps
        ),
    );
    turn.commit(&[], TurnEnd::Failed(error), Some(stream.last_seq()))
        .await;
}

/// The turn was stopped from outside while streaming or while tools ran. An interrupt keeps
/// what was produced (unanswered calls get synthetic results so the history stays valid for
/// every provider); a shutdown releases the chat to another worker; a lost lease writes
/// nothing.
async fn stop(
    turn: &TurnContext,
    stream: &mut TurnStream,
    partial: &StepOutput,
    outcomes: &[CallOutcome],
    runtime_ms: i64,
) {
    match turn.control.reason() {
        Some(StopReason::Interrupt) => {
            // Pending (client) calls will never be answered now either.
            let outcomes: Vec<CallOutcome> = outcomes
                .iter()
                .filter(|outcome| !matches!(outcome, CallOutcome::Pending))
                .cloned()
                .collect();
            let built = rows::step_rows(
                &turn.model,
                partial,
                &outcomes,
                tool::execute::INTERRUPTED_RESULT,
                runtime_ms,
            );
            stream.flush().await;
            turn.commit(&built.rows, TurnEnd::Interrupted, Some(stream.last_seq()))
                .await;
        }
        Some(StopReason::Shutdown) => {
            turn.commit(&[], TurnEnd::Released, None).await;
        }
        Some(StopReason::LeaseLost) | None => {}
    }
}

/// The text of the newest user message of the prompt.
fn last_user_text(prompt: &[PromptMessage]) -> String {
    prompt
        .iter()
        .rev()
        .find(|message| message.role == Role::User)
        .map(|message| chatd_shared::domain::plain_text(&message.content))
        .unwrap_or_default()
}

async fn prepare(
    deps: &TurnDeps,
    claim: &Claim,
) -> Result<(ModelChoice, LoadedChat), ContextError> {
    let client = deps
        .pool
        .get()
        .await
        .map_err(|error| ContextError::Config(format!("database connection: {error}")))?;
    let loaded = context::load_prompt(&client, claim.chat_id).await?;
    let model = deps
        .models
        .resolve(
            &client,
            loaded.wanted_model,
            deps.config.encryption_key.as_ref(),
        )
        .await?;
    Ok((model, loaded))
}

/// The step ran past `--step-timeout-ms`: not retried (a retry would run as long again).
fn step_timeout_error(step_timeout: Duration) -> ProviderError {
    ProviderError::new(
        crate::provider::ErrorKind::Timeout,
        format!("the step ran longer than the step timeout ({step_timeout:?})"),
        false,
    )
}

/// Publishes the `error` event, then commits the `error` state with `last_error`.
async fn fail(turn: &TurnContext, stream: &mut TurnStream, error: &ProviderError) {
    let error = ChatError {
        provider: Some(turn.model.endpoint.kind.as_str().to_owned()),
        status_code: error.status_code,
        retryable: error.retryable,
        ..ChatError::new(error.kind.as_str(), &error.message)
    };
    stream.error(&error);
    stream.flush().await;
    turn.commit(&[], TurnEnd::Failed(error), Some(stream.last_seq()))
        .await;
}

/// A turn that could not even resolve its model fails with a config error.
async fn fail_without_model(deps: &TurnDeps, claim: &Claim, message: &str) {
    let Ok(client) = deps.pool.get().await else {
        return;
    };
    let error = ChatError::new("config", message);
    if let Ok(store::CommitOutcome::Committed(change)) = store::commit(
        &client,
        store::Lease {
            chat_id: claim.chat_id,
            worker_id: deps.config.worker_id,
            attempt: claim.attempt,
        },
        &[],
        &TurnEnd::Failed(error),
        Uuid::new_v4(),
        None,
    )
    .await
    {
        deps.flusher.publish_soon(change.notices());
    }
}
