//! `GET /chats/watch`: SSE chat-list events for the caller's chats.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::CurrentUser;
use crate::dto::Chat;
use crate::error::{ApiError, ApiResult};
use crate::openapi::events::{ChatListEvent, ResyncEvent};
use crate::state::AppState;

#[utoipa::path(get, path = "/chats/watch", operation_id = "watchChats", tag = "streams",
    responses((status = 200, description = "A `chat` event whenever one of the caller's chats changes; `resync` when events were dropped for a slow reader (list again).")))]
pub async fn watch(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Response> {
    state.refuse_if_draining()?;
    let draining = state.draining.clone();
    let slot = state
        .streams
        .acquire(user.id, state.config.max_streams_per_user)?;
    let subscription =
        tokio::time::timeout(Duration::from_secs(10), state.hubs.subscribe_owner(user.id))
            .await
            .map_err(|_| ApiError::Unavailable("subscribe to chat-list events".into()))?;
    let access = state.config_events.subscribe();
    let keep_alive = state.config.keep_alive;
    let events = futures::stream::unfold(
        (subscription, slot, Some(draining), access),
        move |(mut subscription, slot, draining, mut access)| {
            let state = state.clone();
            async move {
                // `None` once the drain hint went out: the stream ends.
                let draining = draining?;
                let received = loop {
                    tokio::select! {
                        received = subscription.events.recv() => break received,
                        _ = draining.cancelled() => {
                            // The replica shuts down: the client reconnects to another one.
                            let hint = Event::default()
                                .retry(Duration::from_secs(1))
                                .comment("draining: reconnect");
                            return Some((hint, (subscription, slot, None, access)));
                        }
                        event = access.recv() => {
                            // Boxed: the re-check's database path stays out of every idle stream.
                            if Box::pin(crate::auth::revoked(&state, &user, event)).await {
                                return None; // the token was revoked or the user suspended
                            }
                        }
                    }
                };
                match received {
                    Ok(event) => {
                        let data = ChatListEvent {
                            kind: event.kind,
                            chat: Chat::from(&event.chat),
                        };
                        let data = serde_json::to_string(&data).expect("event payloads serialize");
                        let sse = Event::default().event("chat").data(data);
                        Some((sse, (subscription, slot, Some(draining), access)))
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Tell the client to re-list: events were dropped for this slow reader.
                        let data = serde_json::to_string(&ResyncEvent {}).expect("serializes");
                        let sse = Event::default().event("resync").data(data);
                        Some((sse, (subscription, slot, Some(draining), access)))
                    }
                    Err(RecvError::Closed) => None,
                }
            }
        },
    )
    .map(Ok::<Event, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response())
}
