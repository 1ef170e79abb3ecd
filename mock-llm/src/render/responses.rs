//! OpenAI Responses: `event: <type>` + `data: {"type", "sequence_number", …}` events, ending
//! with `response.completed` (or `response.incomplete` at the output limit), or one `response`
//! JSON answer.
//!
//! Output items, in order: a `reasoning` item (summary text) when the plan reasons, then either
//! one assistant `message` item or one `function_call` item per call. Each item is announced by
//! `response.output_item.added`, filled by deltas and closed by its `.done` events and
//! `response.output_item.done` before the next item starts.

use bytes::BytesMut;
use serde::Serialize;
use serde_json::{json, Value};

use crate::directives::StreamErrorKind;
use crate::plan::{Finish, Output, Piece, Plan};
use crate::render::{unix_seconds, write_event, SseWriter};

/// The Responses stream of one answer.
pub struct ResponsesWriter {
    created_at: i64,
    /// `sequence_number` of the next event.
    sequence: u64,
    /// The item receiving deltas, if any.
    open: Option<OpenItem>,
}

/// The kinds of output item, with their position in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Reasoning,
    Message,
    /// The call at this index of the plan's tool calls.
    FunctionCall(usize),
}

struct OpenItem {
    kind: ItemKind,
    id: String,
    output_index: usize,
}

/// The hot-path event (one per token), serialized without building a JSON tree.
#[derive(Serialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type")]
    event_type: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_index: Option<usize>,
    delta: &'a str,
}

impl ResponsesWriter {
    pub fn new() -> ResponsesWriter {
        ResponsesWriter {
            created_at: unix_seconds(),
            sequence: 0,
            open: None,
        }
    }

    /// Writes `event: <type>` with `data` completed by `type` and `sequence_number`.
    fn emit(&mut self, out: &mut BytesMut, event_type: &str, mut data: Value) {
        if let Value::Object(fields) = &mut data {
            fields.insert("type".to_owned(), Value::from(event_type));
            fields.insert("sequence_number".to_owned(), Value::from(self.sequence));
        }
        self.sequence += 1;
        write_event(out, event_type, &data);
    }

    fn emit_delta(&mut self, out: &mut BytesMut, event_type: &'static str, delta: &str) {
        let Some(open) = &self.open else {
            return;
        };
        let event = DeltaEvent {
            event_type,
            sequence_number: self.sequence,
            item_id: &open.id,
            output_index: open.output_index,
            content_index: (open.kind == ItemKind::Message).then_some(0),
            summary_index: (open.kind == ItemKind::Reasoning).then_some(0),
            delta,
        };
        write_event(out, event_type, &event);
        self.sequence += 1;
    }

    /// Makes `kind` the open item, closing the previous one.
    fn open_item(&mut self, plan: &Plan, kind: ItemKind, out: &mut BytesMut) {
        if self.open.as_ref().is_some_and(|open| open.kind == kind) {
            return;
        }
        self.close_item(plan, out);
        let output_index = output_index(plan, kind);
        let id = item_id(plan, kind);
        let skeleton = match kind {
            ItemKind::Reasoning => json!({"type": "reasoning", "id": id, "summary": []}),
            ItemKind::Message => json!({
                "type": "message", "id": id, "status": "in_progress", "role": "assistant",
                "content": []
            }),
            ItemKind::FunctionCall(call) => {
                let (call_id, name) = match &plan.output {
                    Output::ToolCalls(calls) => calls
                        .get(call)
                        .map_or(("", ""), |call| (call.id.as_str(), call.name.as_str())),
                    Output::Text(_) => ("", ""),
                };
                json!({
                    "type": "function_call", "id": id, "call_id": call_id, "name": name,
                    "arguments": "", "status": "in_progress"
                })
            }
        };
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": skeleton}),
        );
        match kind {
            ItemKind::Reasoning => self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            ),
            ItemKind::Message => self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": output_index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            ),
            ItemKind::FunctionCall(_) => {}
        }
        self.open = Some(OpenItem {
            kind,
            id,
            output_index,
        });
    }

    fn close_item(&mut self, plan: &Plan, out: &mut BytesMut) {
        let Some(OpenItem {
            kind,
            id,
            output_index,
        }) = self.open.take()
        else {
            return;
        };
        let item = output_item(plan, kind);
        match kind {
            ItemKind::Reasoning => {
                let text = plan.reasoning.full_text();
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                           "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                );
            }
            ItemKind::Message => {
                let part = item["content"][0].clone();
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0,
                           "text": part["text"]}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0,
                           "part": part}),
                );
            }
            ItemKind::FunctionCall(_) => self.emit(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": output_index, "name": item["name"],
                       "arguments": item["arguments"]}),
            ),
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
    }
}

impl Default for ResponsesWriter {
    fn default() -> Self {
        ResponsesWriter::new()
    }
}

