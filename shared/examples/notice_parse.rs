//! How long an API replica takes to parse one chat notification: the derived parser of the
//! internally tagged `ChatNotice` against `ChatNotice::from_payload`, on the payloads a B3
//! turn publishes (a frame notice of 20 text deltas, a change notice with an embedded reply).
//!
//!     cargo run --release -p chatd-shared --example notice_parse

use std::hint::black_box;
use std::time::Instant;

use chatd_shared::db::rows::MessageRow;
use chatd_shared::domain::ChatStatus;
use chatd_shared::pubsub::{to_payload, ChangeNotice, ChatNotice, FrameNotice, SeqEvent};
use uuid::Uuid;

const ROUNDS: usize = 200_000;

fn frames() -> String {
    let events = (1..=20)
        .map(|seq| SeqEvent {
            seq,
            event: "message_part".into(),
            data: serde_json::json!({"attempt": 1, "seq": seq, "role": "assistant",
                "part": {"type": "text", "text": format!("token{seq} ")}}),
        })
        .collect();
    to_payload(&ChatNotice::Frames {
        frames: vec![FrameNotice {
            chat_id: Uuid::new_v4(),
            attempt: 1,
            seq_from: 1,
            seq_to: 20,
            created_at_us: 1_764_000_000_000_000,
            events,
        }],
    })
}

fn change() -> String {
    let reply: MessageRow = serde_json::from_value(serde_json::json!({
        "id": 123456, "chat_id": Uuid::new_v4(), "role": "assistant",
        "content": [{"type": "text", "text": "one two three four five six seven eight nine ten"}],
        "created_at": "2026-12-01T14:00:00Z", "attempt": 1,
    }))
    .expect("a message row");
    to_payload(&ChatNotice::Change(
        ChangeNotice {
            chat_id: Uuid::new_v4(),
            version: 42,
            status: ChatStatus::Waiting,
            attempt: 1,
            messages: true,
            queue: false,
            other: false,
            new_messages: None,
            last_seq: Some(20),
        }
        .embed_messages(vec![reply]),
    ))
}

fn time(label: &str, payload: &str, parse: impl Fn(&str) -> ChatNotice) {
    for _ in 0..ROUNDS / 10 {
        black_box(parse(black_box(payload)));
    }
    let started = Instant::now();
    for _ in 0..ROUNDS {
        black_box(parse(black_box(payload)));
    }
    let ns = started.elapsed().as_nanos() as f64 / ROUNDS as f64;
    println!("{label:<40} {:>6} bytes {ns:>9.0} ns/notice", payload.len());
}

fn main() {
    for (name, payload) in [
        ("frames (20 deltas)", frames()),
        ("change (embedded reply)", change()),
    ] {
        time(&format!("{name}, derived"), &payload, |p| {
            serde_json::from_str(p).expect("parse")
        });
        time(&format!("{name}, from_payload"), &payload, |p| {
            ChatNotice::from_payload(p).expect("parse")
        });
    }
}
