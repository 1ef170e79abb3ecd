//! Cursors in URLs and SSE ids. Every parser returns a 400 naming the parameter on bad input.

use base64::Engine;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::chats::ChatListCursor;

/// Position in a chat's stream: the newest durable message seen, and the last seq seen of
/// `attempt`. Rendered as the SSE `id:` — `<message_id>-<attempt>-<seq>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCursor {
    pub message_id: i64,
    pub attempt: i32,
    pub seq: i64,
}

impl StreamCursor {
    pub fn parse(text: &str, parameter: &str) -> Result<StreamCursor, ApiError> {
        let bad = || {
            ApiError::field(
                parameter,
                format!("{parameter}: expected <message_id>-<attempt>-<seq> (three non-negative integers)"),
            )
        };
        let mut pieces = text.trim().split('-');
        let message_id = pieces
            .next()
            .ok_or_else(bad)?
            .parse::<i64>()
            .map_err(|_| bad())?;
        let attempt = pieces
            .next()
            .ok_or_else(bad)?
            .parse::<i32>()
            .map_err(|_| bad())?;
        let seq = pieces
            .next()
            .ok_or_else(bad)?
            .parse::<i64>()
            .map_err(|_| bad())?;
        if pieces.next().is_some() || message_id < 0 || attempt < 0 || seq < 0 {
            return Err(bad());
        }
        Ok(StreamCursor {
            message_id,
            attempt,
            seq,
        })
    }

    pub fn render(&self) -> String {
        format!("{}-{}-{}", self.message_id, self.attempt, self.seq)
    }
}

/// `after` cursor of `GET /chats`: base64url of `<created_at µs>_<id>`.
pub fn encode_chat_cursor(created_at: OffsetDateTime, id: Uuid) -> String {
    let micros = created_at.unix_timestamp_nanos() / 1000;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}_{id}"))
}

pub fn decode_chat_cursor(text: &str) -> Result<ChatListCursor, ApiError> {
    let bad = || {
        ApiError::field(
            "after",
            "after: malformed cursor (use `next` from a previous page)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (micros, id) = text.split_once('_').ok_or_else(bad)?;
    let micros: i128 = micros.parse().map_err(|_| bad())?;
    let created_at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| bad())?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(ChatListCursor { created_at, id })
}

/// Parses a UUID path segment.
pub fn parse_uuid(text: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::field(what, format!("{what}: not a valid UUID")))
}

/// Parses an integer id (message and queue ids).
pub fn parse_int_id(text: &str, what: &'static str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::field(what, format!("{what}: not a valid id")))
}

/// Query string pairs (repeated keys kept, in order).
///
/// Every query parameter is structured (ids, cursors, labels, flags): a NUL anywhere is a 400
/// naming the parameter (PostgreSQL cannot store or compare NUL in text).
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    form_urlencoded::parse(raw.as_bytes())
        .map(|(key, value)| {
            if key.contains('\0') || value.contains('\0') {
                let name = key.replace('\0', "\\0");
                return Err(ApiError::field(
                    &name,
                    format!("query parameter `{name}`: NUL characters are not allowed"),
                ));
            }
            Ok((key.into_owned(), value.into_owned()))
        })
        .collect()
}

/// Parses `limit` (1..=max, default `default`).
pub fn parse_limit(value: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=max).contains(limit))
            .ok_or_else(|| ApiError::field("limit", format!("limit: an integer from 1 to {max}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_cursor_round_trips_and_rejects_garbage() {
        let cursor = StreamCursor {
            message_id: 12,
            attempt: 3,
            seq: 40,
        };
        assert_eq!(
            StreamCursor::parse(&cursor.render(), "cursor").unwrap(),
            cursor
        );
        for bad in [
            "",
            "1-2",
            "a-b-c",
            "1-2-3-4",
            "-1-2-3",
            "1--2-3",
            "99999999999999999999-1-1",
        ] {
            assert!(StreamCursor::parse(bad, "cursor").is_err(), "{bad}");
        }
    }

    #[test]
    fn chat_cursor_round_trips_and_rejects_garbage() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let id = Uuid::new_v4();
        let decoded = decode_chat_cursor(&encode_chat_cursor(now, id)).unwrap();
        assert_eq!((decoded.created_at, decoded.id), (now, id));
        for bad in ["", "!!", "bm9wZQ", "MTIzX25vdC1hLXV1aWQ"] {
            assert!(decode_chat_cursor(bad).is_err(), "{bad}");
        }
    }
}
