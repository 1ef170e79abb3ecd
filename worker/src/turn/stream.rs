//! A turn's outgoing event stream: numbers events 1, 2, 3 … per attempt and hands them to
//! the worker's flusher.

use std::sync::Arc;

use serde_json::{json, Value};
use uuid::Uuid;

use chatd_shared::domain::{truncate_message, ChatError};
use chatd_shared::pubsub::SeqEvent;

use crate::flusher::StreamFlusher;

/// Text deltas longer than this are split into several events (frames must fit a NOTIFY).
const MAX_DELTA_BYTES: usize = 2000;

pub struct TurnStream {
    flusher: Arc<StreamFlusher>,
    chat_id: Uuid,
    pub attempt: i32,
    seq: i64,
}

impl TurnStream {
    pub fn new(flusher: Arc<StreamFlusher>, chat_id: Uuid, attempt: i32) -> TurnStream {
        TurnStream {
            flusher,
            chat_id,
            attempt,
            seq: 0,
        }
    }

    /// The last seq pushed in the current attempt (0 when none).
    pub fn last_seq(&self) -> i64 {
        self.seq
    }

    /// A new lease epoch: numbering restarts at 1.
    pub fn restart(&mut self, attempt: i32) {
        self.attempt = attempt;
        self.seq = 0;
    }

    fn push(&mut self, event: &str, mut data: Value) {
        // A frame that cannot be stored would block the flusher: never let NUL through.
        if chatd_shared::domain::contains_nul(&data) {
            data = chatd_shared::domain::replace_nul(data);
        }
        self.seq += 1;
        let produced_us = now_micros();
        if let Value::Object(map) = &mut data {
            map.insert("attempt".into(), json!(self.attempt));
            map.insert("seq".into(), json!(self.seq));
            // When the worker produced the event (µs since the epoch): relay latency.
            map.insert("ts".into(), json!(produced_us));
        }
        // Serialised once, here: the resume log and the notification carry this text.
        self.flusher.push(
            self.chat_id,
            self.attempt,
            SeqEvent::new(self.seq, event, &data),
            produced_us,
        );
    }

    /// An assistant `message_part`; long text is split at character boundaries. NUL (which
    /// `jsonb` cannot hold) becomes U+FFFD, exactly as in the stored message (I3).
    pub fn text_delta(&mut self, kind: &str, text: &str) {
        let text = without_nul(text);
        for piece in split_text(&text, MAX_DELTA_BYTES) {
            self.push(
                "message_part",
                json!({"role": "assistant", "part": {"type": kind, "text": piece}}),
            );
        }
    }

    pub fn tool_call_delta(&mut self, tool_call_id: &str, tool_name: &str, args_delta: &str) {
        let args_delta = without_nul(args_delta);
        for piece in split_text(&args_delta, MAX_DELTA_BYTES) {
            self.push(
                "message_part",
                json!({"role": "assistant", "part": {"type": "tool-call", "tool_call_id": tool_call_id,
                    "tool_name": tool_name, "args_delta": piece}}),
            );
        }
    }

    pub fn retry(&mut self, data: Value) {
        self.push("retry", cap_message(data));
    }

    pub fn error(&mut self, error: &ChatError) {
        self.push("error", error.to_value());
    }

    /// Waits until every event pushed so far is written and published, so the step's durable
    /// message can never overtake its previews. Unbounded on purpose: while the database is
    /// down the flusher retries, and the lease (heartbeat) decides whether this turn may still
    /// commit afterwards.
    pub async fn flush(&self) {
        self.flusher.flush_now().await;
    }
}

/// Cuts the `message` field of an event to `MAX_ERROR_MESSAGE_BYTES`, saying so (I9: no
/// single event can pass the NOTIFY limit, whatever a provider puts in its error body).
pub fn cap_message(mut data: Value) -> Value {
    if let Some(Value::String(message)) = data.get_mut("message") {
        *message = truncate_message(message);
    }
    data
}

/// Model output cannot be refused, but stored JSON cannot contain NUL.
pub fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0)
}

/// Splits `text` into pieces of at most `max` bytes without breaking a character.
pub fn split_text(text: &str, max: usize) -> Vec<&str> {
    if text.len() <= max {
        return vec![text];
    }
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use chatd_shared::domain::MAX_ERROR_MESSAGE_BYTES as MAX_MESSAGE_BYTES;

    use super::{cap_message, split_text, truncate_message};

    #[test]
    fn split_keeps_characters_whole_and_text_intact() {
        let text = "é".repeat(3000);
        let pieces = split_text(&text, 2001);
        assert!(pieces.iter().all(|piece| piece.len() <= 2001));
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_text("short", 10), vec!["short"]);
    }

    #[test]
    fn long_messages_are_cut_within_the_cap_and_say_so() {
        assert_eq!(truncate_message("short"), "short");
        let long = "é".repeat(10_000);
        let cut = truncate_message(&long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with("… (truncated, 20000 bytes)"), "{cut}");
        assert!(long.starts_with(cut.trim_end_matches("… (truncated, 20000 bytes)")));
        let data =
            cap_message(serde_json::json!({"kind": "overloaded", "message": "x".repeat(20_000)}));
        assert!(data["message"].as_str().unwrap().len() <= MAX_MESSAGE_BYTES);
        assert_eq!(data["kind"], "overloaded");
    }
}
