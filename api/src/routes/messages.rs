//! `GET /chats/{id}/messages` and `POST /chats/{id}/messages`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::store::reads;

use crate::auth::CurrentUser;
use crate::body::StrictJson;
use crate::cursor::{parse_int_id, parse_limit, parse_uuid, query_pairs};
use crate::dto::{
    EditMessageRequest, Message, MessageList, MessageResponse, QueuedMessage, QueuedResponse,
    SendMessageRequest,
};
use crate::error::{ApiError, ApiResult};
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::chats as chat_store;
use crate::store::send::{self, NewMessage, SendOutcome};
use crate::store::{content, edit, files};

#[utoipa::path(get, path = "/chats/{chat_id}/messages", operation_id = "listMessages", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller"),
        ("before_id" = Option<i64>, Query, minimum = 1, description = "`next` of the previous page"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Default 50"),
    ),
    responses((status = 200, description = "Messages, newest first; the queue on the first page", body = MessageList)))]
pub async fn list(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let mut before_id = None;
    let mut limit = None;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "before_id" => before_id = Some(parse_int_id(&value, "before_id")?),
            "limit" => limit = Some(value),
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    let limit = parse_limit(limit.as_deref(), 50, 200)?;
    let client = state.pool.get().await?;
    chat_store::get_chat(&client, chat_id, user.id).await?;
    let mut rows = chat_store::list_messages(&client, chat_id, before_id, limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let queued = if before_id.is_none() {
        Some(
            reads::queue(&client, chat_id)
                .await?
                .iter()
                .map(QueuedMessage::from)
                .collect(),
        )
    } else {
        None
    };
    let next = match rows.last() {
        Some(last) if has_more => Some(last.id.to_string()),
        _ => None,
    };
    Ok(json_response(
        StatusCode::OK,
        MessageList {
            items: rows.iter().map(Message::from).collect(),
            has_more,
            next,
            queued,
        },
    ))
}

#[utoipa::path(post, path = "/chats/{chat_id}/messages", operation_id = "sendMessage", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")), request_body = SendMessageRequest,
    responses(
        (status = 201, description = "Sent: the chat is now `pending`", body = MessageResponse),
        (status = 202, description = "Queued behind the running turn", body = QueuedResponse),
    ))]
pub async fn send(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
    StrictJson(request): StrictJson<SendMessageRequest>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let mut content = content::user_content(request.content, "content")?;
    let mut client = state.pool.get().await?;
    crate::routes::limits::ensure_within_limit(&state, &client, user.id).await?;
    let attachments = files::check_message(
        &*client,
        user.id,
        &mut content,
        "content",
        request.model_config_id,
        Some(chat_id),
    )
    .await?;
    let (transition, outcome) = send::send_message(
        &mut client,
        &state.sender,
        NewMessage {
            chat_id,
            owner_id: user.id,
            content,
            busy_behavior: request.busy_behavior,
            model_config_id: request.model_config_id,
        },
        state.config.max_queue_len,
    )
    .await?;
    files::link(&*client, chat_id, &attachments.file_ids).await?;
    transition.publish(&state.publisher, &client).await;
    Ok(outcome_response(outcome))
}

#[utoipa::path(patch, path = "/chats/{chat_id}/messages/{message_id}", operation_id = "editMessage", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller"),
        ("message_id" = i64, Path, minimum = 1, description = "A user message of the chat (another role: 400)")),
    request_body = EditMessageRequest,
    responses((status = 200, description = "Replaced: the message and everything after it are gone from the history (spend keeps them), the queue is cleared, a running turn is stopped, and the chat is `pending` again with the replacement as its last message. Streams get `history_reset`. An archived chat: 409.", body = MessageResponse)))]
pub async fn edit(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((chat_id, message_id)): Path<(String, String)>,
    StrictJson(request): StrictJson<EditMessageRequest>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let message_id = parse_int_id(&message_id, "message_id")?;
    let mut content = content::user_content(request.content, "content")?;
    let mut client = state.pool.get().await?;
    crate::routes::limits::ensure_within_limit(&state, &client, user.id).await?;
    let attachments = files::check_message(
        &*client,
        user.id,
        &mut content,
        "content",
        None,
        Some(chat_id),
    )
    .await?;
    let (transition, message) =
        edit::edit_message(&mut client, chat_id, user.id, message_id, &content).await?;
    files::link(&*client, chat_id, &attachments.file_ids).await?;
    transition.publish(&state.publisher, &client).await;
    Ok(json_response(
        StatusCode::OK,
        MessageResponse {
            message: Message::from(&message),
        },
    ))
}

/// 201 `{message}` or 202 `{queued_message}`.
pub(crate) fn outcome_response(outcome: SendOutcome) -> Response {
    match outcome {
        SendOutcome::Sent(row) => json_response(
            StatusCode::CREATED,
            MessageResponse {
                message: Message::from(&row),
            },
        ),
        SendOutcome::Queued(row) => json_response(
            StatusCode::ACCEPTED,
            QueuedResponse {
                queued_message: QueuedMessage::from(&row),
            },
        ),
    }
}
