//! The per-worker stream flusher.
//!
//! Turns push `message_part` (and `retry`, `error`) events; every `stream_flush_interval` the
//! flusher takes the pending events of **all** chats, cuts them into frames, and
//! 1. writes the frames to `chat_stream_frames` in one multi-row statement — fenced by the
//!    lease, so a worker that lost a chat writes nothing for it — and commits;
//! 2. publishes one notification per bucket (frames packed), all in one statement.
//!
//! NOTIFY commits per worker therefore stay at one per flush interval whatever the number of
//! chats. Frames are split so every payload stays under PostgreSQL's 8000-byte limit.
//!
//! **Invariant:** a frame, once cut, never changes. A frame whose write failed (or whose reply
//! was lost) is written again as the very same frame, and the write is an idempotent upsert,
//! so a retry can neither skip nor duplicate it; a frame that was written but whose NOTIFY
//! failed is only re-published, never re-inserted or merged with newer events. (The old design
//! put failed events back in front of newer ones and re-cut them: the re-cut frame had the key
//! of the written one, `ON CONFLICT DO NOTHING` dropped it, and the stream had a hole.)

use chatd_shared::db::sql::Sql;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{oneshot, Notify};
use tokio_postgres::types::Json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use chatd_shared::pubsub::{
    bucket_channel, chat_bucket, publish, FrameNotice, SeqEvent, MAX_PAYLOAD_BYTES,
};

/// Room left in a payload for the envelopes: the packed notice (`{"t":"f","fr":[…]}`) and the
/// frame's own fields (`{"id":"<uuid>","a":…,"s":…,"e":…,"ts":…,"ev":[]}`).
const ENVELOPE_BYTES: usize = 192;

/// Written frames kept for re-publishing while NOTIFY fails (e.g. the notify queue is full).
/// Beyond this the oldest are dropped: they are in the resume log, and readers fill the gap
/// from there when the next frame of the chat arrives.
const MAX_UNPUBLISHED_FRAMES: usize = 20_000;
/// Hints kept while NOTIFY fails; beyond this the oldest are dropped (API replicas' audit
/// repairs lost hints within seconds).
const MAX_PENDING_HINTS: usize = 20_000;
/// Pause after a failed write or publish before the next try.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Packs serialised frames into `{"t":"f","fr":[…]}` payloads under the NOTIFY limit. Each
/// frame alone fits (see `split_frames`).
fn pack_frames(frames: &[String]) -> Vec<String> {
    const OPEN: &str = r#"{"t":"f","fr":["#;
    const CLOSE: &str = "]}";
    let mut payloads = Vec::new();
    let mut current = String::from(OPEN);
    for frame in frames {
        let separator = usize::from(current.len() > OPEN.len());
        if current.len() > OPEN.len()
            && current.len() + separator + frame.len() + CLOSE.len() > MAX_PAYLOAD_BYTES
        {
            current.push_str(CLOSE);
            payloads.push(std::mem::replace(&mut current, String::from(OPEN)));
        }
        if current.len() > OPEN.len() {
            current.push(',');
        }
        current.push_str(frame);
    }
    if current.len() > OPEN.len() {
        current.push_str(CLOSE);
        payloads.push(current);
    }
    payloads
}

#[derive(Default)]
struct Pending {
    /// (chat, attempt) → events in seq order.
    events: HashMap<(Uuid, i32), Vec<Queued>>,
    waiters: Vec<oneshot::Sender<()>>,
    /// Post-commit hints of turns and acquires, published with the next flush.
    hints: Vec<(String, String)>,
}

/// What earlier flushes could not finish. Only the flush loop touches it.
#[derive(Default)]
struct Backlog {
    /// Cut frames whose write is not confirmed (failed, or the reply was lost): written again
    /// exactly as they are, before any newer frame.
    unwritten: Vec<OutFrame>,
    /// Waiters of `unwritten` frames: released once those are written.
    waiters: Vec<oneshot::Sender<()>>,
    /// Written frames whose NOTIFY failed, with their `created_at` (µs): re-published first.
    unpublished: Vec<(OutFrame, i64)>,
}

pub struct StreamFlusher {
    pool: Pool,
    worker_id: Uuid,
    pending: Mutex<Pending>,
    backlog: Mutex<Backlog>,
    wake: Notify,
}

/// An event waiting for the next flush.
#[derive(Debug)]
struct Queued {
    event: SeqEvent,
    /// When the turn produced it (µs since the epoch; `chatd_frame_publish_delay_seconds`).
    produced_us: i64,
}

/// One frame: contiguous events of one chat's attempt. Immutable once cut.
#[derive(Debug, Clone)]
struct OutFrame {
    chat_id: Uuid,
    attempt: i32,
    events: Vec<SeqEvent>,
    /// `produced_us` of each event, in the same order.
    produced_us: Vec<i64>,
}

