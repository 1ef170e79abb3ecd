//! The per-worker stream flusher (DESIGN.md section 5).
//!
//! Turns push `message_part` (and `retry`) events; every `stream_flush_interval` the flusher
//! takes the pending events of **all** chats and
//! 1. appends them to `chat_stream_frames` in one multi-row insert — fenced by the lease, so a
//!    worker that lost a chat writes nothing for it — and commits;
//! 2. publishes one notification per written frame, all in one statement.
//!
//! NOTIFY commits per worker therefore stay at one per flush interval whatever the number of
//! chats. Frames are split so every payload stays under PostgreSQL's 8000-byte limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use chatd_shared::pubsub::{
    bucket_channel, chat_bucket, publish, FrameNotice, SeqEvent, MAX_PAYLOAD_BYTES,
};

/// Room left in a payload for the envelopes: the packed notice (`{"t":"f","fr":[…]}`) and the
/// frame's own fields (`{"id":"<uuid>","a":…,"s":…,"e":…,"ts":…,"ev":[]}`).
const ENVELOPE_BYTES: usize = 192;

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
    /// (chat, attempt) → events in seq order, each with its serialised length.
    events: HashMap<(Uuid, i32), Vec<(SeqEvent, usize)>>,
    waiters: Vec<oneshot::Sender<()>>,
    /// Post-commit hints of turns and acquires, published with the next flush.
    hints: Vec<(String, String)>,
}

pub struct StreamFlusher {
    pool: Pool,
    worker_id: Uuid,
    pending: Mutex<Pending>,
    wake: Notify,
}

/// One frame ready to write.
struct OutFrame {
    chat_id: Uuid,
    attempt: i32,
    events: Vec<SeqEvent>,
}

impl StreamFlusher {
    pub fn new(pool: Pool, worker_id: Uuid) -> Arc<StreamFlusher> {
        Arc::new(StreamFlusher {
            pool,
            worker_id,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
        })
    }

