//! Interrupt and queue management.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::auth::CurrentUser;
use crate::cursor::{parse_int_id, parse_uuid};
use crate::dto::{Chat, ChatResponse, DeletedResponse, MessageResponse, QueuedResponse};
use crate::error::ApiResult;
use crate::routes::json_response;
use crate::routes::messages::outcome_response;
use crate::state::AppState;
use crate::store::send;

/// `POST /chats/{id}/interrupt`: idempotent; 200 with the chat. Its busy sub-agents (any
/// depth) are interrupted with it.
#[utoipa::path(post, path = "/chats/{chat_id}/interrupt", operation_id = "interruptChat", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")),
    responses((status = 200, description = "The chat (`interrupting` while a turn stops); its busy sub-agents, at any depth, are interrupted too", body = ChatResponse)))]
pub async fn interrupt(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let mut client = state.pool.get().await?;
    let (chat, transitions) = send::interrupt(&mut client, chat_id, user.id).await?;
    for transition in transitions {
        transition.publish(&state.publisher, &client).await;
    }
    Ok(json_response(
        StatusCode::OK,
        ChatResponse {
            chat: Chat::from(&chat),
        },
    ))
}

/// `DELETE /chats/{id}/queue/{qid}`: 204.
#[utoipa::path(delete, path = "/chats/{chat_id}/queue/{queued_id}", operation_id = "deleteQueuedMessage", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller"), ("queued_id" = i64, Path, minimum = 1, description = "A queued message of the chat")),
    responses((status = 200, description = "Removed from the queue", body = DeletedResponse)))]
pub async fn delete_queued(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((chat_id, queued_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let queued_id = parse_int_id(&queued_id, "queued_id")?;
    let mut client = state.pool.get().await?;
    let transition = send::delete_queued(&mut client, chat_id, user.id, queued_id).await?;
    transition.publish(&state.publisher, &client).await;
    Ok(json_response(
        StatusCode::OK,
        DeletedResponse { deleted: queued_id },
    ))
}

/// `POST /chats/{id}/queue/{qid}/promote`: 201 `{message}` when it ran at once, 202
/// `{queued_message}` when it moved to the head of the queue.
#[utoipa::path(post, path = "/chats/{chat_id}/queue/{queued_id}/promote", operation_id = "promoteQueuedMessage", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller"), ("queued_id" = i64, Path, minimum = 1, description = "A queued message of the chat")),
    responses(
        (status = 201, description = "Sent at once (the chat was idle)", body = MessageResponse),
        (status = 202, description = "Moved to the head of the queue", body = QueuedResponse),
    ))]
pub async fn promote_queued(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((chat_id, queued_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let queued_id = parse_int_id(&queued_id, "queued_id")?;
    let mut client = state.pool.get().await?;
    crate::routes::limits::ensure_within_limit(&state, &client, user.id).await?;
    let (transition, outcome) =
        send::promote_queued(&mut client, chat_id, user.id, queued_id).await?;
    transition.publish(&state.publisher, &client).await;
    Ok(outcome_response(outcome))
}
