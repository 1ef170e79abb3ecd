//! One model step: stream the provider's answer (publishing deltas), with retries.
//!
//! Retries only retryable errors, with exponential backoff (capped, jittered, `backon`) or the
//! provider's `Retry-After`. Before the first event the request is simply re-sent after the
//! delay (a `retry` event tells clients). After partial output the step starts over in a new
//! lease epoch, so clients see `attempt_reset` and drop the previews. Cancellation (interrupt,
//! shutdown, lost lease) is never retried.

use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures::StreamExt;
use serde_json::json;

use chatd_shared::domain::ContentPart;

use crate::provider::{
    self, ErrorKind, FinishReason, ModelRequest, ProviderError, ProviderEvent, Usage,
};

use super::control::StopReason;
use super::{TurnContext, TurnStream};
use crate::store::Renewal;

/// First retry delay; doubles per attempt up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Backoff is capped at 60 s.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// A tool call the model made in this step.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub args: serde_json::Value,
}

/// What a step produced (possibly partial).
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Reasoning, text and provider-executed tool parts in stream order (deltas merged).
    pub parts: Vec<ContentPart>,
    /// Calls of chatd-run or client-run tools, in call order.
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish: Option<FinishReason>,
    pub response_id: Option<String>,
}

impl StepOutput {
    /// Whether anything reached the client (then a retry must reset the attempt).
    pub fn produced(&self) -> bool {
        !self.tool_calls.is_empty() || self.parts.iter().any(|part| !part.is_blank())
    }

    fn push_text(&mut self, text: &str) {
        if let Some(ContentPart::Text { text: last }) = self.parts.last_mut() {
            last.push_str(text);
        } else {
            self.parts.push(ContentPart::text(text));
        }
    }

    /// Reasoning deltas extend the open block; a signed block is closed.
    fn push_reasoning(&mut self, text: &str) {
        if let Some(ContentPart::Reasoning {
            text: last,
            signature: None,
        }) = self.parts.last_mut()
        {
            last.push_str(text);
        } else {
            self.parts.push(ContentPart::Reasoning {
                text: text.to_owned(),
                signature: None,
            });
        }
    }

    fn sign_reasoning(&mut self, signature: String) {
        if let Some(ContentPart::Reasoning {
            signature: slot @ None,
            ..
        }) = self.parts.last_mut()
        {
            *slot = Some(signature);
        } else {
            // A signature for an empty thinking block: keep it, the provider needs it back.
            self.parts.push(ContentPart::Reasoning {
                text: String::new(),
                signature: Some(signature),
            });
        }
    }
}

pub enum StepResult {
    Done(StepOutput),
    /// Stopped from outside (see `TurnControl::reason`); the partial output so far.
    Stopped(StepOutput),
    Failed(ProviderError),
    /// The lease was lost while renewing the attempt.
    LeaseLost,
}

/// The retry delays of one step: `max_attempts - 1` exponential, jittered, capped delays.
pub fn retry_delays(max_attempts: u32) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY_DELAY)
        .with_max_delay(MAX_RETRY_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(max_attempts.saturating_sub(1) as usize)
        .build()
        // backon's jitter adds up to one more base delay; keep the documented cap.
        .map(|delay| delay.min(MAX_RETRY_DELAY))
}

