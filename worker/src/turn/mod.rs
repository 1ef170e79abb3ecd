//! The turn: load the prompt, then loop model steps until the model stops asking for tools,
//! persisting each step in one fenced transaction, then finish the turn.
//!
//! **Invariant:** no transaction is held open across a provider call or any network wait; a
//! database connection is taken from the pool only around each statement/transaction.

pub mod attachments;
pub mod compaction;
pub mod context;
pub mod control;
pub mod lease;
pub mod limits;
pub mod prompt_cache;
pub mod rows;
pub mod step;
pub mod stream;
pub mod summary;
pub mod title;
pub mod tools;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tracing::Instrument;

use chatd_shared::domain::{ChatError, ContentPart, Role};

use crate::config::WorkerConfig;
use crate::flusher::StreamFlusher;
use crate::provider::{ModelRequest, PromptMessage, ProviderError, ResponseChain};
use crate::store::{Claim, TurnEnd};
use crate::tool::{self, CallOutcome, Tool, Toolset};
use context::{ContextError, LoadedChat, ModelChoice};
use control::{StopReason, TurnControl};
use lease::{Commit, TurnLease};
use step::{StepOutput, StepResult};
pub use stream::TurnStream;

/// Everything a running turn needs: its lease (and write path) plus the model it runs on.
/// Dereferences to the lease.
pub struct TurnContext {
    pub lease: TurnLease,
    pub http: reqwest::Client,
    pub model: ModelChoice,
}

impl std::ops::Deref for TurnContext {
    type Target = TurnLease;

    fn deref(&self) -> &TurnLease {
        &self.lease
    }
}

/// Dependencies of `run_turn` that live as long as the worker.
#[derive(Clone)]
pub struct TurnDeps {
    pub config: Arc<WorkerConfig>,
    pub pool: Pool,
    /// Commits many turns' steps in one statement when they come together.
    pub committer: crate::store::commit_batch::CommitBatcher,
    pub http: reqwest::Client,
    pub flusher: Arc<StreamFlusher>,
    pub models: Arc<context::ModelCache>,
    /// The prompts of chats this worker ran (`--prompt-cache-bytes`).
    pub prompts: Arc<prompt_cache::PromptCache>,
    /// Owners' spend statuses while limits are on (`chatd_config` clears them).
    pub spend: Arc<chatd_shared::db::limits::SpendCache>,
    /// The built-in tools this worker offers (`--tools`).
    pub builtin_tools: Arc<Vec<Arc<dyn Tool>>>,
    /// The MCP servers' tools.
    pub mcp: Arc<crate::mcp::McpHub>,
    /// Owner of the tasks a turn leaves behind (titles): the worker stops them with
    /// `side_stop` and waits for them at shutdown.
    pub side_tasks: tokio_util::task::TaskTracker,
    pub side_stop: tokio_util::sync::CancellationToken,
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
    let Some((turn, loaded)) = start(&deps, &claim, control).await else {
        return;
    };
    let mcp_tools = deps.mcp.tools_for(&loaded.mcp_server_ids).await;
    let advisor = tools::advisor_scope(&deps, &turn).await;
    let mut steps = Steps::new(&deps, &turn, loaded, mcp_tools, advisor);
    for _ in 0..deps.config.max_steps {
        if let Flow::End = steps.run_one(&deps, &turn).await {
            return;
        }
    }
    let error = ChatError::new(
        "max_steps",
        format!(
            "the turn reached the limit of {} steps",
            deps.config.max_steps
        ),
    );
    turn.commit(&[], TurnEnd::Failed(error), Some(steps.stream.last_seq()))
        .await;
}

/// Loads the prompt and resolves the model; a turn that cannot start (no usable model, a
/// crash loop) is ended here through the lease's commit path.
async fn start(
    deps: &TurnDeps,
    claim: &Claim,
    control: Arc<TurnControl>,
) -> Option<(TurnContext, LoadedChat)> {
    let (model, loaded) = match prepare(deps, claim).await {
        Ok(prepared) => prepared,
        Err(error) => {
            let message = error.to_string();
            tracing::warn!(error = %message, "turn cannot start");
            let error = ChatError::new("config", message);
            TurnLease::new(deps, claim, control)
                .commit(&[], TurnEnd::Failed(error), None)
                .await;
            return None;
        }
    };
    if let Err(error) = attachments::check(&model, &loaded.prompt) {
        tracing::info!(error = %error.message, "the turn's attachments cannot be sent");
        TurnLease::new(deps, claim, control)
            .commit(&[], TurnEnd::Failed(error), None)
            .await;
        return None;
    }
    let turn = TurnContext {
        lease: TurnLease::new(deps, claim, control),
        http: deps.http.clone(),
        model,
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
        return None;
    }
    Some((turn, loaded))
}

