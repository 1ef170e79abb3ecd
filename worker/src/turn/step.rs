//! One model step: stream the provider's answer (publishing deltas), with retries.
//!
//! Retries only retryable errors. Before the first event the request is simply re-sent after
//! a backoff (a `retry` event tells clients). After partial output the step starts over in a
//! new lease epoch, so clients see `attempt_reset` and drop the previews.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::provider::{self, FinishReason, ModelRequest, ProviderError, ProviderEvent, Usage};

use super::{TurnContext, TurnStream};

/// A tool call the model made in this step.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub args: serde_json::Value,
    /// Raw argument text while streaming.
    args_text: String,
}

/// What a step produced (possibly partial).
#[derive(Debug, Default)]
pub struct StepOutput {
    pub text: String,
    pub reasoning: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish: Option<FinishReason>,
    pub response_id: Option<String>,
}

pub enum StepResult {
    Done(StepOutput),
    /// Stopped from outside (see `TurnControl::reason`); the partial output so far.
    Stopped(StepOutput),
    Failed(ProviderError),
    /// The lease was lost while renewing the attempt.
    LeaseLost,
}

pub async fn run_step(
    turn: &TurnContext,
    stream: &mut TurnStream,
    request: &ModelRequest,
) -> StepResult {
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
        let produced = !output.text.is_empty()
            || !output.reasoning.is_empty()
            || !output.tool_calls.is_empty();
        if !error.retryable || provider_attempt >= turn.config.max_provider_attempts {
            return StepResult::Failed(error);
        }
        let delay = backoff_delay(provider_attempt, error.retry_after);
        metrics::counter!("chatd_provider_retries_total",
            "provider" => turn.model.endpoint.kind.as_str(), "kind" => format!("{:?}", error.kind))
        .increment(1);
        if produced {
            // Partial output is void: restart the step in a new lease epoch.
            match turn.renew_attempt().await {
                Some(attempt) => stream.restart(attempt),
                None => return StepResult::LeaseLost,
            }
        }
        let retrying_at = time::OffsetDateTime::now_utc() + delay;
        stream.retry(json!({
            "attempt": provider_attempt,
            "delay_ms": delay.as_millis() as u64,
            "kind": error.kind,
            "message": error.message,
            "retrying_at": retrying_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        }));
        tracing::info!(attempt = provider_attempt, delay_ms = delay.as_millis() as u64, error = %error.message, "retrying provider request");
        tokio::select! {
            _ = turn.control.token.cancelled() => return StepResult::Stopped(StepOutput::default()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Exponential backoff (0.5 s · 2ⁿ, capped at 60 s, ±20 % jitter), or the server's
/// `Retry-After` when it gave one.
pub fn backoff_delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(retry_after) = retry_after {
        return retry_after.min(Duration::from_secs(60));
    }
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.saturating_sub(1).min(10));
    let base = base.min(Duration::from_secs(60));
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    base.mul_f64(jitter).min(Duration::from_secs(60))
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
    let startup_error = || ProviderError {
        kind: provider::error::ErrorKind::StartupTimeout,
        message: format!("the provider sent nothing within {startup_timeout:?}"),
        retryable: true,
        status_code: None,
        retry_after: None,
    };
    let mut events = tokio::time::timeout(
        startup_timeout,
        provider::stream(&turn.http, &turn.model.endpoint, request),
    )
    .await
    .map_err(|_| startup_error())??;
    let mut first = true;
    loop {
        let next = if first {
            tokio::time::timeout(startup_timeout, events.next())
                .await
                .map_err(|_| startup_error())?
        } else {
            events.next().await
        };
        let Some(event) = next else {
            return Err(ProviderError {
                kind: provider::error::ErrorKind::Generic,
                message: "the provider stream ended without finishing (truncated)".into(),
                retryable: true,
                status_code: None,
                retry_after: None,
            });
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
                    output.text.push_str(&text);
                }
            }
            ProviderEvent::ReasoningDelta(text) => {
                if !text.is_empty() {
                    stream.text_delta("reasoning", &text);
                    output.reasoning.push_str(&text);
                }
            }
            ProviderEvent::ToolCallStart { index, id, name } => {
                while output.tool_calls.len() <= index {
                    output.tool_calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        args: serde_json::Value::Null,
                        args_text: String::new(),
                    });
                }
                stream.tool_call_delta(&id, &name, "");
                output.tool_calls[index].id = id;
                output.tool_calls[index].name = name;
            }
            ProviderEvent::ToolCallArgsDelta { index, delta } => {
                if let Some(call) = output.tool_calls.get_mut(index) {
                    stream.tool_call_delta(&call.id, &call.name, &delta);
                    call.args_text.push_str(&delta);
                }
            }
            ProviderEvent::ToolCallEnd { index, args } => {
                if let Some(call) = output.tool_calls.get_mut(index) {
                    call.args = args;
                }
            }
            ProviderEvent::ReasoningSignature(_)
            | ProviderEvent::RedactedReasoning(_)
            | ProviderEvent::ProviderToolCall { .. }
            | ProviderEvent::ProviderToolResult { .. } => {}
            ProviderEvent::Usage(usage) => output.usage = usage,
            ProviderEvent::Finish {
                reason,
                response_id,
            } => {
                output.finish = Some(reason);
                output.response_id = response_id;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff_delay;
    use std::time::Duration;

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let first = backoff_delay(1, None);
        assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
        assert!(backoff_delay(4, None) >= Duration::from_millis(3200));
        assert!(backoff_delay(30, None) <= Duration::from_secs(60));
        assert_eq!(
            backoff_delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            backoff_delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
    }
}