impl OutFrame {
    fn seq_from(&self) -> i64 {
        self.events.first().map(|event| event.seq).unwrap_or(0)
    }

    fn seq_to(&self) -> i64 {
        self.events.last().map(|event| event.seq).unwrap_or(0)
    }
}

/// Serialised size of an event inside a frame payload.
fn event_size(event: &SeqEvent) -> usize {
    event.data.get().len() + event.event.len() + 32
}

impl StreamFlusher {
    pub fn new(pool: Pool, worker_id: Uuid) -> Arc<StreamFlusher> {
        Arc::new(StreamFlusher {
            pool,
            worker_id,
            pending: Mutex::new(Pending::default()),
            backlog: Mutex::new(Backlog::default()),
            wake: Notify::new(),
        })
    }

    /// Queues one event for the next flush; `produced_us` is when the turn made it.
    pub fn push(&self, chat_id: Uuid, attempt: i32, event: SeqEvent, produced_us: i64) {
        let mut pending = self.lock();
        pending
            .events
            .entry((chat_id, attempt))
            .or_default()
            .push(Queued { event, produced_us });
    }

    /// Queues hints of an already committed change; they go out with the next flush, at once
    /// when the flusher is idle. Under load many turns' hints share one NOTIFY statement.
    pub fn publish_soon(&self, hints: Vec<(String, String)>) {
        if hints.is_empty() {
            return;
        }
        self.lock().hints.extend(hints);
        self.wake.notify_one();
    }

    /// Flushes now and waits until everything pushed before this call is written to the resume
    /// log (so a turn's previews precede its durable message). Publishing may still be retried
    /// afterwards; readers then fill from the log.
    pub async fn flush_now(&self) {
        let (done, wait) = oneshot::channel();
        self.lock().waiters.push(done);
        self.wake.notify_one();
        let _ = wait.await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The flush loop; ends after a final flush once `shutdown` is cancelled.
    pub async fn run(self: Arc<StreamFlusher>, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                _ = self.wake.notified() => false,
                _ = shutdown.cancelled() => true,
            };
            if !self.flush_once().await {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            if stopping {
                return;
            }
        }
    }

    /// One flush: write what is unwritten (old frames first), release the waiters, publish
    /// what is unpublished plus the hints. Returns false when something failed (it stays in
    /// the backlog for the next flush).
    async fn flush_once(&self) -> bool {
        let (events, new_waiters, hints) = {
            let mut pending = self.lock();
            (
                std::mem::take(&mut pending.events),
                std::mem::take(&mut pending.waiters),
                std::mem::take(&mut pending.hints),
            )
        };
        let (mut to_write, mut waiters, mut to_publish) = {
            let mut backlog = self.backlog();
            (
                std::mem::take(&mut backlog.unwritten),
                std::mem::take(&mut backlog.waiters),
                std::mem::take(&mut backlog.unpublished),
            )
        };
        if events.is_empty()
            && new_waiters.is_empty()
            && hints.is_empty()
            && to_write.is_empty()
            && waiters.is_empty()
            && to_publish.is_empty()
        {
            return true;
        }
        to_write.extend(split_frames(events));
        waiters.extend(new_waiters);
        // Frames re-published from an earlier flush precede this flush's hints; this flush's
        // new frames follow them.
        let republished = to_publish.len();
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(error = %error, "stream flush: no database connection; retrying");
                self.keep(to_write, waiters, to_publish, hints);
                return false;
            }
        };
        if !to_write.is_empty() {
            match write_frames(&client, self.worker_id, &to_write).await {
                Ok(written) => {
                    // Fenced-out frames (this worker lost the chat) are dropped here.
                    for frame in to_write.drain(..) {
                        let key = (frame.chat_id, frame.attempt, frame.seq_from());
                        if let Some(created_at_us) = written.get(&key) {
                            to_publish.push((frame, *created_at_us));
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        frames = to_write.len(),
                        "stream flush: writing frames failed; retrying the same frames"
                    );
                    self.keep(to_write, waiters, to_publish, hints);
                    return false;
                }
            }
        }
        // Everything pushed before the waiters is in the resume log now: the turns may commit.
        for waiter in waiters.drain(..) {
            let _ = waiter.send(());
        }
        // Order: frames written by earlier flushes, then the hints, then this flush's new frames.
        // A turn's hints always follow the previews it flushed before committing (those were
        // written, and published, by an earlier flush), and a step's commit hint precedes the
        // next step's first previews, which were pushed after the commit.
        let older = frame_notices(&to_publish[..republished]);
        let newer = frame_notices(&to_publish[republished..]);
        let frame_count = older.len() + newer.len();
        let mut all = older;
        all.extend(hints.iter().cloned());
        all.extend(newer);
        all.retain(|(channel, payload)| {
            let fits = payload.len() <= MAX_PAYLOAD_BYTES;
            if !fits {
                tracing::error!(%channel, bytes = payload.len(), "dropped an oversized notification");
            }
            fits
        });
        match publish(&client, &all).await {
            Ok(()) => {
                metrics::counter!("chatd_stream_frames_total").increment(frame_count as u64);
                record_publish_delay(&to_publish);
                true
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    frames = to_publish.len(),
                    "stream flush: publishing failed; re-publishing the written frames"
                );
                self.keep(Vec::new(), Vec::new(), to_publish, hints);
                false
            }
        }
    }

    /// Puts what a failed flush could not finish back for the next one, in front of anything
    /// newer, bounded in memory.
    fn keep(
        &self,
        unwritten: Vec<OutFrame>,
        waiters: Vec<oneshot::Sender<()>>,
        mut unpublished: Vec<(OutFrame, i64)>,
        hints: Vec<(String, String)>,
    ) {
        if unpublished.len() > MAX_UNPUBLISHED_FRAMES {
            let excess = unpublished.len() - MAX_UNPUBLISHED_FRAMES;
            unpublished.drain(..excess);
            metrics::counter!("chatd_unpublished_frames_dropped_total").increment(excess as u64);
        }
        {
            let mut backlog = self.backlog();
            backlog.unwritten = unwritten;
            backlog.waiters = waiters;
            backlog.unpublished = unpublished;
        }
        let mut pending = self.lock();
        let newer = std::mem::replace(&mut pending.hints, hints);
        pending.hints.extend(newer);
        if pending.hints.len() > MAX_PENDING_HINTS {
            let excess = pending.hints.len() - MAX_PENDING_HINTS;
            pending.hints.drain(..excess);
        }
    }
}