/// Whether the turn goes on after a step.
enum Flow {
    Continue,
    End,
}

/// The state carried from step to step.
struct Steps {
    toolset: Toolset,
    tools: Vec<crate::provider::ToolSpec>,
    prompt: Vec<PromptMessage>,
    /// Continue a provider-side response chain (Responses API) instead of resending history.
    chain: Option<ResponseChain>,
    /// The first user message, when the chat still has no title.
    title_question: Option<String>,
    stream: TurnStream,
}

impl Steps {
    fn new(
        deps: &TurnDeps,
        turn: &TurnContext,
        loaded: LoadedChat,
        mcp_tools: Vec<Arc<dyn Tool>>,
        advisor: Option<tool::advisor::AdvisorScope>,
    ) -> Steps {
        let mut builtin = deps.builtin_tools.to_vec();
        builtin.extend(mcp_tools);
        let mut toolset = Toolset::new(builtin, loaded.dynamic_tools);
        let enabled = |name: &str| deps.config.builtin_tools.iter().any(|tool| tool == name);
        let (spawn, wait) = (enabled("spawn_agent"), enabled("wait_agent"));
        if spawn || wait {
            toolset = toolset.with_agents(tool::agents::AgentScope {
                pool: deps.pool.clone(),
                chat_id: turn.chat_id,
                depth: turn.depth,
                model_config_id: turn.model.model_config_id,
                spawn,
                wait,
                max_depth: deps.config.max_agent_depth,
                max_per_turn: deps.config.max_agents_per_turn,
            });
        }
        if let Some(advisor) = advisor {
            toolset = toolset.with_advisor(advisor);
        }
        let chain = loaded
            .last_response
            .filter(|(_, model_config_id, _)| *model_config_id == Some(turn.model.model_config_id))
            .map(|(previous_response_id, _, new_from)| ResponseChain {
                previous_response_id,
                new_from,
            });
        Steps {
            tools: toolset.specs(),
            toolset,
            title_question: loaded.untitled.then(|| last_user_text(&loaded.prompt)),
            prompt: loaded.prompt,
            chain,
            stream: TurnStream::new(deps.flusher.clone(), turn.chat_id, turn.attempt()),
        }
    }

