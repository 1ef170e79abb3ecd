//! An incremental Server-Sent Events decoder: the framing of every streaming provider (the
//! worker's provider clients) and of chatd's own streams (the client of `chatd chat` and
//! `chatd scaletest`).
//!
//! Hand-written rather than taken from a crate so that it is exact about the cases providers
//! get wrong and benchmarks can measure it: lines end with `\n`, `\r\n` or `\r` (a CR at the end
//! of one network chunk and an LF at the start of the next are one line ending), a blank line
//! dispatches, `:` starts a comment, `data` lines join with `\n`, one space after the colon is
//! dropped, invalid UTF-8 is replaced lossily, and a final event without its blank line is still
//! delivered at EOF.
//!
//! **Invariant:** the events do not depend on how the bytes were chunked.
//!
//! Cost is linear in the input: bytes are scanned once, eight at a time, and only the tail of a
//! line that straddles two chunks is copied.

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type (`message`).
    pub event: Option<String>,
    /// All `data:` lines of the event joined with `\n`.
    pub data: String,
    /// The `id:` field of this event only (unlike browsers, not carried over to later events:
    /// providers use ids for diagnostics, not reconnection).
    pub id: Option<String>,
}

/// Decoder state carried between chunks.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The start of a line whose terminator has not arrived yet.
    partial_line: Vec<u8>,
    /// The previous chunk ended with CR, so an LF at the start of the next chunk belongs to the
    /// same line ending.
    skip_leading_lf: bool,
    /// Whether the first line was seen (a byte order mark is only stripped from it).
    started: bool,
    /// `data` lines of the current event, each followed by `\n`; empty means "no data yet".
    data: String,
    event: Option<String>,
    id: Option<String>,
}

