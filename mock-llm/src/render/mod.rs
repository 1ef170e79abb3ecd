//! Renders a [`Plan`] in each protocol: an SSE body, or a single JSON answer.
//!
//! Pacing (time to first token, chunk rate, stall) and fault injection (cut, in-stream error)
//! are the same in every protocol, so they live once in [`sse_body`]; a protocol only says which
//! bytes a start, a content chunk, a finish and an error are ([`SseWriter`]).
//!
//! The SSE body is a lazily evaluated stream owned by the HTTP connection: when the client goes
//! away hyper drops the body, which drops the generator mid-sleep, so an abandoned stream costs
//! nothing. Unpaced chunks are batched into frames of up to [`FRAME_BYTES`] so thousands of
//! concurrent fast streams do not cost a write per token.

pub mod anthropic;
pub mod chat;
pub mod chat_wire;
pub mod responses;

use std::convert::Infallible;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use serde::Serialize;
use tokio::time::Instant;

use crate::directives::StreamErrorKind;
use crate::plan::{Failure, Plan};

/// Unpaced output is flushed once a frame reaches this size.
const FRAME_BYTES: usize = 16 * 1024;

/// The bytes of one protocol's stream. Each method appends whole SSE events to `out`.
pub trait SseWriter: Send + 'static {
    /// Everything before the first content chunk (written after the time to first token).
    fn start(&mut self, plan: &Plan, out: &mut BytesMut);
    /// Content chunk `index` of the plan (see [`Plan::piece`]).
    fn content(&mut self, plan: &Plan, index: usize, out: &mut BytesMut);
    /// The terminal events of a complete answer.
    fn finish(&mut self, plan: &Plan, out: &mut BytesMut);
    /// The protocol's in-stream error after partial output; the body ends right after it.
    fn stream_error(&mut self, plan: &Plan, kind: StreamErrorKind, out: &mut BytesMut);
}

/// The SSE body for `plan`, given the failure this request gets (only a cut or an in-stream
/// error shows in a body; a status failure never reaches here).
pub fn sse_body<W: SseWriter>(
    plan: Plan,
    failure: Failure,
    writer: W,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let generator = Generator {
        plan,
        writer,
        failure,
        phase: Phase::Start,
        next_chunk: 0,
        stalled: false,
        schedule_origin: Instant::now(),
        buffer: BytesMut::new(),
    };
    futures::stream::unfold(generator, |mut generator| async move {
        let frame = generator.next_frame().await?;
        Some((Ok(frame), generator))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the time to first token and the start events.
    Start,
    Content,
    /// The terminal events still to write.
    Finish,
    /// Nothing more to write; the buffer may still hold a last frame.
    Done,
}

struct Generator<W> {
    plan: Plan,
    writer: W,
    failure: Failure,
    phase: Phase,
    next_chunk: usize,
    stalled: bool,
    /// When content chunk 0 was due; paced chunk `k` is due `k` intervals later (plus the stall),
    /// so pacing does not drift with timer granularity.
    schedule_origin: Instant,
    buffer: BytesMut,
}

impl<W: SseWriter> Generator<W> {
    /// The next body frame, or `None` at the end of the body.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            match self.phase {
                Phase::Start => {
                    if !self.plan.ttft.is_zero() {
                        tokio::time::sleep(self.plan.ttft).await;
                    }
                    self.schedule_origin = Instant::now();
                    self.writer.start(&self.plan, &mut self.buffer);
                    self.phase = Phase::Content;
                }
                Phase::Content => {
                    let index = self.next_chunk;
                    match self.failure {
                        Failure::Cut { after } if index >= after => {
                            self.phase = Phase::Done; // the injected truncation
                            continue;
                        }
                        Failure::StreamError { after, kind } if index >= after => {
                            self.writer.stream_error(&self.plan, kind, &mut self.buffer);
                            self.phase = Phase::Done;
                            continue;
                        }
                        _ => {}
                    }
                    if index >= self.plan.content_chunks() {
                        self.phase = Phase::Finish;
                        continue;
                    }
                    // A stall that is the injected failure applies to failing requests only.
                    let stall_applies =
                        self.plan.failure != Failure::Stall || self.failure == Failure::Stall;
                    if index == self.plan.stall_at
                        && !self.plan.stall.is_zero()
                        && !self.stalled
                        && stall_applies
                    {
                        if !self.buffer.is_empty() {
                            return Some(self.buffer.split().freeze());
                        }
                        tokio::time::sleep(self.plan.stall).await;
                        self.stalled = true;
                        self.schedule_origin += self.plan.stall;
                    }
                    if let Some(interval) = self.plan.chunk_interval {
                        let due = self.schedule_origin + interval.saturating_mul(index as u32);
                        if Instant::now() < due {
                            if !self.buffer.is_empty() {
                                return Some(self.buffer.split().freeze());
                            }
                            tokio::time::sleep_until(due).await;
                        }
                    }
                    self.writer.content(&self.plan, index, &mut self.buffer);
                    self.next_chunk += 1;
                    if self.plan.chunk_interval.is_some() || self.buffer.len() >= FRAME_BYTES {
                        return Some(self.buffer.split().freeze());
                    }
                }
                Phase::Finish => {
                    self.writer.finish(&self.plan, &mut self.buffer);
                    self.phase = Phase::Done;
                }
                Phase::Done => {
                    if self.buffer.is_empty() {
                        return None;
                    }
                    return Some(self.buffer.split().freeze());
                }
            }
        }
    }
}

/// Appends `data: <json>` and the blank line that dispatches it.
pub fn write_data(out: &mut BytesMut, data: &impl Serialize) {
    out.put_slice(b"data: ");
    write_json(out, data);
    out.put_slice(b"\n\n");
}

/// Appends `event: <name>`, `data: <json>` and the blank line that dispatches them.
pub fn write_event(out: &mut BytesMut, name: &str, data: &impl Serialize) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\n");
    write_data(out, data);
}

fn write_json(out: &mut BytesMut, data: &impl Serialize) {
    if let Err(error) = serde_json::to_writer(out.writer(), data) {
        // Unreachable for these plain types; logged rather than panicking a connection task.
        tracing::error!(%error, "mock-llm failed to serialize an event");
    }
}

pub fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}
