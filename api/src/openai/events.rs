//! A response's event stream in OpenAI's grammar, rendered from chatd's durable stream: the
//! resume log's previews (`message_part` frames, numbered per attempt) and the committed rows.
//!
//! **Sequence numbers come from stream positions**, never from a per-connection counter: an
//! event produced by frame `(attempt, seq)` is numbered `attempt·2³² + seq·2¹² + k`, one
//! produced by a row committed at stream position `(attempt, stream_seq)` gets `k ≥ 64` at that
//! position (frames use `k < 64`). `response.created` is 0 and `response.in_progress` 1. So
//! numbers grow across steps and retries, and every replica numbers the same durable events
//! the same way: `starting_after=N` replays the response from its start and drops what is
//! `≤ N`, wherever the client reconnects.
//!
//! Previews of an attempt that is then superseded (a retry, a worker's crash) cannot be taken
//! back in OpenAI's grammar: the items they opened are closed with `status: "incomplete"` and
//! the retried step's items follow at new output indexes. The final response (the last event
//! and `GET`) lists the committed items only, so streamed == stored for every item the stream
//! completes.

use serde_json::{json, Value};

use super::render::{item_id, item_json, items_of, text_part, OutItem, ToolRuns};
use super::store::ResponseRow;
use chatd_shared::db::rows::MessageRow;

const MESSAGE_SUB: i64 = 64;

/// Markers among the events, for the AI SDK stream's steps; OpenAI clients never see them
/// (`is_marker`).
pub const ATTEMPT_RESET: &str = "chatd.attempt_reset";
pub const STEP_COMMITTED: &str = "chatd.step_committed";

pub fn is_marker(event: &serde_json::Value) -> bool {
    event["type"]
        .as_str()
        .is_some_and(|kind| kind.starts_with("chatd."))
}
const MAX_SUB: i64 = (1 << 12) - 1;

/// Where `(attempt, seq)` numbers its events.
pub fn position_base(attempt: i32, seq: i64) -> i64 {
    let attempt = i64::from(attempt.clamp(0, (1 << 21) - 1));
    (attempt << 32) | (seq.clamp(0, (1 << 20) - 1) << 12)
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Text,
    Reasoning,
    Call(String),
}

#[derive(Debug)]
struct LiveItem {
    kind: Kind,
    index: usize,
    id: String,
    name: String,
    text: String,
    open: bool,
}

pub struct EventRenderer {
    response: ResponseRow,
    client_tools: Vec<String>,
    /// Events numbered at most this are not emitted (`starting_after`; −1: all).
    after: i64,
    out: Vec<Value>,
    attempt: i32,
    seq: i64,
    base: i64,
    sub: i64,
    last_message_id: i64,
    next_index: usize,
    live: Vec<LiveItem>,
    runs: ToolRuns,
    finished: bool,
}

impl EventRenderer {
    pub fn new(response: ResponseRow, client_tools: Vec<String>, after: i64) -> EventRenderer {
        EventRenderer {
            attempt: response.start_attempt,
            response,
            client_tools,
            after,
            out: Vec::new(),
            seq: 0,
            base: 0,
            sub: 0,
            last_message_id: 0,
            next_index: 0,
            live: Vec::new(),
            runs: ToolRuns::new(),
            finished: false,
        }
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The last frame position consumed.
    pub fn frame_position(&self) -> (i32, i64) {
        (self.attempt, self.seq)
    }

    pub fn last_message_id(&self) -> i64 {
        self.last_message_id
    }

    /// The events produced since the last call.
    pub fn take(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.out)
    }

    /// `response.created` (0) and `response.in_progress` (1) with the response as it started.
    pub fn start(&mut self, initial: Value) {
        self.base = 0;
        self.sub = 0;
        self.emit("response.created", json!({"response": initial}));
        let mut running = initial;
        running["status"] = json!("in_progress");
        self.emit("response.in_progress", json!({"response": running}));
    }

    fn at(&mut self, base: i64, min_sub: i64) {
        if base != self.base {
            self.base = base;
            self.sub = min_sub;
        } else {
            self.sub = self.sub.max(min_sub);
        }
    }

    fn emit(&mut self, kind: &str, mut payload: Value) {
        let number = self.base + self.sub;
        self.sub = (self.sub + 1).min(MAX_SUB);
        if number <= self.after {
            return;
        }
        payload["type"] = json!(kind);
        payload["sequence_number"] = json!(number);
        self.out.push(payload);
    }

