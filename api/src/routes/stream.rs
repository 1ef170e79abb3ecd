//! `GET /chats/{id}/stream`: the resumable SSE stream of one chat.
//!
//! Subscribe first, then read the snapshot (status, messages after the cursor, queue, the
//! current attempt's frames after the cursor's seq), then relay live hub events, dropping
//! what the snapshot already covered. Every event carries an `id:` (the stream cursor), so a
//! reconnect with `Last-Event-ID` (or `?cursor=`) on any replica continues without gap or
//! duplicate.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::store::reads;
use chatd_shared::domain::ChatStatus;

use crate::auth::CurrentUser;
use crate::cursor::{parse_uuid, query_pairs, StreamCursor};
use crate::dto::{Message, QueuedMessage};
use crate::error::{ApiError, ApiResult};
use crate::hub::chat_hub::prepare_rows;
use crate::hub::{ChatSubscription, HubEvent, PreparedEvent};
use crate::openapi::events::{
    ActionRequiredEvent, AttemptResetEvent, HistoryResetEvent, QueueEvent, StatusEvent, TitleEvent,
};
use crate::state::AppState;

mod snapshot;

#[utoipa::path(get, path = "/chats/{chat_id}/stream", operation_id = "streamChat", tag = "streams",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller"),
        ("cursor" = Option<String>, Query, pattern = r"^[0-9]{1,18}-[0-9]{1,9}-[0-9]{1,18}$",
            description = "Resume after this event id (`<message_id>-<attempt>-<seq>`)"),
        ("Last-Event-ID" = Option<String>, Header, pattern = r"^([0-9]{1,18}-[0-9]{1,9}-[0-9]{1,18})?$",
            description = "As `cursor`; wins over it. Empty: no cursor (as EventSource sends after an event without id)"),
    ),
    responses((status = 200, description = "A snapshot (the status — after the messages when the turn has ended, as live — messages after the cursor with the current attempt's parts, the queue), then live events. Every event's `id` is a cursor: reconnect with `Last-Event-ID` on any replica, without gap or duplicate. Comments keep the connection alive; a `retry:` hint without data asks the client to reconnect.")))]
pub async fn stream(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let mut cursor = None;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "cursor" => cursor = Some(StreamCursor::parse(&value, "cursor")?),
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    // An empty Last-Event-ID is "no id" (the SSE specification's reset), not an error.
    if let Some(last_event_id) = headers
        .get("last-event-id")
        .filter(|value| !value.is_empty())
    {
        let text = last_event_id
            .to_str()
            .map_err(|_| ApiError::field("Last-Event-ID", "Last-Event-ID: not ASCII"))?;
        cursor = Some(StreamCursor::parse(text, "Last-Event-ID")?);
    }
    state.refuse_if_draining()?;
    let slot = state
        .streams
        .acquire(user.id, state.config.max_streams_per_user)?;
    // Ownership first: a hub costs a task and a LISTEN, and must not be created for another
    // user's chat or a random id (the answer is the same 404 as for a missing chat).
    {
        let client = state.pool.get().await?;
        if reads::chat_for_owner(&client, chat_id, user.id)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound("chat"));
        }
    }
    // Subscribe first (returns once LISTENing), then snapshot.
    let subscription =
        tokio::time::timeout(Duration::from_secs(10), state.hubs.subscribe_chat(chat_id))
            .await
            .map_err(|_| ApiError::Unavailable("subscribe to the chat".into()))?;
    let mut session = Session {
        state: state.clone(),
        chat_id,
        owner_id: user.id,
        user,
        access: state.config_events.subscribe(),
        subscription,
        _slot: slot,
        cursor: cursor.unwrap_or_default(),
        version: 0,
        action_version: 0,
        turn_finished: false,
        first: true,
        closing: false,
    };
    let snapshot = session
        .snapshot()
        .await?
        .ok_or(ApiError::NotFound("chat"))?;
    let live = futures::stream::unfold(session, |mut session| async move {
        session.next_batch().await.map(|batch| (batch, session))
    });
    let events = futures::stream::iter(vec![snapshot])
        .chain(live)
        .flat_map(|batch| futures::stream::iter(batch.into_iter().map(Ok::<Event, Infallible>)));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(state.config.keep_alive))
        .into_response())
}

