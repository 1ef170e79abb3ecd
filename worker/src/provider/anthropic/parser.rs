//! Turns the bytes of an Anthropic Messages stream into [`ProviderEvent`]s.
//!
//! Pure and synchronous so recorded fixtures can be replayed byte by byte in tests; the HTTP
//! wrapper in the parent module only moves bytes in and events out.
//!
//! Text and reasoning deltas are emitted as they arrive. A content block's "complete" event is
//! emitted at its `content_block_stop`: the parsed arguments of a `tool_use`
//! ([`ProviderEvent::ToolCallEnd`]), the signature of a `thinking` block
//! ([`ProviderEvent::ReasoningSignature`]), a provider-executed call
//! ([`ProviderEvent::ProviderToolCall`]) and its result block
//! ([`ProviderEvent::ProviderToolResult`]). `message_stop` closes any block left open, then
//! emits [`ProviderEvent::Usage`] and [`ProviderEvent::Finish`].
//!
//! **Invariant:** tool-call indexes are dense `0..n` over `tool_use` blocks in stream order;
//! Anthropic's block indexes (which count text, thinking and server-tool blocks too) never leak
//! into [`ProviderEvent`]s.

use std::collections::{BTreeMap, VecDeque};

use crate::provider::anthropic::wire::{
    block_type, BlockDelta, ContentBlock, StreamEvent, WireUsage,
};
use crate::provider::error::{parse_error_body, ApiErrorObject};
use crate::provider::http::{parse_arguments, ParsedItem, SseProtocol};
use crate::provider::{ErrorKind, FinishReason, ProviderError, ProviderEvent, Usage};
use chatd_shared::sse::{Decoder, SseEvent};

/// Event types whose payload must parse; a malformed one fails the stream instead of being
/// skipped, since skipping it would silently lose output or the terminal marker.
const KNOWN_EVENT_TYPES: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
];

/// Incremental parser for one streamed answer.
#[derive(Debug, Default)]
pub struct AnthropicStreamParser {
    decoder: Decoder,
    /// Blocks started and not yet stopped, by Anthropic's block index.
    open_blocks: BTreeMap<usize, OpenBlock>,
    /// The dense index the next `tool_use` block gets.
    next_tool_index: usize,
    /// Usage merged field by field, each count the last value seen (they are cumulative).
    usage: Option<WireUsage>,
    stop_reason: Option<String>,
    response_id: Option<String>,
    /// Set after `message_stop` or an error: nothing more is emitted.
    done: bool,
}

/// What a started block still needs to emit when it stops.
#[derive(Debug)]
enum OpenBlock {
    /// `text`, `redacted_thinking` and unknown block types: everything was emitted already.
    Passive,
    Thinking {
        /// `signature_delta` fragments concatenated.
        signature: String,
    },
    ToolUse {
        /// Dense index over `tool_use` blocks.
        index: usize,
        /// `input_json_delta` fragments concatenated.
        arguments: String,
        /// A non-empty `input` already present at `content_block_start` (compatible servers
        /// that send the whole call at once); used only when no fragment arrives.
        initial_input: Option<serde_json::Value>,
    },
    ServerToolUse {
        id: String,
        name: String,
        arguments: String,
        initial_input: Option<serde_json::Value>,
    },
    ProviderToolResult {
        tool_call_id: String,
        block_type: String,
        content: serde_json::Value,
    },
}

impl AnthropicStreamParser {
    pub fn new() -> AnthropicStreamParser {
        AnthropicStreamParser::default()
    }
}

impl SseProtocol for AnthropicStreamParser {
    fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    fn handle_event(&mut self, event: &SseEvent, _at_eof: bool, out: &mut VecDeque<ParsedItem>) {
        self.on_sse_event(event, out);
    }

    /// Without `message_stop` the answer is truncated, even when a stop reason already arrived.
    fn on_eof(&mut self, out: &mut VecDeque<ParsedItem>) {
        self.fail(ProviderError::truncated(), out);
    }

    fn is_finished(&self) -> bool {
        self.done
    }
}

impl AnthropicStreamParser {
    fn on_sse_event(&mut self, event: &SseEvent, out: &mut VecDeque<ParsedItem>) {
        let data = event.data.trim();
        if data.is_empty() {
            return;
        }
        match serde_json::from_str::<StreamEvent>(data) {
            Ok(parsed) => self.on_stream_event(parsed, out),
            Err(parse_error) => {
                // The payload's own `type` wins over the SSE event name, as for parsed events.
                let declared = declared_type(data);
                let name = declared.as_deref().or(event.event.as_deref());
                if name == Some("error") || event.event.as_deref() == Some("error") {
                    // An error in a shape other than Anthropic's: classify what can be read.
                    let error = parse_error_body(data).unwrap_or_else(|| ApiErrorObject {
                        message: Some(data.to_owned()),
                        ..ApiErrorObject::default()
                    });
                    self.fail(ProviderError::from_stream_error(&error), out);
                } else if name.is_some_and(|name| KNOWN_EVENT_TYPES.contains(&name)) {
                    let message = format!("provider sent a malformed stream event: {parse_error}");
                    self.fail(ProviderError::new(ErrorKind::Generic, message, true), out);
                }
                // Anything else is an unknown event in an unknown shape: ignored.
            }
        }
    }