    /// One model step with its tools, committed; the turn's end when it ends here.
    async fn run_one(&mut self, deps: &TurnDeps, turn: &TurnContext) -> Flow {
        let step_started = Instant::now();
        // Streaming and tools together; expiry fails the turn (not retried).
        let step_deadline = tokio::time::Instant::now() + deps.config.step_timeout;
        // The deployment's prompt and the owner's instructions, as they are now (cached).
        let instructions = match deps.models.instructions(&deps.pool, turn.owner_id).await {
            Ok(instructions) => instructions,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), chat_id = %turn.chat_id, "read the prompt instructions");
                let error = ProviderError::new(
                    crate::provider::ErrorKind::Generic,
                    format!("read the prompt instructions: {error:#}"),
                    true,
                );
                fail(turn, &mut self.stream, &error).await;
                return Flow::End;
            }
        };
        let instructions = match self.toolset.advisor() {
            // The prompt mentions the advisor only when it is offered.
            Some(_) => {
                let mut with_note = instructions.as_ref().clone();
                with_note.push(PromptMessage {
                    role: Role::System,
                    content: vec![ContentPart::text(tool::advisor::ADVISOR_NOTE)],
                });
                Arc::new(with_note)
            }
            None => instructions,
        };
        if let Some(error) = limits::spend_limit_reached(deps, turn).await {
            // Before the provider call: a running turn ends at its next step boundary, a
            // claimed one before its first; the queue stays as it is.
            self.stream.error(&error);
            self.stream.flush().await;
            turn.commit(&[], TurnEnd::Failed(error), Some(self.stream.last_seq()))
                .await;
            return Flow::End;
        }
        let Some(output) = self
            .model_step(turn, &instructions, step_started, step_deadline)
            .await
        else {
            return Flow::End;
        };
        let Ok(execution) = tools::run_tools(
            turn,
            &self.toolset,
            &output,
            (&instructions, &self.prompt),
            step_deadline,
        )
        .await
        else {
            let error = step_timeout_error(deps.config.step_timeout);
            fail(turn, &mut self.stream, &error).await;
            return Flow::End;
        };
        let runtime_ms = step_started.elapsed().as_millis() as i64;
        let outcomes = execution
            .as_ref()
            .map_or(&[][..], |execution| execution.outcomes.as_slice());
        let children = execution
            .as_ref()
            .map_or(&[][..], |execution| execution.children.as_slice());
        if execution
            .as_ref()
            .is_some_and(|execution| execution.interrupted)
        {
            stop(
                turn,
                &mut self.stream,
                &output,
                execution.as_ref(),
                runtime_ms,
            )
            .await;
            return Flow::End;
        }
        let mut built = rows::step_rows(
            &turn.model,
            &output,
            outcomes,
            tool::execute::INTERRUPTED_RESULT,
            runtime_ms,
        );
        if let Some((model_config_id, usage)) = execution.as_ref().and_then(|e| e.usage) {
            // The tools' own model calls (the advisor) are billed on the tool row.
            if let Some(row) = built.rows.iter_mut().find(|row| row.role == Role::Tool) {
                row.model_config_id = Some(model_config_id);
                row.usage = Some(usage);
            }
        }
        let pending = outcomes
            .iter()
            .any(|outcome| matches!(outcome, CallOutcome::Pending));
        // A step's waits for sub-agents are answered together, at the earliest timeout.
        let awaited = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                CallOutcome::AwaitAgent { timeout, .. } => Some(*timeout),
                _ => None,
            })
            .min();
        let end = if pending {
            TurnEnd::RequiresAction(deps.config.action_timeout)
        } else if let Some(timeout) = awaited {
            TurnEnd::AwaitAgents(timeout)
        } else if output.tool_calls.is_empty() {
            TurnEnd::Done
        } else {
            TurnEnd::Continue
        };
        let continues = matches!(end, TurnEnd::Continue);
        self.stream.flush().await;
        match turn
            .commit_step(&built.rows, children, end, Some(self.stream.last_seq()))
            .await
        {
            Commit::Owned => {
                let cost: i64 = built
                    .rows
                    .iter()
                    .filter_map(|row| row.usage.and_then(|usage| usage.cost_micros))
                    .sum();
                deps.spend.add_spend(turn.owner_id, cost);
            }
            Commit::Lost => return Flow::End,
            Commit::Interrupting => {
                // Interrupted while the client calls were being stored: the interrupt wins
                // (the calls get synthetic results, a queued message runs next).
                turn.control.stop(StopReason::Interrupt);
                stop(
                    turn,
                    &mut self.stream,
                    &output,
                    execution.as_ref(),
                    runtime_ms,
                )
                .await;
                return Flow::End;
            }
        }
        if !continues {
            let paused = pending || awaited.is_some();
            if let (false, Some(question)) = (paused, self.title_question.take()) {
                title::spawn(deps, turn, question, plain_text_of(&output.parts));
            }
            return Flow::End;
        }
        let seen = self.prompt.len()
            + built
                .prompt
                .iter()
                .take_while(|message| message.role == Role::Assistant)
                .count();
        self.prompt.extend(built.prompt);
        self.chain = output
            .response_id
            .clone()
            .map(|previous_response_id| ResponseChain {
                previous_response_id,
                new_from: seen,
            });
        if compaction::should_compact(&turn.model, &output.usage) {
            match compact(turn, &self.prompt).await {
                Compacted::Yes(compacted) => {
                    self.prompt = compacted;
                    self.chain = None;
                }
                Compacted::No => {}
                Compacted::LeaseLost => return Flow::End,
            }
        }
        Flow::Continue
    }

    /// Streams one model answer; `None` when the turn ended in it (stopped, failed, lease
    /// lost), with that end already handled.
    async fn model_step(
        &mut self,
        turn: &TurnContext,
        instructions: &[PromptMessage],
        step_started: Instant,
        step_deadline: tokio::time::Instant,
    ) -> Option<StepOutput> {
        // The instructions go first; the chain's index moves past them.
        let prefix = instructions.len();
        let mut messages = Vec::with_capacity(prefix + self.prompt.len());
        messages.extend_from_slice(instructions);
        messages.append(&mut self.prompt);
        let request = ModelRequest {
            model: turn.model.model.clone(),
            messages,
            max_output_tokens: turn.model.max_output_tokens,
            tools: self.tools.clone(),
            chain: self.chain.take().map(|chain| ResponseChain {
                new_from: chain.new_from + prefix,
                ..chain
            }),
        };
        let result = tokio::time::timeout_at(
            step_deadline,
            step::run_step(turn, &mut self.stream, &request),
        )
        .await
        .unwrap_or_else(|_| StepResult::Failed(step_timeout_error(turn.config.step_timeout)));
        let mut messages = request.messages;
        self.prompt = messages.split_off(prefix.min(messages.len()));
        metrics::counter!("chatd_steps_total").increment(1);
        match result {
            StepResult::Done(output) => Some(output),
            StepResult::Stopped(partial) => {
                let runtime_ms = step_started.elapsed().as_millis() as i64;
                stop(turn, &mut self.stream, &partial, None, runtime_ms).await;
                None
            }
            StepResult::Failed(error) => {
                fail(turn, &mut self.stream, &error).await;
                None
            }
            StepResult::LeaseLost => None,
        }
    }
}

