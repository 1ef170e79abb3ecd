//! `GET/POST /model-configs`, `GET/PATCH/DELETE /model-configs/{model_config_id}`.
//!
//! Reads are open to every user: administrators get every field (and, in the list with
//! `?include_deleted=true`, soft-deleted configs, which every other route treats as gone);
//! other users get only the configs they can
//! choose (enabled, not deleted, provider enabled) with public fields. Writes are for
//! administrators only.
//!
//! Rules that keep the worker's "the wanted model, else the default" well defined:
//! exactly one default at most, moved atomically; the default is always enabled (disabling
//! it is refused until another config is the default); deleting is a soft delete that also
//! drops the default flag, so deleting the default leaves the deployment without one.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use chatd_shared::db::models::StoreError;
use chatd_shared::pubsub::ConfigKind;

use super::wire::{
    CreateModelConfigRequest, ItemList, ModelConfig, ModelConfigResponse, ModelConfigView,
    PatchModelConfigRequest, PublicModelConfig,
};
use super::{config_changed, validate, AdminUser};
use crate::auth::CurrentUser;
use crate::body::{JsonInt, StrictJson};
use crate::cursor::{parse_uuid, query_pairs};
use crate::error::{ApiError, ApiResult};
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::admin::{
    self as store, check_compression_threshold as compression_threshold,
    check_context_limit as context_limit, check_default_enabled,
    check_max_output_tokens as max_output_tokens, check_price as price, ModelConfigFields,
    ModelConfigRow, DEFAULT_COMPRESSION_THRESHOLD, DEFAULT_CONTEXT_LIMIT,
};

#[utoipa::path(get, path = "/model-configs", operation_id = "listModelConfigs", tag = "admin",
    params(("include_deleted" = Option<bool>, Query, description = "Admins only (else 403): soft-deleted configs too")),
    responses((status = 200, description = "Admins: every config, every field; others: the usable configs, public fields",
        body = ModelConfigView<ItemList<ModelConfig>, ItemList<PublicModelConfig>>)))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let mut include_deleted = false;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "include_deleted" => {
                include_deleted = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::field(
                            "include_deleted",
                            "include_deleted: true or false",
                        ))
                    }
                }
            }
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    let client = state.pool.get().await?;
    if user.is_admin {
        let rows = store::list_model_configs(&client, include_deleted).await?;
        return Ok(json_response(
            StatusCode::OK,
            ModelConfigView::<_, ItemList<PublicModelConfig>>::Admin(ItemList::all(
                rows.iter().map(ModelConfig::from).collect(),
            )),
        ));
    }
    if include_deleted {
        return Err(ApiError::Forbidden);
    }
    let rows = store::list_usable_model_configs(&client).await?;
    Ok(json_response(
        StatusCode::OK,
        ModelConfigView::<ItemList<ModelConfig>, _>::Public(ItemList::all(
            rows.iter().map(PublicModelConfig::from).collect(),
        )),
    ))
}

#[utoipa::path(get, path = "/model-configs/{model_config_id}", operation_id = "getModelConfig", tag = "admin",
    params(("model_config_id" = Uuid, Path, description = "A model config")),
    responses((status = 200, description = "Admins: every field; others: public fields of a usable config (else 404)",
        body = ModelConfigView<ModelConfigResponse<ModelConfig>, ModelConfigResponse<PublicModelConfig>>)))]
pub async fn get(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(model_config_id): Path<String>,
) -> ApiResult<Response> {
    let model_config_id = parse_uuid(&model_config_id, "model_config_id")?;
    let client = state.pool.get().await?;
    let row = store::get_model_config(&client, model_config_id, !user.is_admin).await?;
    Ok(if user.is_admin {
        admin_response(StatusCode::OK, &row)
    } else {
        json_response(
            StatusCode::OK,
            ModelConfigResponse {
                model_config: PublicModelConfig::from(&row),
            },
        )
    })
}

#[utoipa::path(post, path = "/model-configs", operation_id = "createModelConfig", tag = "admin",
    request_body = CreateModelConfigRequest,
    responses((status = 201, description = "Created", body = ModelConfigResponse<ModelConfig>)))]
pub async fn create(
    State(state): State<AppState>,
    admin: AdminUser,
    StrictJson(request): StrictJson<CreateModelConfigRequest>,
) -> ApiResult<Response> {
    let model = validate::name(&request.model, "model", true)?;
    let display_name = match &request.display_name {
        Some(name) => validate::name(name, "display_name", false)?,
        None => model.clone(),
    };
    let fields = ModelConfigFields {
        provider_id: request.provider_id,
        model,
        display_name,
        context_limit: context_limit(int(request.context_limit).unwrap_or(DEFAULT_CONTEXT_LIMIT))?,
        compression_threshold: compression_threshold(
            int(request.compression_threshold).unwrap_or(DEFAULT_COMPRESSION_THRESHOLD),
        )?,
        max_output_tokens: int(request.max_output_tokens)
            .map(max_output_tokens)
            .transpose()?,
        input_price_micros: price(int(request.input_price_micros), "input_price_micros")?,
        output_price_micros: price(int(request.output_price_micros), "output_price_micros")?,
        cache_read_price_micros: price(
            int(request.cache_read_price_micros),
            "cache_read_price_micros",
        )?,
        cache_write_price_micros: price(
            int(request.cache_write_price_micros),
            "cache_write_price_micros",
        )?,
        is_default: request.is_default.unwrap_or(false),
        enabled: request.enabled.unwrap_or(true),
        supports_images: request.supports_images.unwrap_or(true),
    };
    check_default_enabled(&fields, "is_default")?;
    let mut client = state.pool.get().await?;
    let row = store::create_model_config(&mut client, fields).await?;
    config_changed(&client, admin, ConfigKind::ModelConfig, row.id).await;
    Ok(admin_response(StatusCode::CREATED, &row))
}