const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Feeds the next chunk of the byte stream and returns the events it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.skip_leading_lf && !rest.is_empty() {
            self.skip_leading_lf = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(end) = find_line_end(rest) {
            if self.partial_line.is_empty() {
                self.process_line(&rest[..end], &mut events);
            } else {
                // Take the buffer out so `process_line` can borrow `self`, then hand the
                // allocation back for the next straddling line.
                let mut line = std::mem::take(&mut self.partial_line);
                line.extend_from_slice(&rest[..end]);
                self.process_line(&line, &mut events);
                line.clear();
                self.partial_line = line;
            }
            let terminator = rest[end];
            rest = &rest[end + 1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.skip_leading_lf = true,
                }
            }
        }
        self.partial_line.extend_from_slice(rest);
        events
    }

    /// Ends the stream: an unterminated last line counts as a line, and an event still being
    /// collected is dispatched (the SSE specification's "flush a final event at EOF" as providers need it).
    pub fn finish(mut self) -> Option<SseEvent> {
        let mut events = Vec::new();
        if !self.partial_line.is_empty() {
            let line = std::mem::take(&mut self.partial_line);
            self.process_line(&line, &mut events);
        }
        self.dispatch(&mut events);
        events.pop()
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        let line = if self.started {
            line
        } else {
            self.started = true;
            line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(line)
        };
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line[0] == b':' {
            return; // a comment, typically a keep-alive
        }
        let (field, value) = match line.iter().position(|&byte| byte == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" => self.id = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {} // `retry` and unknown fields mean nothing to a one-shot POST stream
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let id = self.id.take();
        if self.data.is_empty() {
            return; // an event without data lines is not dispatched (WHATWG semantics)
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        events.push(SseEvent { event, data, id });
    }
}

/// Index of the first `\n` or `\r`, testing eight bytes per step (SWAR: a word has a byte equal
/// to `b` iff `has_zero_byte(word ^ splat(b))`; the exact position is then found bytewise).
fn find_line_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LINE_FEEDS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const CARRIAGE_RETURNS: u64 = u64::from_ne_bytes([b'\r'; 8]);
    fn has_zero_byte(word: u64) -> bool {
        word.wrapping_sub(ONES) & !word & HIGHS != 0
    }
    fn is_line_end(byte: &u8) -> bool {
        *byte == b'\n' || *byte == b'\r'
    }
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word_bytes in &mut words {
        let mut array = [0u8; 8];
        array.copy_from_slice(word_bytes);
        let word = u64::from_ne_bytes(array);
        if has_zero_byte(word ^ LINE_FEEDS) || has_zero_byte(word ^ CARRIAGE_RETURNS) {
            return word_bytes
                .iter()
                .position(is_line_end)
                .map(|index| offset + index);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(is_line_end)
        .map(|index| offset + index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_whole(bytes: &[u8]) -> Vec<SseEvent> {
        let mut decoder = Decoder::new();
        let mut events = decoder.push(bytes);
        events.extend(decoder.finish());
        events
    }

    fn decode_chunked(bytes: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            events.extend(decoder.push(&bytes[start..cut]));
            start = cut;
        }
        events.extend(decoder.push(&bytes[start..]));
        events.extend(decoder.finish());
        events
    }

    fn event(name: Option<&str>, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: name.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn all_line_endings_fields_and_comments() {
        let input =
            b": keep-alive\r\nevent: delta\rid: 7\ndata: a\r\ndata:b\n\ndata:  two spaces\r\r";
        assert_eq!(
            decode_whole(input),
            vec![
                event(Some("delta"), "a\nb", Some("7")),
                event(None, " two spaces", None),
            ]
        );
    }

    #[test]
    fn cr_then_lf_across_chunks_is_one_line_ending() {
        // Were the LF after a chunk-final CR taken for a blank line, "x" would be dispatched
        // alone.
        let input = b"data: x\r\ndata: y\r\n\r\ndata: z\r\n\r\n";
        for cut in 0..input.len() {
            assert_eq!(
                decode_chunked(input, &[cut]),
                vec![event(None, "x\ny", None), event(None, "z", None)],
                "cut at {cut}"
            );
        }
        // CR alone ends a line even if the next chunk is not an LF.
        let mut decoder = Decoder::new();
        assert!(decoder.push(b"data: a\r").is_empty());
        assert_eq!(decoder.push(b"\rdata: b"), vec![event(None, "a", None)]);
        assert_eq!(decoder.finish(), Some(event(None, "b", None)));
    }

    #[test]
    fn field_without_colon_empty_data_and_unknown_fields() {
        let input = b"data\n\ndata:\ndata:\n\nretry: 10\nfoo: bar\n\nevent: only-type\n\n";
        assert_eq!(
            decode_whole(input),
            vec![event(None, "", None), event(None, "\n", None)]
        );
    }

    #[test]
    fn final_event_is_flushed_at_eof_and_partial_line_counts() {
        assert_eq!(decode_whole(b"data: end"), vec![event(None, "end", None)]);
        assert_eq!(decode_whole(b"data: end\n"), vec![event(None, "end", None)]);
        assert_eq!(decode_whole(b": only a comment"), vec![]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_bom_stripped() {
        let input = b"\xEF\xBB\xBFdata: ok \xFF\xFE\n\n";
        assert_eq!(
            decode_whole(input),
            vec![event(None, "ok \u{FFFD}\u{FFFD}", None)]
        );
        // A multi-byte character split across chunks survives.
        let text = "data: héllo ✓\n\n".as_bytes();
        for cut in 0..text.len() {
            assert_eq!(
                decode_chunked(text, &[cut]),
                vec![event(None, "héllo ✓", None)]
            );
        }
    }

    #[test]
    fn find_line_end_agrees_with_naive_search() {
        let mut bytes = vec![b'a'; 40];
        for position in 0..bytes.len() {
            for terminator in [b'\n', b'\r'] {
                bytes[position] = terminator;
                assert_eq!(find_line_end(&bytes), Some(position));
                bytes[position] = 0x8d; // high bytes must not look like terminators
            }
        }
        assert_eq!(find_line_end(&bytes), None);
        assert_eq!(find_line_end(b""), None);
    }

    fn sse_like_bytes() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop_oneof![
            Just(b"data".to_vec()),
            Just(b"event".to_vec()),
            Just(b"id".to_vec()),
            Just(b": ".to_vec()),
            Just(b":".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"x".to_vec()),
            Just("é".as_bytes().to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just(b"\xFF".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(pieces, 0..60).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            bytes in sse_like_bytes(),
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(decode_chunked(&bytes, &cuts), decode_whole(&bytes));
        }

        #[test]
        fn byte_at_a_time_gives_the_same_events(bytes in sse_like_bytes()) {
            let cuts: Vec<usize> = (1..bytes.len()).collect();
            prop_assert_eq!(decode_chunked(&bytes, &cuts), decode_whole(&bytes));
        }
    }
}
