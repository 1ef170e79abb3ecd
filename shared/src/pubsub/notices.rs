//! Channel names and notification payloads.
//!
//! Payloads are compact JSON and must stay under PostgreSQL's 8000-byte limit; stream frames
//! are split by the worker's flusher to guarantee it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::db::rows::MessageRow;
use crate::domain::ChatStatus;

/// Largest payload we publish (PostgreSQL rejects 8000 bytes and more).
pub const MAX_PAYLOAD_BYTES: usize = 7900;

/// "Something became pending": API / sweeper → all workers. Payload: optional chat id.
pub const WAKE_CHANNEL: &str = "chatd_wake";
/// Cache invalidation for configuration (providers, models): admin API → every process.
pub const CONFIG_CHANNEL: &str = "chatd_config";

/// Control channel of one worker: API → the owning worker.
pub fn worker_channel(worker_id: Uuid) -> String {
    format!("chatd_worker_{worker_id}")
}

/// Chats are spread over this many channels (`chatd_chat_<bucket>`). PostgreSQL matches every
/// notification against a listening session's channel list linearly, so a replica with
/// thousands of per-chat channels would pay thousands of compares per notification; with
/// buckets the list is at most this long, and the flusher packs all frames of one bucket into
/// one notification per flush. Every process must agree on it.
pub const CHAT_BUCKETS: u32 = 64;

/// The bucket of a chat (UUIDs are random, so buckets fill evenly).
pub fn chat_bucket(chat_id: Uuid) -> u32 {
    (chat_id.as_u128() % u128::from(CHAT_BUCKETS)) as u32
}

/// The channel carrying one bucket's durable-change hints and stream frames.
pub fn bucket_channel(bucket: u32) -> String {
    format!("chatd_chat_{bucket}")
}

/// Durable-change hints and stream frames of one chat → API replicas with subscribers to any
/// chat of its bucket (they filter by the chat id in the payload).
pub fn chat_channel(chat_id: Uuid) -> String {
    bucket_channel(chat_bucket(chat_id))
}

/// Chat-list events of one user → API replicas with watch subscribers of that user.
pub fn owner_channel(owner_id: Uuid) -> String {
    format!("chatd_owner_{owner_id}")
}

/// The bucket of a chat channel name.
pub fn parse_chat_channel(channel: &str) -> Option<u32> {
    channel
        .strip_prefix("chatd_chat_")
        .and_then(|bucket| bucket.parse::<u32>().ok())
        .filter(|bucket| *bucket < CHAT_BUCKETS)
}

