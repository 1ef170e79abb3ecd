//! How long an API replica takes to parse one chat notification (`ChatNotice::from_payload`)
//! on the payloads a B3 turn publishes (a frame notice of 20 text deltas, a change notice
//! with an embedded reply); and what relaying a frame notice costs (parse, then each event's SSE `data:` text) with the
//! events' data kept as JSON text (`SeqEvent::data`) against building a `serde_json::Value`
//! from it and serialising that again (how chatd relayed before).
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
        .map(|seq| {
            SeqEvent::new(
                seq,
                "message_part",
                &serde_json::json!({"attempt": 1, "seq": seq, "role": "assistant",
                    "part": {"type": "text", "text": format!("token{seq} ")}}),
            )
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
            title: None,
            new_messages: None,
            last_seq: Some(20),
        }
        .embed_messages(vec![reply]),
    ))
}

fn time<T>(label: &str, payload: &str, parse: impl Fn(&str) -> T) {
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

/// A frame notice as chatd parsed it before: each event's data built into a value.
#[derive(serde::Deserialize)]
struct ValueFrames {
    fr: Vec<ValueFrame>,
}

#[derive(serde::Deserialize)]
struct ValueFrame {
    ev: Vec<ValueEvent>,
}

#[derive(serde::Deserialize)]
struct ValueEvent {
    seq: i64,
    event: String,
    data: serde_json::Value,
}

/// Parse, then the (seq, name, SSE data text) an API replica relays.
fn relay_as_value(payload: &str) -> Vec<(i64, String, String)> {
    let notice: ValueFrames = serde_json::from_str(payload).expect("parse");
    notice
        .fr
        .into_iter()
        .flat_map(|frame| frame.ev)
        .map(|event| (event.seq, event.event, event.data.to_string()))
        .collect()
}

fn relay_as_text(payload: &str) -> Vec<(i64, String, String)> {
    let ChatNotice::Frames { frames } = ChatNotice::from_payload(payload).expect("parse") else {
        panic!("a frame notice");
    };
    frames
        .into_iter()
        .flat_map(|frame| frame.events)
        .map(|event| (event.seq, event.event, event.data.get().to_owned()))
        .collect()
}

fn main() {
    let payload = frames();
    assert_eq!(relay_as_value(&payload), relay_as_text(&payload));
    time("relay frames, data as values", &payload, relay_as_value);
    time("relay frames, data as text", &payload, relay_as_text);
    for (name, payload) in [
        ("frames (20 deltas)", frames()),
        ("change (embedded reply)", change()),
    ] {
        time(&format!("{name}, from_payload"), &payload, |p| {
            ChatNotice::from_payload(p).expect("parse")
        });
    }
}