/// The resume log's insert (`$1`–`$5`: the frames' chats, attempts, first and last seqs and
/// events; `$6`: this worker), fenced by each chat's lease.
///
/// `DO UPDATE` (a no-op: the same frame has the same seq_to) rather than `DO NOTHING`, so
/// an already written frame comes back in RETURNING and is published. The fence reads
/// each frame's chat by its primary key, in a lateral subquery (`OFFSET 0` keeps it one)
/// that names nothing else: joined as a table, the chat was found through the worker's
/// leased chats (all of them, for every flush) or, with stale statistics, a scan of
/// `chats`.
pub const FRAMES_INSERT_SQL: &str =
    "INSERT INTO chat_stream_frames (chat_id, attempt, seq_from, seq_to, events) \
 SELECT u.chat_id, u.attempt, u.seq_from, u.seq_to, u.events \
 FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::bigint[], $5::json[]) \
     AS u(chat_id, attempt, seq_from, seq_to, events), \
 LATERAL (SELECT c.attempt, c.worker_id FROM chats c WHERE c.id = u.chat_id \
     OFFSET 0) c \
 WHERE c.attempt = u.attempt AND c.worker_id = $6 \
 ON CONFLICT (chat_id, attempt, seq_from) DO UPDATE SET seq_to = EXCLUDED.seq_to \
 RETURNING chat_id, attempt, seq_from, \
     (extract(epoch FROM created_at) * 1000000)::bigint";

/// Writes `frames`, fenced by the lease: only frames of attempts this worker still holds are
/// written. Idempotent: a frame that is already there (an earlier write whose reply was lost)
/// is returned as written, unchanged. Returns (chat, attempt, seq_from) → created_at (µs).
async fn write_frames(
    client: &deadpool_postgres::Client,
    worker_id: Uuid,
    frames: &[OutFrame],
) -> anyhow::Result<HashMap<(Uuid, i32, i64), i64>> {
    let mut chat_ids = Vec::with_capacity(frames.len());
    let mut attempts = Vec::with_capacity(frames.len());
    let mut seq_froms = Vec::with_capacity(frames.len());
    let mut seq_tos = Vec::with_capacity(frames.len());
    let mut bodies = Vec::with_capacity(frames.len());
    for frame in frames {
        chat_ids.push(frame.chat_id);
        attempts.push(frame.attempt);
        seq_froms.push(frame.seq_from());
        seq_tos.push(frame.seq_to());
        // The events' data is JSON text already: this copies it into the parameter.
        bodies.push(Json(frame.events.as_slice()));
    }
    let rows = client
        .rows(
            FRAMES_INSERT_SQL,
            &[
                &chat_ids, &attempts, &seq_froms, &seq_tos, &bodies, &worker_id,
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ((row.get(0), row.get(1), row.get(2)), row.get(3)))
        .collect())
}

