//! `POST /v1/responses`, `GET /v1/responses/{id}` (`?stream=true&starting_after=N` resumes the
//! event stream on any replica), `POST /v1/responses/{id}/cancel`, `DELETE /v1/responses/{id}`
//! and `GET /v1/responses/{id}/input_items`.
//!
//! A response is one turn of a chat: its input rows, then the assistant's and the worker's
//! tool rows until the turn ends. A turn that calls client tools ends the response
//! (`completed`, with `function_call` items); `function_call_output` items with
//! `previous_response_id` are the next response, `POST /tool-results` underneath.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::create::{create as create_response, NewResponse};
use super::store::{self, ResponseRow};
use super::{input, models, openai_error, parse_response_id, render, response_id, stream};
use crate::auth::CurrentUser;
use crate::body::StrictJson;
use crate::cursor::query_pairs;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `store: false` chats are purged this long after they go idle: long enough to resume.
pub const EPHEMERAL_RETENTION_S: i32 = 600;

fn flag(body: &Value, key: &str, default: bool) -> ApiResult<bool> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(value)) => Ok(*value),
        Some(_) => Err(ApiError::field(key, format!("{key} must be a boolean"))),
    }
}

pub async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    StrictJson(body): StrictJson<Value>,
) -> ApiResult<Response> {
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let stream = flag(&body, "stream", false)?;
    let background = flag(&body, "background", false)?;
    let store_it = flag(&body, "store", true)?;
    if background && !store_it {
        return Err(ApiError::field("background", "background responses must be stored (store: false is for responses followed to their end)"));
    }
    let items = match body.get("input") {
        None | Some(Value::Null) => return Err(ApiError::field("input", "input is required")),
        Some(value) => input::responses_input(value)?,
    };
    let tools = match body.get("tools") {
        None | Some(Value::Null) => None,
        Some(value) => Some(input::tools(value, "tools")?),
    };
    let instructions = match body.get("instructions") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            return Err(ApiError::field(
                "instructions",
                "instructions must be a string",
            ))
        }
    };
    let metadata = match body.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(map)) if map.len() <= 16 && map.values().all(Value::is_string) => {
            json!(map)
        }
        Some(_) => {
            return Err(ApiError::field(
                "metadata",
                "metadata is an object of at most 16 string values",
            ))
        }
    };
    let previous_response_id = match body.get("previous_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(parse_response_id(text).map_err(|_| {
            ApiError::field(
                "previous_response_id",
                "previous_response_id: no such response",
            )
        })?),
        Some(_) => {
            return Err(ApiError::field(
                "previous_response_id",
                "previous_response_id must be a string",
            ))
        }
    };
    let model = input::model(&body)?;
    let mut client = state.pool.get().await?;
    let entry = match models::resolve(&*client, model).await? {
        Ok(entry) => entry,
        Err(response) => return Ok(response),
    };
    crate::routes::limits::ensure_within_limit(&state, &client, user.id).await?;
    let (response, transition) = create_response(
        &mut client,
        NewResponse {
            owner_id: user.id,
            model_config_id: entry.config_id,
            model_name: model.map(str::to_owned).unwrap_or(entry.name),
            instructions,
            items,
            tools,
            previous_response_id,
            chat_id: None,
            store: store_it,
            background,
            metadata,
            hidden: !store_it,
            purge_after_s: (!store_it).then_some(EPHEMERAL_RETENTION_S),
        },
    )
    .await?;
    transition.publish(&state.publisher, &client).await;
    drop(client);
    if stream {
        return stream::sse(state, user.id, response, -1).await;
    }
    if background {
        let object = render::object(&response, "queued", None, Vec::new(), &[]);
        return Ok(axum::Json(object).into_response());
    }
    let object = stream::wait_final(&state, &response).await?;
    Ok(axum::Json(object).into_response())
}