    fn on_stream_event(&mut self, event: StreamEvent, out: &mut VecDeque<ParsedItem>) {
        match event {
            StreamEvent::MessageStart { message } => {
                if self.response_id.is_none() {
                    self.response_id = message.id.filter(|id| !id.is_empty());
                }
                if let Some(usage) = message.usage {
                    self.merge_usage(&usage);
                }
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                // A repeated index means the server never stopped the earlier block.
                if let Some(previous) = self.open_blocks.remove(&index) {
                    close_block(previous, out);
                }
                let block = self.start_block(content_block, out);
                self.open_blocks.insert(index, block);
            }
            StreamEvent::ContentBlockDelta { index, delta } => self.on_delta(index, delta, out),
            StreamEvent::ContentBlockStop { index } => {
                if let Some(block) = self.open_blocks.remove(&index) {
                    close_block(block, out);
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason.filter(|reason| !reason.is_empty()) {
                    self.stop_reason = Some(reason);
                }
                if let Some(usage) = usage {
                    self.merge_usage(&usage);
                }
            }
            StreamEvent::MessageStop => self.complete(out),
            StreamEvent::Error { error } => {
                self.fail(ProviderError::from_stream_error(&error), out)
            }
            StreamEvent::Ping | StreamEvent::Unknown => {}
        }
    }

    /// Emits what a block's start already says and returns what its stop must emit.
    fn start_block(&mut self, block: ContentBlock, out: &mut VecDeque<ParsedItem>) -> OpenBlock {
        match block.block_type.as_str() {
            block_type::TEXT => {
                push_text(block.text, ProviderEvent::TextDelta, out);
                OpenBlock::Passive
            }
            block_type::THINKING => {
                push_text(block.thinking, ProviderEvent::ReasoningDelta, out);
                OpenBlock::Thinking {
                    signature: block.signature.unwrap_or_default(),
                }
            }
            block_type::REDACTED_THINKING => {
                if let Some(data) = block.data.filter(|data| !data.is_empty()) {
                    out.push_back(Ok(ProviderEvent::RedactedReasoning(data)));
                }
                OpenBlock::Passive
            }
            block_type::TOOL_USE => {
                let index = self.next_tool_index;
                self.next_tool_index += 1;
                let id = block
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("toolu_{index}"));
                out.push_back(Ok(ProviderEvent::ToolCallStart {
                    index,
                    id,
                    name: block.name.unwrap_or_default(),
                }));
                OpenBlock::ToolUse {
                    index,
                    arguments: String::new(),
                    initial_input: non_empty_input(block.input),
                }
            }
            block_type::SERVER_TOOL_USE => OpenBlock::ServerToolUse {
                id: block.id.unwrap_or_default(),
                name: block.name.unwrap_or_default(),
                arguments: String::new(),
                initial_input: non_empty_input(block.input),
            },
            kind if kind.ends_with(block_type::PROVIDER_TOOL_RESULT_SUFFIX) => {
                OpenBlock::ProviderToolResult {
                    tool_call_id: block.tool_use_id.unwrap_or_default(),
                    block_type: kind.to_owned(),
                    content: block.content.unwrap_or(serde_json::Value::Null),
                }
            }
            _ => OpenBlock::Passive,
        }
    }

    fn on_delta(&mut self, index: usize, delta: BlockDelta, out: &mut VecDeque<ParsedItem>) {
        match delta {
            // Text and reasoning need no block state, so they are emitted even for a block
            // whose start was never seen.
            BlockDelta::TextDelta { text } => push_text(Some(text), ProviderEvent::TextDelta, out),
            BlockDelta::ThinkingDelta { thinking } => {
                push_text(Some(thinking), ProviderEvent::ReasoningDelta, out);
            }
            BlockDelta::SignatureDelta { signature } => {
                let block = self
                    .open_blocks
                    .entry(index)
                    .or_insert_with(|| OpenBlock::Thinking {
                        signature: String::new(),
                    });
                if let OpenBlock::Thinking { signature: so_far } = block {
                    so_far.push_str(&signature);
                }
            }
            BlockDelta::InputJsonDelta { partial_json } => match self.open_blocks.get_mut(&index) {
                // The first fragment is usually empty: nothing to announce.
                Some(OpenBlock::ToolUse {
                    index, arguments, ..
                }) if !partial_json.is_empty() => {
                    arguments.push_str(&partial_json);
                    out.push_back(Ok(ProviderEvent::ToolCallArgsDelta {
                        index: *index,
                        delta: partial_json,
                    }));
                }
                Some(OpenBlock::ServerToolUse { arguments, .. }) => {
                    arguments.push_str(&partial_json);
                }
                _ => {}
            },
            BlockDelta::Unknown => {}
        }
    }