/// One notification per bucket (split only when a payload would pass the limit): notifications
/// per flush are bounded by the bucket count, not the chat count. Frames keep their order.
fn frame_notices(frames: &[(OutFrame, i64)]) -> Vec<(String, String)> {
    let mut by_bucket: Vec<(u32, Vec<String>)> = Vec::new();
    for (frame, created_at_us) in frames {
        let notice = FrameNotice {
            chat_id: frame.chat_id,
            attempt: frame.attempt,
            seq_from: frame.seq_from(),
            seq_to: frame.seq_to(),
            created_at_us: *created_at_us,
            events: frame.events.clone(),
        };
        let Ok(text) = serde_json::to_string(&notice) else {
            continue;
        };
        let bucket = chat_bucket(frame.chat_id);
        match by_bucket.iter_mut().find(|(known, _)| *known == bucket) {
            Some((_, texts)) => texts.push(text),
            None => by_bucket.push((bucket, vec![text])),
        }
    }
    let mut notices = Vec::new();
    for (bucket, texts) in by_bucket {
        for payload in pack_frames(&texts) {
            notices.push((bucket_channel(bucket), payload));
        }
    }
    notices
}

/// Cuts each chat's events into frames whose payload stays under the NOTIFY limit.
fn split_frames(events: HashMap<(Uuid, i32), Vec<Queued>>) -> Vec<OutFrame> {
    let budget = MAX_PAYLOAD_BYTES - ENVELOPE_BYTES;
    let mut frames = Vec::new();
    for ((chat_id, attempt), chat_events) in events {
        let mut current = OutFrame {
            chat_id,
            attempt,
            events: Vec::new(),
            produced_us: Vec::new(),
        };
        let mut size = 0;
        for queued in chat_events {
            let event_size = event_size(&queued.event);
            if !current.events.is_empty() && size + event_size > budget {
                let next = OutFrame {
                    chat_id,
                    attempt,
                    events: Vec::new(),
                    produced_us: Vec::new(),
                };
                frames.push(std::mem::replace(&mut current, next));
                size = 0;
            }
            size += event_size;
            current.events.push(queued.event);
            current.produced_us.push(queued.produced_us);
        }
        if !current.events.is_empty() {
            frames.push(current);
        }
    }
    frames
}

/// `chatd_frame_publish_delay_seconds`: from an event's creation by the turn (its `ts`, taken
/// right after the provider's bytes were parsed) to the NOTIFY that published it — the delay the
/// worker adds between receiving a token and publishing it.
fn record_publish_delay(frames: &[(OutFrame, i64)]) {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0);
    let histogram = metrics::histogram!("chatd_frame_publish_delay_seconds");
    for ts in frames.iter().flat_map(|(frame, _)| &frame.produced_us) {
        histogram.record((now_us - ts).max(0) as f64 / 1e6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stay_under_the_payload_limit_and_keep_order() {
        let chat_id = Uuid::new_v4();
        let events: Vec<Queued> = (1..=100)
            .map(|seq| Queued {
                event: SeqEvent::new(
                    seq,
                    "message_part",
                    &serde_json::json!({"part": {"type": "text", "text": "x".repeat(500)}}),
                ),
                produced_us: seq,
            })
            .collect();
        let frames = split_frames(HashMap::from([((chat_id, 1), events)]));
        assert!(frames.len() > 1);
        let mut next = 1;
        for frame in frames {
            let payload = serde_json::to_string(&frame.events).unwrap();
            assert!(payload.len() + ENVELOPE_BYTES < MAX_PAYLOAD_BYTES);
            assert_eq!(frame.produced_us.len(), frame.events.len());
            for (event, produced_us) in frame.events.iter().zip(&frame.produced_us) {
                assert_eq!(event.seq, next);
                assert_eq!(*produced_us, next);
                next += 1;
            }
        }
        assert_eq!(next, 101);
    }

    #[test]
    fn packed_payloads_stay_under_the_limit_and_parse_back() {
        let frames: Vec<String> = (0..200)
            .map(|index| {
                serde_json::to_string(&FrameNotice {
                    chat_id: Uuid::new_v4(),
                    attempt: 1,
                    seq_from: index,
                    seq_to: index,
                    created_at_us: 0,
                    events: vec![SeqEvent::new(
                        index,
                        "message_part",
                        &serde_json::json!({"part": {"type": "text", "text": "word "}}),
                    )],
                })
                .unwrap()
            })
            .collect();
        let payloads = pack_frames(&frames);
        assert!(payloads.len() > 1);
        let mut seen = 0;
        for payload in payloads {
            assert!(payload.len() < MAX_PAYLOAD_BYTES, "{}", payload.len());
            let notice: chatd_shared::pubsub::ChatNotice = serde_json::from_str(&payload).unwrap();
            match notice {
                chatd_shared::pubsub::ChatNotice::Frames { frames } => seen += frames.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, 200);
    }
}