enum Compacted {
    /// The summary is stored; the prompt to go on with.
    Yes(Vec<PromptMessage>),
    /// No summary (the request failed or the turn was stopped): go on uncompacted.
    No,
    LeaseLost,
}

/// Summarises the history so far and stores the summary (the prompt of later turns starts
/// there).
async fn compact(turn: &TurnContext, prompt: &[PromptMessage]) -> Compacted {
    let summary = tokio::select! {
        summary = compaction::summarise(&turn.http, &turn.model, prompt) => summary,
        _ = turn.control.token.cancelled() => None,
    };
    let Some(compaction) = summary else {
        return Compacted::No;
    };
    if turn
        .commit(&[compaction.row], TurnEnd::Continue, None)
        .await
    {
        Compacted::Yes(compaction.prompt)
    } else {
        Compacted::LeaseLost
    }
}

/// The text parts of a step's output, joined.
fn plain_text_of(parts: &[ContentPart]) -> String {
    parts
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// The turn was stopped from outside while streaming or while tools ran. An interrupt keeps
/// what was produced (unanswered calls get synthetic results so the history stays valid for
/// every provider; the sub-agents the step started are created, as its history says); a
/// shutdown releases the chat to another worker; a lost lease writes nothing.
async fn stop(
    turn: &TurnContext,
    stream: &mut TurnStream,
    partial: &StepOutput,
    execution: Option<&tool::execute::StepExecution>,
    runtime_ms: i64,
) {
    match turn.control.reason() {
        Some(StopReason::Interrupt) => {
            let (outcomes, children) = execution.map_or((&[][..], &[][..]), |execution| {
                (execution.outcomes.as_slice(), execution.children.as_slice())
            });
            let outcomes = rows::interrupted_outcomes(outcomes);
            let built = rows::step_rows(
                &turn.model,
                partial,
                &outcomes,
                tool::execute::INTERRUPTED_RESULT,
                runtime_ms,
            );
            stream.flush().await;
            turn.lease
                .commit_step(
                    &built.rows,
                    children,
                    TurnEnd::Interrupted,
                    Some(stream.last_seq()),
                )
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
    let cached = deps.prompts.take(claim.chat_id);
    let (mut loaded, rows) = match claim.prompt.serve(cached) {
        Ok(served) => served?,
        Err(cached) => crate::store::turn::load_prompt(&client, claim.chat_id, cached).await?,
    };
    if deps.prompts.enabled() {
        deps.prompts.put(claim.chat_id, rows);
    }
    crate::store::turn::load_attachments(&client, &mut loaded.prompt).await?;
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
