//! `GET`/`PUT /config/system-prompt` (the deployment's system prompt; admin) and
//! `GET`/`PUT /users/me/instructions` (the caller's own instructions). A turn's prompt starts
//! with them — the deployment's prompt, then the chat owner's instructions, then the chat's own
//! `system_prompt`, each its own system part — from the next model step on every worker (a
//! `chatd_config` hint drops the workers' cached copies).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use chatd_shared::db::instructions::{self as store, SystemPrompt};
use chatd_shared::pubsub::{publish_config_change, ConfigKind, ConfigNotice};

use crate::auth::CurrentUser;
use crate::body::StrictJson;
use crate::error::ApiResult;
use crate::routes::admin::AdminUser;
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::content::plain_field;

/// Most characters of the deployment's system prompt.
const MAX_SYSTEM_PROMPT_CHARS: usize = 65_536;
/// Most characters of a user's instructions.
const MAX_INSTRUCTIONS_CHARS: usize = 16_384;

/// The deployment's system prompt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPromptBody {
    /// The first system part of every turn (after chatd's built-in agent prompt when
    /// `include_default`); empty for none.
    #[schema(max_length = 65536, pattern = r"^[^\u0000]*$")]
    pub system_prompt: String,
    /// Put chatd's built-in agent prompt first.
    pub include_default: bool,
}

/// The caller's instructions: a system part of every turn of their chats, after the
/// deployment's system prompt and before the chat's own.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstructionsBody {
    /// Empty for none.
    #[schema(max_length = 16384, pattern = r"^[^\u0000]*$")]
    pub instructions: String,
}

#[utoipa::path(get, path = "/config/system-prompt", operation_id = "getSystemPrompt", tag = "admin",
    responses((status = 200, description = "The deployment's system prompt", body = SystemPromptBody)))]
pub async fn get_system_prompt(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let prompt = store::system_prompt(&*client).await?;
    Ok(json_response(
        StatusCode::OK,
        SystemPromptBody {
            system_prompt: prompt.system_prompt,
            include_default: prompt.include_default,
        },
    ))
}

#[utoipa::path(put, path = "/config/system-prompt", operation_id = "putSystemPrompt", tag = "admin",
    request_body = SystemPromptBody,
    responses((status = 200, description = "The deployment's system prompt, as stored", body = SystemPromptBody)))]
pub async fn put_system_prompt(
    State(state): State<AppState>,
    admin: AdminUser,
    StrictJson(request): StrictJson<SystemPromptBody>,
) -> ApiResult<Response> {
    plain_field(
        &request.system_prompt,
        "system_prompt",
        MAX_SYSTEM_PROMPT_CHARS,
    )?;
    let prompt = SystemPrompt {
        system_prompt: request.system_prompt,
        include_default: request.include_default,
    };
    let client = state.pool.get().await?;
    store::set_system_prompt(&*client, &prompt).await?;
    tracing::info!(admin_id = %admin.0.id, "deployment system prompt changed");
    changed(&client, Uuid::nil()).await;
    Ok(json_response(
        StatusCode::OK,
        SystemPromptBody {
            system_prompt: prompt.system_prompt,
            include_default: prompt.include_default,
        },
    ))
}

#[utoipa::path(get, path = "/users/me/instructions", operation_id = "getInstructions", tag = "users",
    responses((status = 200, description = "The caller's instructions", body = InstructionsBody)))]
pub async fn get_instructions(
    State(state): State<AppState>,
    user: CurrentUser,
) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let instructions = store::user_instructions(&*client, user.id).await?;
    Ok(json_response(
        StatusCode::OK,
        InstructionsBody { instructions },
    ))
}

#[utoipa::path(put, path = "/users/me/instructions", operation_id = "putInstructions", tag = "users",
    request_body = InstructionsBody,
    responses((status = 200, description = "The caller's instructions, as stored", body = InstructionsBody)))]
pub async fn put_instructions(
    State(state): State<AppState>,
    user: CurrentUser,
    StrictJson(request): StrictJson<InstructionsBody>,
) -> ApiResult<Response> {
    plain_field(
        &request.instructions,
        "instructions",
        MAX_INSTRUCTIONS_CHARS,
    )?;
    let client = state.pool.get().await?;
    store::set_user_instructions(&*client, user.id, &request.instructions).await?;
    changed(&client, user.id).await;
    Ok(json_response(StatusCode::OK, request))
}

/// Publishes the `chatd_config` hint (a failed publish is logged: caches expire on their own).
async fn changed(client: &deadpool_postgres::Client, id: Uuid) {
    let notice = ConfigNotice {
        kind: ConfigKind::Instructions,
        id,
    };
    if let Err(error) = publish_config_change(client, notice).await {
        tracing::warn!(%id, error = %error, "publish the instructions change hint");
    }
}
