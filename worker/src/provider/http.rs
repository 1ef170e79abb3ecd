//! HTTP plumbing shared by every protocol client: send one POST, classify a non-2xx answer,
//! and drive a protocol's incremental [`StreamParser`] with the response body.
//!
//! **Invariant:** a request is sent exactly once. Nothing here reconnects (re-sending a request
//! bills it again); retrying is the turn loop's decision.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::provider::{EventStream, ProviderError, ProviderEvent};
use chatd_shared::sse::{Decoder, SseEvent};

/// One item of a parsed stream: an event, or the error that ends the stream.
pub type ParsedItem = Result<ProviderEvent, ProviderError>;

/// Error bodies are read only this far: enough for any real error object, and a misbehaving
/// server cannot make us buffer an unbounded body.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// A protocol's pure, synchronous stream parser: bytes in, events out, so recorded fixtures
/// replay byte by byte in tests and the HTTP wrapper only moves data.
pub trait StreamParser: Send + 'static {
    /// Feeds the next bytes of the response body.
    fn push(&mut self, bytes: &[u8], out: &mut VecDeque<ParsedItem>);
    /// The body ended; a stream without its terminal event yields a truncation error.
    fn finish(self, out: &mut VecDeque<ParsedItem>);
    /// Whether the stream reached its end (or failed); reading stops then.
    fn is_done(&self) -> bool;
}

/// What a protocol parser built on the SSE decoder provides. Every such type is a
/// [`StreamParser`] through the blanket impl below, which owns the shared bookkeeping: stop at
/// the first terminal event or error, flush the decoder's last event at EOF, and hand a stream
/// that ended without its terminal event to [`SseProtocol::on_eof`].
pub trait SseProtocol: Send + 'static {
    fn decoder(&mut self) -> &mut Decoder;
    /// One decoded event. `at_eof`: it was flushed at the end of the body (an incomplete last
    /// event, which some protocols treat as truncation rather than as malformed).
    fn handle_event(&mut self, event: &SseEvent, at_eof: bool, out: &mut VecDeque<ParsedItem>);
    /// The body ended before the protocol finished.
    fn on_eof(&mut self, out: &mut VecDeque<ParsedItem>);
    /// A terminal event or an error was emitted: nothing more is.
    fn is_finished(&self) -> bool;
}

impl<T: SseProtocol> StreamParser for T {
    fn push(&mut self, bytes: &[u8], out: &mut VecDeque<ParsedItem>) {
        if self.is_finished() {
            return;
        }
        for event in self.decoder().push(bytes) {
            self.handle_event(&event, false, out);
            if self.is_finished() {
                return;
            }
        }
    }

    fn finish(mut self, out: &mut VecDeque<ParsedItem>) {
        if self.is_finished() {
            return;
        }
        if let Some(event) = std::mem::take(self.decoder()).finish() {
            self.handle_event(&event, true, out);
        }
        if !self.is_finished() {
            self.on_eof(out);
        }
    }

    fn is_done(&self) -> bool {
        self.is_finished()
    }
}

/// Sends `builder` and, on 2xx, returns the events `parser` makes of the body.
pub async fn send_streaming<P: StreamParser>(
    builder: reqwest::RequestBuilder,
    parser: P,
) -> Result<EventStream, ProviderError> {
    let response = builder
        .send()
        .await
        .map_err(|error| ProviderError::from_transport(&error))?;
    let status = response.status();
    if !status.is_success() {
        let headers = response.headers().clone();
        let body = read_error_body(response).await;
        return Err(ProviderError::from_http(status.as_u16(), &headers, &body));
    }
    Ok(Box::pin(parse_body(response.bytes_stream(), parser)))
}

/// Reads at most [`MAX_ERROR_BODY_BYTES`] of an error answer.
pub async fn read_error_body(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = MAX_ERROR_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// State of the event stream built from a response body.
struct BodyState<S, P> {
    body: Pin<Box<S>>,
    /// `None` once the body ended or failed.
    parser: Option<P>,
    pending: VecDeque<ParsedItem>,
}

/// Drives the parser with body chunks, yielding events as they complete. Reading stops at the
/// terminal event or the first error; dropping the stream drops the connection.
pub fn parse_body<S, P>(body: S, parser: P) -> impl Stream<Item = ParsedItem> + Send
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    P: StreamParser,
{
    let state = BodyState {
        body: Box::pin(body),
        parser: Some(parser),
        pending: VecDeque::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.pending.pop_front() {
                return Some((item, state));
            }
            let parser = state.parser.as_mut()?;
            if parser.is_done() {
                state.parser = None;
                continue;
            }
            match state.body.next().await {
                Some(Ok(bytes)) => parser.push(&bytes, &mut state.pending),
                Some(Err(error)) => {
                    state.parser = None;
                    state
                        .pending
                        .push_back(Err(ProviderError::from_transport(&error)));
                }
                None => {
                    if let Some(parser) = state.parser.take() {
                        parser.finish(&mut state.pending);
                    }
                }
            }
        }
    })
}

/// Joins a base URL (with or without a trailing slash) and a path.
pub fn endpoint_url(base_url: &str, path: &str) -> String {
    format!("{}/{}", base_url.trim_end_matches('/'), path)
}

/// A JSON string is sent as its contents (tool output text, or tool-call arguments that were
/// kept verbatim because they were not valid JSON); anything else as its JSON text.
pub fn json_as_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Parses concatenated tool-call argument fragments. Empty arguments become `{}`; text that is
/// not valid JSON is kept verbatim as a JSON string so nothing the model said is lost.
pub fn parse_arguments(raw: &str) -> serde_json::Value {
    if raw.trim().is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
}
