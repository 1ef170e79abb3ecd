//! The task behind one chat's hub: notifications in, events out.

use chatd_shared::db::sql::Sql;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::reads;
use chatd_shared::db::pool::PgPool;
use chatd_shared::db::rows::{FrameRow, MessageRow, QueuedRow};
use chatd_shared::domain::ChatStatus;
use chatd_shared::pubsub::{ChangeNotice, FrameNotice, SeqEvent};

use super::HubInput;

/// One stream event, serialised once per replica (not once per subscriber).
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    pub seq: i64,
    pub name: Arc<str>,
    pub data: Arc<str>,
}

/// What a hub broadcasts to its subscribers.
#[derive(Debug)]
pub enum HubEvent {
    Status {
        status: ChatStatus,
        version: i64,
        attempt: i32,
        last_error: Option<Value>,
    },
    /// New durable messages, oldest first.
    Messages(Vec<MessageRow>),
    Queue(Vec<QueuedRow>),
    Frame {
        attempt: i32,
        /// Contiguous events, ascending seq.
        events: Vec<PreparedEvent>,
        created_at_us: i64,
    },
    Title(String),
    /// The dynamic tool calls a `requires_action` status (of `version`) waits for, read once
    /// per replica: `{"tool_calls": […]}`.
    ActionRequired {
        version: i64,
        data: Arc<str>,
    },
    /// The history changed other than by appending (an edit): subscribers drop what they sent
    /// and start over from the database (`history_reset`). Later events continue from there.
    HistoryReset,
    /// The chat was deleted: streams end.
    Gone,
}

/// What the hub has relayed so far.
#[derive(Debug, Default)]
struct HubState {
    version: i64,
    attempt: i32,
    last_seq: i64,
    last_message_id: i64,
    title: String,
    history_epoch: i32,
}

/// How long a complete change notice that arrived ahead of its predecessor waits for it
/// before the hub reads the database instead. Changes of one chat are announced by different
/// processes (the API's send, a worker's claim and commit), each after its own commit, so
/// their notices can reach a listener in another order than their versions: under load, about
/// one turn in ten did, and each cost a database read.
pub const HOLD_AHEAD: Duration = Duration::from_millis(200);

/// At most this many notices wait for a missing predecessor; one more reads the database.
const MAX_HELD: usize = 32;

/// Why a change notice made the hub read the database.
#[derive(Debug, Clone, Copy)]
enum ResyncReason {
    /// A version was missed (or its notice did not come within [`HOLD_AHEAD`]).
    Gap,
    Queue,
    /// Something other than a title, which the notice does not carry.
    Other,
    /// New messages too big to embed in the notice.
    LargeMessages,
}

impl ResyncReason {
    fn label(self) -> &'static str {
        match self {
            ResyncReason::Gap => "gap",
            ResyncReason::Queue => "queue",
            ResyncReason::Other => "other",
            ResyncReason::LargeMessages => "large_messages",
        }
    }

    /// The queue is read too unless the notice followed on and said it did not change.
    fn needs_queue(self) -> bool {
        matches!(self, ResyncReason::Gap | ResyncReason::Queue)
    }
}

pub struct ChatHubTask {
    chat_id: Uuid,
    pool: PgPool,
    sender: broadcast::Sender<Arc<HubEvent>>,
    state: HubState,
    /// `state.version`, shared with the audit.
    relayed_version: Arc<AtomicI64>,
    /// Complete change notices ahead of `state.version + 1`, by version, and when the first
    /// of them stops waiting for the ones before it.
    held: std::collections::BTreeMap<i64, ChangeNotice>,
    hold_until: Option<tokio::time::Instant>,
}

impl ChatHubTask {
    pub fn new(
        chat_id: Uuid,
        pool: PgPool,
        sender: broadcast::Sender<Arc<HubEvent>>,
        relayed_version: Arc<AtomicI64>,
    ) -> Self {
        ChatHubTask {
            chat_id,
            pool,
            sender,
            state: HubState::default(),
            relayed_version,
            held: std::collections::BTreeMap::new(),
            hold_until: None,
        }
    }

