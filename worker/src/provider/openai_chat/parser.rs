//! Turns the bytes of a Chat Completions stream into [`ProviderEvent`]s.
//!
//! Pure and synchronous so recorded fixtures can be replayed byte by byte in tests; the HTTP
//! wrapper in the parent module only moves bytes in and events out.
//!
//! Events are emitted as soon as their chunk arrives, except the end of a step: the finish
//! reason is held until `[DONE]` (or EOF after a finish reason) so that tool-call ends and the
//! usage chunk, which OpenAI sends *after* the finish chunk, come before
//! [`ProviderEvent::Finish`].

use std::collections::VecDeque;

use crate::provider::error::{parse_error_body, ApiErrorObject, ProviderError};
use crate::provider::openai_chat::wire::{ChatChunk, ToolCallFragment, WireUsage};
use crate::provider::{ErrorKind, FinishReason, ProviderEvent, Usage};
use chatd_shared::sse::{Decoder, SseEvent};

pub use crate::provider::http::ParsedItem;
use crate::provider::http::{parse_arguments, SseProtocol};

/// Incremental parser for one streamed answer.
#[derive(Debug, Default)]
pub struct ChatStreamParser {
    decoder: Decoder,
    /// Calls in order of first appearance; looked up by `index` (few per step, so a scan).
    tool_calls: Vec<ToolCallState>,
    finish_reason: Option<FinishReason>,
    /// The last usage object seen (only the final chunk carries one).
    usage: Option<Usage>,
    response_id: Option<String>,
    /// Set after `[DONE]`, a finish at EOF, or an error: nothing more is emitted.
    done: bool,
}

#[derive(Debug)]
struct ToolCallState {
    index: usize,
    id: String,
    name: String,
    /// The concatenated argument fragments (JSON text, parsed at the end of the step).
    arguments: String,
    /// Whether `ToolCallStart` was emitted; it waits for the name, and argument fragments that
    /// arrive earlier are replayed right after it.
    started: bool,
}

impl ChatStreamParser {
    pub fn new() -> ChatStreamParser {
        ChatStreamParser::default()
    }
}

impl SseProtocol for ChatStreamParser {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn handle_event(&mut self, event: &SseEvent, _at_eof: bool, out: &mut VecDeque<ParsedItem>) {
        self.on_event(event, out);
    }

    /// Without `[DONE]` the answer is complete only when a finish reason arrived (servers that
    /// close the body after the finish chunk); otherwise it is truncated.
    fn on_eof(&mut self, out: &mut VecDeque<ParsedItem>) {
        if self.finish_reason.is_some() {
            self.complete(out);
        } else {
            self.done = true;
            out.push_back(Err(ProviderError::truncated()));
        }
    }

    fn is_finished(&self) -> bool {
        self.done
    }
}

