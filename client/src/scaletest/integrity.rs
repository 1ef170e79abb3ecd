//! Stream integrity of one client connection: sequenced events
//! (`message_part`, `retry`, `error`) must carry seq 1, 2, 3 … per attempt with no gap, no
//! duplicate and nothing out of order, and the text deltas of an attempt must add up to the
//! assistant message that supersedes them.
//!
//! Pure: fed `(event name, data)` pairs, it only counts. The checker lives as long as the
//! logical subscriber, across reconnects with `Last-Event-ID`, because a resumed stream must
//! continue exactly where the previous connection stopped.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::content_text;

/// Seqs remembered as skipped by one gap at most; a huge jump is a gap either way.
const MAX_REMEMBERED_MISSING: i64 = 10_000;

/// Integrity violations; every field must be 0 in a healthy run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IntegrityCounts {
    /// A seq more than one past the last one of the same attempt (counted once per jump).
    pub gaps: u64,
    /// A seq of the current attempt that was already received.
    pub duplicates: u64,
    /// A seq that was skipped and arrived late, or an event of an attempt older than the
    /// current one.
    pub out_of_order: u64,
    /// An assistant message whose text differs from the text deltas streamed for it.
    pub text_mismatches: u64,
}

impl IntegrityCounts {
    pub fn is_zero(&self) -> bool {
        *self == IntegrityCounts::default()
    }
}

#[derive(Debug)]
pub struct StreamChecker {
    /// Attempt of the sequenced events being received (0 before the first).
    attempt: i64,
    last_seq: i64,
    /// Seqs of the current attempt skipped by a gap: one arriving later is out of order rather
    /// than a duplicate.
    missing: BTreeSet<i64>,
    /// Text deltas of the current attempt since the last assistant message.
    streamed_text: String,
    /// The connection was (re-)established and has not yet delivered a message whose deltas it
    /// streamed: a resume after a step or the turn finished legitimately gets the messages
    /// without their remaining deltas (several of them after a multi-step tool turn). A new
    /// checker starts so too — a first connection is a resume from the client's cursor — and
    /// a `status` event ends it: a live stream states a turn's start before its deltas, and a
    /// snapshot states a turn's end after the messages it wrote.
    resumed: bool,
    /// A sequenced event arrived since the reconnect: the next message checked ends the
    /// catch-up of durable messages.
    live_since_resume: bool,
    /// The server announced a hole in the current attempt (`attempt_reset` naming the same
    /// attempt): the next seq may jump, and the previews before it are void, so the next
    /// message is not compared with them (the message is authoritative).
    after_hole: bool,
    /// Same-attempt `attempt_reset`s received (holes the server could not fill; not a
    /// violation, but worth reporting).
    holes: u64,
    counts: IntegrityCounts,
}

impl Default for StreamChecker {
    fn default() -> Self {
        StreamChecker {
            attempt: 0,
            last_seq: 0,
            missing: BTreeSet::new(),
            streamed_text: String::new(),
            resumed: true,
            live_since_resume: false,
            after_hole: false,
            holes: 0,
            counts: IntegrityCounts::default(),
        }
    }
}

impl StreamChecker {
    /// Feeds one received event.
    pub fn observe(&mut self, event: &str, data: &Value) {
        match event {
            "status" => self.resumed = false,
            "attempt_reset" => {
                let attempt = data["attempt"].as_i64().unwrap_or(self.attempt + 1);
                if attempt < self.attempt {
                    self.counts.out_of_order += 1;
                } else if attempt == self.attempt && self.last_seq > 0 {
                    // A hole the server could not fill: drop the previews, accept the jump.
                    self.holes += 1;
                    self.after_hole = true;
                    self.missing.clear();
                    self.streamed_text.clear();
                } else {
                    self.start_attempt(attempt);
                }
            }
            "message" => {
                if data["role"] == "assistant" {
                    self.check_text(&content_text(&data["content"]));
                }
            }
            _ => {
                if let (Some(attempt), Some(seq)) = (data["attempt"].as_i64(), data["seq"].as_i64())
                {
                    self.sequenced(event, attempt, seq, data);
                }
            }
        }
    }

