//! The HTTP handlers: parse a protocol's request into a [`Conversation`], plan the answer, then
//! render it in the same protocol. Errors use each protocol's own error shape.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::conversation::{self, Conversation};
use crate::plan::{Failure, Plan};
use crate::render::anthropic::{self as anthropic_render, AnthropicWriter};
use crate::render::chat::{self as chat_render, ChatWriter};
use crate::render::responses::{self as responses_render, ResponsesWriter};
use crate::render::{sse_body, SseWriter};
use crate::reply::fnv1a;
use crate::state::{MockState, OpenStream, RequestStats};

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    RequestStats::count(&state.stats.chat);
    let call = match conversation::chat::parse(&body) {
        Ok(call) => call,
        Err(message) => return openai_error(400, message, None),
    };
    let body_hash = fnv1a(&body);
    let response_id = format!("chatcmpl-mock-{body_hash:016x}");
    let (plan, failure) =
        match plan_request(&state, &call.conversation, response_id, "call_", body_hash) {
            Ok(planned) => planned,
            Err(rejection) => return rejection.into_openai(),
        };
    if !call.stream {
        wait_ttft(&plan).await;
        return Json(chat_render::completion(&plan)).into_response();
    }
    sse_response(&state, plan, failure, ChatWriter::new(call.include_usage))
}

/// `POST /v1/responses`, with `store` / `previous_response_id` chaining.
pub async fn responses(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    RequestStats::count(&state.stats.responses);
    let call = match conversation::responses::parse(&body) {
        Ok(call) => call,
        Err(message) => return openai_error(400, message, None),
    };
    let previous = match &call.previous_response_id {
        Some(id) => match state.responses.get(id) {
            Some(previous) => {
                RequestStats::count(&state.stats.responses_chained);
                Some(previous)
            }
            None => return previous_response_not_found(id),
        },
        None => None,
    };
    let chain = previous
        .as_ref()
        .map(|stored| stored.chain())
        .unwrap_or_default();
    let conversation = call.conversation(chain.iter().flat_map(|stored| stored.items()));
    let body_hash = fnv1a(&body);
    let response_id = format!(
        "resp_mock_{}_{body_hash:016x}",
        state.next_response_number()
    );
    let (plan, failure) = match plan_request(&state, &conversation, response_id, "call_", body_hash)
    {
        Ok(planned) => planned,
        Err(rejection) => return rejection.into_openai(),
    };
    if plan.forget_responses {
        state.responses.clear();
    } else if call.store && (failure == Failure::None || !call.stream) {
        // A complete answer (non-streaming answers ignore cuts and stream errors) is stored.
        let mut items = call.input_items;
        items.extend(responses_render::output_items(&plan));
        state
            .responses
            .insert(plan.response_id.clone(), previous, items);
    }
    if !call.stream {
        wait_ttft(&plan).await;
        return Json(responses_render::response_json(&plan)).into_response();
    }
    sse_response(&state, plan, failure, ResponsesWriter::new())
}

/// `POST /v1/messages` (Anthropic). `x-api-key` and `anthropic-version` are accepted, not checked.
pub async fn messages(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    RequestStats::count(&state.stats.messages);
    let call = match conversation::anthropic::parse(&body) {
        Ok(call) => call,
        Err(message) => return anthropic_error(400, message, None),
    };
    let body_hash = fnv1a(&body);
    let response_id = format!("msg_mock_{body_hash:016x}");
    let (plan, failure) =
        match plan_request(&state, &call.conversation, response_id, "toolu_", body_hash) {
            Ok(planned) => planned,
            Err(rejection) => return rejection.into_anthropic(),
        };
    if !call.stream {
        wait_ttft(&plan).await;
        return Json(anthropic_render::message_json(&plan)).into_response();
    }
    sse_response(&state, plan, failure, AnthropicWriter::new())
}

/// `GET /mock/stats`: requests per route and the number of stored Responses.
pub async fn stats(State(state): State<Arc<MockState>>) -> Json<Value> {
    let mut snapshot = state.stats.snapshot();
    snapshot["stored_responses"] = json!(state.responses.len());
    Json(snapshot)
}

