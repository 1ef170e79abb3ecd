//! `GET/POST /providers`, `GET/PATCH/DELETE /providers/{provider_id}` (admins only).
//!
//! API keys are sealed with AES-256-GCM under the replica's `--encryption-key` before they
//! reach the database; a replica without the key refuses requests that set one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use chatd_shared::pubsub::ConfigKind;

use super::wire::{
    CreateProviderRequest, ItemList, PatchProviderRequest, Provider, ProviderResponse,
};
use super::{config_changed, validate, AdminUser};
use crate::body::StrictJson;
use crate::cursor::parse_uuid;
use crate::error::{ApiError, ApiResult};
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::admin::{self as store, NewProvider, ProviderDeletion, ProviderPatch};

#[utoipa::path(get, path = "/providers", operation_id = "listProviders", tag = "admin",
    responses((status = 200, description = "Every provider", body = ItemList<Provider>)))]
pub async fn list(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let rows = store::list_providers(&client).await?;
    Ok(json_response(
        StatusCode::OK,
        ItemList::all(rows.iter().map(Provider::from).collect()),
    ))
}

#[utoipa::path(get, path = "/providers/{provider_id}", operation_id = "getProvider", tag = "admin",
    params(("provider_id" = Uuid, Path, description = "A provider")),
    responses((status = 200, description = "The provider", body = ProviderResponse)))]
pub async fn get(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(provider_id): Path<String>,
) -> ApiResult<Response> {
    let provider_id = parse_uuid(&provider_id, "provider_id")?;
    let client = state.pool.get().await?;
    let row = store::get_provider(&client, provider_id).await?;
    Ok(provider_response(StatusCode::OK, &row))
}

#[utoipa::path(post, path = "/providers", operation_id = "createProvider", tag = "admin",
    request_body = CreateProviderRequest,
    responses((status = 201, description = "Created", body = ProviderResponse)))]
pub async fn create(
    State(state): State<AppState>,
    admin: AdminUser,
    StrictJson(request): StrictJson<CreateProviderRequest>,
) -> ApiResult<Response> {
    let kind = request.kind.as_str().to_string();
    let display_name = match &request.display_name {
        Some(name) => validate::name(name, "display_name", false)?,
        None => kind.clone(),
    };
    let base_url = validate::base_url(&request.base_url)?;
    let sealed_api_key = request
        .api_key
        .as_deref()
        .map(|key| seal(&state, key))
        .transpose()?;
    let client = state.pool.get().await?;
    let row = store::create_provider(
        &client,
        NewProvider {
            kind,
            display_name,
            base_url,
            sealed_api_key,
            enabled: request.enabled.unwrap_or(true),
        },
    )
    .await?;
    config_changed(&client, admin, ConfigKind::Provider, row.id).await;
    Ok(provider_response(StatusCode::CREATED, &row))
}

#[utoipa::path(patch, path = "/providers/{provider_id}", operation_id = "patchProvider", tag = "admin",
    params(("provider_id" = Uuid, Path, description = "A provider")), request_body = PatchProviderRequest,
    responses((status = 200, description = "The updated provider", body = ProviderResponse)))]
pub async fn patch(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(provider_id): Path<String>,
    StrictJson(request): StrictJson<PatchProviderRequest>,
) -> ApiResult<Response> {
    let provider_id = parse_uuid(&provider_id, "provider_id")?;
    let patch = ProviderPatch {
        kind: request.kind.map(|kind| kind.as_str().to_string()),
        display_name: request
            .display_name
            .as_deref()
            .map(|name| validate::name(name, "display_name", false))
            .transpose()?,
        base_url: request
            .base_url
            .as_deref()
            .map(validate::base_url)
            .transpose()?,
        sealed_api_key: match &request.api_key {
            None => None,
            Some(None) => Some(None),
            Some(Some(key)) => Some(Some(seal(&state, key)?)),
        },
        enabled: request.enabled,
    };
    let mut client = state.pool.get().await?;
    let row = store::patch_provider(&mut client, provider_id, patch).await?;
    config_changed(&client, admin, ConfigKind::Provider, row.id).await;
    Ok(provider_response(StatusCode::OK, &row))
}

/// 204: the provider is gone from every route. When only deleted model configs (which spend
/// history needs) still reference it, its row stays hidden, disabled, its API key erased.
/// 409 while live model configs use it.
#[utoipa::path(delete, path = "/providers/{provider_id}", operation_id = "deleteProvider", tag = "admin",
    params(("provider_id" = Uuid, Path, description = "A provider")),
    responses((status = 204, description = "Deleted: gone from every route (kept hidden, disabled and without its key when deleted model configs, which spend history needs, still reference it)")))]
pub async fn delete(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(provider_id): Path<String>,
) -> ApiResult<Response> {
    let provider_id = parse_uuid(&provider_id, "provider_id")?;
    let mut client = state.pool.get().await?;
    let deletion = store::delete_provider(&mut client, provider_id).await?;
    config_changed(&client, admin, ConfigKind::Provider, provider_id).await;
    if let ProviderDeletion::Retired = deletion {
        tracing::info!(%provider_id, "provider hidden (deleted model configs still reference it)");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn provider_response(status: StatusCode, row: &store::ProviderRow) -> Response {
    json_response(
        status,
        ProviderResponse {
            provider: Provider::from(row),
        },
    )
}

/// Validates and encrypts an API key with the replica's key.
fn seal(state: &AppState, api_key: &str) -> ApiResult<Vec<u8>> {
    let api_key = validate::api_key(api_key)?;
    let key = state.config.encryption_key.as_ref().ok_or_else(|| {
        ApiError::field(
            "api_key",
            "api_key: this API replica has no encryption key to store API keys with; start \
             it with --encryption-key (CHATD_ENCRYPTION_KEY), the same key the workers use",
        )
    })?;
    chatd_shared::crypto::seal(&key.0, api_key)
        .map_err(|error| ApiError::Internal(error.context("seal the provider API key")))
}