    /// The connection dropped and was reopened from the last event id.
    pub fn note_reconnect(&mut self) {
        self.resumed = true;
        self.live_since_resume = false;
    }

    /// Same-attempt resets (unfillable holes) seen so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn holes(&self) -> u64 {
        self.holes
    }

    /// Violations counted since the last call.
    pub fn take_counts(&mut self) -> IntegrityCounts {
        std::mem::take(&mut self.counts)
    }

    fn start_attempt(&mut self, attempt: i64) {
        self.attempt = attempt;
        self.last_seq = 0;
        self.missing.clear();
        self.streamed_text.clear();
    }

    fn sequenced(&mut self, event: &str, attempt: i64, seq: i64, data: &Value) {
        if attempt < self.attempt {
            self.counts.out_of_order += 1;
            return;
        }
        if attempt > self.attempt {
            // A new turn (or a retry the server announced without previews to drop): its
            // deltas all arrive on this connection, so its messages are compared exactly.
            self.start_attempt(attempt);
            self.resumed = false;
        }
        self.live_since_resume = true;
        if seq <= self.last_seq {
            if self.missing.remove(&seq) {
                self.counts.out_of_order += 1;
            } else {
                self.counts.duplicates += 1;
            }
            return;
        }
        if seq > self.last_seq + 1 && self.after_hole {
            // Announced by the same-attempt `attempt_reset`: not a gap.
        } else if seq > self.last_seq + 1 {
            self.counts.gaps += 1;
            let first_missing = (self.last_seq + 1).max(seq - MAX_REMEMBERED_MISSING);
            self.missing.extend(first_missing..seq);
        }
        self.last_seq = seq;
        if event == "message_part" && data["part"]["type"] == "text" {
            if let Some(text) = data["part"]["text"].as_str() {
                self.streamed_text.push_str(text);
            }
        }
    }

    fn check_text(&mut self, message_text: &str) {
        let consistent = if self.after_hole {
            true
        } else if self.resumed {
            message_text.starts_with(&self.streamed_text)
        } else {
            self.streamed_text == message_text
        };
        if !consistent {
            self.counts.text_mismatches += 1;
        }
        // Later steps of the same attempt stream the next message's deltas.
        self.streamed_text.clear();
        if self.live_since_resume {
            self.resumed = false;
        }
        self.after_hole = false;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn part(attempt: i64, seq: i64, text: &str) -> (&'static str, Value) {
        (
            "message_part",
            json!({"attempt": attempt, "seq": seq, "role": "assistant",
                "part": {"type": "text", "text": text}, "ts": 1}),
        )
    }

    fn assistant(id: i64, text: &str) -> (&'static str, Value) {
        (
            "message",
            json!({"id": id, "role": "assistant", "content": [{"type": "text", "text": text}]}),
        )
    }

    fn status(status: &str) -> (&'static str, Value) {
        ("status", json!({"status": status, "version": 1}))
    }

    fn feed(events: &[(&'static str, Value)]) -> IntegrityCounts {
        let mut checker = StreamChecker::default();
        for (name, data) in events {
            checker.observe(name, data);
        }
        checker.take_counts()
    }

    #[test]
    fn a_clean_stream_over_two_turns_counts_nothing() {
        let counts = feed(&[
            status("waiting"),
            (
                "message",
                json!({"id": 1, "role": "user", "content": [{"type": "text", "text": "hi"}]}),
            ),
            status("running"),
            part(1, 1, "Hel"),
            part(1, 2, "lo"),
            assistant(2, "Hello"),
            status("waiting"),
            // The next turn is a new attempt whose seq starts again at 1.
            status("running"),
            part(2, 1, "Again"),
            assistant(4, "Again"),
            status("waiting"),
        ]);
        assert!(counts.is_zero(), "{counts:?}");
    }

    #[test]
    fn a_same_attempt_reset_announces_a_hole_that_is_not_a_gap() {
        let mut checker = StreamChecker::default();
        for (name, data) in [
            part(1, 1, "Hel"),
            part(1, 2, "lo "),
            ("attempt_reset", json!({"attempt": 1})),
            part(1, 7, "world"),
            part(1, 8, "!"),
            assistant(2, "Hello there world!"),
        ] {
            checker.observe(name, &data);
        }
        assert!(checker.take_counts().is_zero());
        assert_eq!(checker.holes(), 1);
        // Without the announcement the same jump is a gap.
        let counts = feed(&[part(1, 1, "a"), part(1, 5, "b")]);
        assert_eq!(counts.gaps, 1);
    }

    #[test]
    fn attempt_reset_drops_the_previews_of_the_failed_attempt() {
        let counts = feed(&[
            part(1, 1, "partial "),
            part(1, 2, "answ"),
            ("attempt_reset", json!({"attempt": 2})),
            part(2, 1, "full "),
            part(2, 2, "answer"),
            assistant(5, "full answer"),
        ]);
        assert!(counts.is_zero(), "{counts:?}");
    }

    #[test]
    fn gaps_duplicates_and_late_events_are_told_apart() {
        let counts = feed(&[
            part(1, 1, "a"),
            part(1, 2, "b"),
            part(1, 2, "b"), // duplicate
            part(1, 5, "e"), // gap: 3 and 4 missing
            part(1, 3, "c"), // late: out of order
            part(1, 3, "c"), // now a duplicate
            part(1, 1, "a"), // duplicate
        ]);
        assert_eq!(
            counts,
            IntegrityCounts {
                gaps: 1,
                duplicates: 3,
                out_of_order: 1,
                text_mismatches: 0,
            }
        );
    }

    #[test]
    fn events_of_an_older_attempt_are_out_of_order() {
        let counts = feed(&[
            part(1, 1, "x"),
            ("attempt_reset", json!({"attempt": 2})),
            part(1, 2, "y"), // the old attempt after the reset
            part(2, 1, "z"),
            ("attempt_reset", json!({"attempt": 1})), // a reset backwards
        ]);
        assert_eq!(counts.out_of_order, 2);
        assert_eq!(counts.gaps + counts.duplicates, 0);
    }

    #[test]
    fn a_new_attempt_that_does_not_start_at_one_is_a_gap() {
        let counts = feed(&[part(1, 1, "x"), part(2, 3, "y")]);
        assert_eq!(counts.gaps, 1);
    }

    #[test]
    fn retry_and_error_events_share_the_attempt_sequence() {
        let counts = feed(&[
            part(1, 1, "a"),
            (
                "retry",
                json!({"attempt": 1, "seq": 2, "delay_ms": 10, "kind": "overloaded"}),
            ),
            part(1, 3, "b"),
            (
                "error",
                json!({"attempt": 1, "seq": 4, "kind": "generic", "message": "boom"}),
            ),
        ]);
        assert!(counts.is_zero(), "{counts:?}");
    }

    #[test]
    fn text_must_match_the_final_attempt() {
        let mismatch = feed(&[
            part(1, 1, "Hello"),
            part(1, 2, " world"),
            assistant(2, "Hello there"),
        ]);
        assert_eq!(mismatch.text_mismatches, 1);

        // Deltas of a reset attempt must not leak into the final text.
        let stale = feed(&[
            part(1, 1, "stale "),
            ("attempt_reset", json!({"attempt": 2})),
            part(2, 1, "fresh"),
            assistant(2, "fresh"),
        ]);
        assert!(stale.is_zero(), "{stale:?}");

        // A message streamed with no deltas at all on a connection that never dropped.
        let missing = feed(&[status("running"), assistant(2, "Hello")]);
        assert_eq!(missing.text_mismatches, 1);

        // Non-text parts (reasoning) are not part of the message text.
        let reasoning = feed(&[
            (
                "message_part",
                json!({"attempt": 1, "seq": 1, "part": {"type": "reasoning", "text": "hmm"}}),
            ),
            part(1, 2, "Answer"),
            assistant(3, "Answer"),
        ]);
        assert!(reasoning.is_zero(), "{reasoning:?}");
    }

    #[test]
    fn a_resume_after_the_turn_ended_may_skip_the_remaining_deltas() {
        let mut checker = StreamChecker::default();
        checker.observe("message_part", &part(1, 1, "Hel").1);
        checker.note_reconnect();
        // The reopened stream starts after the turn ended: durable message only.
        checker.observe("message", &assistant(2, "Hello").1);
        assert!(checker.take_counts().is_zero());
        // But what was streamed must still be the message's beginning.
        checker.observe("message_part", &part(2, 1, "Hi").1);
        checker.note_reconnect();
        checker.observe("message", &assistant(3, "Hello").1);
        assert_eq!(checker.take_counts().text_mismatches, 1);
        // Later turns are checked again.
        checker.observe("message_part", &part(3, 1, "Bye").1);
        checker.observe("message", &assistant(4, "Bye!").1);
        assert_eq!(checker.take_counts().text_mismatches, 1);
    }

    #[test]
    fn a_resume_after_a_tool_turn_may_skip_the_deltas_of_every_step() {
        // Seen in a 10-minute soak: a reader reconnected after a three-step tool turn ended
        // and got its messages from the database, the first one (a tool call) without text.
        let mut checker = StreamChecker::default();
        checker.observe("message_part", &part(1, 1, "Hi").1);
        checker.observe("message", &assistant(2, "Hi").1);
        checker.note_reconnect();
        for (name, data) in [
            assistant(4, ""),
            ("message", json!({"id": 5, "role": "tool", "content": []})),
            assistant(6, ""),
            ("message", json!({"id": 7, "role": "tool", "content": []})),
            assistant(8, "Tool results: current_time: now"),
        ] {
            checker.observe(name, &data);
        }
        assert!(checker.take_counts().is_zero());
        // The next turn streams on this connection and is compared exactly again.
        checker.observe("message_part", &part(2, 1, "Bye").1);
        checker.observe("message", &assistant(10, "Bye!").1);
        assert_eq!(checker.take_counts().text_mismatches, 1);
    }

    #[test]
    fn a_resume_mid_step_compares_later_steps_exactly() {
        let mut checker = StreamChecker::default();
        checker.observe("message_part", &part(1, 1, "Let ").1);
        checker.note_reconnect();
        // The catch-up continues the attempt from the last seq received.
        checker.observe("message_part", &part(1, 2, "me look").1);
        checker.observe("message", &assistant(2, "Let me look").1);
        checker.observe("message", &json!({"id": 3, "role": "tool", "content": []}));
        checker.observe("message_part", &part(1, 3, "Found").1);
        checker.observe("message", &assistant(4, "Found it").1);
        assert_eq!(checker.take_counts().text_mismatches, 1);
    }

    #[test]
    fn a_first_connection_after_the_turn_ended_gets_messages_without_deltas() {
        // Opened after a tool turn ended: the snapshot's messages, then `waiting`.
        let counts = feed(&[
            assistant(4, ""),
            ("message", json!({"id": 5, "role": "tool", "content": []})),
            assistant(6, "Tool results: current_time: now"),
            status("waiting"),
            // The next turn streams live and is compared exactly.
            status("running"),
            part(2, 1, "Bye"),
            assistant(8, "Bye!"),
        ]);
        assert_eq!(counts.text_mismatches, 1, "{counts:?}");
    }

    #[test]
    fn take_counts_resets() {
        let mut checker = StreamChecker::default();
        checker.observe("message_part", &part(1, 2, "x").1);
        assert_eq!(checker.take_counts().gaps, 1);
        assert!(checker.take_counts().is_zero());
    }
}