impl SseWriter for ResponsesWriter {
    fn start(&mut self, plan: &Plan, out: &mut BytesMut) {
        let response = response_object(plan, self.created_at, "in_progress", Vec::new(), None);
        self.emit(out, "response.created", json!({"response": response}));
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    fn content(&mut self, plan: &Plan, index: usize, out: &mut BytesMut) {
        match plan.piece(index) {
            Piece::Reasoning(text) => {
                self.open_item(plan, ItemKind::Reasoning, out);
                self.emit_delta(out, "response.reasoning_summary_text.delta", text);
            }
            Piece::Text(text) => {
                self.open_item(plan, ItemKind::Message, out);
                self.emit_delta(out, "response.output_text.delta", text);
            }
            Piece::ToolCallHeader { index, .. } => {
                self.open_item(plan, ItemKind::FunctionCall(index), out);
            }
            Piece::ToolCallArguments { index, fragment } => {
                self.open_item(plan, ItemKind::FunctionCall(index), out);
                self.emit_delta(out, "response.function_call_arguments.delta", fragment);
            }
        }
    }

    fn finish(&mut self, plan: &Plan, out: &mut BytesMut) {
        self.close_item(plan, out);
        let (event_type, status) = match plan.finish {
            Finish::Length => ("response.incomplete", "incomplete"),
            Finish::Stop | Finish::ToolCalls => ("response.completed", "completed"),
        };
        let response = response_object(
            plan,
            self.created_at,
            status,
            output_items(plan),
            Some(usage(plan)),
        );
        self.emit(out, event_type, json!({"response": response}));
    }

    /// An `error` event (top-level `code` and `message`), then the terminal `response.failed`.
    fn stream_error(&mut self, plan: &Plan, kind: StreamErrorKind, out: &mut BytesMut) {
        self.emit(
            out,
            "error",
            json!({"code": kind.openai_code(), "message": kind.message(), "param": null}),
        );
        let mut response = response_object(plan, self.created_at, "failed", Vec::new(), None);
        response["error"] = json!({"code": kind.openai_code(), "message": kind.message()});
        self.emit(out, "response.failed", json!({"response": response}));
    }
}

/// The non-streaming answer (`"stream": false`).
pub fn response_json(plan: &Plan) -> Value {
    let status = match plan.finish {
        Finish::Length => "incomplete",
        Finish::Stop | Finish::ToolCalls => "completed",
    };
    response_object(
        plan,
        unix_seconds(),
        status,
        output_items(plan),
        Some(usage(plan)),
    )
}

/// The complete output items of the plan, as they appear in `response.completed` and as they
/// are stored for `previous_response_id`.
pub fn output_items(plan: &Plan) -> Vec<Value> {
    item_kinds(plan)
        .into_iter()
        .map(|kind| output_item(plan, kind))
        .collect()
}

fn item_kinds(plan: &Plan) -> Vec<ItemKind> {
    let mut kinds = Vec::new();
    if plan.reasoning.token_count() > 0 {
        kinds.push(ItemKind::Reasoning);
    }
    match &plan.output {
        Output::Text(text) if text.token_count() > 0 => kinds.push(ItemKind::Message),
        Output::Text(_) => {}
        Output::ToolCalls(calls) => kinds.extend((0..calls.len()).map(ItemKind::FunctionCall)),
    }
    kinds
}

fn output_index(plan: &Plan, kind: ItemKind) -> usize {
    let after_reasoning = usize::from(plan.reasoning.token_count() > 0);
    match kind {
        ItemKind::Reasoning => 0,
        ItemKind::Message => after_reasoning,
        ItemKind::FunctionCall(call) => after_reasoning + call,
    }
}

/// Item ids share the response id's unique suffix: `rs_…`, `msg_…`, `fc_…_<call>`.
fn item_id(plan: &Plan, kind: ItemKind) -> String {
    let suffix = plan
        .response_id
        .strip_prefix("resp_")
        .unwrap_or(&plan.response_id);
    match kind {
        ItemKind::Reasoning => format!("rs_{suffix}"),
        ItemKind::Message => format!("msg_{suffix}"),
        ItemKind::FunctionCall(call) => format!("fc_{suffix}_{call}"),
    }
}

fn output_item(plan: &Plan, kind: ItemKind) -> Value {
    let id = item_id(plan, kind);
    match (kind, &plan.output) {
        (ItemKind::Reasoning, _) => json!({
            "type": "reasoning", "id": id,
            "summary": [{"type": "summary_text", "text": plan.reasoning.full_text()}]
        }),
        (ItemKind::Message, Output::Text(text)) => json!({
            "type": "message", "id": id, "role": "assistant",
            "status": if plan.finish == Finish::Length { "incomplete" } else { "completed" },
            "content": [{"type": "output_text", "text": text.full_text(), "annotations": []}]
        }),
        (ItemKind::FunctionCall(call), Output::ToolCalls(calls)) => {
            let call = calls.get(call);
            json!({
                "type": "function_call", "id": id, "status": "completed",
                "call_id": call.map(|call| call.id.as_str()),
                "name": call.map(|call| call.name.as_str()),
                "arguments": call.map(|call| call.arguments.as_str()),
            })
        }
        // Not produced by item_kinds; an empty item rather than a panic.
        _ => json!({"type": "message", "id": id, "role": "assistant", "content": []}),
    }
}

fn response_object(
    plan: &Plan,
    created_at: i64,
    status: &str,
    output: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let incomplete_details =
        (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
    json!({
        "id": plan.response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": plan.model,
        "output": output,
        "usage": usage,
        "error": null,
        "incomplete_details": incomplete_details,
    })
}

fn usage(plan: &Plan) -> Value {
    let output_tokens = plan.content_chunks();
    json!({
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning.token_count()},
        "total_tokens": plan.prompt_tokens + output_tokens,
    })
}