/// `POST /mock/forget`: drops every stored Response, so chained requests get "not found".
pub async fn forget(State(state): State<Arc<MockState>>) -> Json<Value> {
    Json(json!({"forgotten": state.responses.clear()}))
}

/// Why a request is answered with an error status instead of a stream.
enum Rejection {
    /// A bad `@mock` directive (400).
    BadDirective(String),
    /// An `error_status` requested by a directive.
    Injected {
        status: u16,
        retry_after_s: Option<u64>,
        /// `error_message_bytes`: pad the message to this length.
        message_bytes: Option<usize>,
    },
}

impl Rejection {
    fn message(&self) -> String {
        match self {
            Rejection::BadDirective(message) => message.clone(),
            Rejection::Injected {
                status,
                message_bytes,
                ..
            } => {
                let mut message = format!("mock error: HTTP {status} requested by @mock directive");
                if let Some(bytes) = message_bytes {
                    while message.len() < *bytes {
                        message.push_str(" padding");
                    }
                    message.truncate(*bytes);
                }
                message
            }
        }
    }

    fn status_and_retry(&self) -> (u16, Option<u64>) {
        match self {
            Rejection::BadDirective(_) => (400, None),
            Rejection::Injected {
                status,
                retry_after_s,
                ..
            } => (*status, *retry_after_s),
        }
    }

    fn into_openai(self) -> Response {
        let (status, retry_after_s) = self.status_and_retry();
        openai_error(status, self.message(), retry_after_s)
    }

    fn into_anthropic(self) -> Response {
        let (status, retry_after_s) = self.status_and_retry();
        anthropic_error(status, self.message(), retry_after_s)
    }
}

/// Plans the answer (tool call ids start with `tool_call_prefix`) and decides whether this request gets the plan's failure (`fail_times`
/// counts identical bodies; without it every request fails).
fn plan_request(
    state: &MockState,
    conversation: &Conversation,
    response_id: String,
    tool_call_prefix: &str,
    body_hash: u64,
) -> Result<(Plan, Failure), Rejection> {
    let plan = Plan::from_conversation(conversation, response_id, tool_call_prefix)
        .map_err(Rejection::BadDirective)?;
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
        return Err(Rejection::Injected {
            status,
            retry_after_s,
            message_bytes: plan.error_message_bytes,
        });
    }
    Ok((plan, failure))
}

/// Non-streaming answers honour only `ttft_ms` (and `error_status`): the caller just waits.
async fn wait_ttft(plan: &Plan) {
    if !plan.ttft.is_zero() {
        tokio::time::sleep(plan.ttft).await;
    }
}

fn sse_response(
    state: &MockState,
    plan: Plan,
    failure: Failure,
    writer: impl SseWriter,
) -> Response {
    // Counted until the body is dropped: finished, or abandoned by the client.
    let open = OpenStream::new(&state.stats.open_streams);
    let body = sse_body(plan, failure, writer).map(move |frame| {
        let _ = &open;
        frame
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// An OpenAI-style error answer: `{"error": {"message", "type", "code"}}`.
fn openai_error(status: u16, message: String, retry_after_s: Option<u64>) -> Response {
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
    let body = json!({"error": {"message": message, "type": error_type, "code": code}});
    with_status(status, body, retry_after_s)
}

/// The Responses API's answer to an unknown (or forgotten) `previous_response_id`.
fn previous_response_not_found(id: &str) -> Response {
    let body = json!({"error": {
        "message": format!("Previous response with id '{id}' not found."),
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }});
    with_status(400, body, None)
}

/// An Anthropic-style error answer: `{"type": "error", "error": {"type", "message"}}`.
fn anthropic_error(status: u16, message: String, retry_after_s: Option<u64>) -> Response {
    let error_type = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    let body = json!({"type": "error", "error": {"type": error_type, "message": message}});
    with_status(status, body, retry_after_s)
}

fn with_status(status: u16, body: Value, retry_after_s: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
