//! The router: every public route of `/api/v1`, plus health, readiness and metrics.

mod admin;
mod chats;
mod control;
mod health;
mod messages;
mod spend;
mod stream;
mod tool_results;
mod watch;

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;

/// Every `/api/v1` route as `(method, path)`; the OpenAPI document must describe each one.
pub const API_ROUTES: &[(&str, &str)] = &[
    ("post", "/chats"),
    ("get", "/chats"),
    ("get", "/chats/watch"),
    ("get", "/chats/{chat_id}"),
    ("patch", "/chats/{chat_id}"),
    ("get", "/chats/{chat_id}/messages"),
    ("post", "/chats/{chat_id}/messages"),
    ("post", "/chats/{chat_id}/interrupt"),
    ("delete", "/chats/{chat_id}/queue/{queued_id}"),
    ("post", "/chats/{chat_id}/queue/{queued_id}/promote"),
    ("get", "/chats/{chat_id}/stream"),
    ("post", "/chats/{chat_id}/tool-results"),
    ("get", "/chats/{chat_id}/cost"),
    ("get", "/users/me/usage"),
    ("get", "/providers"),
    ("post", "/providers"),
    ("get", "/providers/{provider_id}"),
    ("patch", "/providers/{provider_id}"),
    ("delete", "/providers/{provider_id}"),
    ("get", "/model-configs"),
    ("post", "/model-configs"),
    ("get", "/model-configs/{model_config_id}"),
    ("patch", "/model-configs/{model_config_id}"),
    ("delete", "/model-configs/{model_config_id}"),
    ("get", "/openapi.json"),
];

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/chats", post(chats::create).get(chats::list))
        .route("/chats/watch", get(watch::watch))
        .route("/chats/{chat_id}", get(chats::get).patch(chats::patch))
        .route(
            "/chats/{chat_id}/messages",
            get(messages::list).post(messages::send),
        )
        .route("/chats/{chat_id}/interrupt", post(control::interrupt))
        .route(
            "/chats/{chat_id}/queue/{queued_id}",
            delete(control::delete_queued),
        )
        .route(
            "/chats/{chat_id}/queue/{queued_id}/promote",
            post(control::promote_queued),
        )
        .route("/chats/{chat_id}/stream", get(stream::stream))
        .route("/chats/{chat_id}/tool-results", post(tool_results::submit))
        .route("/chats/{chat_id}/cost", get(spend::chat_cost))
        .route("/users/me/usage", get(spend::user_usage))
        .route(
            "/providers",
            get(admin::providers::list).post(admin::providers::create),
        )
        .route(
            "/providers/{provider_id}",
            get(admin::providers::get)
                .patch(admin::providers::patch)
                .delete(admin::providers::delete),
        )
        .route(
            "/model-configs",
            get(admin::models::list).post(admin::models::create),
        )
        .route(
            "/model-configs/{model_config_id}",
            get(admin::models::get)
                .patch(admin::models::patch)
                .delete(admin::models::delete),
        )
        .route("/openapi.json", get(health::openapi));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(record_http_metrics))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// `chatd_http_requests_total{route,status}` and `chatd_http_request_duration_seconds{route}`.
async fn record_http_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("chatd_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("chatd_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Helper for handlers that answer with a status and a JSON body.
pub(crate) fn json_response(
    status: axum::http::StatusCode,
    body: impl serde::Serialize,
) -> Response {
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::API_ROUTES;

    #[test]
    fn the_openapi_document_describes_exactly_the_routes() {
        let document: serde_json::Value =
            serde_json::from_str(super::health::OPENAPI_JSON).expect("valid JSON");
        let paths = document["paths"].as_object().expect("paths");
        let mut described = 0;
        for (path, item) in paths {
            for method in ["get", "post", "patch", "delete", "put"] {
                if item.get(method).is_some() {
                    described += 1;
                    assert!(
                        API_ROUTES.contains(&(method, path.as_str())),
                        "{method} {path} is documented but not routed"
                    );
                }
            }
        }
        for (method, path) in API_ROUTES {
            assert!(
                paths
                    .get(*path)
                    .and_then(|item| item.get(*method))
                    .is_some(),
                "{method} {path} is routed but not documented"
            );
        }
        assert_eq!(described, API_ROUTES.len());
    }
}