/// Inverse of `owner_channel`.
pub fn parse_owner_channel(channel: &str) -> Option<Uuid> {
    channel
        .strip_prefix("chatd_owner_")
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// A notification on a chat (bucket) channel.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "t")]
pub enum ChatNotice {
    /// A durable change committed at `version`. Receivers drop anything not newer than what
    /// they have and re-read the database for the parts flagged here.
    #[serde(rename = "c")]
    Change(ChangeNotice),
    /// Frames of one or more chats of the bucket, each already in the resume log.
    #[serde(rename = "f")]
    Frames {
        #[serde(rename = "fr")]
        frames: Vec<FrameNotice>,
    },
}

/// The `Frames` variant's fields (the tag is an unknown field here, ignored).
#[derive(Deserialize)]
struct FramesBody {
    #[serde(rename = "fr")]
    frames: Vec<FrameNotice>,
}

impl ChatNotice {
    /// Parses a chat channel payload. What chatd publishes (`serde_json::to_string`) starts
    /// with the tag — `{"t":"c",` or `{"t":"f",` — so the variant is deserialised directly
    /// from the text; any other key order goes through a `serde_json::Value` first
    /// (`Deserialize` below). The derived parser of an internally tagged enum would buffer
    /// the whole payload into serde's generic `Content` (≈8 % of an API replica's CPU in B3),
    /// and cannot hold the events' data as JSON text (`SeqEvent::data`) at all.
    pub fn from_payload(payload: &str) -> serde_json::Result<ChatNotice> {
        if payload.starts_with(r#"{"t":"c","#) {
            serde_json::from_str::<ChangeNotice>(payload).map(ChatNotice::Change)
        } else if payload.starts_with(r#"{"t":"f","#) {
            serde_json::from_str::<FramesBody>(payload).map(|body| ChatNotice::Frames {
                frames: body.frames,
            })
        } else {
            serde_json::from_str(payload)
        }
    }
}

impl<'de> Deserialize<'de> for ChatNotice {
    /// Any key order: the payload as a value, its tag taken out, the variant read from the rest.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ChatNotice, D::Error> {
        use serde::de::Error;
        let mut value = serde_json::Value::deserialize(deserializer)?;
        let tag = value
            .as_object_mut()
            .and_then(|object| object.remove("t"))
            .ok_or_else(|| D::Error::missing_field("t"))?;
        match tag.as_str() {
            Some("c") => ChangeNotice::deserialize(value)
                .map(ChatNotice::Change)
                .map_err(D::Error::custom),
            Some("f") => FramesBody::deserialize(value)
                .map(|body| ChatNotice::Frames {
                    frames: body.frames,
                })
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(format!(
                "unknown chat notice tag {tag}, expected \"c\" or \"f\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeNotice {
    #[serde(rename = "id")]
    pub chat_id: Uuid,
    /// `chats.version` after the change.
    #[serde(rename = "v")]
    pub version: i64,
    /// `chats.status` after the change.
    #[serde(rename = "s")]
    pub status: ChatStatus,
    /// `chats.attempt` after the change.
    #[serde(rename = "a")]
    pub attempt: i32,
    /// New messages were inserted.
    #[serde(rename = "m", default, skip_serializing_if = "std::ops::Not::not")]
    pub messages: bool,
    /// The queue changed.
    #[serde(rename = "q", default, skip_serializing_if = "std::ops::Not::not")]
    pub queue: bool,
    /// Anything else changed (title, labels, last_error, history edits): re-read the chat.
    #[serde(rename = "o", default, skip_serializing_if = "std::ops::Not::not")]
    pub other: bool,
    /// The new title, when the title is all `other` stands for: a receiver relays it without
    /// reading the database. (Builds before it read `other` alone and re-read, as before.)
    #[serde(rename = "ti", default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The new visible messages themselves, when they fit the payload: a receiver whose
    /// version is exactly `version - 1` relays them without reading the database.
    #[serde(rename = "ms", default, skip_serializing_if = "Option::is_none")]
    pub new_messages: Option<Vec<MessageRow>>,
    /// The last seq the attempt published before this change (worker commits): a receiver
    /// that has relayed less fills from the resume log before relaying the messages.
    #[serde(rename = "ls", default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
}

/// Largest embedded message list (leaves room for the rest of the payload).
const MAX_EMBEDDED_BYTES: usize = 6000;

impl ChangeNotice {
    /// Whether the notice carries everything its change needs: the new messages (when there
    /// are any) and the title (when that is the other change), and no queue change. A
    /// receiver that has relayed exactly the version before applies such a notice without
    /// reading the database.
    pub fn is_complete(&self) -> bool {
        (!self.messages || self.new_messages.is_some())
            && !self.queue
            && (!self.other || self.title.is_some())
    }

    /// Embeds `rows` when they are all visible and small enough; otherwise receivers re-read.
    pub fn embed_messages(mut self, rows: Vec<MessageRow>) -> ChangeNotice {
        self.messages = self.messages || !rows.is_empty();
        let size: usize = rows
            .iter()
            .map(|row| row.content.to_string().len() + 300)
            .sum();
        if size <= MAX_EMBEDDED_BYTES {
            self.new_messages = Some(rows);
        }
        self
    }
}

/// Stream events `seq_from..=seq_to` of one chat's `attempt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameNotice {
    #[serde(rename = "id")]
    pub chat_id: Uuid,
    #[serde(rename = "a")]
    pub attempt: i32,
    #[serde(rename = "s")]
    pub seq_from: i64,
    #[serde(rename = "e")]
    pub seq_to: i64,
    /// Database clock when the frame was written, µs since the epoch (relay latency).
    #[serde(rename = "ts")]
    pub created_at_us: i64,
    /// The events, each a `SeqEvent`.
    #[serde(rename = "ev")]
    pub events: Vec<SeqEvent>,
}

/// One event of an attempt's stream, numbered 1, 2, 3 … per attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeqEvent {
    pub seq: i64,
    /// SSE event name: `message_part`, `retry`, `error`.
    pub event: String,
    /// SSE `data:` object, already in the public shape (it includes `attempt` and `seq`),
    /// as JSON text: the worker serialises it once, the resume log and the notification carry
    /// it as it is, and an API replica checks it is JSON and relays the text without building
    /// a value from it.
    pub data: Box<RawValue>,
}

impl SeqEvent {
    /// An event whose data is `data` (compact JSON text).
    pub fn new(seq: i64, event: &str, data: &serde_json::Value) -> SeqEvent {
        SeqEvent {
            seq,
            event: event.to_owned(),
            data: raw_json(data),
        }
    }
}

impl PartialEq for SeqEvent {
    fn eq(&self, other: &SeqEvent) -> bool {
        self.seq == other.seq && self.event == other.event && self.data.get() == other.data.get()
    }
}

/// `value` as JSON text (a `serde_json::Value` always serialises: its keys are strings;
/// `null` otherwise).
pub fn raw_json(value: &serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_default()
}

/// A notification on a worker's control channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlNotice {
    pub chat_id: Uuid,
    pub version: i64,
    pub kind: ControlKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// Persist partial output and release (running → interrupting was committed).
    Interrupt,
    /// Stop at once and write nothing (the lease was taken away).
    Cancel,
}

/// A notification on an owner channel: a chat of that user changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnerNotice {
    #[serde(rename = "k")]
    pub kind: OwnerEventKind,
    #[serde(rename = "c")]
    pub chat_id: Uuid,
    #[serde(rename = "v")]
    pub version: i64,
}

/// What happened to a chat, as the watch stream's `chat` event says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OwnerEventKind {
    Created,
    Updated,
    Status,
    Title,
    Archived,
    Deleted,
    /// The read marker moved (`has_unread` may have changed).
    Read,
}

