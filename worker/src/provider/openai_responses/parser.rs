//! Turns the bytes of a Responses stream into [`ProviderEvent`]s.
//!
//! Pure and synchronous so recorded fixtures can be replayed byte by byte in tests; the HTTP
//! wrapper in the parent module only moves bytes in and events out.
//!
//! The event type comes from the JSON `type` (or, when a server leaves it out, the SSE `event:`
//! name). Events this parser does not handle are ignored without being validated, so a new
//! OpenAI event type, or one whose payload changed shape, can never fail a stream.
//!
//! Refusal deltas are emitted as text (the refusal is the answer the user gets). Reasoning
//! summary parts arrive as separate paragraphs without separators, so deltas of a new part or
//! reasoning item are prefixed with a blank line.
//!
//! Tool calls are identified by their output item id (`fc_…`) in deltas; older llama.cpp builds
//! send no item id and use the `call_id` instead, so a call is looked up by either. Calls get
//! dense indexes `0..n` in order of first appearance, and [`ProviderEvent::ToolCallEnd`] is
//! emitted at the call's `function_call_arguments.done` / `output_item.done`, or at the terminal
//! event for calls the server never closed.
//!
//! **Invariant:** after a terminal event (`response.completed`, `response.incomplete`,
//! `response.failed`, `error`) nothing more is emitted; EOF before one is a truncation error.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::provider::error::{ApiErrorObject, ProviderError};
use crate::provider::http::{parse_arguments, ParsedItem, SseProtocol};
use crate::provider::openai_responses::wire::{
    IncompleteDetails, OutputItem, ResponseObject, StreamEvent, WireUsage,
};
use crate::provider::{ErrorKind, FinishReason, ProviderEvent, Usage};
use chatd_shared::sse::{Decoder, SseEvent};

