//! `GET /chats/watch`: SSE chat-list events for the caller's chats.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::CurrentUser;
use crate::dto::Chat;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub async fn watch(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Response> {
    let slot = state
        .streams
        .acquire(user.id, state.config.max_streams_per_user)?;
    let subscription =
        tokio::time::timeout(Duration::from_secs(10), state.hubs.subscribe_owner(user.id))
            .await
            .map_err(|_| ApiError::Unavailable("subscribe to chat-list events".into()))?;
    let events = futures::stream::unfold(
        (subscription, slot),
        |(mut subscription, slot)| async move {
            match subscription.events.recv().await {
                Ok(event) => {
                    let data = json!({"kind": event.kind, "chat": Chat::from(&event.chat)});
                    let sse = Event::default().event("chat").data(data.to_string());
                    Some((sse, (subscription, slot)))
                }
                Err(RecvError::Lagged(_)) => {
                    // Tell the client to re-list: events were dropped for this slow reader.
                    let sse = Event::default().event("resync").data("{}");
                    Some((sse, (subscription, slot)))
                }
                Err(RecvError::Closed) => None,
            }
        },
    )
    .map(Ok::<Event, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.config.keep_alive))
        .into_response())
}