/// Serialises a notice; these types cannot fail to serialise.
pub fn to_payload<T: Serialize>(notice: &T) -> String {
    serde_json::to_string(notice).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_fit_postgres_identifiers() {
        let id = Uuid::new_v4();
        for name in [chat_channel(id), owner_channel(id), worker_channel(id)] {
            assert!(name.len() <= 63, "{name} is too long");
        }
        assert_eq!(parse_chat_channel(&chat_channel(id)), Some(chat_bucket(id)));
        assert_eq!(parse_chat_channel("chatd_chat_64"), None);
        assert_eq!(parse_owner_channel(&owner_channel(id)), Some(id));
        assert_eq!(parse_chat_channel("chatd_chat_nope"), None);
    }

    #[test]
    fn change_notice_round_trips_compactly() {
        let id = Uuid::nil();
        let notice = ChatNotice::Change(ChangeNotice {
            chat_id: id,
            version: 7,
            status: ChatStatus::Running,
            attempt: 2,
            messages: false,
            queue: true,
            other: false,
            title: None,
            new_messages: None,
            last_seq: None,
        });
        let payload = to_payload(&notice);
        assert_eq!(
            payload,
            r#"{"t":"c","id":"00000000-0000-0000-0000-000000000000","v":7,"s":"running","a":2,"q":true}"#
        );
        let back: ChatNotice = serde_json::from_str(&payload).unwrap();
        assert!(matches!(back, ChatNotice::Change(c) if c.version == 7 && c.queue && !c.messages));
        let fast = ChatNotice::from_payload(&payload).unwrap();
        assert!(matches!(fast, ChatNotice::Change(c) if c.version == 7 && c.queue && !c.messages));
    }

    #[test]
    fn event_data_is_the_same_text_from_a_notice_and_from_the_resume_log() {
        let data = serde_json::json!({"attempt": 2, "seq": 9, "ts": 5,
            "part": {"type": "text", "text": "ünïcode \"quoted\" \u{1F600}"}});
        let event = SeqEvent::new(9, "message_part", &data);
        assert_eq!(event.data.get(), data.to_string());
        // A notice carries the text as it is.
        let from_text: SeqEvent = serde_json::from_str(&to_payload(&event)).unwrap();
        assert_eq!(from_text, event);
        // The resume log's jsonb arrives as a value (keys in jsonb's order): the same compact
        // text comes out of it.
        let stored = serde_json::json!([{"seq": 9, "event": "message_part", "data": data}]);
        let from_log: Vec<SeqEvent> = serde_json::from_value(stored).unwrap();
        assert_eq!(from_log, vec![event]);
    }

    #[test]
    fn from_payload_reads_any_key_order() {
        let frames = ChatNotice::Frames {
            frames: vec![FrameNotice {
                chat_id: Uuid::from_u128(7),
                attempt: 3,
                seq_from: 4,
                seq_to: 5,
                created_at_us: 1_700_000_000_000_000,
                events: vec![
                    SeqEvent::new(
                        4,
                        "message_part",
                        &serde_json::json!({"attempt": 3, "seq": 4, "part": {"type": "text", "text": "a \"b\""}}),
                    ),
                    SeqEvent::new(
                        5,
                        "retry",
                        &serde_json::json!({"attempt": 3, "seq": 5, "delay_ms": 100}),
                    ),
                ],
            }],
        };
        let change = ChatNotice::Change(
            ChangeNotice {
                chat_id: Uuid::from_u128(9),
                version: 12,
                status: ChatStatus::Waiting,
                attempt: 3,
                messages: true,
                queue: false,
                other: true,
                title: Some("Paris trip".into()),
                new_messages: None,
                last_seq: Some(40),
            }
            .embed_messages(Vec::new()),
        );
        for notice in [frames, change] {
            let payload = to_payload(&notice);
            // Through a value (what any other key order takes) and directly from the text.
            let via_value: ChatNotice =
                serde_json::from_value(serde_json::from_str(&payload).unwrap()).unwrap();
            let fast = ChatNotice::from_payload(&payload).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{via_value:?}"));
            assert_eq!(to_payload(&fast), payload);
            // The same fields in another order (not what chatd writes): through a value.
            let mut object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&payload).unwrap();
            let tag = object.remove("t").unwrap();
            object.insert("t".into(), tag);
            let reordered = serde_json::to_string(&object).unwrap();
            assert!(!reordered.starts_with(r#"{"t":"#), "{reordered}");
            let slow = ChatNotice::from_payload(&reordered).unwrap();
            assert_eq!(format!("{slow:?}"), format!("{via_value:?}"));
        }
        assert!(ChatNotice::from_payload(r#"{"t":"c","v":1}"#).is_err());
        assert!(ChatNotice::from_payload(r#"{"t":"f","fr":[{"id":"00000000-0000-0000-0000-000000000001","a":1,"s":1,"e":1,"ts":0,"ev":[{"seq":1,"event":"x","data":{"a":}}]}]}"#).is_err());
        assert!(ChatNotice::from_payload(r#"{"t":"x"}"#).is_err());
    }
}
