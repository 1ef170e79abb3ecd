//! `chatd mock-llm`: a deterministic, scriptable model server speaking OpenAI Chat Completions
//! (`POST /v1/chat/completions`, streaming and non-streaming) over real sockets. It is the
//! default model of `chatd dev`, the load driver of `chatd scaletest` and the fault injector of
//! the tests (CONVENTIONS.md: the LLM is the one thing replaced, and only by this server).
//!
//! The mock reads the **last user message**. Without directives it replies with
//! [`reply_text`]`(message, 12)`: words picked by FNV-1a of the whole message text, one word per
//! streamed chunk. A line `@mock {json}` changes the behaviour (several lines merge, later keys
//! win; unknown keys or bad JSON get HTTP 400 naming the problem):
//!
//! | key | default | effect |
//! |---|---|---|
//! | `tokens` | 12 | reply length in tokens (one word per chunk; [`reply_text`] predicts it) |
//! | `tokens_per_second` | 0 | pace of content chunks; 0 = as fast as possible |
//! | `ttft_ms` | 0 | delay before the first chunk |
//! | `error_status` | – | answer with this HTTP status (400-599) and `{"error":{"message","type","code"}}` |
//! | `retry_after_s` | – | with an error: send `Retry-After: <s>` |
//! | `fail_times` | – | fail only the first N identical requests (same body), then answer normally; the failure is `error_status`, else the `cut_after` cut, else HTTP 500 |
//! | `cut_after` | – | end the stream after N content chunks with no finish chunk and no `[DONE]` |
//! | `stall_ms` | 0 | pause this long mid-stream (before content chunk ⌊total/2⌋) |
//! | `tool_calls` | – | `[{"name", "arguments"}]`: call these tools (ids `call_<n>`, arguments JSON in 2-3 fragments, `finish_reason: tool_calls`) |
//! | `reasoning_tokens` | 0 | stream this many `delta.reasoning_content` tokens before the answer |
//!
//! `tool_calls` apply only when the request ends with a user message. When it ends with tool
//! results, the reply is [`tool_results_reply`] (`Tool results: <name>: <content>; …`) with
//! `finish_reason: stop`, so a turn always ends. Usage (when `stream_options.include_usage`):
//! `prompt_tokens` = whitespace-separated words of all messages, `completion_tokens` = content
//! chunks sent (reasoning + text tokens, or tool-call header and argument chunks).

pub mod directives;
pub mod plan;
pub mod render;
pub mod reply;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::provider::error::ApiErrorObject;
use crate::provider::openai_chat::wire::{ChatRequest, ErrorBody};
use plan::{Failure, Plan};
pub use reply::{reply_text, tool_results_reply};

/// Prompts of long agent chats are large; the mock must accept whatever a worker sends.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How many distinct request bodies `fail_times` remembers; the oldest is forgotten first.
const MAX_TRACKED_REQUESTS: usize = 100_000;

/// The mock's routes, with fresh state (failure counters) inside.
pub fn router() -> Router {
    let state = Arc::new(MockState::default());
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Serves the mock on `listener` until `shutdown` is cancelled, then lets open requests finish.
pub async fn run(listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    use axum::serve::ListenerExt as _;
    // Paced chunks are small writes; Nagle would delay them and distort TTFT measurements.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "mock-llm could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serve mock llm")
}

#[derive(Default)]
struct MockState {
    failures: FailureCounters,
}

/// Requests seen per body hash, for `fail_times`. Bounded: beyond [`MAX_TRACKED_REQUESTS`]
/// bodies the oldest is forgotten (and would fail again if re-sent).
#[derive(Default)]
struct FailureCounters {
    inner: Mutex<CounterMap>,
}

#[derive(Default)]
struct CounterMap {
    seen: HashMap<u64, u32>,
    insertion_order: VecDeque<u64>,
}

impl FailureCounters {
    /// Records one request and returns how many identical ones came before it.
    fn record(&self, body_hash: u64) -> u32 {
        // A panic while holding this lock cannot leave the map inconsistent; keep serving.
        let mut map = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = map.seen.get_mut(&body_hash) {
            let previous = *count;
            *count = count.saturating_add(1);
            return previous;
        }
        if map.seen.len() >= MAX_TRACKED_REQUESTS {
            if let Some(oldest) = map.insertion_order.pop_front() {
                map.seen.remove(&oldest);
            }
        }
        map.seen.insert(body_hash, 1);
        map.insertion_order.push_back(body_hash);
        0
    }
}

async fn chat_completions(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return error_response(400, format!("invalid request body: {error}"), None);
        }
    };
    let body_hash = reply::fnv1a(&body);
    let plan = match Plan::from_request(&request, body_hash) {
        Ok(plan) => plan,
        Err(message) => return error_response(400, message, None),
    };
    let failing = match plan.fail_times {
        Some(times) => state.failures.record(body_hash) < times,
        None => true,
    };
    let failure = if failing { plan.failure } else { Failure::None };
    if let Failure::Status {
        status,
        retry_after_s,
    } = failure
    {
        let message = format!("mock error: HTTP {status} requested by @mock directive");
        return error_response(status, message, retry_after_s);
    }
    if !request.stream {
        if !plan.ttft.is_zero() {
            tokio::time::sleep(plan.ttft).await;
        }
        return Json(render::completion(&plan)).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(render::sse_body(plan, failure)),
    )
        .into_response()
}

/// An OpenAI-style error answer: `{"error": {"message", "type", "code"}}`.
fn error_response(status: u16, message: String, retry_after_s: Option<u64>) -> Response {
    let (error_type, code) = match status {
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "model_not_found"),
        408 => ("timeout", "request_timeout"),
        429 => ("requests", "rate_limit_exceeded"),
        503 | 529 => ("overloaded_error", "overloaded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "invalid_request"),
    };
    let body = ErrorBody {
        error: ApiErrorObject {
            message: Some(message),
            error_type: Some(error_type.to_owned()),
            code: Some(serde_json::Value::String(code.to_owned())),
        },
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
