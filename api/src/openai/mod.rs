//! The OpenAI-compatible front door, `/v1`: the Responses API mapped onto chats, a stateless
//! Chat Completions shim and the model list, for the official OpenAI SDKs and the tools built
//! on them. Same bearer tokens, rate limits and spend limits as `/api/v1`.
//!
//! This surface follows OpenAI's API reference, not chatd's OpenAPI document (which describes
//! `/api/v1` only). Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`,
//! with the status codes the SDKs map to their exception classes.

mod chat_completions;
mod create;
pub(crate) mod events;
mod input;
mod models;
mod render;
mod responses;
mod store;
mod stream;
pub(crate) mod ui;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/models", get(models::list))
        .route("/models/{model}", get(models::get))
        .route("/responses", post(responses::create))
        .route(
            "/responses/{response_id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route("/responses/{response_id}/cancel", post(responses::cancel))
        .route(
            "/responses/{response_id}/input_items",
            get(responses::input_items),
        )
        .route("/chat/completions", post(chat_completions::create))
        .fallback(|| async { ApiError::NotFound("route") })
        .layer(axum::middleware::from_fn(openai_errors))
}

/// `resp_<32 hex digits>`: a response id as clients see it.
pub fn response_id(id: Uuid) -> String {
    format!("resp_{}", id.simple())
}

/// Reads a response id (`resp_…`); anything else is a 404 for `param`, as OpenAI answers.
pub fn parse_response_id(text: &str) -> Result<Uuid, ApiError> {
    text.strip_prefix("resp_")
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| Uuid::try_parse(hex).ok())
        .ok_or(ApiError::NotFound("response"))
}

/// Rewrites chatd's error bodies (`{"error": {code, message, details}}`) into OpenAI's, keeping
/// the status and headers (`Retry-After`).
async fn openai_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().as_u16() < 400 {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let chatd: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let error = &chatd["error"];
    if error.get("type").is_some() {
        // Already OpenAI's shape (`openai_error`).
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = error["message"]
        .as_str()
        .unwrap_or_else(|| parts.status.canonical_reason().unwrap_or("error"));
    let param = error["details"]["field"].clone();
    let code = error["code"].as_str().unwrap_or("error");
    let (kind, code) = match (parts.status, code) {
        (StatusCode::UNAUTHORIZED, _) => ("invalid_request_error", "invalid_api_key"),
        (StatusCode::FORBIDDEN, _) => ("permission_error", code),
        (StatusCode::NOT_FOUND, _) => ("invalid_request_error", "not_found"),
        (StatusCode::TOO_MANY_REQUESTS, "spend_limit_exceeded") => {
            ("insufficient_quota", "insufficient_quota")
        }
        (StatusCode::TOO_MANY_REQUESTS, _) => ("rate_limit_error", "rate_limit_exceeded"),
        (status, _) if status.is_server_error() => ("server_error", code),
        _ => ("invalid_request_error", code),
    };
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string())).into_response()
}

/// An error in OpenAI's shape, for what chatd's errors cannot say (a `param` beside a 404).
pub fn openai_error(
    status: StatusCode,
    message: impl Into<String>,
    param: Option<&str>,
    code: &str,
) -> Response {
    let kind = match status {
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::CONFLICT => {
            "invalid_request_error"
        }
        status if status.is_server_error() => "server_error",
        _ => "invalid_request_error",
    };
    (
        status,
        axum::Json(json!({"error": {"message": message.into(), "type": kind, "param": param, "code": code}})),
    )
        .into_response()
}

/// Seconds since the Unix epoch (OpenAI's timestamps).
fn unix_seconds(time: time::OffsetDateTime) -> i64 {
    time.unix_timestamp()
}
