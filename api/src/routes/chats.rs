//! `POST /chats`, `GET /chats`, `GET /chats/{id}`, `PATCH /chats/{id}`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::auth::CurrentUser;
use crate::body::{OptionalJson, StrictJson};
use crate::cursor::{decode_chat_cursor, encode_chat_cursor, parse_limit, parse_uuid, query_pairs};
use crate::dto::{
    Chat, ChatDetail, ChatList, ChatResponse, CreateChatRequest, CreateChatResponse,
    MarkReadRequest, Message, PatchChatRequest,
};
use crate::error::{ApiError, ApiResult};
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::chats::{self as store, ChatFilter, ChatPatch, NewChat};
use crate::store::{content, files, tree};
use chatd_shared::pubsub::OwnerEventKind;

#[utoipa::path(post, path = "/chats", operation_id = "createChat", tag = "chats",
    request_body = CreateChatRequest,
    responses((status = 201, description = "Created; `pending` with a message, else `waiting`", body = CreateChatResponse)))]
pub async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    StrictJson(request): StrictJson<CreateChatRequest>,
) -> ApiResult<Response> {
    let message = request
        .message
        .map(|message| content::user_content(message, "message"))
        .transpose()?;
    if let Some(prompt) = &request.system_prompt {
        content::plain_field(prompt, "system_prompt", 64 * 1024)?;
    }
    let title = request.title.unwrap_or_default();
    content::plain_field(&title, "title", 200)?;
    let labels = match &request.labels {
        Some(labels) => content::labels(labels)?,
        None => Value::Object(Default::default()),
    };
    let dynamic_tools =
        content::dynamic_tools(&request.dynamic_tools.unwrap_or_default(), "dynamic_tools")?;
    let mut client = state.pool.get().await?;
    let mut message = message;
    let mut attachments = files::Attachments::default();
    if let Some(message) = &mut message {
        crate::routes::limits::ensure_within_limit(&state, &client, user.id).await?;
        attachments = files::check_message(
            &*client,
            user.id,
            message,
            "message",
            request.model_config_id,
            None,
        )
        .await?;
    }
    let (transition, first_message) = store::create_chat(
        &mut client,
        NewChat {
            owner_id: user.id,
            title,
            message,
            model_config_id: request.model_config_id,
            system_prompt: request.system_prompt,
            labels,
            dynamic_tools,
            parent_chat_id: request.parent_chat_id,
            mcp_server_ids: request.mcp_server_ids,
        },
    )
    .await?;
    files::link(&*client, transition.chat.id, &attachments.file_ids).await?;
    transition.publish(&state.publisher, &client).await;
    Ok(json_response(
        StatusCode::CREATED,
        CreateChatResponse {
            chat: Chat::from(&transition.chat),
            message: first_message.as_ref().map(Message::from),
        },
    ))
}

#[utoipa::path(get, path = "/chats", operation_id = "listChats", tag = "chats",
    params(
        ("archived" = Option<bool>, Query, description = "Archived chats instead of the others (default false)"),
        ("unread" = Option<bool>, Query, description = "Only chats with (true) or without (false) a reply newer than the read marker"),
        ("q" = Option<String>, Query, max_length = 200, pattern = r"^[^\u0000]*$",
            description = "Case-insensitive substring of the title"),
        ("label" = Option<Vec<String>>, Query, explode, pattern = r"^[^\u0000:]*:[^\u0000]*$",
            description = "`key:value`; repeat to require several labels"),
        ("after" = Option<String>, Query, pattern = r"^[0-9]{1,9}_[0-9]{1,16}_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
            description = "`next` of the previous page"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Default 50"),
    ),
    responses((status = 200, description = "The caller's root chats: pinned ones first by `pin_order`, then the others by `updated_at` descending (ties by id). `updated_at` moves with activity (messages, status, title, labels), not with reading or pin moves; a chat that moves while you page may show on two pages or none.", body = ChatList)))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let mut archived = false;
    let mut unread = None;
    let mut title = None;
    let mut labels = serde_json::Map::new();
    let mut after = None;
    let mut limit = None;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "archived" => {
                archived = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::field("archived", "archived: true or false")),
                }
            }
            "unread" => {
                unread = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::field("unread", "unread: true or false")),
                })
            }
            "q" => {
                content::plain_field(&value, "q", 200)?;
                title = Some(value);
            }
            "label" => {
                let (label_key, label_value) = value
                    .split_once(':')
                    .ok_or_else(|| ApiError::field("label", "label: expected key:value"))?;
                labels.insert(
                    label_key.to_string(),
                    Value::String(label_value.to_string()),
                );
            }
            "after" => after = Some(decode_chat_cursor(&value)?),
            "limit" => limit = Some(value),
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    let limit = parse_limit(limit.as_deref(), 50, 100)?;
    let client = state.pool.get().await?;
    let filter = ChatFilter {
        archived,
        labels: Value::Object(labels),
        title,
        unread,
    };
    let mut rows = store::list_chats(&client, user.id, &filter, after.as_ref(), limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = match rows.last() {
        Some(last) if has_more => {
            Some(encode_chat_cursor(last.pin_order, last.updated_at, last.id))
        }
        _ => None,
    };
    Ok(json_response(
        StatusCode::OK,
        ChatList {
            items: rows.iter().map(Chat::from).collect(),
            has_more,
            next,
        },
    ))
}