/// One client connection's position and filters.
struct Session {
    state: AppState,
    chat_id: Uuid,
    owner_id: Uuid,
    /// The caller, rechecked when their access changes (`access`).
    user: CurrentUser,
    access: tokio::sync::broadcast::Receiver<crate::state::ConfigEvent>,
    subscription: ChatSubscription,
    /// This stream's place in the user's per-replica stream cap.
    _slot: crate::state::StreamSlot,
    cursor: StreamCursor,
    /// Newest chat version sent.
    version: i64,
    /// The version whose `action_required` was sent (never twice for one status).
    action_version: i64,
    /// The cursor's attempt ended normally (its previews were superseded by messages), so a
    /// new attempt needs no `attempt_reset`.
    turn_finished: bool,
    first: bool,
    /// A retry hint was sent: end the stream so the client reconnects with its cursor.
    closing: bool,
}

impl Session {
    /// The next batch of SSE events; `None` ends the stream.
    async fn next_batch(&mut self) -> Option<Vec<Event>> {
        if self.closing {
            return None;
        }
        loop {
            let received = tokio::select! {
                received = self.subscription.events.recv() => received,
                _ = self.state.draining.cancelled() => {
                    // The replica shuts down: the client reconnects elsewhere with its cursor.
                    return Some(vec![self.retry_hint()]);
                }
                event = self.access.recv() => {
                    // Boxed, like `translate`: the re-check's database path stays out of every idle
                    // stream's state.
                    if Box::pin(crate::auth::revoked(&self.state, &self.user, event)).await {
                        return None; // the token was revoked or the user suspended
                    }
                    continue;
                }
            };
            match received {
                Ok(event) => {
                    // Boxed: keeps the database paths out of every idle stream's state.
                    let batch = Box::pin(self.translate(event)).await;
                    if !batch.is_empty() {
                        return Some(batch);
                    }
                    if self.closing {
                        return None; // the chat was deleted
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Too slow for the hub's buffer: catch up from the database instead.
                    return match Box::pin(self.snapshot()).await {
                        Ok(Some(batch)) => Some(batch),
                        Ok(None) => None,
                        Err(_) => Some(vec![self.retry_hint()]),
                    };
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    async fn translate(&mut self, event: Arc<HubEvent>) -> Vec<Event> {
        let mut out = Vec::new();
        match &*event {
            HubEvent::Status {
                status,
                version,
                attempt,
                last_error,
            } => {
                if *version > self.version {
                    if *attempt == self.cursor.attempt
                        && matches!(
                            status,
                            ChatStatus::Waiting
                                | ChatStatus::Error
                                | ChatStatus::RequiresAction
                                | ChatStatus::AwaitingAgents
                        )
                    {
                        self.turn_finished = true;
                    }
                    out.push(self.status_event(*status, *version, last_error.clone()));
                    // `action_required` follows from the hub (read once per replica).
                }
            }
            HubEvent::ActionRequired { version, data } => {
                if *version == self.version && *version > self.action_version {
                    self.action_version = *version;
                    out.push(
                        Event::default()
                            .event("action_required")
                            .id(self.cursor.render())
                            .data(&**data),
                    );
                }
            }
            HubEvent::Messages(messages) => {
                for message in messages {
                    if message.id > self.cursor.message_id {
                        self.cursor.message_id = message.id;
                        if message.attempt == Some(self.cursor.attempt) {
                            self.turn_finished = true; // its previews are superseded
                        }
                        out.push(self.event("message", &Message::from(message)));
                    }
                }
            }
            HubEvent::Queue(queue) => {
                let queued: Vec<QueuedMessage> = queue.iter().map(QueuedMessage::from).collect();
                out.push(self.event("queue", &QueueEvent { queued }));
            }
            HubEvent::HistoryReset => {
                self.start_over();
                out.push(self.event("history_reset", &HistoryResetEvent {}));
                match Box::pin(self.snapshot()).await {
                    Ok(Some(batch)) => out.extend(batch),
                    Ok(None) => self.closing = true,
                    Err(_) => out.push(self.retry_hint()),
                }
            }
            HubEvent::Gone => self.closing = true,
            HubEvent::Title(title) => out.push(self.event(
                "title",
                &TitleEvent {
                    title: title.clone(),
                },
            )),
            HubEvent::Frame {
                attempt,
                events,
                created_at_us,
            } => {
                if *attempt < self.cursor.attempt {
                    return out;
                }
                if *attempt > self.cursor.attempt {
                    self.switch_attempt(*attempt, &mut out);
                }
                let first_new = events.iter().find(|event| event.seq > self.cursor.seq);
                if let Some(first_new) = first_new {
                    if first_new.seq > self.cursor.seq + 1 {
                        // This subscriber missed frames (it joined mid-burst): read them.
                        if let Err(error) = Box::pin(self.fill_gap(&mut out)).await {
                            tracing::warn!(chat_id = %self.chat_id, error = ?error, "stream gap fill");
                            out.push(self.retry_hint());
                            return out;
                        }
                    }
                }
                self.relay_events(*attempt, events, *created_at_us, &mut out);
            }
        }
        out
    }

    async fn fill_gap(&mut self, out: &mut Vec<Event>) -> ApiResult<()> {
        let client = self.state.pool.get().await?;
        let frames =
            reads::frames_after(&client, self.chat_id, self.cursor.attempt, self.cursor.seq)
                .await?;
        drop(client);
        for frame in frames {
            let (attempt, events, created_at_us) = prepare_rows(frame);
            self.relay_events(attempt, &events, created_at_us, out);
        }
        Ok(())
    }

    /// Relays one event of any attempt: older than the cursor's is dropped, a newer one
    /// switches the cursor first.
    fn relay_any(
        &mut self,
        attempt: i32,
        event: PreparedEvent,
        created_at_us: i64,
        out: &mut Vec<Event>,
    ) {
        if attempt < self.cursor.attempt {
            return;
        }
        if attempt > self.cursor.attempt {
            self.switch_attempt(attempt, out);
        }
        self.relay_events(attempt, std::slice::from_ref(&event), created_at_us, out);
    }

    /// A new attempt began: previews of the old one are void unless its turn finished.
    fn switch_attempt(&mut self, attempt: i32, out: &mut Vec<Event>) {
        let had_previews = self.cursor.seq > 0 && !self.turn_finished;
        self.cursor.attempt = attempt;
        self.cursor.seq = 0;
        self.turn_finished = false;
        if had_previews {
            out.push(self.event("attempt_reset", &AttemptResetEvent { attempt }));
        }
    }

    /// Appends the events that continue the cursor (seq = cursor.seq + 1, …). Callers fill
    /// gaps from the resume log first, so a seq further ahead is a hole the log cannot fill
    /// (e.g. the UNLOGGED log was truncated by a PostgreSQL crash): the client is told
    /// `attempt_reset` for the same attempt (drop this attempt's previews; the final `message`
    /// is authoritative) and the stream goes on from there instead of freezing (I9).
    fn relay_events(
        &mut self,
        attempt: i32,
        events: &[PreparedEvent],
        created_at_us: i64,
        out: &mut Vec<Event>,
    ) {
        if attempt != self.cursor.attempt {
            return;
        }
        let mut relayed = false;
        for event in events {
            if event.seq <= self.cursor.seq {
                continue;
            }
            if event.seq > self.cursor.seq + 1 {
                tracing::warn!(chat_id = %self.chat_id, attempt, from = self.cursor.seq + 1,
                    to = event.seq - 1, "hole in the resume log; resetting the attempt's previews");
                metrics::counter!("chatd_stream_holes_total").increment(1);
                self.cursor.seq = event.seq - 1;
                out.push(self.event("attempt_reset", &AttemptResetEvent { attempt }));
            }
            self.cursor.seq = event.seq;
            self.turn_finished = false;
            relayed = true;
            out.push(
                Event::default()
                    .event(&*event.name)
                    .id(self.cursor.render())
                    .data(&*event.data),
            );
        }
        if relayed {
            let now_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_micros() as i64)
                .unwrap_or(0);
            metrics::histogram!("chatd_relay_latency_seconds")
                .record((now_us - created_at_us).max(0) as f64 / 1e6);
        }
    }

    /// Forgets everything sent (after `history_reset`): the next snapshot is a new
    /// connection's.
    fn start_over(&mut self) {
        self.cursor = StreamCursor::default();
        self.version = 0;
        self.action_version = 0;
        self.turn_finished = false;
        self.first = true;
    }

    /// `action_required {tool_calls}`: the dynamic tool calls waiting for the client.
    async fn action_required(&self) -> ApiResult<Event> {
        let client = self.state.pool.get().await?;
        let pending = chatd_shared::db::tool_calls::load_pending(&*client, self.chat_id).await?;
        Ok(self.event(
            "action_required",
            &ActionRequiredEvent {
                tool_calls: pending,
            },
        ))
    }

    fn status_event(
        &mut self,
        status: ChatStatus,
        version: i64,
        last_error: Option<serde_json::Value>,
    ) -> Event {
        self.version = version;
        self.event(
            "status",
            &StatusEvent {
                status,
                version,
                last_error,
            },
        )
    }

    fn event(&self, name: &str, data: &impl serde::Serialize) -> Event {
        let data = serde_json::to_string(data).expect("event payloads serialize");
        Event::default()
            .event(name)
            .id(self.cursor.render())
            .data(data)
    }

    /// Tells the client to reconnect (with its Last-Event-ID) when this replica cannot keep
    /// its stream gap-free right now.
    fn retry_hint(&mut self) -> Event {
        self.closing = true;
        Event::default()
            .retry(Duration::from_secs(1))
            .comment("resync: reconnect")
    }
}