    /// A new attempt voids the previews the old one left open.
    fn switch_attempt(&mut self, attempt: i32, seq: i64, min_sub: i64) {
        if attempt > self.attempt {
            self.at(position_base(attempt, seq), min_sub);
            if self.live.iter().any(|item| item.open) {
                // For the AI SDK stream (`reset-step`); not sent to OpenAI clients.
                self.emit(ATTEMPT_RESET, json!({}));
            }
            let open: Vec<usize> = (0..self.live.len())
                .filter(|&i| self.live[i].open)
                .collect();
            for index in open {
                self.close_live(index, "incomplete");
            }
            self.live.clear();
            self.attempt = attempt;
            self.seq = 0;
        }
    }

    /// One event of the resume log (`message_part`; others carry nothing for OpenAI).
    pub fn frame(&mut self, attempt: i32, seq: i64, name: &str, data: &Value) {
        if (attempt, seq) <= (self.attempt, self.seq) || self.finished {
            return;
        }
        self.switch_attempt(attempt, seq, 0);
        self.seq = seq;
        self.at(position_base(attempt, seq), 0);
        if name != "message_part" {
            return;
        }
        let part = &data["part"];
        match part["type"].as_str() {
            Some("text") => self.delta(Kind::Text, "", part["text"].as_str().unwrap_or("")),
            Some("reasoning") => {
                self.delta(Kind::Reasoning, "", part["text"].as_str().unwrap_or(""))
            }
            Some("tool-call") => {
                let name = part["tool_name"].as_str().unwrap_or("");
                if self.client_tools.iter().any(|tool| tool == name) {
                    let call_id = part["tool_call_id"].as_str().unwrap_or("").to_string();
                    self.delta(
                        Kind::Call(call_id),
                        name,
                        part["args_delta"].as_str().unwrap_or(""),
                    );
                }
            }
            _ => {}
        }
    }

    fn delta(&mut self, kind: Kind, name: &str, delta: &str) {
        let found = match &kind {
            Kind::Call(_) => self
                .live
                .iter()
                .position(|item| item.open && item.kind == kind),
            _ => self
                .live
                .iter()
                .rposition(|item| item.open)
                .filter(|&index| self.live[index].kind == kind),
        };
        let index = match found {
            Some(index) => index,
            None => {
                if !matches!(kind, Kind::Call(_)) {
                    // Text after reasoning (or the reverse) is a new item: close the other.
                    let open: Vec<usize> = (0..self.live.len())
                        .filter(|&i| {
                            self.live[i].open && !matches!(self.live[i].kind, Kind::Call(_))
                        })
                        .collect();
                    for index in open {
                        self.close_live(index, "completed");
                    }
                }
                self.open_live(kind.clone(), name)
            }
        };
        if delta.is_empty() {
            return;
        }
        self.live[index].text.push_str(delta);
        let (id, output_index) = (self.live[index].id.clone(), self.live[index].index);
        match kind {
            Kind::Text => self.emit(
                "response.output_text.delta",
                json!({"item_id": id,
                "output_index": output_index, "content_index": 0, "delta": delta, "logprobs": []}),
            ),
            Kind::Reasoning => self.emit(
                "response.reasoning_text.delta",
                json!({"item_id": id,
                "output_index": output_index, "content_index": 0, "delta": delta}),
            ),
            Kind::Call(_) => self.emit(
                "response.function_call_arguments.delta",
                json!({
                "item_id": id, "output_index": output_index, "delta": delta}),
            ),
        }
    }

    fn stub(kind: &Kind, name: &str, text: &str) -> OutItem {
        match kind {
            Kind::Text => OutItem::Message { text: text.into() },
            Kind::Reasoning => OutItem::Reasoning { text: text.into() },
            Kind::Call(call_id) => OutItem::FunctionCall {
                call_id: call_id.clone(),
                name: name.into(),
                arguments: text.into(),
            },
        }
    }

    fn open_live(&mut self, kind: Kind, name: &str) -> usize {
        let index = self.next_index;
        self.next_index += 1;
        let item = Self::stub(&kind, name, "");
        let id = item_id(&self.response, &item, index);
        self.announce(&id, index, &item);
        self.live.push(LiveItem {
            kind,
            index,
            id,
            name: name.into(),
            text: String::new(),
            open: true,
        });
        self.live.len() - 1
    }

