//! `/healthz`, `/readyz`, `/metrics`, `/api/v1/openapi.json`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

/// Ready when the database answers and the listener connection is up, and the replica is not
/// shutting down (a draining replica answers 503 at once, so load balancers stop sending it
/// new requests while its streams move elsewhere).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"draining": true})),
        )
            .into_response();
    }
    let database = match state.pool.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    let listener = state.listener.is_connected();
    let status = if database && listener {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"database": database, "listener": listener})),
    )
        .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let status = state.pool.status();
    metrics::gauge!("chatd_db_pool_size").set(status.size as f64);
    metrics::gauge!("chatd_db_pool_available").set(status.available as f64);
    metrics::gauge!("chatd_db_pool_waiting").set(status.waiting as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /openapi.json`: this replica's OpenAPI document (generated from the code).
#[utoipa::path(get, path = "/openapi.json", operation_id = "getOpenApi", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi(
    axum::Extension(document): axum::Extension<super::OpenApiDocument>,
) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.0.to_string(),
    )
        .into_response()
}