    /// Initial read (after LISTEN), then one input at a time until cancelled.
    pub async fn run(
        mut self,
        mut inbox: mpsc::Receiver<HubInput>,
        ready: watch::Sender<bool>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match Box::pin(self.initial_read()).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(chat_id = %self.chat_id, error = format!("{error:#}"), "hub initial read");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        let _ = ready.send(true);
        loop {
            let hold_until = self.hold_until;
            let input = tokio::select! {
                _ = cancel.cancelled() => return,
                input = inbox.recv() => match input { Some(input) => Some(input), None => return },
                _ = tokio::time::sleep_until(hold_until.unwrap_or_else(tokio::time::Instant::now)),
                    if hold_until.is_some() => None,
            };
            // Boxed: the database paths are large state machines, and thousands of idle hubs
            // would each carry them inline.
            let result = match input {
                Some(HubInput::Frame(frame)) => Box::pin(self.on_frame(frame)).await,
                Some(HubInput::Change(change)) => Box::pin(self.on_change(change)).await,
                Some(HubInput::Notification(_)) => Ok(()), // owner payloads never come here
                Some(HubInput::Resync) => Box::pin(self.resync()).await,
                // The notice before the held ones did not come in time (lost, or its
                // publisher died after committing): read what they missed.
                None => Box::pin(self.resync_because(ResyncReason::Gap)).await,
            };
            if let Err(error) = result {
                tracing::warn!(chat_id = %self.chat_id, error = format!("{error:#}"), "hub update failed; resyncing");
                // Retry as a full resync until the database answers again.
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    if Box::pin(self.resync()).await.is_ok() {
                        break;
                    }
                }
            }
        }
    }

    async fn initial_read(&mut self) -> anyhow::Result<()> {
        let client = self.pool.get().await?;
        let row = client
            .row_opt(
                "SELECT c.version, c.attempt, c.title, \
                 coalesce((SELECT max(id) FROM chat_messages WHERE chat_id = c.id), 0), \
                 coalesce((SELECT max(seq_to) FROM chat_stream_frames f \
                           WHERE f.chat_id = c.id AND f.attempt = c.attempt), 0), \
                 c.history_epoch \
                 FROM chats c WHERE c.id = $1",
                &[&self.chat_id],
            )
            .await?;
        if let Some(row) = row {
            self.state = HubState {
                version: row.get(0),
                attempt: row.get(1),
                title: row.get(2),
                last_message_id: row.get(3),
                last_seq: row.get(4),
                history_epoch: row.get(5),
            };
            self.relayed_version
                .store(self.state.version, Ordering::Relaxed);
        }
        Ok(())
    }

    fn broadcast(&self, event: HubEvent) {
        // No receivers is fine: the last subscriber may just have left.
        let _ = self.sender.send(Arc::new(event));
    }

    async fn on_frame(&mut self, frame: FrameNotice) -> anyhow::Result<()> {
        if frame.attempt < self.state.attempt {
            return Ok(()); // a fenced-out or finished attempt
        }
        if frame.attempt > self.state.attempt {
            self.state.attempt = frame.attempt;
            self.state.last_seq = 0;
        }
        if frame.seq_to <= self.state.last_seq {
            return Ok(()); // duplicate
        }
        if frame.seq_from > self.state.last_seq + 1 {
            // Gap: the missing frames are in the resume log (inserted before the notify).
            self.fill_frames().await?;
            if frame.attempt != self.state.attempt {
                return Ok(());
            }
            // Whatever the log could not fill is a hole: relay on from here (subscribers tell
            // their clients `attempt_reset`).
        }
        let events: Vec<SeqEvent> = frame
            .events
            .into_iter()
            .filter(|event| event.seq > self.state.last_seq)
            .collect();
        self.relay_frame(frame.attempt, events, frame.created_at_us);
        Ok(())
    }

    fn relay_frame(&mut self, attempt: i32, events: Vec<SeqEvent>, created_at_us: i64) {
        let Some(last) = events.last() else { return };
        self.state.last_seq = last.seq;
        let events = events.into_iter().map(prepare).collect();
        self.broadcast(HubEvent::Frame {
            attempt,
            events,
            created_at_us,
        });
    }

    async fn fill_frames(&mut self) -> anyhow::Result<()> {
        let client = self.pool.get().await?;
        let frames = reads::frames_after(
            &client,
            self.chat_id,
            self.state.attempt,
            self.state.last_seq,
        )
        .await?;
        self.relay_rows(frames);
        Ok(())
    }

    /// Relays `frames` (of the hub's attempt) and `messages` interleaved: each message after
    /// the previews its attempt streamed before it was committed (`stream_position`).
    fn relay_in_stream_order(&mut self, frames: Vec<FrameRow>, messages: Vec<MessageRow>) {
        let mut pending: std::collections::VecDeque<FrameRow> = frames.into();
        let mut batch: Vec<MessageRow> = Vec::new();
        for message in messages {
            if let Some((attempt, seq)) = message.stream_position() {
                let mut due = Vec::new();
                while pending
                    .front()
                    .is_some_and(|frame| (frame.attempt, frame.seq_from) <= (attempt, seq))
                {
                    if let Some(frame) = pending.pop_front() {
                        due.push(frame);
                    }
                }
                if !due.is_empty() {
                    self.flush_messages(&mut batch);
                    self.relay_rows(due);
                }
            }
            batch.push(message);
        }
        self.flush_messages(&mut batch);
        self.relay_rows(pending.into());
    }

    fn flush_messages(&mut self, batch: &mut Vec<MessageRow>) {
        if let Some(last) = batch.last() {
            self.state.last_message_id = last.id;
            self.broadcast(HubEvent::Messages(std::mem::take(batch)));
        }
    }

    /// Relays frames of the hub's attempt or newer ones (ascending attempt and seq).
    fn relay_rows(&mut self, frames: Vec<FrameRow>) {
        for frame in frames {
            if frame.attempt < self.state.attempt {
                continue;
            }
            if frame.attempt > self.state.attempt {
                self.state.attempt = frame.attempt;
                self.state.last_seq = 0;
            }
            let events: Vec<SeqEvent> = serde_json::from_value(frame.events).unwrap_or_default();
            let events: Vec<SeqEvent> = events
                .into_iter()
                .filter(|event| event.seq > self.state.last_seq)
                .collect();
            // A hole in the log (the UNLOGGED table lost frames in a PostgreSQL crash) cannot
            // be filled: relay on past it; subscribers tell their clients `attempt_reset`.
            if events
                .first()
                .is_some_and(|event| event.seq > self.state.last_seq + 1)
            {
                tracing::warn!(chat_id = %self.chat_id, "hole in the resume log; relaying past it");
            }
            self.relay_frame(frame.attempt, events, frame.created_at_us);
        }
    }

    async fn on_change(&mut self, change: ChangeNotice) -> anyhow::Result<()> {
        if change.version <= self.state.version {
            return Ok(()); // late or duplicate
        }
        let complete = change.is_complete();
        if change.version > self.state.version + 1 && complete && self.held.len() < MAX_HELD {
            // Ahead of a change not relayed yet, whose notice is probably still on its way
            // from another publisher: wait for it a little before reading the database.
            self.held.insert(change.version, change);
            self.hold_until
                .get_or_insert_with(|| tokio::time::Instant::now() + HOLD_AHEAD);
            return Ok(());
        }
        if change.version == self.state.version + 1 && complete {
            self.apply_complete(change).await?;
            // The notices that waited for this one, as long as they follow on.
            while let Some(entry) = self.held.first_entry() {
                if *entry.key() > self.state.version + 1 {
                    break;
                }
                let next = entry.remove();
                if next.version == self.state.version + 1 {
                    self.apply_complete(next).await?;
                }
            }
            if self.held.is_empty() {
                self.hold_until = None;
            }
            return Ok(());
        }
        let reason = if change.version > self.state.version + 1 {
            ResyncReason::Gap
        } else if change.queue {
            ResyncReason::Queue
        } else if change.other {
            ResyncReason::Other
        } else {
            ResyncReason::LargeMessages
        };
        self.resync_because(reason).await
    }

    /// Applies a complete notice that follows the relayed version: no database read, unless
    /// the resume log holds frames the hub has not relayed.
    async fn apply_complete(&mut self, change: ChangeNotice) -> anyhow::Result<()> {
        // Contiguity means no other change was missed; a frame notification that went
        // missing shows as `last_seq` ahead of ours.
        if let Some(last_seq) = change.last_seq {
            if change.attempt == self.state.attempt && last_seq > self.state.last_seq {
                self.fill_frames().await?;
            }
        }
        if let Some(messages) = change.new_messages {
            let last_message_id = self.state.last_message_id;
            let messages: Vec<_> = messages
                .into_iter()
                .filter(|message| message.id > last_message_id)
                .collect();
            if let Some(last) = messages.last() {
                self.state.last_message_id = last.id;
                self.broadcast(HubEvent::Messages(messages));
            }
        }
        if let Some(title) = change.title {
            if title != self.state.title {
                self.state.title = title.clone();
                self.broadcast(HubEvent::Title(title));
            }
        }
        self.apply_status(change.status, change.version, change.attempt, None);
        self.announce_action(change.status, change.version).await
    }

    /// A resync after a change notice the hub could not apply on its own, counted in
    /// `chatd_hub_resyncs_total` by `reason`.
    async fn resync_because(&mut self, reason: ResyncReason) -> anyhow::Result<()> {
        metrics::counter!("chatd_hub_resyncs_total", "reason" => reason.label()).increment(1);
        self.resync_with(reason.needs_queue()).await
    }

    /// After a `requires_action` status: reads the pending calls (published after the commit
    /// that stored them) once for every subscriber of this replica.
    async fn announce_action(&mut self, status: ChatStatus, version: i64) -> anyhow::Result<()> {
        if status != ChatStatus::RequiresAction {
            return Ok(());
        }
        let client = self.pool.get().await?;
        let pending = chatd_shared::db::tool_calls::load_pending(&*client, self.chat_id).await?;
        let data = serde_json::to_string(&crate::openapi::events::ActionRequiredEvent {
            tool_calls: pending,
        })?;
        self.broadcast(HubEvent::ActionRequired {
            version,
            data: Arc::from(data.as_str()),
        });
        Ok(())
    }

    fn apply_status(
        &mut self,
        status: ChatStatus,
        version: i64,
        attempt: i32,
        last_error: Option<Value>,
    ) {
        self.state.version = version;
        self.relayed_version.store(version, Ordering::Relaxed);
        if attempt > self.state.attempt {
            self.state.attempt = attempt;
            self.state.last_seq = 0;
        }
        self.broadcast(HubEvent::Status {
            status,
            version,
            attempt,
            last_error,
        });
    }

    /// Re-reads the chat, new messages, the queue and missing frames in one statement;
    /// broadcasts what changed. `with_queue` is false only when the notice said the queue did
    /// not change and no notice was missed.
    async fn resync_with(&mut self, with_queue: bool) -> anyhow::Result<()> {
        // The read covers every held notice: each was sent after its change committed.
        self.held.clear();
        self.hold_until = None;
        let client = self.pool.get().await?;
        let sync = reads::chat_sync(
            &client,
            self.chat_id,
            self.state.last_message_id,
            with_queue,
            self.state.attempt,
            self.state.last_seq,
        )
        .await?;
        drop(client);
        let Some(sync) = sync else {
            self.broadcast(HubEvent::Gone); // deleted
            return Ok(());
        };
        if sync.history_epoch != self.state.history_epoch {
            // Edited: subscribers start over from the database; what this read found after
            // the reset (the replacement, new previews) follows and is deduplicated by them.
            self.state.history_epoch = sync.history_epoch;
            self.broadcast(HubEvent::HistoryReset);
        }
        let chat = sync.chat;
        let version_changed = chat.version > self.state.version;
        // The rest of the hub's attempt comes first even when the chat has moved on (a queued
        // message started the next turn before this read), then the new attempt's.
        // Whatever the status: when this read is ahead of the notification queue (the turn
        // already ended), the attempt's previews must still precede its durable message, and
        // a step's message the next step's previews; the frame notices that arrive later are
        // then dropped as duplicates.
        self.relay_in_stream_order(sync.frames, sync.messages);
        if chat.attempt > self.state.attempt {
            self.state.attempt = chat.attempt;
            self.state.last_seq = 0;
        }
        if let Some(queue) = sync.queue.filter(|_| version_changed) {
            self.broadcast(HubEvent::Queue(queue));
        }
        if chat.title != self.state.title {
            self.state.title = chat.title.clone();
            self.broadcast(HubEvent::Title(chat.title.clone()));
        }
        if version_changed {
            self.apply_status(chat.status, chat.version, chat.attempt, chat.last_error);
            self.announce_action(chat.status, chat.version).await?;
        }
        Ok(())
    }

    /// A full resync (reconnects, errors).
    async fn resync(&mut self) -> anyhow::Result<()> {
        self.resync_with(true).await
    }
}

fn prepare(event: SeqEvent) -> PreparedEvent {
    PreparedEvent {
        seq: event.seq,
        name: Arc::from(event.event.as_str()),
        data: Arc::from(event.data.get()),
    }
}

/// Prepares events read from the resume log (used by subscribers' own gap fills).
pub fn prepare_rows(frame: FrameRow) -> (i32, Vec<PreparedEvent>, i64) {
    let events: Vec<SeqEvent> = serde_json::from_value(frame.events).unwrap_or_default();
    (
        frame.attempt,
        events.into_iter().map(prepare).collect(),
        frame.created_at_us,
    )
}
