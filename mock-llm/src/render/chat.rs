//! OpenAI Chat Completions: `data: <chunk>` events ending with `data: [DONE]`, or one
//! `chat.completion` JSON answer, written with the mock's own wire types (`chat_wire`).

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use crate::directives::StreamErrorKind;
use crate::plan::{Output, Piece, Plan};
use crate::render::chat_wire::{
    ChatChunk, ChatCompletion, ChunkChoice, ChunkDelta, CompletionChoice, CompletionMessage,
    CompletionTokensDetails, FunctionCall, FunctionFragment, PromptTokensDetails, ToolCall,
    ToolCallFragment, Usage,
};
use crate::render::{unix_seconds, write_data, SseWriter};

/// The Chat Completions stream of one answer.
pub struct ChatWriter {
    /// `created` of every chunk: the time the stream started.
    created: i64,
    /// `stream_options.include_usage`: add a usage chunk before `[DONE]`.
    include_usage: bool,
}

impl ChatWriter {
    pub fn new(include_usage: bool) -> ChatWriter {
        ChatWriter {
            created: unix_seconds(),
            include_usage,
        }
    }
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
                    .map(|call| ToolCall {
                        id: call.id.clone(),
                        call_type: "function",
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
        object: "chat.completion",
        created: unix_seconds(),
        model: plan.model.clone(),
        choices: vec![CompletionChoice {
            index: 0,
            message: CompletionMessage {
                role: "assistant",
                content,
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls,
            },
            finish_reason: plan.finish_reason(),
        }],
        usage: usage(plan),
    }
}

impl SseWriter for ChatWriter {
    fn start(&mut self, plan: &Plan, out: &mut BytesMut) {
        let delta = ChunkDelta {
            role: Some("assistant"),
            content: Some(Cow::Borrowed("")),
            ..ChunkDelta::default()
        };
        write_chunk(out, plan, self.created, delta, None);
    }

    fn content(&mut self, plan: &Plan, index: usize, out: &mut BytesMut) {
        let delta = match plan.piece(index) {
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
                    index,
                    id: Some(Cow::Borrowed(id)),
                    call_type: Some("function"),
                    function: FunctionFragment {
                        name: Some(Cow::Borrowed(name)),
                        arguments: Cow::Borrowed(""),
                    },
                }]),
                ..ChunkDelta::default()
            },
            Piece::ToolCallArguments { index, fragment } => ChunkDelta {
                tool_calls: Some(vec![ToolCallFragment {
                    index,
                    function: FunctionFragment {
                        name: None,
                        arguments: Cow::Borrowed(fragment),
                    },
                    ..ToolCallFragment::default()
                }]),
                ..ChunkDelta::default()
            },
        };
        write_chunk(out, plan, self.created, delta, None);
    }

    fn finish(&mut self, plan: &Plan, out: &mut BytesMut) {
        let finish_reason = plan.finish_reason();
        write_chunk(
            out,
            plan,
            self.created,
            ChunkDelta::default(),
            Some(finish_reason),
        );
        if self.include_usage {
            let chunk = ChatChunk {
                usage: Some(usage(plan)),
                ..chunk_header(plan, self.created)
            };
            write_data(out, &chunk);
        }
        out.put_slice(b"data: [DONE]\n\n");
    }

    /// OpenAI's in-stream failure: a chunk carrying only `error`, and no `[DONE]`.
    fn stream_error(&mut self, _plan: &Plan, kind: StreamErrorKind, out: &mut BytesMut) {
        let chunk = serde_json::json!({"error": {
            "message": kind.message(),
            "type": kind.openai_type(),
            "code": kind.openai_code(),
        }});
        write_data(out, &chunk);
    }
}

fn write_chunk(
    out: &mut BytesMut,
    plan: &Plan,
    created: i64,
    delta: ChunkDelta<'_>,
    finish_reason: Option<&'static str>,
) {
    let chunk = ChatChunk {
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason,
        }],
        ..chunk_header(plan, created)
    };
    write_data(out, &chunk);
}

/// The fields every chunk repeats, borrowed from the plan.
fn chunk_header(plan: &Plan, created: i64) -> ChatChunk<'_> {
    ChatChunk {
        id: Cow::Borrowed(&plan.response_id),
        object: "chat.completion.chunk",
        created,
        model: Cow::Borrowed(&plan.model),
        choices: Vec::new(),
        usage: None,
    }
}

fn usage(plan: &Plan) -> Usage {
    let prompt = plan.prompt_tokens as i64;
    let completion = plan.content_chunks() as i64;
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: plan.cached_tokens as i64,
        },
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: plan.reasoning.token_count() as i64,
        },
    }
}
