//! Interrupt and queue management.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::auth::CurrentUser;
use crate::cursor::{parse_int_id, parse_uuid};
use crate::dto::{Chat, ChatResponse};
use crate::error::ApiResult;
use crate::routes::json_response;
use crate::routes::messages::outcome_response;
use crate::state::AppState;
use crate::store::send;

/// `POST /chats/{id}/interrupt`: idempotent; 200 with the chat.
pub async fn interrupt(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let mut client = state.pool.get().await?;
    let (chat, transition) = send::interrupt(&mut client, chat_id, user.id).await?;
    if let Some(transition) = transition {
        transition.publish(&client).await;
    }
    Ok(json_response(
        StatusCode::OK,
        ChatResponse {
            chat: Chat::from(&chat),
        },
    ))
}

/// `DELETE /chats/{id}/queue/{qid}`: 204.
pub async fn delete_queued(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((chat_id, queued_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let queued_id = parse_int_id(&queued_id, "queued_id")?;
    let mut client = state.pool.get().await?;
    let transition = send::delete_queued(&mut client, chat_id, user.id, queued_id).await?;
    transition.publish(&client).await;
    Ok(json_response(
        StatusCode::OK,
        serde_json::json!({"deleted": queued_id}),
    ))
}

/// `POST /chats/{id}/queue/{qid}/promote`: 201 `{message}` when it ran at once, 202
/// `{queued_message}` when it moved to the head of the queue.
pub async fn promote_queued(
    State(state): State<AppState>,
    user: CurrentUser,
    Path((chat_id, queued_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let queued_id = parse_int_id(&queued_id, "queued_id")?;
    let mut client = state.pool.get().await?;
    let (transition, outcome) =
        send::promote_queued(&mut client, chat_id, user.id, queued_id).await?;
    transition.publish(&client).await;
    Ok(outcome_response(outcome))
}
