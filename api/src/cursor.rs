//! Cursors in URLs and SSE ids. Every parser returns a 400 naming the parameter on bad input.

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
        // Exactly what the OpenAPI document's pattern says: `[0-9]{1,18}-[0-9]{1,9}-[0-9]{1,18}`.
        let digits = |piece: &str, max: usize| {
            !piece.is_empty() && piece.len() <= max && piece.bytes().all(|b| b.is_ascii_digit())
        };
        let shape: Vec<&str> = text.split('-').collect();
        if shape.len() != 3
            || !digits(shape[0], 18)
            || !digits(shape[1], 9)
            || !digits(shape[2], 18)
        {
            return Err(bad());
        }
        let mut pieces = text.split('-');
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

/// `after` cursor of `GET /chats`: `<pin_order>_<updated_at µs since the epoch>_<id>`, the
/// pattern `[0-9]{1,9}_[0-9]{1,16}_<uuid>` (clients pass `next` back as it is).
pub fn encode_chat_cursor(pin_order: i32, updated_at: OffsetDateTime, id: Uuid) -> String {
    let micros = (updated_at.unix_timestamp_nanos() / 1000).max(0);
    format!("{}_{micros}_{}", pin_order.max(0), id.hyphenated())
}

pub fn decode_chat_cursor(text: &str) -> Result<ChatListCursor, ApiError> {
    let bad = || {
        ApiError::field(
            "after",
            "after: malformed cursor (use `next` from a previous page)",
        )
    };
    let digits = |piece: &str, max: usize| {
        !piece.is_empty() && piece.len() <= max && piece.bytes().all(|b| b.is_ascii_digit())
    };
    let mut pieces = text.splitn(3, '_');
    let (Some(pin), Some(micros), Some(id)) = (pieces.next(), pieces.next(), pieces.next()) else {
        return Err(bad());
    };
    // Hyphenated ids only (36 characters), as the document's pattern says.
    if !digits(pin, 9) || !digits(micros, 16) || id.len() != 36 {
        return Err(bad());
    }
    let pin_order: i32 = pin.parse().map_err(|_| bad())?;
    let micros: i128 = micros.parse().map_err(|_| bad())?;
    let updated_at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| bad())?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(ChatListCursor {
        pin_order,
        updated_at,
        id,
    })
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
            "+1-2-3",
            " 1-2-3",
            "1-1234567890-3",
        ] {
            assert!(StreamCursor::parse(bad, "cursor").is_err(), "{bad}");
        }
    }

    #[test]
    fn chat_cursor_round_trips_and_rejects_garbage() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let id = Uuid::new_v4();
        let decoded = decode_chat_cursor(&encode_chat_cursor(3, now, id)).unwrap();
        assert_eq!(
            (decoded.pin_order, decoded.updated_at, decoded.id),
            (3, now, id)
        );
        for bad in [
            "",
            "!!",
            "0_123_not-a-uuid",
            "0_+1_67e55044-10b1-426f-9247-bb680e5fe0c8",
            "-1_1_67e55044-10b1-426f-9247-bb680e5fe0c8",
            "1_67e55044-10b1-426f-9247-bb680e5fe0c8",
            "0_1_67e5504410b1426f9247bb680e5fe0c8",
            "0_12345678901234567_67e55044-10b1-426f-9247-bb680e5fe0c8",
            "1234567890_1_67e55044-10b1-426f-9247-bb680e5fe0c8",
        ] {
            assert!(decode_chat_cursor(bad).is_err(), "{bad}");
        }
    }
}