#[utoipa::path(get, path = "/chats/{chat_id}", operation_id = "getChat", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")),
    responses((status = 200, description = "The chat and its direct sub-chats", body = ChatDetail)))]
pub async fn get(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let client = state.pool.get().await?;
    let chat = store::get_chat(&client, chat_id, user.id).await?;
    let children = store::children(&client, chat_id).await?;
    Ok(json_response(
        StatusCode::OK,
        ChatDetail {
            chat: Chat::from(&chat),
            children,
        },
    ))
}

#[utoipa::path(patch, path = "/chats/{chat_id}", operation_id = "patchChat", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")), request_body = PatchChatRequest,
    responses((status = 200, description = "The updated chat", body = ChatResponse)))]
pub async fn patch(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
    StrictJson(request): StrictJson<PatchChatRequest>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    if let Some(title) = &request.title {
        content::plain_field(title, "title", 200)?;
    }
    let labels = request.labels.as_ref().map(content::labels).transpose()?;
    if request.pin_order.is_some_and(|pin| pin.0 < 0) {
        return Err(ApiError::field(
            "pin_order",
            "pin_order: 0 (not pinned) or a position from 1",
        ));
    }
    let mut client = state.pool.get().await?;
    let transition = store::patch_chat(
        &mut client,
        chat_id,
        user.id,
        ChatPatch {
            title: request.title,
            labels,
            archived: request.archived,
            pin_order: request.pin_order.map(|pin| pin.0),
        },
    )
    .await?;
    transition.publish(&state.publisher, &client).await;
    Ok(json_response(
        StatusCode::OK,
        ChatResponse {
            chat: Chat::from(&transition.chat),
        },
    ))
}

#[utoipa::path(delete, path = "/chats/{chat_id}", operation_id = "deleteChat", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")),
    responses((status = 204, description = "Deleted with every descendant: gone from every route (404 after); their spend stays in usage totals. 409 while any chat of the tree is busy.")))]
pub async fn delete(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let mut client = state.pool.get().await?;
    let transition = store::delete_chat(&mut client, chat_id, user.id).await?;
    transition.publish(&state.publisher, &client).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/chats/{chat_id}/read", operation_id = "markChatRead", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")),
    request_body(content = Option<MarkReadRequest>, description = "Optional; without it the marker moves to the newest message"),
    responses((status = 200, description = "The chat with its `has_unread` after the move", body = ChatResponse)))]
pub async fn mark_read(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
    OptionalJson(request): OptionalJson<MarkReadRequest>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let message_id = request
        .and_then(|request| request.message_id)
        .map(|id| id.0);
    if message_id.is_some_and(|id| id < 1) {
        return Err(ApiError::field("message_id", "message_id: not a valid id"));
    }
    let mut client = state.pool.get().await?;
    let chat = tree::mark_read(&mut client, chat_id, user.id, message_id).await?;
    let change =
        chatd_shared::pubsub::ChatChange::of_row(&chat).with_owner_event(OwnerEventKind::Read);
    state.publisher.publish(&client, change.notices()).await;
    Ok(json_response(
        StatusCode::OK,
        ChatResponse {
            chat: Chat::from(&chat),
        },
    ))
}