impl ChatStreamParser {
    fn on_event(&mut self, event: &SseEvent, out: &mut VecDeque<ParsedItem>) {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.complete(out);
            return;
        }
        if data.is_empty() {
            return;
        }
        if event.event.as_deref() == Some("error") {
            let error = parse_error_body(data)
                .or_else(|| serde_json::from_str::<ApiErrorObject>(data).ok())
                .unwrap_or_else(|| ApiErrorObject {
                    message: Some(data.to_owned()),
                    ..ApiErrorObject::default()
                });
            self.fail(ProviderError::from_stream_error(&error), out);
            return;
        }
        let chunk: ChatChunk<'_> = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(error) => {
                let message = format!("provider sent a malformed stream chunk: {error}");
                self.fail(ProviderError::new(ErrorKind::Generic, message, true), out);
                return;
            }
        };
        self.on_chunk(chunk, out);
    }

    fn on_chunk(&mut self, chunk: ChatChunk<'_>, out: &mut VecDeque<ParsedItem>) {
        if let Some(error) = &chunk.error {
            self.fail(ProviderError::from_stream_error(error), out);
            return;
        }
        if self.response_id.is_none() {
            self.response_id = chunk
                .id
                .filter(|id| !id.is_empty())
                .map(|id| id.into_owned());
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(convert_usage(&usage));
        }
        // Only the first choice is a conversation; we never ask for `n > 1`.
        for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
            let delta = choice.delta;
            if let Some(reasoning) = delta.reasoning_content.or(delta.reasoning) {
                if !reasoning.is_empty() {
                    out.push_back(Ok(ProviderEvent::ReasoningDelta(reasoning.into_owned())));
                }
            }
            if let Some(content) = delta.content {
                if !content.is_empty() {
                    out.push_back(Ok(ProviderEvent::TextDelta(content.into_owned())));
                }
            }
            for fragment in delta.tool_calls.into_iter().flatten() {
                self.on_tool_call_fragment(fragment, out);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(parse_finish_reason(&reason));
            }
        }
    }

    fn on_tool_call_fragment(
        &mut self,
        fragment: ToolCallFragment<'_>,
        out: &mut VecDeque<ParsedItem>,
    ) {
        let id = fragment.id.filter(|id| !id.is_empty());
        let index = fragment
            .index
            .unwrap_or_else(|| self.infer_index(id.as_deref()));
        let position = match self.tool_calls.iter().position(|call| call.index == index) {
            Some(position) => position,
            None => {
                self.tool_calls.push(ToolCallState {
                    index,
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                    started: false,
                });
                self.tool_calls.len() - 1
            }
        };
        let call = &mut self.tool_calls[position];
        if let Some(id) = id {
            if call.id.is_empty() {
                call.id = id.into_owned();
            }
        }
        let function = fragment.function.unwrap_or_default();
        if let Some(name) = function.name {
            if !call.started {
                call.name.push_str(&name);
            }
        }
        if let Some(arguments) = function.arguments.filter(|arguments| !arguments.is_empty()) {
            call.arguments.push_str(&arguments);
            if call.started {
                out.push_back(Ok(ProviderEvent::ToolCallArgsDelta {
                    index,
                    delta: arguments.into_owned(),
                }));
            }
        }
        if !call.started && !call.name.is_empty() {
            start_call(call, out);
        }
    }

    /// Servers that omit `index`: a fragment with a new id opens the next call, anything else
    /// continues the call it names or the latest one.
    fn infer_index(&self, id: Option<&str>) -> usize {
        if let Some(id) = id {
            if let Some(call) = self.tool_calls.iter().find(|call| call.id == id) {
                return call.index;
            }
            return self
                .tool_calls
                .iter()
                .map(|call| call.index + 1)
                .max()
                .unwrap_or(0);
        }
        self.tool_calls.last().map_or(0, |call| call.index)
    }

    /// The step ended normally: close every tool call, then usage, then the finish.
    fn complete(&mut self, out: &mut VecDeque<ParsedItem>) {
        self.done = true;
        self.tool_calls.sort_by_key(|call| call.index);
        for call in &mut self.tool_calls {
            if !call.started {
                start_call(call, out); // a nameless call still gets an error result later
            }
            out.push_back(Ok(ProviderEvent::ToolCallEnd {
                index: call.index,
                args: parse_arguments(&call.arguments),
            }));
        }
        if let Some(usage) = self.usage {
            out.push_back(Ok(ProviderEvent::Usage(usage)));
        }
        // Some servers say "stop" (or nothing) while calling tools; the calls are what counts.
        let has_tool_calls = !self.tool_calls.is_empty();
        let reason = match self.finish_reason.take() {
            Some(FinishReason::Stop) | None if has_tool_calls => FinishReason::ToolCalls,
            Some(reason) => reason,
            None => FinishReason::Stop,
        };
        out.push_back(Ok(ProviderEvent::Finish {
            reason,
            response_id: self.response_id.take(),
        }));
    }

    fn fail(&mut self, error: ProviderError, out: &mut VecDeque<ParsedItem>) {
        self.done = true;
        out.push_back(Err(error));
    }
}

fn start_call(call: &mut ToolCallState, out: &mut VecDeque<ParsedItem>) {
    call.started = true;
    if call.id.is_empty() {
        call.id = format!("call_{}", call.index);
    }
    out.push_back(Ok(ProviderEvent::ToolCallStart {
        index: call.index,
        id: call.id.clone(),
        name: call.name.clone(),
    }));
    if !call.arguments.is_empty() {
        out.push_back(Ok(ProviderEvent::ToolCallArgsDelta {
            index: call.index,
            delta: call.arguments.clone(),
        }));
    }
}

pub fn parse_finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

fn convert_usage(usage: &WireUsage) -> Usage {
    Usage {
        input_tokens: usage.prompt_tokens.unwrap_or(0),
        output_tokens: usage.completion_tokens.unwrap_or(0),
        reasoning_tokens: usage
            .completion_tokens_details
            .and_then(|details| details.reasoning_tokens)
            .unwrap_or(0),
        cache_read_tokens: usage
            .prompt_tokens_details
            .and_then(|details| details.cached_tokens)
            .unwrap_or(0),
        // OpenAI caches implicitly and does not bill cache writes separately.
        cache_write_tokens: 0,
    }
}
