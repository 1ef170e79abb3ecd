//! `GET`/`PUT /config/advisor` (admin): the advisor — a built-in, exclusive `advisor` tool
//! that root chats are offered while it is enabled: a nested, tool-less, one-step model call
//! that sees the conversation so far and answers the agent (never the user). Changes apply
//! from the next turn on every worker (a `chatd_config` hint drops the workers' copies).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use chatd_shared::db::advisor::{self as store, AdvisorConfig};
use chatd_shared::pubsub::ConfigKind;

use crate::body::{JsonInt, StrictJson};
use crate::error::ApiResult;
use crate::routes::admin::AdminUser;
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::chats::check_model_config;

/// The advisor's settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvisorBody {
    /// Offer the `advisor` tool to root chats (sub-agents never get it).
    pub enabled: bool,
    /// Consultations one turn may make; later ones get a `limit_reached` result.
    #[schema(value_type = i32, minimum = 1, maximum = 20)]
    pub max_uses_per_turn: JsonInt<i32>,
    /// Longest advice, in tokens.
    #[schema(value_type = i32, minimum = 1, maximum = 32000)]
    pub max_output_tokens: JsonInt<i32>,
    /// The model config the advisor runs on (usable, else 422); `null`: the chat's own.
    pub model_config_id: Option<Uuid>,
}

impl From<AdvisorConfig> for AdvisorBody {
    fn from(config: AdvisorConfig) -> AdvisorBody {
        AdvisorBody {
            enabled: config.enabled,
            max_uses_per_turn: JsonInt(config.max_uses_per_turn),
            max_output_tokens: JsonInt(config.max_output_tokens),
            model_config_id: config.model_config_id,
        }
    }
}

#[utoipa::path(get, path = "/config/advisor", operation_id = "getAdvisor", tag = "admin",
    responses((status = 200, description = "The advisor's settings (disabled until set)", body = AdvisorBody)))]
pub async fn get(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let config = store::read(&*client).await?;
    Ok(json_response(StatusCode::OK, AdvisorBody::from(config)))
}

#[utoipa::path(put, path = "/config/advisor", operation_id = "putAdvisor", tag = "admin",
    request_body = AdvisorBody,
    responses((status = 200, description = "The advisor's settings, as stored", body = AdvisorBody)))]
pub async fn put(
    State(state): State<AppState>,
    admin: AdminUser,
    StrictJson(request): StrictJson<AdvisorBody>,
) -> ApiResult<Response> {
    let config = AdvisorConfig {
        enabled: request.enabled,
        max_uses_per_turn: request.max_uses_per_turn.0,
        max_output_tokens: request.max_output_tokens.0,
        model_config_id: request.model_config_id,
    };
    config.check()?;
    let client = state.pool.get().await?;
    if let Some(model_config_id) = config.model_config_id {
        check_model_config(&*client, model_config_id, "model_config_id").await?;
    }
    store::write(&*client, &config).await?;
    super::admin::config_changed(&client, admin, ConfigKind::Advisor, Uuid::nil()).await;
    Ok(json_response(StatusCode::OK, AdvisorBody::from(config)))
}
