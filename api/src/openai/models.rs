//! `GET /v1/models` and how a request's `model` names a model config: its id, else a unique
//! model name, else a unique display name.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chatd_shared::db::sql::Sql;
use serde_json::json;
use uuid::Uuid;

use super::{openai_error, unix_seconds};
use crate::auth::CurrentUser;
use crate::error::ApiResult;
use crate::state::AppState;

/// A usable model config as `/v1` names it.
pub struct ModelEntry {
    pub config_id: Uuid,
    /// What `/v1/models` lists and responses echo: the model name when no other usable config
    /// has it, else the display name when unique, else the config id.
    pub name: String,
    pub model: String,
    pub display_name: String,
    pub is_default: bool,
    pub created: i64,
}

pub async fn usable(client: &impl Sql) -> ApiResult<Vec<ModelEntry>> {
    let rows = client
        .rows(
            concat!(
                "SELECT mc.id, mc.model, mc.display_name, mc.is_default, mc.created_at \
                 FROM model_configs mc WHERE ",
                chatd_shared::usable_model_config!(),
                " ORDER BY mc.created_at, mc.id"
            ),
            &[],
        )
        .await?;
    let mut entries: Vec<ModelEntry> = rows
        .iter()
        .map(|row| ModelEntry {
            config_id: row.get(0),
            name: String::new(),
            model: row.get(1),
            display_name: row.get(2),
            is_default: row.get(3),
            created: unix_seconds(row.get(4)),
        })
        .collect();
    let count = |entries: &[ModelEntry], pick: &dyn Fn(&ModelEntry) -> &str, value: &str| {
        entries.iter().filter(|entry| pick(entry) == value).count()
    };
    let names: Vec<String> = entries
        .iter()
        .map(|entry| {
            if count(&entries, &|e| &e.model, &entry.model) == 1 {
                entry.model.clone()
            } else if !entry.display_name.is_empty()
                && count(&entries, &|e| &e.display_name, &entry.display_name) == 1
            {
                entry.display_name.clone()
            } else {
                entry.config_id.to_string()
            }
        })
        .collect();
    for (entry, name) in entries.iter_mut().zip(names) {
        entry.name = name;
    }
    Ok(entries)
}

/// The model config `model` names (`None`: the default). The error is a ready response: 404
/// `model_not_found`, or 400 listing the candidates when the name is ambiguous.
pub async fn resolve(
    client: &impl Sql,
    model: Option<&str>,
) -> ApiResult<Result<ModelEntry, Response>> {
    let entries = usable(client).await?;
    let Some(model) = model.filter(|model| !model.is_empty()) else {
        return Ok(match entries.into_iter().find(|entry| entry.is_default) {
            Some(entry) => Ok(entry),
            None => Err(openai_error(
                StatusCode::BAD_REQUEST,
                "`model` is required: this deployment has no default model",
                Some("model"),
                "missing_required_parameter",
            )),
        });
    };
    if let Ok(id) = Uuid::try_parse(model) {
        if let Some(entry) = entries.iter().position(|entry| entry.config_id == id) {
            return Ok(Ok(entries.into_iter().nth(entry).expect("found")));
        }
    }
    for pick in [
        (|entry: &ModelEntry| entry.model.as_str()) as fn(&ModelEntry) -> &str,
        |entry: &ModelEntry| entry.display_name.as_str(),
    ] {
        let matching: Vec<usize> = (0..entries.len())
            .filter(|&index| pick(&entries[index]) == model)
            .collect();
        match matching.as_slice() {
            [] => {}
            [one] => return Ok(Ok(entries.into_iter().nth(*one).expect("found"))),
            many => {
                let candidates: Vec<String> = many
                    .iter()
                    .map(|&index| {
                        let entry = &entries[index];
                        format!("{} ({})", entry.config_id, entry.display_name)
                    })
                    .collect();
                return Ok(Err(openai_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "`{model}` names several model configs; use one of their ids: {}",
                        candidates.join(", ")
                    ),
                    Some("model"),
                    "ambiguous_model",
                )));
            }
        }
    }
    Ok(Err(model_not_found(model)))
}

fn model_not_found(model: &str) -> Response {
    openai_error(
        StatusCode::NOT_FOUND,
        format!("The model `{model}` does not exist or is not enabled (GET /v1/models lists the models)."),
        Some("model"),
        "model_not_found",
    )
}

fn object(entry: &ModelEntry) -> serde_json::Value {
    json!({"id": entry.name, "object": "model", "created": entry.created, "owned_by": "chatd",
        "chatd": {"model_config_id": entry.config_id, "model": entry.model,
            "display_name": entry.display_name, "is_default": entry.is_default}})
}

pub async fn list(State(state): State<AppState>, _user: CurrentUser) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let entries = usable(&*client).await?;
    let data: Vec<_> = entries.iter().map(object).collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(model): Path<String>,
) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    Ok(match resolve(&*client, Some(&model)).await? {
        Ok(entry) => {
            let entries = usable(&*client).await?;
            let named = entries
                .iter()
                .find(|other| other.config_id == entry.config_id)
                .unwrap_or(&entry);
            axum::Json(object(named)).into_response()
        }
        Err(response) => response,
    })
}

/// The usable model config `id` names, else the default (`None`: neither is usable).
pub async fn model_entry(client: &impl Sql, id: Option<Uuid>) -> ApiResult<Option<ModelEntry>> {
    let entries = usable(client).await?;
    let position = id
        .and_then(|id| entries.iter().position(|entry| entry.config_id == id))
        .or_else(|| entries.iter().position(|entry| entry.is_default));
    Ok(position.and_then(|position| entries.into_iter().nth(position)))
}