    /// Queues one event for the next flush.
    pub fn push(&self, chat_id: Uuid, attempt: i32, event: SeqEvent) {
        let size = event.data.to_string().len() + event.event.len() + 32;
        let mut pending = self.lock();
        pending
            .events
            .entry((chat_id, attempt))
            .or_default()
            .push((event, size));
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

    /// Flushes now and waits until everything pushed before this call is written (so a
    /// turn's previews precede its durable message).
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
            self.flush_once().await;
            if stopping {
                return;
            }
        }
    }

    async fn flush_once(&self) {
        let (events, waiters, hints) = {
            let mut pending = self.lock();
            if pending.events.is_empty() && pending.waiters.is_empty() && pending.hints.is_empty() {
                return;
            }
            (
                std::mem::take(&mut pending.events),
                std::mem::take(&mut pending.waiters),
                std::mem::take(&mut pending.hints),
            )
        };
        let frames = split_frames(events);
        if !frames.is_empty() || !hints.is_empty() {
            if let Err(error) = self.write(&frames, &hints).await {
                // Keep everything (and the waiters) for the next tick: a hole in a stream is
                // never acceptable, and a turn must not commit its message before its previews.
                tracing::warn!(
                    error = format!("{error:#}"),
                    frames = frames.len(),
                    "stream flush failed; retrying"
                );
                self.requeue(frames);
                {
                    let mut pending = self.lock();
                    pending.waiters.extend(waiters);
                    let newer = std::mem::replace(&mut pending.hints, hints);
                    pending.hints.extend(newer);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        }
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }

    /// Puts unwritten frames back in front of whatever was pushed meanwhile.
    fn requeue(&self, frames: Vec<OutFrame>) {
        let mut pending = self.lock();
        let mut restored: HashMap<(Uuid, i32), Vec<(SeqEvent, usize)>> = HashMap::new();
        for frame in frames {
            let entry = restored.entry((frame.chat_id, frame.attempt)).or_default();
            for event in frame.events {
                let size = event.data.to_string().len() + event.event.len() + 32;
                entry.push((event, size));
            }
        }
        for (key, mut events) in restored {
            if let Some(newer) = pending.events.remove(&key) {
                events.extend(newer);
            }
            pending.events.insert(key, events);
        }
    }

    /// Writes `frames` (fenced) and publishes them followed by `hints`, in one NOTIFY statement.
    async fn write(&self, frames: &[OutFrame], hints: &[(String, String)]) -> anyhow::Result<()> {
        let client = self.pool.get().await?;
        if frames.is_empty() {
            publish(&client, hints).await?;
            return Ok(());
        }
        let mut chat_ids = Vec::with_capacity(frames.len());
        let mut attempts = Vec::with_capacity(frames.len());
        let mut seq_froms = Vec::with_capacity(frames.len());
        let mut seq_tos = Vec::with_capacity(frames.len());
        let mut bodies = Vec::with_capacity(frames.len());
        for frame in frames {
            chat_ids.push(frame.chat_id);
            attempts.push(frame.attempt);
            seq_froms.push(frame.events.first().map(|e| e.seq).unwrap_or(0));
            seq_tos.push(frame.events.last().map(|e| e.seq).unwrap_or(0));
            bodies.push(serde_json::to_value(&frame.events)?);
        }
        // Fenced: only frames of attempts this worker still holds are written.
        let rows = client
            .query(
                &client.prepare_cached("INSERT INTO chat_stream_frames (chat_id, attempt, seq_from, seq_to, events) \
                 SELECT u.chat_id, u.attempt, u.seq_from, u.seq_to, u.events \
                 FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::bigint[], $5::jsonb[]) \
                     AS u(chat_id, attempt, seq_from, seq_to, events) \
                 JOIN chats c ON c.id = u.chat_id AND c.attempt = u.attempt AND c.worker_id = $6 \
                 ON CONFLICT DO NOTHING \
                 RETURNING chat_id, attempt, seq_from, \
                     (extract(epoch FROM created_at) * 1000000)::bigint").await?,
                &[
                    &chat_ids,
                    &attempts,
                    &seq_froms,
                    &seq_tos,
                    &bodies,
                    &self.worker_id,
                ],
            )
            .await?;
        let written: HashMap<(Uuid, i32, i64), i64> = rows
            .iter()
            .map(|row| ((row.get(0), row.get(1), row.get(2)), row.get(3)))
            .collect();
        // One notification per bucket (split only when a payload would pass the limit):
        // notifications per flush are bounded by the bucket count, not the chat count.
        let mut by_bucket: HashMap<u32, Vec<String>> = HashMap::new();
        for frame in frames {
            let seq_from = frame.events.first().map(|e| e.seq).unwrap_or(0);
            let Some(created_at_us) = written.get(&(frame.chat_id, frame.attempt, seq_from)) else {
                continue; // fenced out: this worker lost the chat
            };
            let notice = FrameNotice {
                chat_id: frame.chat_id,
                attempt: frame.attempt,
                seq_from,
                seq_to: frame.events.last().map(|e| e.seq).unwrap_or(0),
                created_at_us: *created_at_us,
                events: frame.events.clone(),
            };
            by_bucket
                .entry(chat_bucket(frame.chat_id))
                .or_default()
                .push(serde_json::to_string(&notice)?);
        }
        let mut notices = Vec::with_capacity(by_bucket.len());
        for (bucket, frames) in by_bucket {
            for payload in pack_frames(&frames) {
                notices.push((bucket_channel(bucket), payload));
            }
        }
        metrics::counter!("chatd_stream_frames_total").increment(notices.len() as u64);
        // Frames first: a turn's hints always follow the previews it flushed before committing.
        notices.extend_from_slice(hints);
        publish(&client, &notices).await?;
        record_publish_delay(frames);
        Ok(())
    }
}

/// Cuts each chat's events into frames whose payload stays under the NOTIFY limit.
fn split_frames(events: HashMap<(Uuid, i32), Vec<(SeqEvent, usize)>>) -> Vec<OutFrame> {
    let budget = MAX_PAYLOAD_BYTES - ENVELOPE_BYTES;
    let mut frames = Vec::new();
    for ((chat_id, attempt), chat_events) in events {
        let mut current = Vec::new();
        let mut size = 0;
        for (event, event_size) in chat_events {
            if !current.is_empty() && size + event_size > budget {
                frames.push(OutFrame {
                    chat_id,
                    attempt,
                    events: std::mem::take(&mut current),
                });
                size = 0;
            }
            size += event_size;
            current.push(event);
        }
        if !current.is_empty() {
            frames.push(OutFrame {
                chat_id,
                attempt,
                events: current,
            });
        }
    }
    frames
}

/// `chatd_frame_publish_delay_seconds`: from an event's creation by the turn (its `ts`, taken
/// right after the provider's bytes were parsed) to the NOTIFY that published it — the delay the
/// worker adds between receiving a token and publishing it.
fn record_publish_delay(frames: &[OutFrame]) {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0);
    let histogram = metrics::histogram!("chatd_frame_publish_delay_seconds");
    for event in frames.iter().flat_map(|frame| &frame.events) {
        if let Some(ts) = event.data.get("ts").and_then(serde_json::Value::as_i64) {
            histogram.record((now_us - ts).max(0) as f64 / 1e6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stay_under_the_payload_limit_and_keep_order() {
        let chat_id = Uuid::new_v4();
        let events: Vec<(SeqEvent, usize)> = (1..=100)
            .map(|seq| {
                let event = SeqEvent {
                    seq,
                    event: "message_part".into(),
                    data: serde_json::json!({"part": {"type": "text", "text": "x".repeat(500)}}),
                };
                let size = event.data.to_string().len() + event.event.len() + 32;
                (event, size)
            })
            .collect();
        let frames = split_frames(HashMap::from([((chat_id, 1), events)]));
        assert!(frames.len() > 1);
        let mut next = 1;
        for frame in frames {
            let payload = serde_json::to_string(&frame.events).unwrap();
            assert!(payload.len() + ENVELOPE_BYTES < MAX_PAYLOAD_BYTES);
            for event in frame.events {
                assert_eq!(event.seq, next);
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
                    events: vec![SeqEvent {
                        seq: index,
                        event: "message_part".into(),
                        data: serde_json::json!({"part": {"type": "text", "text": "word "}}),
                    }],
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