#[utoipa::path(patch, path = "/model-configs/{model_config_id}", operation_id = "patchModelConfig", tag = "admin",
    params(("model_config_id" = Uuid, Path, description = "A model config")), request_body = PatchModelConfigRequest,
    responses((status = 200, description = "The updated config", body = ModelConfigResponse<ModelConfig>)))]
pub async fn patch(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(model_config_id): Path<String>,
    StrictJson(request): StrictJson<PatchModelConfigRequest>,
) -> ApiResult<Response> {
    let model_config_id = parse_uuid(&model_config_id, "model_config_id")?;
    let model = request
        .model
        .as_deref()
        .map(|model| validate::name(model, "model", true))
        .transpose()?;
    let display_name = request
        .display_name
        .as_deref()
        .map(|name| validate::name(name, "display_name", false))
        .transpose()?;
    let context_limit = int(request.context_limit).map(context_limit).transpose()?;
    let compression_threshold = int(request.compression_threshold)
        .map(compression_threshold)
        .transpose()?;
    let max_output_tokens = match nullable_int(request.max_output_tokens) {
        Some(Some(tokens)) => Some(Some(max_output_tokens(tokens)?)),
        other => other,
    };
    let prices = [
        (
            nullable_int(request.input_price_micros),
            "input_price_micros",
        ),
        (
            nullable_int(request.output_price_micros),
            "output_price_micros",
        ),
        (
            nullable_int(request.cache_read_price_micros),
            "cache_read_price_micros",
        ),
        (
            nullable_int(request.cache_write_price_micros),
            "cache_write_price_micros",
        ),
    ];
    let mut checked_prices = [None; 4];
    for (slot, (value, field)) in checked_prices.iter_mut().zip(prices) {
        *slot = value.map(|value| price(value, field)).transpose()?;
    }
    let [input_price, output_price, cache_read_price, cache_write_price] = checked_prices;
    let becomes_default = request.is_default == Some(true);
    let merge = |current: &ModelConfigRow| -> Result<ModelConfigFields, StoreError> {
        let mut fields = ModelConfigFields::from(current);
        fields.provider_id = request.provider_id.unwrap_or(fields.provider_id);
        fields.model = model.unwrap_or(fields.model);
        fields.display_name = display_name.unwrap_or(fields.display_name);
        fields.context_limit = context_limit.unwrap_or(fields.context_limit);
        fields.compression_threshold =
            compression_threshold.unwrap_or(fields.compression_threshold);
        fields.max_output_tokens = max_output_tokens.unwrap_or(fields.max_output_tokens);
        fields.input_price_micros = input_price.unwrap_or(fields.input_price_micros);
        fields.output_price_micros = output_price.unwrap_or(fields.output_price_micros);
        fields.cache_read_price_micros = cache_read_price.unwrap_or(fields.cache_read_price_micros);
        fields.cache_write_price_micros =
            cache_write_price.unwrap_or(fields.cache_write_price_micros);
        fields.is_default = request.is_default.unwrap_or(fields.is_default);
        fields.enabled = request.enabled.unwrap_or(fields.enabled);
        fields.supports_images = request.supports_images.unwrap_or(fields.supports_images);
        let blamed = if request.enabled == Some(false) {
            "enabled"
        } else {
            "is_default"
        };
        if let Err(error) = check_default_enabled(&fields, blamed) {
            // A request that asks for both is malformed (its schema says so); one that
            // conflicts with the stored config is a conflict with the current state.
            if request.is_default == Some(true) && request.enabled == Some(false) {
                return Err(error.into());
            }
            return Err(StoreError::Conflict(error.message));
        }
        Ok(fields)
    };
    let mut client = state.pool.get().await?;
    let row =
        store::patch_model_config(&mut client, model_config_id, becomes_default, merge).await?;
    config_changed(&client, admin, ConfigKind::ModelConfig, row.id).await;
    Ok(admin_response(StatusCode::OK, &row))
}

/// Soft delete; 204. Chats that chose this config fall back to the default.
#[utoipa::path(delete, path = "/model-configs/{model_config_id}", operation_id = "deleteModelConfig", tag = "admin",
    params(("model_config_id" = Uuid, Path, description = "A model config")),
    responses((status = 204, description = "Soft-deleted; chats that chose it fall back to the default")))]
pub async fn delete(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(model_config_id): Path<String>,
) -> ApiResult<Response> {
    let model_config_id = parse_uuid(&model_config_id, "model_config_id")?;
    let client = state.pool.get().await?;
    store::delete_model_config(&client, model_config_id).await?;
    config_changed(&client, admin, ConfigKind::ModelConfig, model_config_id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn int<T>(value: Option<JsonInt<T>>) -> Option<T> {
    value.map(|value| value.0)
}

fn nullable_int<T>(value: Option<Option<JsonInt<T>>>) -> Option<Option<T>> {
    value.map(int)
}

fn admin_response(status: StatusCode, row: &ModelConfigRow) -> Response {
    json_response(
        status,
        ModelConfigResponse {
            model_config: ModelConfig::from(row),
        },
    )
}
