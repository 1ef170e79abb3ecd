//! The snapshot a stream session starts from (and returns to after it fell behind): status,
//! messages after the cursor, the queue and the resume log's frames, in the order a live
//! stream shows them.

use axum::response::sse::Event;

use chatd_shared::domain::ChatStatus;

use super::Session;
use crate::dto::{Message, QueuedMessage};
use crate::error::ApiResult;
use crate::hub::chat_hub::prepare_rows;
use crate::hub::PreparedEvent;
use crate::openapi::events::{
    AttemptResetEvent, HistoryResetEvent, HistoryTruncatedEvent, QueueEvent, TitleEvent,
};
use crate::store::reads;

impl Session {
    /// Reads status, messages, queue and frames after the cursor. `None` when the chat is
    /// gone or not the caller's.
    pub(super) async fn snapshot(&mut self) -> ApiResult<Option<Vec<Event>>> {
        let client = self.state.pool.get().await?;
        let Some(chat) = reads::chat_for_owner(&client, self.chat_id, self.owner_id).await? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        if self.cursor.message_id > 0
            && !reads::message_visible(&client, self.chat_id, self.cursor.message_id).await?
        {
            // The cursor names a message an edit removed: start over, never a mix.
            self.start_over();
            out.push(self.event("history_reset", &HistoryResetEvent {}));
        }
        let version_changed = chat.version > self.version;
        let ended = matches!(
            chat.status,
            ChatStatus::Waiting
                | ChatStatus::Error
                | ChatStatus::RequiresAction
                | ChatStatus::AwaitingAgents
        );
        // In the order a live stream shows them: a turn's end (`waiting`, `error`,
        // `requires_action`, `awaiting_agents`) after the messages it wrote, any other status before what follows
        // it. (A client resuming across a turn's end saw `waiting` before the reply once.)
        if version_changed && !ended {
            out.push(self.status_event(chat.status, chat.version, chat.last_error.clone()));
        }
        // Bounded: a stream never loads a whole long history (older messages are paged with
        // `GET /messages`).
        let (messages, truncated) = reads::newest_messages_after(
            &client,
            self.chat_id,
            self.cursor.message_id,
            self.state.config.stream_snapshot_messages,
        )
        .await?;
        let queue = if version_changed || self.first {
            Some(reads::queue(&client, self.chat_id).await?)
        } else {
            None
        };
        let running = matches!(chat.status, ChatStatus::Running | ChatStatus::Interrupting);
        let mut frames = Vec::new();
        // Previews the client holds of its cursor's attempt, when messages now supersede them
        // (a lagging or resuming client): finish them first, so its deltas add up to each
        // message (I3) — or, if the resume log no longer has them, tell it to drop them.
        let holds_previews = self.cursor.seq > 0 && !self.turn_finished;
        let superseded = messages
            .iter()
            .any(|message| message.attempt == Some(self.cursor.attempt))
            || (ended && chat.attempt == self.cursor.attempt);
        let mut read_current = false;
        if holds_previews && superseded {
            let old =
                reads::frames_after(&client, self.chat_id, self.cursor.attempt, self.cursor.seq)
                    .await?;
            if old.is_empty()
                && reads::max_frame_seq(&client, self.chat_id, self.cursor.attempt).await? == 0
            {
                // Trimmed (the client was away too long): the messages are the answer (I9).
                out.push(self.event(
                    "attempt_reset",
                    &AttemptResetEvent {
                        attempt: self.cursor.attempt,
                    },
                ));
                self.turn_finished = true;
            }
            read_current = self.cursor.attempt == chat.attempt;
            frames.extend(old);
        }
        // A live session that fell behind (not a new connection) gets every preview, so its
        // deltas keep adding up to each message; a new connection skips the previews of an
        // attempt that already ended.
        let replay_ended = ended && chat.attempt > self.cursor.attempt && !self.first;
        if (running || replay_ended) && !read_current {
            // Attempts between the cursor's and the current one (a turn that started and ended
            // while this session was behind) come first, as a live client saw them.
            let first_attempt = if self.first {
                chat.attempt // a new connection: only the running attempt's previews
            } else if holds_previews && superseded {
                self.cursor.attempt + 1
            } else {
                self.cursor.attempt.max(1)
            };
            for attempt in first_attempt..chat.attempt {
                let after = if attempt == self.cursor.attempt {
                    self.cursor.seq
                } else {
                    0
                };
                frames.extend(reads::frames_after(&client, self.chat_id, attempt, after).await?);
            }
            let after = if chat.attempt == self.cursor.attempt {
                self.cursor.seq
            } else {
                0
            };
            frames.extend(reads::frames_after(&client, self.chat_id, chat.attempt, after).await?);
        } else if ended && chat.attempt > self.cursor.attempt && !superseded && self.first {
            // Previews of a finished attempt the client never saw: skip them (and their late
            // notices); its messages follow.
            self.cursor.attempt = chat.attempt;
            self.cursor.seq = reads::max_frame_seq(&client, self.chat_id, chat.attempt).await?;
            self.turn_finished = true;
        }
        drop(client);
        if let (true, Some(oldest)) = (truncated, messages.first()) {
            out.push(self.event(
                "history_truncated",
                &HistoryTruncatedEvent {
                    before_id: oldest.id,
                },
            ));
        }
        // Previews and messages in stream order: a message follows the previews its attempt
        // streamed before it was committed, and precedes the next step's (or attempt's).
        let mut events: std::collections::VecDeque<(i32, PreparedEvent, i64)> = frames
            .into_iter()
            .flat_map(|frame| {
                let (attempt, events, created_at_us) = prepare_rows(frame);
                events
                    .into_iter()
                    .map(move |event| (attempt, event, created_at_us))
            })
            .collect();
        for message in &messages {
            if let Some(position) = message.stream_position() {
                while events
                    .front()
                    .is_some_and(|(attempt, event, _)| (*attempt, event.seq) <= position)
                {
                    if let Some((attempt, event, created_at_us)) = events.pop_front() {
                        self.relay_any(attempt, event, created_at_us, &mut out);
                    }
                }
            }
            self.cursor.message_id = message.id;
            if message.attempt == Some(self.cursor.attempt) {
                // Its previews are superseded: a later attempt needs no `attempt_reset`.
                self.turn_finished = true;
            }
            out.push(self.event("message", &Message::from(message)));
        }
        while let Some((attempt, event, created_at_us)) = events.pop_front() {
            self.relay_any(attempt, event, created_at_us, &mut out);
        }
        if version_changed && ended {
            out.push(self.status_event(chat.status, chat.version, chat.last_error.clone()));
        }
        if let Some(queue) = queue {
            let queued: Vec<QueuedMessage> = queue.iter().map(QueuedMessage::from).collect();
            out.push(self.event("queue", &QueueEvent { queued }));
        }
        if self.first && !chat.title.is_empty() {
            // A title set before this connection (or while it was away) is not replayed by
            // any hint: state it once.
            out.push(self.event(
                "title",
                &TitleEvent {
                    title: chat.title.clone(),
                },
            ));
        }
        if version_changed && chat.status == ChatStatus::RequiresAction {
            self.action_version = chat.version;
            out.push(self.action_required().await?);
        }
        self.first = false;
        Ok(Some(out))
    }
}