    /// `output_item.added` (and the empty content part) of an item.
    fn announce(&mut self, id: &str, index: usize, item: &OutItem) {
        let mut added = item_json(id, item, "in_progress");
        match item {
            OutItem::Message { .. } => added["content"] = json!([]),
            OutItem::Reasoning { .. } => {
                added["content"] = json!([{"type": "reasoning_text", "text": ""}])
            }
            OutItem::FunctionCall { .. } => added["arguments"] = json!(""),
            OutItem::ToolRun { .. } => {
                added["output"] = Value::Null;
                added["error"] = Value::Null;
            }
        }
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        if let OutItem::Message { .. } = item {
            self.emit(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index,
                "content_index": 0, "part": text_part("")}),
            );
        }
    }

    /// The `…done` events of an item, with its final content.
    fn conclude(&mut self, id: &str, index: usize, item: &OutItem, status: &str) {
        match item {
            OutItem::Message { text } => {
                self.emit(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "part": text_part(text)}),
                );
            }
            OutItem::Reasoning { text } => self.emit(
                "response.reasoning_text.done",
                json!({
                "item_id": id, "output_index": index, "content_index": 0, "text": text}),
            ),
            OutItem::FunctionCall {
                name, arguments, ..
            } => self.emit(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
            ),
            OutItem::ToolRun { .. } => {}
        }
        self.emit(
            "response.output_item.done",
            json!({"output_index": index,
            "item": item_json(id, item, status)}),
        );
    }

    fn close_live(&mut self, index: usize, status: &str) {
        let live = &self.live[index];
        let item = Self::stub(&live.kind, &live.name, &live.text);
        let (id, output_index) = (live.id.clone(), live.index);
        self.live[index].open = false;
        self.conclude(&id, output_index, &item, status);
    }

    /// A committed output row: finishes the items its previews opened (with any text they
    /// lacked) and renders whole the ones that had none.
    pub fn message(&mut self, row: &MessageRow) {
        if row.id <= self.last_message_id || self.finished {
            return;
        }
        self.last_message_id = row.id;
        match row.stream_position() {
            Some((attempt, seq)) => {
                self.switch_attempt(attempt, seq, MESSAGE_SUB);
                self.seq = self.seq.max(seq);
                let base = position_base(attempt, seq).max(self.base);
                self.at(base, MESSAGE_SUB);
            }
            None => {
                let base = self.base;
                self.at(base, MESSAGE_SUB);
            }
        }
        let items = items_of(row, &self.client_tools, &mut self.runs);
        for item in items {
            let kind = match &item {
                OutItem::Message { .. } => Some(Kind::Text),
                OutItem::Reasoning { .. } => Some(Kind::Reasoning),
                OutItem::FunctionCall { call_id, .. } => Some(Kind::Call(call_id.clone())),
                OutItem::ToolRun { .. } => None,
            };
            let matched = kind.and_then(|kind| self.live.iter().position(|live| live.kind == kind));
            match matched {
                Some(position) => {
                    let live = self.live.remove(position);
                    let full = match &item {
                        OutItem::Message { text } | OutItem::Reasoning { text } => text.as_str(),
                        OutItem::FunctionCall { arguments, .. } => arguments.as_str(),
                        OutItem::ToolRun { .. } => "",
                    };
                    if live.open {
                        if let Some(rest) = full
                            .strip_prefix(live.text.as_str())
                            .filter(|rest| !rest.is_empty())
                        {
                            // Previews the log no longer had: the rest of the text as one delta.
                            let rest = rest.to_string();
                            self.live.push(live);
                            let last = self.live.len() - 1;
                            self.delta(self.live[last].kind.clone(), "", &rest);
                            let live = self.live.remove(last);
                            self.conclude(&live.id, live.index, &item, "completed");
                        } else {
                            self.conclude(&live.id, live.index, &item, "completed");
                        }
                    }
                }
                None => {
                    let index = self.next_index;
                    self.next_index += 1;
                    let id = item_id(&self.response, &item, index);
                    self.announce(&id, index, &item);
                    match &item {
                        OutItem::Message { text } if !text.is_empty() => self.emit(
                            "response.output_text.delta",
                            json!({"item_id": id, "output_index": index, "content_index": 0,
                                "delta": text, "logprobs": []}),
                        ),
                        OutItem::Reasoning { text } if !text.is_empty() => self.emit(
                            "response.reasoning_text.delta",
                            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}),
                        ),
                        OutItem::FunctionCall { arguments, .. } if !arguments.is_empty() => self.emit(
                            "response.function_call_arguments.delta",
                            json!({"item_id": id, "output_index": index, "delta": arguments}),
                        ),
                        _ => {}
                    }
                    self.conclude(&id, index, &item, "completed");
                }
            }
        }
        if row.role == chatd_shared::domain::Role::Assistant {
            self.emit(STEP_COMMITTED, json!({}));
        }
    }

    /// The response ended: items still open are incomplete, then the final event with the
    /// response as stored (`final_response`, from the same rows `GET` reads).
    pub fn finish(&mut self, final_response: Value) {
        if self.finished {
            return;
        }
        let open: Vec<usize> = (0..self.live.len())
            .filter(|&i| self.live[i].open)
            .collect();
        for index in open {
            self.close_live(index, "incomplete");
        }
        let kind = match final_response["status"].as_str() {
            Some("completed") => "response.completed",
            Some("failed") => "response.failed",
            _ => "response.incomplete",
        };
        self.emit(kind, json!({"response": final_response}));
        self.finished = true;
    }
}

#[cfg(test)]
mod tests;
