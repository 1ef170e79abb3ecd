//! One client reading one chat's stream for the whole life of the chat: it checks integrity,
//! measures relay latency, and forwards what the chat driver needs (status changes, the first
//! parts, messages) with the instant each was received.
//!
//! A stream that ends (the server's resync hint) or fails is reopened from its last event id,
//! as a real client would; the integrity checker spans the reconnects.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::integrity::StreamChecker;
use super::recorder::Recorder;
use crate::{ApiClient, StreamEvent};

/// Relay samples buffered locally before they are handed to the recorder.
const RELAY_BATCH: usize = 1024;
/// Pause before reopening a stream.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// What the chat driver learns from a subscriber.
#[derive(Debug)]
pub struct Observation {
    pub subscriber: usize,
    pub received_at: Instant,
    pub kind: ObservationKind,
}

#[derive(Debug)]
pub enum ObservationKind {
    Status {
        status: String,
        last_error: Option<String>,
    },
    /// A `message_part` (any part type).
    Part,
    Message {
        role: String,
        id: i64,
    },
}

pub struct Subscriber {
    pub index: usize,
    pub client: ApiClient,
    pub chat_id: String,
    pub observations: mpsc::UnboundedSender<Observation>,
    /// Answered once the first stream is open (the server subscribed before answering), or
    /// with the reason it could not be opened.
    pub ready: oneshot::Sender<Result<(), String>>,
    pub stop: CancellationToken,
}

impl Subscriber {
    /// Reads until `stop` is cancelled (or the first open fails).
    pub async fn run(self, recorder: &Recorder) {
        let Subscriber {
            index,
            client,
            chat_id,
            observations,
            ready,
            stop,
        } = self;
        let mut ready = Some(ready);
        // A fresh, empty chat: start before everything.
        let mut cursor = String::from("0-0-0");
        let mut checker = StreamChecker::default();
        let mut relay_ms = Vec::with_capacity(RELAY_BATCH);
        'connections: loop {
            let opened = tokio::select! {
                _ = stop.cancelled() => break 'connections,
                opened = client.stream(&chat_id, Some(&cursor)) => opened,
            };
            let mut events = match opened {
                Ok(events) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                    events
                }
                Err(error) if format!("{error:#}").contains("\"rate_limited\"") => {
                    // The per-token rate limit: wait as asked (1 s) and open again.
                    recorder.throttled();
                    let stopped = tokio::select! {
                        _ = stop.cancelled() => true,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
                    };
                    if stopped {
                        break 'connections;
                    }
                    continue 'connections;
                }
                Err(error) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(format!("{error:#}")));
                        break 'connections;
                    }
                    recorder.error("stream_open", &format!("chat {chat_id}: {error:#}"));
                    if pause(&stop).await {
                        break 'connections;
                    }
                    continue 'connections;
                }
            };
            loop {
                let item = tokio::select! {
                    _ = stop.cancelled() => break 'connections,
                    item = events.next() => item,
                };
                match item {
                    Some(Ok(event)) => {
                        let received_at = Instant::now();
                        if !event.id.is_empty() {
                            cursor.clone_from(&event.id);
                        }
                        checker.observe(&event.event, &event.data);
                        recorder.integrity(checker.take_counts());
                        if event.event == "message_part" {
                            if let Some(latency) = relay_latency_ms(&event) {
                                relay_ms.push(latency);
                                if relay_ms.len() >= RELAY_BATCH {
                                    recorder.relay(&mut relay_ms);
                                }
                            }
                        }
                        if event.event == "retry" {
                            recorder.retry_seen();
                        }
                        if let Some(kind) = observation_kind(&event) {
                            let _ = observations.send(Observation {
                                subscriber: index,
                                received_at,
                                kind,
                            });
                        }
                    }
                    Some(Err(error)) => {
                        recorder.error("stream_read", &format!("chat {chat_id}: {error:#}"));
                        break;
                    }
                    // The server ended the stream (a resync hint): reconnect from the cursor.
                    None => break,
                }
            }
            recorder.stream_reconnect();
            checker.note_reconnect();
            if pause(&stop).await {
                break 'connections;
            }
        }
        recorder.relay(&mut relay_ms);
    }
}

/// Waits before a reconnect; true when stopped meanwhile.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(RECONNECT_DELAY) => false,
    }
}

/// Receive time − the worker's `ts` (µs since the epoch, same machine clock), in ms.
fn relay_latency_ms(event: &StreamEvent) -> Option<f64> {
    let produced_us = event.data["ts"].as_i64()?;
    let now_us = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_micros(),
    )
    .ok()?;
    Some((now_us - produced_us) as f64 / 1000.0)
}

fn observation_kind(event: &StreamEvent) -> Option<ObservationKind> {
    match event.event.as_str() {
        "status" => Some(ObservationKind::Status {
            status: event.data["status"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            last_error: event.data["last_error"]["message"]
                .as_str()
                .map(str::to_string),
        }),
        "message_part" => Some(ObservationKind::Part),
        "message" => Some(ObservationKind::Message {
            role: event.data["role"].as_str().unwrap_or_default().to_string(),
            id: event.data["id"].as_i64().unwrap_or_default(),
        }),
        _ => None,
    }
}