    fn merge_usage(&mut self, update: &WireUsage) {
        let usage = self.usage.get_or_insert_with(WireUsage::default);
        let fields = [
            (&mut usage.input_tokens, update.input_tokens),
            (&mut usage.output_tokens, update.output_tokens),
            (
                &mut usage.cache_creation_input_tokens,
                update.cache_creation_input_tokens,
            ),
            (
                &mut usage.cache_read_input_tokens,
                update.cache_read_input_tokens,
            ),
        ];
        for (field, value) in fields {
            if value.is_some() {
                *field = value;
            }
        }
    }

    /// `message_stop`: close what is still open, then usage, then the finish.
    fn complete(&mut self, out: &mut VecDeque<ParsedItem>) {
        self.done = true;
        for (_, block) in std::mem::take(&mut self.open_blocks) {
            close_block(block, out);
        }
        if let Some(usage) = &self.usage {
            out.push_back(Ok(ProviderEvent::Usage(convert_usage(usage))));
        }
        let reason = match self
            .stop_reason
            .take()
            .map(|reason| parse_stop_reason(&reason))
        {
            // Compatible servers may say `end_turn` (or nothing) while calling tools; the
            // calls are what counts.
            Some(FinishReason::Stop) | None if self.next_tool_index > 0 => FinishReason::ToolCalls,
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

/// Emits the events a block owes at its stop.
fn close_block(block: OpenBlock, out: &mut VecDeque<ParsedItem>) {
    match block {
        OpenBlock::Passive => {}
        OpenBlock::Thinking { signature } => {
            if !signature.is_empty() {
                out.push_back(Ok(ProviderEvent::ReasoningSignature(signature)));
            }
        }
        OpenBlock::ToolUse {
            index,
            arguments,
            initial_input,
        } => {
            let args = match initial_input {
                Some(input) if arguments.is_empty() => {
                    out.push_back(Ok(ProviderEvent::ToolCallArgsDelta {
                        index,
                        delta: input.to_string(),
                    }));
                    input
                }
                _ => parse_arguments(&arguments),
            };
            out.push_back(Ok(ProviderEvent::ToolCallEnd { index, args }));
        }
        OpenBlock::ServerToolUse {
            id,
            name,
            arguments,
            initial_input,
        } => {
            let args = match initial_input {
                Some(input) if arguments.trim().is_empty() => input,
                _ => parse_arguments(&arguments),
            };
            out.push_back(Ok(ProviderEvent::ProviderToolCall { id, name, args }));
        }
        OpenBlock::ProviderToolResult {
            tool_call_id,
            block_type,
            content,
        } => out.push_back(Ok(ProviderEvent::ProviderToolResult {
            tool_call_id,
            block_type,
            content,
        })),
    }
}

fn push_text(
    text: Option<String>,
    event: fn(String) -> ProviderEvent,
    out: &mut VecDeque<ParsedItem>,
) {
    if let Some(text) = text.filter(|text| !text.is_empty()) {
        out.push_back(Ok(event(text)));
    }
}

/// The `input` of a block start when it already holds arguments (anything but `{}`/`null`).
fn non_empty_input(input: Option<serde_json::Value>) -> Option<serde_json::Value> {
    input.filter(|input| match input {
        serde_json::Value::Null => false,
        serde_json::Value::Object(map) => !map.is_empty(),
        _ => true,
    })
}

/// The `type` a payload declares, for payloads that did not parse as a [`StreamEvent`].
fn declared_type(data: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        event_type: Option<String>,
    }
    serde_json::from_str::<Typed>(data).ok()?.event_type
}

pub fn parse_stop_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Anthropic's `input_tokens` excludes cache reads and writes; ours is the whole prompt.
fn convert_usage(usage: &WireUsage) -> Usage {
    let cache_read_tokens = usage.cache_read_input_tokens.unwrap_or(0);
    let cache_write_tokens = usage.cache_creation_input_tokens.unwrap_or(0);
    Usage {
        // Saturating: the counts come from the network.
        input_tokens: usage
            .input_tokens
            .unwrap_or(0)
            .saturating_add(cache_read_tokens)
            .saturating_add(cache_write_tokens),
        output_tokens: usage.output_tokens.unwrap_or(0),
        // Anthropic bills thinking as output and does not report it separately.
        reasoning_tokens: 0,
        cache_read_tokens,
        cache_write_tokens,
    }
}
