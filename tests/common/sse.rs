//! Reading a chat's SSE stream in tests, and the stream-integrity checks (I1, I3).

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};

use chatd_client::{ApiClient, StreamEvent};

pub struct Reader {
    events: Pin<Box<dyn Stream<Item = anyhow::Result<StreamEvent>> + Send>>,
    /// Everything received so far, in order.
    pub seen: Vec<StreamEvent>,
}

impl Reader {
    pub async fn open(api: &ApiClient, chat_id: &str, cursor: Option<&str>) -> Reader {
        let events = api.stream(chat_id, cursor).await.expect("open the stream");
        Reader {
            events: Box::pin(events),
            seen: Vec::new(),
        }
    }

    /// The next event; panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> StreamEvent {
        let event = tokio::time::timeout(timeout, self.events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no stream event within {timeout:?}; seen: {:?}",
                    self.tail()
                )
            })
            .expect("the stream ended")
            .expect("read the stream");
        self.seen.push(event.clone());
        event
    }

    /// The next event, or `None` when the stream ended (no timeout).
    #[allow(dead_code)]
    pub async fn try_next(&mut self) -> Option<StreamEvent> {
        let event = self.events.next().await?.ok()?;
        self.seen.push(event.clone());
        Some(event)
    }

    /// Reads until `predicate` holds for an event; returns it.
    pub async fn until(
        &mut self,
        timeout: Duration,
        predicate: impl Fn(&StreamEvent) -> bool,
    ) -> StreamEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left.max(Duration::from_millis(1))).await;
            if predicate(&event) {
                return event;
            }
        }
    }

    /// Reads until an assistant message has arrived and the latest status is `waiting`. (A
    /// new stream's snapshot of an idle chat may send `waiting` with no new message.)
    pub async fn until_turn_done(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut answered = false;
        let mut status = String::new();
        while !(answered && status == "waiting") {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left.max(Duration::from_millis(1))).await;
            match event.event.as_str() {
                "message" if event.data["role"] == "assistant" => answered = true,
                "status" => {
                    status = event.data["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                }
                _ => {}
            }
        }
    }

    pub fn last_id(&self) -> String {
        self.seen
            .last()
            .map(|event| event.id.clone())
            .unwrap_or_default()
    }

    fn tail(&self) -> Vec<String> {
        self.seen
            .iter()
            .rev()
            .take(5)
            .map(|event| format!("{} {} {}", event.event, event.id, event.data))
            .collect()
    }
}

/// Asserts I1 over `events` (seq 1, 2, 3 … per attempt, no gap, no duplicate; a new attempt
/// restarts at 1) and returns the concatenated text deltas of the last attempt seen. No hole
/// may be announced either (a same-attempt `attempt_reset`): tests that provoke one check it
/// themselves.
pub fn assert_contiguous(events: &[StreamEvent]) -> String {
    let mut attempt = -1;
    let mut last_seq = 0;
    let mut text = String::new();
    // Every event of an attempt's sequence (previews, `retry`, `error`) carries its seq.
    let sequenced = |event: &&StreamEvent| {
        matches!(event.event.as_str(), "message_part" | "retry" | "error")
            && event.data.get("seq").is_some()
    };
    for event in events.iter() {
        if event.event == "attempt_reset" {
            assert!(
                event.data["attempt"].as_i64() != Some(attempt) || last_seq == 0,
                "a hole in attempt {attempt}: {event:?}"
            );
            continue;
        }
        if !sequenced(&event) {
            continue;
        }
        let event_attempt = event.data["attempt"].as_i64().expect("attempt");
        let seq = event.data["seq"].as_i64().expect("seq");
        if event_attempt != attempt {
            assert!(event_attempt > attempt, "attempt went backwards: {event:?}");
            attempt = event_attempt;
            last_seq = 0;
            text.clear();
        }
        assert_eq!(seq, last_seq + 1, "seq gap or duplicate at {event:?}");
        last_seq = seq;
        if event.data["part"]["type"] == "text" {
            text.push_str(event.data["part"]["text"].as_str().unwrap_or_default());
        }
    }
    text
}

/// A client that keeps one logical stream across connection losses, as a real client does:
/// when the stream ends or fails it reconnects (to any of `apis`, round robin) with its last
/// event id. Every event is fed to the stream-integrity checker of `chatd scaletest`.
pub struct ResumingReader {
    apis: Vec<ApiClient>,
    chat_id: String,
    events: Option<Pin<Box<dyn Stream<Item = anyhow::Result<StreamEvent>> + Send>>>,
    last_id: Option<String>,
    pub seen: Vec<StreamEvent>,
    pub reconnects: usize,
    pub checker: chatd_client::scaletest::integrity::StreamChecker,
}

impl ResumingReader {
    pub fn new(apis: Vec<ApiClient>, chat_id: &str, cursor: Option<&str>) -> ResumingReader {
        ResumingReader {
            apis,
            chat_id: chat_id.to_owned(),
            events: None,
            last_id: cursor.map(str::to_owned),
            seen: Vec::new(),
            reconnects: 0,
            checker: Default::default(),
        }
    }

    /// The next event, reconnecting as needed; panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> StreamEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no stream event within {timeout:?} ({} reconnects); last: {:?}",
                self.reconnects,
                self.seen.last()
            );
            if self.events.is_none() {
                let api = &self.apis[self.reconnects % self.apis.len()];
                match api.stream(&self.chat_id, self.last_id.as_deref()).await {
                    Ok(events) => self.events = Some(Box::pin(events)),
                    Err(_) => {
                        self.reconnects += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let next = tokio::time::timeout(left, self.events.as_mut().expect("open").next()).await;
            match next {
                Ok(Some(Ok(event))) => {
                    if !event.id.is_empty() {
                        self.last_id = Some(event.id.clone());
                    }
                    self.checker.observe(&event.event, &event.data);
                    self.seen.push(event.clone());
                    return event;
                }
                Ok(_) => {
                    // Ended or failed: resume from the last event id.
                    self.events = None;
                    self.reconnects += 1;
                    self.checker.note_reconnect();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => continue, // the deadline assertion above reports it
            }
        }
    }

    /// Reads until the chat's answer to the latest message arrived and the status is
    /// `waiting`.
    pub async fn until_turn_done(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut answered = false;
        let mut status = String::new();
        while !(answered && status == "waiting") {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left.max(Duration::from_millis(1))).await;
            match event.event.as_str() {
                "message" if event.data["role"] == "assistant" => answered = true,
                "status" => status = event.data["status"].as_str().unwrap_or_default().to_owned(),
                _ => {}
            }
        }
    }

    /// Asserts the integrity counts are all zero (gaps, duplicates, order, text).
    pub fn assert_intact(&mut self) {
        let counts = self.checker.take_counts();
        assert!(
            counts.is_zero(),
            "stream integrity: {counts:?} ({} reconnects); events:\n{}",
            self.reconnects,
            self.seen
                .iter()
                .map(|event| {
                    let data = event.data.to_string();
                    let cut = data.char_indices().nth(160).map_or(data.len(), |(i, _)| i);
                    format!("{} {} {}", event.event, event.id, &data[..cut])
                })
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
