//! The router: every public route of `/api/v1`, plus health, readiness and metrics.

mod admin;
mod advisor;
mod chats;
mod control;
mod files;
pub(crate) mod health;
mod instructions;
pub(crate) mod limits;
mod messages;
mod spend;
mod stream;
mod tool_results;
pub(crate) mod users;
mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// Every `/api/v1` route, declared once for the router and the OpenAPI document.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(chats::create, chats::list))
        .routes(routes!(watch::watch))
        .routes(routes!(chats::get, chats::patch, chats::delete))
        .routes(routes!(chats::mark_read))
        .routes(routes!(messages::list, messages::send))
        .routes(routes!(messages::edit))
        .routes(routes!(control::interrupt))
        .routes(routes!(control::delete_queued))
        .routes(routes!(control::promote_queued))
        .routes(routes!(stream::stream))
        .routes(routes!(crate::aisdk::send, crate::aisdk::resume))
        .routes(routes!(crate::aisdk::create))
        .routes(routes!(tool_results::submit))
        .routes(routes!(spend::chat_cost))
        .routes(routes!(spend::user_usage))
        .routes(routes!(admin::providers::list, admin::providers::create))
        .routes(routes!(
            admin::providers::get,
            admin::providers::patch,
            admin::providers::delete
        ))
        .routes(routes!(advisor::get, advisor::put))
        .routes(routes!(admin::mcp::list, admin::mcp::create))
        .routes(routes!(
            admin::mcp::get,
            admin::mcp::patch,
            admin::mcp::delete
        ))
        .routes(routes!(admin::models::list, admin::models::create))
        .routes(routes!(
            admin::models::get,
            admin::models::patch,
            admin::models::delete
        ))
        .routes(routes!(
            instructions::get_system_prompt,
            instructions::put_system_prompt
        ))
        .routes(routes!(
            instructions::get_instructions,
            instructions::put_instructions
        ))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::me))
        .routes(routes!(users::my_tokens, users::create_my_token))
        .routes(routes!(users::delete_my_token))
        .routes(routes!(users::get, users::patch))
        .routes(routes!(users::user_tokens, users::create_user_token))
        .routes(routes!(users::delete_user_token))
        .routes(routes!(limits::get_settings, limits::put_settings))
        .routes(routes!(limits::put_user_limit))
        .routes(routes!(limits::list_groups, limits::create_group))
        .routes(routes!(
            limits::get_group,
            limits::put_group,
            limits::delete_group
        ))
        .routes(routes!(limits::members, limits::add_member))
        .routes(routes!(limits::remove_member))
        .routes(routes!(files::upload))
        .routes(routes!(files::download))
        .routes(routes!(files::meta))
        .routes(routes!(health::openapi))
}

/// The served OpenAPI document (built once per replica, with its limits).
#[derive(Clone)]
pub struct OpenApiDocument(pub Arc<str>);

pub fn router(state: AppState) -> Router {
    let (api, document) = api_routes().split_for_parts();
    let document = serde_json::to_value(&document).expect("the OpenAPI document serializes");
    let document = crate::openapi::finish(document, &state.config).to_string();
    let mut router = Router::new()
        .nest(
            "/api/v1",
            api.layer(Extension(OpenApiDocument(document.into()))),
        )
        .nest("/v1", crate::openai::router());
    if state.config.web_ui {
        router = router
            .route("/", get(crate::ui::index))
            .route("/ui/{build}/{*path}", get(crate::ui::asset))
            .route("/favicon.ico", get(crate::ui::favicon));
    }
    let router = router
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        // Every body reader here caps what it reads (`StrictJson`, uploads): axum's blanket
        // 2 MB default would cut uploads below `--max-file-bytes`.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(record_http_metrics));
    match cors(&state.config.cors_origins) {
        Some(cors) => router.layer(cors).with_state(state),
        None => router.with_state(state),
    }
}

/// `--cors-origins`: browsers on those origins may call every route with a bearer token
/// (credentials are the `Authorization` header, never cookies) and read the headers clients
/// need (`Retry-After`, `x-chatd-chat-id`, `x-vercel-ai-ui-message-stream`).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{header, HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|origin| origin.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("x-chatd-chat-id"),
            HeaderName::from_static("x-vercel-ai-ui-message-stream"),
        ])
        .max_age(std::time::Duration::from_secs(600))
        .into()
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