async fn load(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> ApiResult<Result<ResponseRow, Response>> {
    let not_found = || {
        openai_error(
            StatusCode::NOT_FOUND,
            format!("No response found with id '{id}'."),
            Some("response_id"),
            "not_found",
        )
    };
    let Ok(uuid) = parse_response_id(id) else {
        return Ok(Err(not_found()));
    };
    let client = state.pool.get().await?;
    Ok(store::load(&*client, uuid, user.id)
        .await?
        .ok_or_else(not_found))
}

pub async fn retrieve(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let mut stream = false;
    let mut after = -1;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "stream" => {
                stream = value
                    .parse()
                    .map_err(|_| ApiError::field("stream", "stream must be true or false"))?
            }
            "starting_after" => {
                after = value
                    .parse::<i64>()
                    .ok()
                    .filter(|after| *after >= 0)
                    .ok_or_else(|| {
                        ApiError::field(
                            "starting_after",
                            "starting_after must be a sequence number (an integer ≥ 0)",
                        )
                    })?
            }
            // Accepted and not needed: every response carries its output in full.
            "include" | "include[]" | "include_obfuscation" => {}
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    let response = match load(&state, &user, &id).await? {
        Ok(response) => response,
        Err(error) => return Ok(error),
    };
    if stream {
        return stream::sse(state, user.id, response, after).await;
    }
    let client = state.pool.get().await?;
    let snapshot = store::snapshot(&client, &response)
        .await?
        .ok_or(ApiError::NotFound("response"))?;
    let tools = store::client_tool_names(&*client, response.chat_id).await?;
    Ok(axum::Json(render::from_snapshot(&response, &snapshot, &tools)).into_response())
}

/// Interrupts the response's turn (the chat's `/interrupt`); the response ends `cancelled`
/// with what was generated so far. A response that already ended is returned as it is.
pub async fn cancel(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let response = match load(&state, &user, &id).await? {
        Ok(response) => response,
        Err(error) => return Ok(error),
    };
    let mut client = state.pool.get().await?;
    let snapshot = store::snapshot(&client, &response)
        .await?
        .ok_or(ApiError::NotFound("response"))?;
    let (status, _) = render::status(&response, &snapshot.chat, snapshot.superseded);
    if !render::is_final(status) {
        // Marks the response cancelled in the same transaction.
        let (_, transitions) =
            crate::store::send::interrupt(&mut client, response.chat_id, user.id).await?;
        for transition in transitions {
            transition.publish(&state.publisher, &client).await;
        }
    }
    drop(client);
    let object = stream::wait_final(&state, &response).await?;
    Ok(axum::Json(object).into_response())
}

/// Deletes the response's chat (as `DELETE /api/v1/chats/{id}`; 409 while it runs).
pub async fn delete(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let response = match load(&state, &user, &id).await? {
        Ok(response) => response,
        Err(error) => return Ok(error),
    };
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    let rows = crate::store::tree::delete_tree(&transaction, response.chat_id, user.id).await?;
    transaction.commit().await?;
    for row in rows {
        let mut transition = crate::store::Transition::new(row);
        transition.change.owner_event = chatd_shared::pubsub::OwnerEventKind::Deleted;
        transition.publish(&state.publisher, &client).await;
    }
    Ok(
        axum::Json(json!({"id": response_id(response.id), "object": "response", "deleted": true}))
            .into_response(),
    )
}

pub async fn input_items(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let mut ascending = false;
    let mut limit = 20usize;
    let mut after: Option<String> = None;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "order" => {
                ascending = match value.as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => return Err(ApiError::field("order", "order is asc or desc")),
                }
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=100).contains(limit))
                    .ok_or_else(|| ApiError::field("limit", "limit is 1 to 100"))?
            }
            "after" => after = Some(value),
            "include" | "include[]" => {}
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    let response = match load(&state, &user, &id).await? {
        Ok(response) => response,
        Err(error) => return Ok(error),
    };
    let client = state.pool.get().await?;
    let rows = store::input_rows(&*client, &response).await?;
    let mut items: Vec<Value> = rows.iter().flat_map(input_item).collect();
    if !ascending {
        items.reverse();
    }
    if let Some(after) = after {
        let position = items
            .iter()
            .position(|item| item["id"] == after.as_str())
            .ok_or_else(|| ApiError::field("after", "after: not an item of this list"))?;
        items.drain(..=position);
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    Ok(axum::Json(json!({
        "object": "list",
        "first_id": items.first().map(|item| item["id"].clone()),
        "last_id": items.last().map(|item| item["id"].clone()),
        "has_more": has_more,
        "data": items,
    }))
    .into_response())
}

/// An input row as input items: a user message, or one `function_call_output` per result.
fn input_item(row: &chatd_shared::db::rows::MessageRow) -> Vec<Value> {
    use chatd_shared::domain::{decode_tool_result, ContentPart, Role};
    let parts: Vec<ContentPart> = serde_json::from_value(row.content.clone()).unwrap_or_default();
    match row.role {
        Role::User | Role::Assistant => {
            let (role, text_type) = if row.role == Role::User { ("user", "input_text") } else { ("assistant", "output_text") };
            let content: Vec<Value> = parts
                .iter()
                .filter_map(|part| match part {
                    ContentPart::Text { text } => Some(json!({"type": text_type, "text": text})),
                    ContentPart::File { media_type, file_id, .. } if media_type.starts_with("image/") => {
                        Some(json!({"type": "input_image", "file_id": file_id, "detail": "auto"}))
                    }
                    ContentPart::File { file_id, name, .. } => {
                        Some(json!({"type": "input_file", "file_id": file_id, "filename": name}))
                    }
                    _ => None,
                })
                .collect();
            vec![json!({"type": "message", "id": format!("msg_in_{}", row.id), "role": role,
                "status": "completed", "content": content})]
        }
        Role::Tool => parts
            .into_iter()
            .enumerate()
            .filter_map(|(index, part)| match part {
                ContentPart::ToolResult { tool_call_id, result, .. } => {
                    let output = match decode_tool_result(result) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    Some(json!({"type": "function_call_output", "id": format!("fco_{}_{index}", row.id),
                        "call_id": tool_call_id, "output": output, "status": "completed"}))
                }
                _ => None,
            })
            .collect(),
        Role::System => Vec::new(),
    }
}