/// The event types this parser acts on; a payload that does not parse is an error only for
/// these.
const HANDLED_EVENT_TYPES: &[&str] = &[
    "response.created",
    "response.in_progress",
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
    "response.output_item.added",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

/// Put between reasoning from different summary parts or reasoning items, which OpenAI streams
/// as separate paragraphs without a separator of their own.
const REASONING_PART_SEPARATOR: &str = "\n\n";

/// Incremental parser for one streamed response.
#[derive(Debug, Default)]
pub struct ResponsesStreamParser {
    decoder: Decoder,
    /// From `response.created`; the terminal event's own id wins when present.
    response_id: Option<String>,
    /// Calls in order of first appearance; the position is the call's `index`.
    tool_calls: Vec<ToolCallState>,
    /// Where the last reasoning delta belonged, to separate parts.
    reasoning_part: Option<ReasoningPart>,
    /// Set after a terminal event or an error: nothing more is emitted.
    done: bool,
    /// The body ended; an event flushed now that does not parse was cut off mid-way.
    at_eof: bool,
}

/// `(item_id, summary_index, content_index)` of a reasoning delta.
type ReasoningPart = (Option<String>, Option<u64>, Option<u64>);

#[derive(Debug, Default)]
struct ToolCallState {
    /// The output item id (`fc_…`), which deltas refer to.
    item_id: Option<String>,
    /// The id results must answer; becomes our tool call id.
    call_id: Option<String>,
    name: String,
    /// The arguments so far: the concatenated deltas, replaced by the final text at the end.
    arguments: String,
    /// Whether `ToolCallStart` was emitted. It waits for the name; arguments that arrive
    /// earlier are replayed right after it.
    started: bool,
    /// Whether `ToolCallEnd` was emitted; later events about the call are ignored.
    ended: bool,
}

impl ResponsesStreamParser {
    pub fn new() -> ResponsesStreamParser {
        ResponsesStreamParser::default()
    }
}

impl SseProtocol for ResponsesStreamParser {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn handle_event(&mut self, event: &SseEvent, at_eof: bool, out: &mut VecDeque<ParsedItem>) {
        self.at_eof = at_eof;
        self.on_sse_event(event, out);
    }

    /// No terminal event (`response.completed`/`incomplete`/`failed`): truncated.
    fn on_eof(&mut self, out: &mut VecDeque<ParsedItem>) {
        self.fail(ProviderError::truncated(), out);
    }

    fn is_finished(&self) -> bool {
        self.done
    }
}

impl ResponsesStreamParser {
    fn on_sse_event(&mut self, sse: &SseEvent, out: &mut VecDeque<ParsedItem>) {
        let data = sse.data.trim();
        // This protocol has no `[DONE]`; a server that sends one anyway is not failed for it.
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        match serde_json::from_str::<StreamEvent>(data) {
            Ok(mut event) => {
                if event.event_type.is_empty() {
                    event.event_type = match (&sse.event, &event.error) {
                        (Some(name), _) => name.clone(),
                        (None, Some(_)) => "error".to_owned(),
                        (None, None) => return,
                    };
                }
                self.on_event(event, out);
            }
            Err(_) if self.at_eof => self.fail(ProviderError::truncated(), out),
            Err(error) => {
                let event_type = event_type_of(data).or_else(|| sse.event.clone());
                if event_type.is_some_and(|name| HANDLED_EVENT_TYPES.contains(&name.as_str())) {
                    let message = format!("provider sent a malformed stream event: {error}");
                    self.fail(ProviderError::new(ErrorKind::Generic, message, true), out);
                }
            }
        }
    }

    fn on_event(&mut self, event: StreamEvent, out: &mut VecDeque<ParsedItem>) {
        match event.event_type.as_str() {
            "response.created" | "response.in_progress" => {
                if let Some(id) = event.response.and_then(|response| non_empty(response.id)) {
                    self.response_id.get_or_insert(id);
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(delta) = event.delta.filter(|delta| !delta.is_empty()) {
                    out.push_back(Ok(ProviderEvent::TextDelta(delta)));
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.on_reasoning_delta(event, out);
            }
            "response.output_item.added" => {
                if let Some(item) = event.item.filter(is_function_call) {
                    let position = self.call_for_item(&item);
                    self.update_call(position, &item, out);
                }
            }
            "response.output_item.done" => {
                if let Some(item) = event.item.filter(is_function_call) {
                    let position = self.call_for_item(&item);
                    self.update_call(position, &item, out);
                    self.end_call(position, item.arguments.as_deref(), out);
                }
            }
            "response.function_call_arguments.delta" => {
                let Some(delta) = event.delta.filter(|delta| !delta.is_empty()) else {
                    return;
                };
                let position = self.call_for_delta(event.item_id);
                let call = &mut self.tool_calls[position];
                if call.ended {
                    return;
                }
                call.arguments.push_str(&delta);
                if call.started {
                    out.push_back(Ok(ProviderEvent::ToolCallArgsDelta {
                        index: position,
                        delta,
                    }));
                }
            }
            "response.function_call_arguments.done" => {
                let position = self.call_for_delta(event.item_id);
                let item = OutputItem {
                    name: event.name,
                    ..OutputItem::default()
                };
                self.update_call(position, &item, out);
                self.end_call(position, event.arguments.as_deref(), out);
            }
            "response.completed" => {
                let response = event.response.unwrap_or_default();
                self.complete(response, false, out);
            }
            "response.incomplete" => {
                let response = event.response.unwrap_or_default();
                self.complete(response, true, out);
            }
            "response.failed" => {
                let error = event
                    .response
                    .and_then(|response| response.error)
                    .unwrap_or_else(|| ApiErrorObject {
                        message: Some("the provider reported the response as failed".to_owned()),
                        ..ApiErrorObject::default()
                    });
                self.fail(ProviderError::from_stream_error(&error), out);
            }
            "error" => {
                let error = event.error.unwrap_or(ApiErrorObject {
                    message: event.message,
                    code: event.code,
                    error_type: None,
                });
                self.fail(ProviderError::from_stream_error(&error), out);
            }
            _ => {}
        }
    }

    fn on_reasoning_delta(&mut self, event: StreamEvent, out: &mut VecDeque<ParsedItem>) {
        let Some(delta) = event.delta.filter(|delta| !delta.is_empty()) else {
            return;
        };
        let part = (event.item_id, event.summary_index, event.content_index);
        let text = match &self.reasoning_part {
            Some(previous) if *previous != part => format!("{REASONING_PART_SEPARATOR}{delta}"),
            _ => delta,
        };
        self.reasoning_part = Some(part);
        out.push_back(Ok(ProviderEvent::ReasoningDelta(text)));
    }

    /// The call an output item describes, matched by item id or call id; a new call if none.
    fn call_for_item(&mut self, item: &OutputItem) -> usize {
        let keys = [item.id.as_deref(), item.call_id.as_deref()];
        let found = keys
            .into_iter()
            .flatten()
            .find_map(|key| self.find_call(key));
        found.unwrap_or_else(|| self.new_call())
    }

    /// The call an argument event names; without an item id, the latest open call. A delta for
    /// a call the server never announced opens one, started once its name is known.
    fn call_for_delta(&mut self, item_id: Option<String>) -> usize {
        match non_empty(item_id) {
            Some(item_id) => self.find_call(&item_id).unwrap_or_else(|| {
                let position = self.new_call();
                self.tool_calls[position].item_id = Some(item_id);
                position
            }),
            None => match self.tool_calls.iter().rposition(|call| !call.ended) {
                Some(position) => position,
                None => self.new_call(),
            },
        }
    }

    fn find_call(&self, key: &str) -> Option<usize> {
        self.tool_calls.iter().position(|call| {
            call.item_id.as_deref() == Some(key) || call.call_id.as_deref() == Some(key)
        })
    }

    fn new_call(&mut self) -> usize {
        self.tool_calls.push(ToolCallState::default());
        self.tool_calls.len() - 1
    }

    /// Fills in what the item tells about the call and starts it once it has a name.
    fn update_call(&mut self, position: usize, item: &OutputItem, out: &mut VecDeque<ParsedItem>) {
        let call = &mut self.tool_calls[position];
        if call.ended {
            return;
        }
        if call.item_id.is_none() {
            call.item_id = non_empty(item.id.clone());
        }
        if call.call_id.is_none() {
            call.call_id = non_empty(item.call_id.clone());
        }
        if !call.started {
            if let Some(name) = item.name.as_deref().filter(|name| !name.is_empty()) {
                call.name = name.to_owned();
                start_call(position, call, out);
            }
        }
    }

    /// Closes a call with its final arguments (the done event's, else the concatenated deltas).
    /// When the final text extends what was streamed, the rest is emitted as a delta first so
    /// the deltas always add up to what the end event parsed.
    fn end_call(
        &mut self,
        position: usize,
        final_arguments: Option<&str>,
        out: &mut VecDeque<ParsedItem>,
    ) {
        let call = &mut self.tool_calls[position];
        if call.ended {
            return;
        }
        if !call.started {
            start_call(position, call, out); // a nameless call still gets an error result later
        }
        if let Some(arguments) = final_arguments.filter(|arguments| !arguments.is_empty()) {
            if let Some(rest) = arguments.strip_prefix(call.arguments.as_str()) {
                if !rest.is_empty() {
                    out.push_back(Ok(ProviderEvent::ToolCallArgsDelta {
                        index: position,
                        delta: rest.to_owned(),
                    }));
                }
            }
            call.arguments = arguments.to_owned();
        }
        call.ended = true;
        out.push_back(Ok(ProviderEvent::ToolCallEnd {
            index: position,
            args: parse_arguments(&call.arguments),
        }));
    }

    /// `response.completed` or (`incomplete`) `response.incomplete`: close open calls, then
    /// usage, then the finish.
    fn complete(
        &mut self,
        response: ResponseObject,
        incomplete: bool,
        out: &mut VecDeque<ParsedItem>,
    ) {
        for position in 0..self.tool_calls.len() {
            self.end_call(position, None, out);
        }
        if let Some(usage) = &response.usage {
            out.push_back(Ok(ProviderEvent::Usage(convert_usage(usage))));
        }
        let has_tool_calls =
            !self.tool_calls.is_empty() || response.output.iter().any(is_function_call);
        let reason = if incomplete {
            incomplete_reason(response.incomplete_details.as_ref())
        } else if has_tool_calls {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        };
        let response_id = non_empty(response.id).or_else(|| self.response_id.take());
        self.done = true;
        out.push_back(Ok(ProviderEvent::Finish {
            reason,
            response_id,
        }));
    }

    fn fail(&mut self, error: ProviderError, out: &mut VecDeque<ParsedItem>) {
        self.done = true;
        out.push_back(Err(error));
    }
}

fn start_call(position: usize, call: &mut ToolCallState, out: &mut VecDeque<ParsedItem>) {
    call.started = true;
    let id = call
        .call_id
        .clone()
        .or_else(|| call.item_id.clone())
        .unwrap_or_else(|| format!("call_{position}"));
    out.push_back(Ok(ProviderEvent::ToolCallStart {
        index: position,
        id,
        name: call.name.clone(),
    }));
    if !call.arguments.is_empty() {
        out.push_back(Ok(ProviderEvent::ToolCallArgsDelta {
            index: position,
            delta: call.arguments.clone(),
        }));
    }
}

/// The `type` of an event whose payload did not parse as a [`StreamEvent`].
fn event_type_of(data: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        event_type: Option<String>,
    }
    serde_json::from_str::<Head>(data).ok()?.event_type
}

fn is_function_call(item: &OutputItem) -> bool {
    item.item_type == "function_call"
}

fn non_empty(text: Option<String>) -> Option<String> {
    text.filter(|text| !text.is_empty())
}

/// `response.incomplete` still ends the step successfully, with what was generated.
fn incomplete_reason(details: Option<&IncompleteDetails>) -> FinishReason {
    match details.and_then(|details| details.reason.as_deref()) {
        Some("max_output_tokens" | "max_tokens") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_owned()),
        None => FinishReason::Other("incomplete".to_owned()),
    }
}

fn convert_usage(usage: &WireUsage) -> Usage {
    Usage {
        input_tokens: usage.input_tokens.unwrap_or(0),
        output_tokens: usage.output_tokens.unwrap_or(0),
        reasoning_tokens: usage
            .output_tokens_details
            .and_then(|details| details.reasoning_tokens)
            .unwrap_or(0),
        cache_read_tokens: usage
            .input_tokens_details
            .and_then(|details| details.cached_tokens)
            .unwrap_or(0),
        // OpenAI caches implicitly and does not bill cache writes separately.
        cache_write_tokens: 0,
    }
}
