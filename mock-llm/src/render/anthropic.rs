//! Anthropic Messages: `message_start`, `ping`, per block `content_block_start` / `_delta` /
//! `_stop`, then `message_delta` (stop reason, cumulative usage) and `message_stop`; or one
//! `message` JSON answer.
//!
//! Blocks, in order: a `thinking` block (ended by a `signature_delta` with `sig-<hash>`) when the
//! plan reasons, then a `text` block or one `tool_use` block per call, whose `input_json_delta`
//! fragments start with an empty one as the real API's do.

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{json, Value};

use crate::directives::StreamErrorKind;
use crate::plan::{Finish, Output, Piece, Plan};
use crate::render::{write_event, SseWriter};
use crate::reply::reasoning_signature;

/// The Messages stream of one answer.
#[derive(Default)]
pub struct AnthropicWriter {
    /// The block receiving deltas, with its `index`.
    open: Option<(usize, BlockKind)>,
    next_index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Thinking,
    Text,
    /// The call at this index of the plan's tool calls.
    ToolUse(usize),
}

/// The hot-path event (one per token), serialized without building a JSON tree.
#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    event_type: &'static str,
    index: usize,
    delta: DeltaBody<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum DeltaBody<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

impl AnthropicWriter {
    pub fn new() -> AnthropicWriter {
        AnthropicWriter::default()
    }

    fn delta(&self, out: &mut BytesMut, delta: DeltaBody<'_>) {
        let Some((index, _)) = self.open else {
            return;
        };
        let event = BlockDelta {
            event_type: "content_block_delta",
            index,
            delta,
        };
        write_event(out, "content_block_delta", &event);
    }

    /// Makes `kind` the open block, closing the previous one.
    fn open_block(&mut self, plan: &Plan, kind: BlockKind, out: &mut BytesMut) {
        if self.open.is_some_and(|(_, open)| open == kind) {
            return;
        }
        self.close_block(plan, out);
        let index = self.next_index;
        self.next_index += 1;
        let content_block = match kind {
            BlockKind::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            BlockKind::Text => json!({"type": "text", "text": ""}),
            BlockKind::ToolUse(call) => {
                let (id, name) = match &plan.output {
                    Output::ToolCalls(calls) => calls
                        .get(call)
                        .map_or(("", ""), |call| (call.id.as_str(), call.name.as_str())),
                    Output::Text(_) => ("", ""),
                };
                json!({"type": "tool_use", "id": id, "name": name, "input": {}})
            }
        };
        write_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        );
        self.open = Some((index, kind));
        if let BlockKind::ToolUse(_) = kind {
            self.delta(out, DeltaBody::InputJson { partial_json: "" });
        }
    }

    fn close_block(&mut self, plan: &Plan, out: &mut BytesMut) {
        let Some((index, kind)) = self.open else {
            return;
        };
        if kind == BlockKind::Thinking {
            let signature = reasoning_signature(&plan.reasoning.full_text());
            self.delta(
                out,
                DeltaBody::Signature {
                    signature: &signature,
                },
            );
        }
        write_event(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        self.open = None;
    }
}

impl SseWriter for AnthropicWriter {
    fn start(&mut self, plan: &Plan, out: &mut BytesMut) {
        let mut usage = usage(plan);
        // Like the real API: a token or so at the start, the cumulative count at the end.
        usage["output_tokens"] = json!(plan.content_chunks().min(1));
        let message = json!({
            "id": plan.response_id, "type": "message", "role": "assistant",
            "model": plan.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage,
        });
        write_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
        write_event(out, "ping", &json!({"type": "ping"}));
    }

    fn content(&mut self, plan: &Plan, index: usize, out: &mut BytesMut) {
        match plan.piece(index) {
            Piece::Reasoning(thinking) => {
                self.open_block(plan, BlockKind::Thinking, out);
                self.delta(out, DeltaBody::Thinking { thinking });
            }
            Piece::Text(text) => {
                self.open_block(plan, BlockKind::Text, out);
                self.delta(out, DeltaBody::Text { text });
            }
            Piece::ToolCallHeader { index, .. } => {
                self.open_block(plan, BlockKind::ToolUse(index), out);
            }
            Piece::ToolCallArguments { index, fragment } => {
                self.open_block(plan, BlockKind::ToolUse(index), out);
                self.delta(
                    out,
                    DeltaBody::InputJson {
                        partial_json: fragment,
                    },
                );
            }
        }
    }

    fn finish(&mut self, plan: &Plan, out: &mut BytesMut) {
        self.close_block(plan, out);
        write_event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(plan), "stop_sequence": null},
                "usage": usage(plan),
            }),
        );
        write_event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn stream_error(&mut self, _plan: &Plan, kind: StreamErrorKind, out: &mut BytesMut) {
        write_event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": kind.anthropic_type(), "message": kind.message()}}),
        );
    }
}

/// The non-streaming answer (`"stream": false`).
pub fn message_json(plan: &Plan) -> Value {
    let mut content = Vec::new();
    if plan.reasoning.token_count() > 0 {
        let thinking = plan.reasoning.full_text();
        content.push(json!({
            "type": "thinking", "signature": reasoning_signature(&thinking), "thinking": thinking
        }));
    }
    match &plan.output {
        Output::Text(text) if text.token_count() > 0 => {
            content.push(json!({"type": "text", "text": text.full_text()}));
        }
        Output::Text(_) => {}
        Output::ToolCalls(calls) => content.extend(calls.iter().map(|call| {
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments_value})
        })),
    }
    json!({
        "id": plan.response_id, "type": "message", "role": "assistant", "model": plan.model,
        "content": content, "stop_reason": stop_reason(plan), "stop_sequence": null,
        "usage": usage(plan),
    })
}

fn stop_reason(plan: &Plan) -> &'static str {
    match plan.finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
    }
}

/// Anthropic counts cache reads apart: `input_tokens` excludes them.
fn usage(plan: &Plan) -> Value {
    json!({
        "input_tokens": plan.prompt_tokens - plan.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": plan.cached_tokens,
        "output_tokens": plan.content_chunks(),
    })
}