pub async fn run_step(
    turn: &TurnContext,
    stream: &mut TurnStream,
    request: &ModelRequest,
) -> StepResult {
    let mut delays = retry_delays(turn.config.max_provider_attempts);
    let mut provider_attempt: u32 = 0;
    loop {
        provider_attempt += 1;
        let mut output = StepOutput::default();
        let started = Instant::now();
        let outcome = {
            let attempt_future = stream_once(turn, stream, request, &mut output, started);
            tokio::select! {
                _ = turn.control.token.cancelled() => None,
                result = attempt_future => Some(result),
            }
        };
        let Some(result) = outcome else {
            return StepResult::Stopped(output);
        };
        let error = match result {
            Ok(()) => return StepResult::Done(output),
            Err(error) => error,
        };
        let next_delay = if error.retryable { delays.next() } else { None };
        let Some(backoff) = next_delay else {
            return StepResult::Failed(error);
        };
        // The provider's own delay wins (it is only set when within (0, 60 s]).
        let delay = error.retry_after.unwrap_or(backoff).min(MAX_RETRY_DELAY);
        metrics::counter!("chatd_provider_retries_total",
            "provider" => turn.model.endpoint.kind.as_str(), "kind" => error.kind.as_str())
        .increment(1);
        if output.produced() {
            // Partial output is void: restart the step in a new lease epoch.
            match turn.renew_attempt().await {
                Renewal::Renewed(attempt, _) => stream.restart(attempt),
                Renewal::Interrupting => {
                    // The user stopped the turn (its notice may be lost): keep what streamed.
                    turn.control.stop(StopReason::Interrupt);
                    return StepResult::Stopped(output);
                }
                Renewal::LeaseLost => return StepResult::LeaseLost,
            }
        }
        let retrying_at = time::OffsetDateTime::now_utc() + delay;
        stream.retry(json!({
            "attempt": provider_attempt,
            "delay_ms": delay.as_millis() as u64,
            "kind": error.kind,
            "message": error.message,
            "status_code": error.status_code,
            "retrying_at": retrying_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        }));
        tracing::info!(attempt = provider_attempt, delay_ms = delay.as_millis() as u64,
            error = %error.message, "retrying provider request");
        tokio::select! {
            _ = turn.control.token.cancelled() => return StepResult::Stopped(StepOutput::default()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn startup_timeout_error(startup_timeout: Duration) -> ProviderError {
    ProviderError::new(
        ErrorKind::StartupTimeout,
        format!("the provider sent nothing within {startup_timeout:?}"),
        true,
    )
}

/// One provider request, streamed to the end. Publishes deltas as they arrive.
async fn stream_once(
    turn: &TurnContext,
    stream: &mut TurnStream,
    request: &ModelRequest,
    output: &mut StepOutput,
    started: Instant,
) -> Result<(), ProviderError> {
    let startup_timeout = turn.config.startup_timeout;
    let mut events = tokio::time::timeout(
        startup_timeout,
        provider::stream(&turn.http, &turn.model.endpoint, request),
    )
    .await
    .map_err(|_| startup_timeout_error(startup_timeout))??;
    let mut first = true;
    // Provider call index → position in `output.tool_calls`.
    let mut index_to_call: Vec<Option<usize>> = Vec::new();
    loop {
        let next = if first {
            tokio::time::timeout(startup_timeout, events.next())
                .await
                .map_err(|_| startup_timeout_error(startup_timeout))?
        } else {
            events.next().await
        };
        let Some(event) = next else {
            return Err(ProviderError::truncated());
        };
        let event = event?;
        if first {
            first = false;
            metrics::histogram!("chatd_ttft_seconds",
                "provider" => turn.model.endpoint.kind.as_str(), "model" => turn.model.model.clone())
            .record(started.elapsed().as_secs_f64());
        }
        match event {
            ProviderEvent::TextDelta(text) => {
                if !text.is_empty() {
                    stream.text_delta("text", &text);
                    output.push_text(&text);
                }
            }
            ProviderEvent::ReasoningDelta(text) => {
                if !text.is_empty() {
                    stream.text_delta("reasoning", &text);
                    output.push_reasoning(&text);
                }
            }
            ProviderEvent::ReasoningSignature(signature) => output.sign_reasoning(signature),
            ProviderEvent::RedactedReasoning(data) => {
                output.parts.push(ContentPart::RedactedReasoning { data });
            }
            ProviderEvent::ProviderToolCall { id, name, args } => {
                output.parts.push(ContentPart::ProviderToolCall {
                    tool_call_id: id,
                    tool_name: name,
                    args,
                });
            }
            ProviderEvent::ProviderToolResult {
                tool_call_id,
                block_type,
                content,
            } => {
                output.parts.push(ContentPart::ProviderToolResult {
                    tool_call_id,
                    block_type,
                    content,
                });
            }
            ProviderEvent::ToolCallStart { index, id, name } => {
                check_call_identity(&id, &name)?;
                // Some compatible servers omit call ids; results must still match their call.
                let id = if id.is_empty() {
                    format!("call_{}_{index}", uuid::Uuid::new_v4().simple())
                } else {
                    id
                };
                if index_to_call.len() <= index {
                    index_to_call.resize(index + 1, None);
                }
                index_to_call[index] = Some(output.tool_calls.len());
                stream.tool_call_delta(&id, &name, "");
                output.tool_calls.push(ToolCall {
                    id,
                    name,
                    args: serde_json::Value::Null,
                });
            }
            ProviderEvent::ToolCallArgsDelta { index, delta } => {
                if let Some(call) = call_at(output, &index_to_call, index) {
                    let (id, name) = (call.id.clone(), call.name.clone());
                    stream.tool_call_delta(&id, &name, &delta);
                }
            }
            ProviderEvent::ToolCallEnd { index, args } => {
                if let Some(call) = call_at(output, &index_to_call, index) {
                    call.args = args;
                }
            }
            ProviderEvent::Usage(usage) => output.usage = usage,
            ProviderEvent::Finish {
                reason,
                response_id,
            } => {
                output.finish = Some(reason);
                output.response_id = response_id;
                for call in &mut output.tool_calls {
                    if call.args.is_null() {
                        call.args = serde_json::Value::Object(serde_json::Map::new());
                    }
                }
                return Ok(());
            }
        }
    }
}

/// Longest tool call id or name accepted from a provider (they are echoed back to it).
const MAX_CALL_IDENTITY_BYTES: usize = 256;

/// A tool call's id and name must reach the provider again exactly as it sent them; one that
/// cannot be stored (NUL) or is absurdly long ends the step with a non-retryable
/// `invalid_response` (never a failing commit that would re-run the turn).
fn check_call_identity(id: &str, name: &str) -> Result<(), ProviderError> {
    for (what, value) in [("id", id), ("name", name)] {
        if value.contains('\0') {
            return Err(ProviderError::new(
                ErrorKind::InvalidResponse,
                format!("the provider sent a tool call whose {what} contains NUL"),
                false,
            ));
        }
        if value.len() > MAX_CALL_IDENTITY_BYTES {
            return Err(ProviderError::new(
                ErrorKind::InvalidResponse,
                format!(
                    "the provider sent a tool call whose {what} is {} bytes long (at most {MAX_CALL_IDENTITY_BYTES})",
                    value.len()
                ),
                false,
            ));
        }
    }
    Ok(())
}

fn call_at<'a>(
    output: &'a mut StepOutput,
    index_to_call: &[Option<usize>],
    index: usize,
) -> Option<&'a mut ToolCall> {
    let position = index_to_call.get(index).copied().flatten()?;
    output.tool_calls.get_mut(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_are_capped_and_bounded_in_number() {
        let delays: Vec<Duration> = retry_delays(5).collect();
        assert_eq!(delays.len(), 4, "5 attempts = 4 retries");
        assert!(delays[0] >= FIRST_RETRY_DELAY && delays[0] <= FIRST_RETRY_DELAY * 2);
        assert!(delays[3] >= FIRST_RETRY_DELAY * 8);
        assert!(retry_delays(40).all(|delay| delay <= MAX_RETRY_DELAY));
        assert_eq!(retry_delays(1).count(), 0);
    }

    #[test]
    fn reasoning_blocks_split_at_signatures_and_text_merges() {
        let mut output = StepOutput::default();
        output.push_reasoning("think ");
        output.push_reasoning("more");
        output.sign_reasoning("sig1".into());
        output.push_reasoning("again");
        output.push_text("Hel");
        output.push_text("lo");
        assert_eq!(
            output.parts,
            vec![
                ContentPart::Reasoning {
                    text: "think more".into(),
                    signature: Some("sig1".into())
                },
                ContentPart::Reasoning {
                    text: "again".into(),
                    signature: None
                },
                ContentPart::text("Hello"),
            ]
        );
        assert!(output.produced());
        assert!(!StepOutput::default().produced());
    }
}
