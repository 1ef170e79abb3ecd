//! Following a response live: its event stream (`stream: true`, `GET …?stream=true`) and the
//! wait of a blocking `POST /v1/responses`.
//!
//! Subscribe to the chat's hub first, then read: the chat's status first, then the response's
//! rows and the resume log's frames after what was rendered (a turn's last rows commit with its
//! final status, so rows read after a final status are complete), merged in stream order.
//! Frames that continue the rendered position are taken from the hub without a read; anything
//! else the hub says makes the stream read again.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::events::EventRenderer;
use super::render;
use super::store::{self, ResponseRow};
use crate::error::{ApiError, ApiResult};
use crate::hub::{ChatSubscription, HubEvent};
use crate::state::AppState;

/// How long a follower waits without hearing from the hub before it reads anyway.
const RECHECK: Duration = Duration::from_secs(2);

async fn subscribe(state: &AppState, response: &ResponseRow) -> ApiResult<ChatSubscription> {
    tokio::time::timeout(
        Duration::from_secs(10),
        state.hubs.subscribe_chat(response.chat_id),
    )
    .await
    .map_err(|_| ApiError::Unavailable("subscribe to the response's chat".into()))
}

/// The SSE response replaying the response's events after `after` (−1: all), then live.
pub async fn sse(
    state: AppState,
    user_id: uuid::Uuid,
    response: ResponseRow,
    after: i64,
) -> ApiResult<Response> {
    use futures::StreamExt;
    let keep_alive = state.config.keep_alive;
    let batches = follow(state, user_id, response, after).await?;
    let events = batches.flat_map(|batch| {
        futures::stream::iter(
            batch
                .into_iter()
                .filter(|event| !super::events::is_marker(event))
                .map(to_sse),
        )
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response())
}

/// The response's events after `after` (−1: all), in batches, until it ends (or the replica
/// drains: the client resumes elsewhere with `starting_after`).
pub async fn follow(
    state: AppState,
    user_id: uuid::Uuid,
    response: ResponseRow,
    after: i64,
) -> ApiResult<impl futures::Stream<Item = Vec<Value>> + Send> {
    use futures::StreamExt;
    state.refuse_if_draining()?;
    let slot = state
        .streams
        .acquire(user_id, state.config.max_streams_per_user)?;
    let subscription = subscribe(&state, &response).await?;
    let client_tools = {
        let client = state.pool.get().await?;
        store::client_tool_names(&*client, response.chat_id).await?
    };
    let mut renderer = EventRenderer::new(response.clone(), client_tools, after);
    let status = if response.background {
        "queued"
    } else {
        "in_progress"
    };
    renderer.start(render::object(&response, status, None, Vec::new(), &[]));
    let mut follower = Follower {
        state,
        response,
        subscription,
        renderer,
        done: false,
        _slot: slot,
    };
    follower.sync().await?;
    if follower.renderer.finished() {
        follower.done = true;
    }
    let first = follower.renderer.take();
    let live = futures::stream::unfold(follower, |mut follower| async move {
        if follower.done {
            return None;
        }
        let batch = follower.next_batch().await;
        Some((batch, follower))
    });
    Ok(futures::stream::iter(vec![first]).chain(live))
}

fn to_sse(event: Value) -> Result<Event, Infallible> {
    let kind = event["type"].as_str().unwrap_or("message").to_string();
    Ok(Event::default().event(kind).data(event.to_string()))
}

/// Waits until the response ends and returns it as stored.
pub async fn wait_final(state: &AppState, response: &ResponseRow) -> ApiResult<Value> {
    let mut subscription = subscribe(state, response).await?;
    let client_tools = {
        let client = state.pool.get().await?;
        store::client_tool_names(&*client, response.chat_id).await?
    };
    loop {
        {
            let client = state.pool.get().await?;
            let snapshot = store::snapshot(&client, response)
                .await?
                .ok_or(ApiError::NotFound("response"))?;
            let (status, _) = render::status(response, &snapshot.chat, snapshot.superseded);
            if render::is_final(status) {
                let mut response = response.clone();
                store::refresh(&*client, &mut response).await?;
                return Ok(render::from_snapshot(&response, &snapshot, &client_tools));
            }
        }
        tokio::select! {
            received = subscription.events.recv() => {
                if let Err(RecvError::Closed) = received {
                    return Err(ApiError::Unavailable("the response's chat stream closed".into()));
                }
                while subscription.events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(RECHECK) => {}
            _ = state.draining.cancelled() => {
                return Err(ApiError::Unavailable("this replica is shutting down; GET the response to follow it".into()));
            }
        }
    }
}

struct Follower {
    state: AppState,
    response: ResponseRow,
    subscription: ChatSubscription,
    renderer: EventRenderer,
    done: bool,
    _slot: crate::state::StreamSlot,
}

impl Follower {
    async fn next_batch(&mut self) -> Vec<Value> {
        loop {
            let received = tokio::select! {
                received = self.subscription.events.recv() => Some(received),
                _ = tokio::time::sleep(RECHECK) => None,
                _ = self.state.draining.cancelled() => {
                    // The client resumes elsewhere with `starting_after`.
                    self.done = true;
                    return Vec::new();
                }
            };
            let mut events = Vec::new();
            let mut must_read = received.is_none();
            match received {
                Some(Ok(event)) => events.push(event),
                Some(Err(RecvError::Lagged(_))) => must_read = true,
                Some(Err(RecvError::Closed)) => {
                    self.done = true;
                    return Vec::new();
                }
                None => {}
            }
            loop {
                match self.subscription.events.try_recv() {
                    Ok(event) => events.push(event),
                    Err(TryRecvError::Lagged(_)) => must_read = true,
                    Err(_) => break,
                }
            }
            for event in &events {
                if !self.relay_inline(event) {
                    must_read = true;
                }
            }
            if must_read {
                if let Err(error) = Box::pin(self.sync()).await {
                    tracing::warn!(response_id = %self.response.id, error = ?error, "follow a response");
                    self.done = true;
                }
            }
            let batch = self.renderer.take();
            if self.renderer.finished() {
                self.done = true;
            }
            if !batch.is_empty() || self.done {
                return batch;
            }
        }
    }

    /// Relays a hub event that needs no read (frames continuing the rendered position).
    /// `false`: read the database.
    fn relay_inline(&mut self, event: &Arc<HubEvent>) -> bool {
        match &**event {
            HubEvent::Frame {
                attempt, events, ..
            } => {
                let (current_attempt, current_seq) = self.renderer.frame_position();
                let Some(first) = events.first() else {
                    return true;
                };
                let continues = (*attempt == current_attempt && first.seq <= current_seq + 1)
                    || (*attempt > current_attempt && first.seq == 1);
                if !continues {
                    return false;
                }
                for event in events {
                    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    self.renderer.frame(*attempt, event.seq, &event.name, &data);
                }
                true
            }
            HubEvent::Queue(_) | HubEvent::Title(_) | HubEvent::ActionRequired { .. } => true,
            _ => false,
        }
    }

    /// Reads what is new and renders it; renders the end when the response has ended.
    async fn sync(&mut self) -> ApiResult<()> {
        let client = self.state.pool.get().await?;
        let Some(chat) = crate::store::reads::chat_for_owner(
            &client,
            self.response.chat_id,
            self.response.owner_id,
        )
        .await?
        else {
            self.done = true; // deleted
            return Ok(());
        };
        let boundary = store::end_boundary(&*client, &self.response).await?;
        let rows = store::output_rows(
            &*client,
            &self.response,
            self.renderer.last_message_id(),
            boundary,
        )
        .await?;
        let mut frames = Vec::new();
        if boundary.is_none() {
            let (attempt, seq) = self.renderer.frame_position();
            let first = attempt.max(self.response.start_attempt + 1);
            for each in first..=chat.attempt {
                let after = if each == attempt { seq } else { 0 };
                for frame in
                    crate::store::reads::frames_after(&client, self.response.chat_id, each, after)
                        .await?
                {
                    let (frame_attempt, prepared, _) = crate::hub::chat_hub::prepare_rows(frame);
                    for event in prepared {
                        frames.push((frame_attempt, event));
                    }
                }
            }
        }
        // In stream order: a row follows the previews up to its position.
        let mut frames = frames.into_iter().peekable();
        for row in &rows {
            let position = row.stream_position().unwrap_or((i32::MAX, i64::MAX));
            while let Some((attempt, event)) =
                frames.next_if(|(attempt, event)| (*attempt, event.seq) <= position)
            {
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                self.renderer.frame(attempt, event.seq, &event.name, &data);
            }
            self.renderer.message(row);
        }
        for (attempt, event) in frames {
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            self.renderer.frame(attempt, event.seq, &event.name, &data);
        }
        let (status, _) = render::status(&self.response, &chat, boundary.is_some());
        if render::is_final(status) {
            store::refresh(&*client, &mut self.response).await?;
            let client_tools = store::client_tool_names(&*client, self.response.chat_id).await?;
            let snapshot = store::Snapshot {
                chat,
                output: store::output_rows(&*client, &self.response, 0, boundary).await?,
                superseded: boundary.is_some(),
            };
            self.renderer.finish(render::from_snapshot(
                &self.response,
                &snapshot,
                &client_tools,
            ));
        }
        Ok(())
    }
}
