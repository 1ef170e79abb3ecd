//! Renders a [`Plan`] as a Chat Completions SSE body or a single JSON answer.
//!
//! The SSE body is a lazily evaluated stream owned by the HTTP connection: when the client goes
//! away hyper drops the body, which drops the generator mid-sleep, so an abandoned stream costs
//! nothing. Unpaced chunks are batched into frames of up to [`FRAME_BYTES`] so thousands of
//! concurrent fast streams do not cost a write per token.

use std::borrow::Cow;
use std::convert::Infallible;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use tokio::time::Instant;

use crate::mock_llm::plan::{Failure, Output, Piece, Plan};
use crate::provider::openai_chat::wire::{
    ChatChunk, ChatCompletion, ChunkChoice, ChunkDelta, CompletionChoice, CompletionMessage,
    CompletionTokensDetails, FunctionCall, FunctionFragment, PromptTokensDetails, RequestToolCall,
    ToolCallFragment, WireUsage,
};

/// Unpaced output is flushed once a frame reaches this size.
const FRAME_BYTES: usize = 16 * 1024;

/// The SSE body for `plan`, given the failure this request gets (only a cut shows in a body).
pub fn sse_body(
    plan: Plan,
    failure: Failure,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let cut_after = match failure {
        Failure::Cut { after } => Some(after),
        _ => None,
    };
    let generator = Generator {
        created: unix_seconds(),
        plan,
        cut_after,
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

/// The non-streaming answer (`"stream": false`). Only `ttft_ms` applies to it; the caller waits.
pub fn completion(plan: &Plan) -> ChatCompletion {
    let reasoning = plan.reasoning.full_text();
    let (content, tool_calls) = match &plan.output {
        Output::Text(text) => (Some(text.full_text()), None),
        Output::ToolCalls(calls) => (
            None,
            Some(
                calls
                    .iter()
                    .map(|call| RequestToolCall {
                        id: call.id.clone(),
                        call_type: "function".to_owned(),
                        function: FunctionCall {
                            name: call.name.clone(),
                            arguments: call.arguments.clone(),
                        },
                    })
                    .collect(),
            ),
        ),
    };
    ChatCompletion {
        id: plan.response_id.clone(),
        object: "chat.completion".to_owned(),
        created: unix_seconds(),
        model: plan.model.clone(),
        choices: vec![CompletionChoice {
            index: 0,
            message: CompletionMessage {
                role: "assistant".to_owned(),
                content,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls,
            },
            finish_reason: Some(plan.finish_reason().to_owned()),
        }],
        usage: Some(usage(plan, plan.content_chunks())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the time to first token and the role chunk.
    Start,
    Content,
    /// Finish chunk, usage chunk and `[DONE]` still to write.
    Finish,
    /// Nothing more to write; the buffer may still hold a last frame.
    Done,
}

struct Generator {
    plan: Plan,
    created: i64,
    cut_after: Option<usize>,
    phase: Phase,
    next_chunk: usize,
    stalled: bool,
    /// When content chunk 0 was due; paced chunk `k` is due `k` intervals later (plus the stall),
    /// so pacing does not drift with timer granularity.
    schedule_origin: Instant,
    buffer: BytesMut,
}

impl Generator {
    /// The next body frame, or `None` at the end of the body.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            match self.phase {
                Phase::Start => {
                    if !self.plan.ttft.is_zero() {
                        tokio::time::sleep(self.plan.ttft).await;
                    }
                    self.schedule_origin = Instant::now();
                    let delta = ChunkDelta {
                        role: Some(Cow::Borrowed("assistant")),
                        content: Some(Cow::Borrowed("")),
                        ..ChunkDelta::default()
                    };
                    self.write_chunk(delta, None);
                    self.phase = Phase::Content;
                }
                Phase::Content => {
                    let index = self.next_chunk;
                    if self.cut_after.is_some_and(|after| index >= after) {
                        self.phase = Phase::Done; // the injected truncation: no finish, no [DONE]
                        continue;
                    }
                    if index >= self.plan.content_chunks() {
                        self.phase = Phase::Finish;
                        continue;
                    }
                    if index == self.plan.stall_at && !self.plan.stall.is_zero() && !self.stalled {
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
                    self.write_content(index);
                    self.next_chunk += 1;
                    if self.plan.chunk_interval.is_some() || self.buffer.len() >= FRAME_BYTES {
                        return Some(self.buffer.split().freeze());
                    }
                }
                Phase::Finish => {
                    let finish_reason = self.plan.finish_reason();
                    self.write_chunk(ChunkDelta::default(), Some(finish_reason));
                    if self.plan.include_usage {
                        let chunk = ChatChunk {
                            usage: Some(usage(&self.plan, self.plan.content_chunks())),
                            ..chunk_header(&self.plan, self.created)
                        };
                        write_event(&mut self.buffer, &chunk);
                    }
                    self.buffer.put_slice(b"data: [DONE]\n\n");
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

    fn write_content(&mut self, index: usize) {
        let delta = match self.plan.piece(index) {
            Piece::Reasoning(text) => ChunkDelta {
                reasoning_content: Some(Cow::Borrowed(text)),
                ..ChunkDelta::default()
            },
            Piece::Text(text) => ChunkDelta {
                content: Some(Cow::Borrowed(text)),
                ..ChunkDelta::default()
            },
            Piece::ToolCallHeader { index, id, name } => ChunkDelta {
                tool_calls: Some(vec![ToolCallFragment {
                    index: Some(index),
                    id: Some(Cow::Borrowed(id)),
                    call_type: Some(Cow::Borrowed("function")),
                    function: Some(FunctionFragment {
                        name: Some(Cow::Borrowed(name)),
                        arguments: Some(Cow::Borrowed("")),
                    }),
                }]),
                ..ChunkDelta::default()
            },
            Piece::ToolCallArguments { index, fragment } => ChunkDelta {
                tool_calls: Some(vec![ToolCallFragment {
                    index: Some(index),
                    function: Some(FunctionFragment {
                        name: None,
                        arguments: Some(Cow::Borrowed(fragment)),
                    }),
                    ..ToolCallFragment::default()
                }]),
                ..ChunkDelta::default()
            },
        };
        let chunk = ChatChunk {
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: None,
            }],
            ..chunk_header(&self.plan, self.created)
        };
        write_event(&mut self.buffer, &chunk);
    }

    fn write_chunk(&mut self, delta: ChunkDelta<'_>, finish_reason: Option<&'static str>) {
        let chunk = ChatChunk {
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(Cow::Borrowed),
            }],
            ..chunk_header(&self.plan, self.created)
        };
        write_event(&mut self.buffer, &chunk);
    }
}

/// The fields every chunk repeats, borrowed from the plan.
fn chunk_header(plan: &Plan, created: i64) -> ChatChunk<'_> {
    ChatChunk {
        id: Some(Cow::Borrowed(&plan.response_id)),
        object: Some(Cow::Borrowed("chat.completion.chunk")),
        created: Some(created),
        model: Some(Cow::Borrowed(&plan.model)),
        choices: Vec::new(),
        usage: None,
        error: None,
    }
}

fn write_event(buffer: &mut BytesMut, chunk: &ChatChunk<'_>) {
    buffer.put_slice(b"data: ");
    if let Err(error) = serde_json::to_writer(buffer.writer(), chunk) {
        // Unreachable for these plain types; logged rather than panicking a connection task.
        tracing::error!(%error, "mock-llm failed to serialize a chunk");
    }
    buffer.put_slice(b"\n\n");
}

fn usage(plan: &Plan, completion_tokens: usize) -> WireUsage {
    let prompt = plan.prompt_tokens as i64;
    let completion = completion_tokens as i64;
    WireUsage {
        prompt_tokens: Some(prompt),
        completion_tokens: Some(completion),
        total_tokens: Some(prompt + completion),
        prompt_tokens_details: Some(PromptTokensDetails {
            cached_tokens: Some(0),
        }),
        completion_tokens_details: Some(CompletionTokensDetails {
            reasoning_tokens: Some(plan.reasoning.token_count() as i64),
        }),
    }
}

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}
