//! Anthropic Messages (`POST {base_url}/messages`), also spoken by llama.cpp's `/v1/messages`
//! and by `chatd mock-llm`.
//!
//! The request is sent once; nothing here reconnects or retries, because re-sending a request
//! bills it again. The response body is fed through [`AnthropicStreamParser`].
//!
//! Replay of the provider's own blocks: reasoning arrives as [`ProviderEvent::ReasoningDelta`]s
//! closed by a [`ProviderEvent::ReasoningSignature`], redacted reasoning as
//! [`ProviderEvent::RedactedReasoning`], provider-executed tools as
//! [`ProviderEvent::ProviderToolCall`] + [`ProviderEvent::ProviderToolResult`]. Stored as the
//! matching [`ContentPart`]s in stream order, they are sent back by [`build_request`] as the
//! `thinking`, `redacted_thinking`, `server_tool_use` and result blocks they came from.
//!
//! [`ProviderEvent::ReasoningDelta`]: crate::provider::ProviderEvent::ReasoningDelta
//! [`ProviderEvent::ReasoningSignature`]: crate::provider::ProviderEvent::ReasoningSignature
//! [`ProviderEvent::RedactedReasoning`]: crate::provider::ProviderEvent::RedactedReasoning
//! [`ProviderEvent::ProviderToolCall`]: crate::provider::ProviderEvent::ProviderToolCall
//! [`ProviderEvent::ProviderToolResult`]: crate::provider::ProviderEvent::ProviderToolResult

pub mod parser;
pub mod wire;

#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod tests;

use chatd_shared::domain::{ContentPart, Role};
use reqwest::header::{HeaderValue, ACCEPT};
use serde_json::{Map, Value};

use crate::provider::http::{endpoint_url, json_as_text, send_streaming};
use crate::provider::{
    ErrorKind, EventStream, ModelRequest, PromptMessage, ProviderEndpoint, ProviderError,
    DEFAULT_MAX_OUTPUT_TOKENS,
};
pub use parser::AnthropicStreamParser;
use wire::{
    block_type, ContentBlock, Message, MessageContent, MessagesRequest, SystemPrompt,
    ToolDefinition, ANTHROPIC_VERSION,
};

/// Key under which tool-call arguments that are not a JSON object are sent back: Anthropic
/// requires `input` to be an object, and wrapping (rather than sending `{}`) keeps what the
/// model actually produced in front of it, so a following "invalid arguments" result makes
/// sense.
pub const RAW_ARGUMENTS_KEY: &str = "_raw_arguments";

/// Sent as the content of a failed tool result that has no output: Anthropic rejects an empty
/// `tool_result` when `is_error` is true.
pub const EMPTY_ERROR_RESULT: &str = "the tool failed without output";

/// The Messages endpoint of a base URL given either way: as Anthropic's SDKs take it
/// (`https://api.anthropic.com`, `ANTHROPIC_BASE_URL`) or with the version
/// (`https://api.anthropic.com/v1`, as chatd's OpenAI providers are configured).
pub fn messages_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.ends_with("/v1") {
        endpoint_url(base, "messages")
    } else {
        endpoint_url(base, "v1/messages")
    }
}

/// Sends one streaming request; see [`crate::provider::stream`] for the contract.
pub async fn stream(
    http: &reqwest::Client,
    endpoint: &ProviderEndpoint,
    request: &ModelRequest,
) -> Result<EventStream, ProviderError> {
    let mut builder = http
        .post(messages_url(&endpoint.base_url))
        .header(ACCEPT, "text/event-stream")
        .header("anthropic-version", ANTHROPIC_VERSION)
        .json(&build_request(request));
    if let Some(api_key) = &endpoint.api_key {
        let mut value = HeaderValue::from_str(api_key).map_err(|_| {
            ProviderError::new(
                ErrorKind::Config,
                "the provider API key is not a valid HTTP header value",
                false,
            )
        })?;
        value.set_sensitive(true);
        builder = builder.header("x-api-key", value);
    }
    send_streaming(builder, AnthropicStreamParser::new()).await
}

/// Maps the domain prompt onto a Messages request.
///
/// - `System` messages (wherever they are) are lifted into `system`, their text parts joined
///   with a blank line.
/// - `Tool` messages, and tool-result parts of any message, become `tool_result` blocks of a
///   **user** message; consecutive messages of the same role are merged (Anthropic requires
///   alternation), and in each user message the `tool_result` blocks come first (Anthropic
///   requires them before any text).
/// - Assistant messages carry, in their stored order, `thinking` (only with a signature: an
///   unsigned block cannot be replayed), `redacted_thinking`, `text`, `tool_use` and the
///   provider-executed `server_tool_use` and result blocks.
/// - Blank text and reasoning parts are dropped (Anthropic rejects empty text blocks), as are
///   file and source parts; a message left without blocks is dropped.
pub fn build_request(request: &ModelRequest) -> MessagesRequest {
    let mut system_texts: Vec<&str> = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    for message in &request.messages {
        if message.role == Role::System {
            system_texts.extend(message.content.iter().filter_map(|part| match part {
                ContentPart::Text { text } if !part.is_blank() => Some(text.as_str()),
                _ => None,
            }));
            continue;
        }
        let (assistant_blocks, user_blocks) = message_blocks(message);
        push_merged(&mut messages, "assistant", assistant_blocks);
        push_merged(&mut messages, "user", user_blocks);
    }
    for message in &mut messages {
        if let (true, MessageContent::Blocks(blocks)) =
            (message.role == "user", &mut message.content)
        {
            // A stable sort: tool results keep their order, as does everything after them.
            blocks.sort_by_key(|block| block.block_type != block_type::TOOL_RESULT);
        }
    }
    MessagesRequest {
        model: request.model.clone(),
        max_tokens: request
            .max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
        system: (!system_texts.is_empty()).then(|| SystemPrompt::Text(system_texts.join("\n\n"))),
        messages,
        tools: (!request.tools.is_empty()).then(|| {
            request
                .tools
                .iter()
                .map(|tool| ToolDefinition {
                    name: tool.name.clone(),
                    description: tool.description.clone(),
                    input_schema: input_schema(&tool.parameters),
                })
                .collect()
        }),
        stream: true,
    }
}

/// The blocks a non-system message contributes: `(assistant blocks, user blocks)`.
fn message_blocks(message: &PromptMessage) -> (Vec<ContentBlock>, Vec<ContentBlock>) {
    let mut assistant = Vec::new();
    let mut user = Vec::new();
    let is_assistant = message.role == Role::Assistant;
    for part in message.content.iter().filter(|part| !part.is_blank()) {
        match part {
            ContentPart::Text { text } if is_assistant => {
                assistant.push(ContentBlock::text(text.clone()));
            }
            ContentPart::Text { text } => user.push(ContentBlock::text(text.clone())),
            ContentPart::File { .. } if !is_assistant => {
                user.extend(ContentBlock::attachment(part));
            }
            ContentPart::ToolResult {
                tool_call_id,
                result,
                is_error,
                ..
            } => user.push(tool_result_block(tool_call_id, result, *is_error)),
            _ if !is_assistant => {} // only the assistant replays its own blocks
            ContentPart::Reasoning {
                text,
                signature: Some(signature),
            } if !signature.is_empty() => {
                assistant.push(ContentBlock::thinking(text.clone(), signature.clone()));
            }
            ContentPart::RedactedReasoning { data } if !data.is_empty() => {
                assistant.push(ContentBlock::redacted_thinking(data.clone()));
            }
            ContentPart::ToolCall {
                tool_call_id,
                tool_name,
                args,
            } => assistant.push(ContentBlock::tool_use(
                block_type::TOOL_USE,
                tool_call_id.clone(),
                tool_name.clone(),
                input_object(args),
            )),
            ContentPart::ProviderToolCall {
                tool_call_id,
                tool_name,
                args,
            } => assistant.push(ContentBlock::tool_use(
                block_type::SERVER_TOOL_USE,
                tool_call_id.clone(),
                tool_name.clone(),
                input_object(args),
            )),
            ContentPart::ProviderToolResult {
                tool_call_id,
                block_type,
                content,
            } => assistant.push(ContentBlock::provider_tool_result(
                block_type.clone(),
                tool_call_id.clone(),
                content.clone(),
            )),
            // Unsigned or blank reasoning, empty redacted data, sources.
            _ => {}
        }
    }
    (assistant, user)
}

/// Appends `blocks` to the last message when it has the same role, else starts a message.
fn push_merged(messages: &mut Vec<Message>, role: &str, blocks: Vec<ContentBlock>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(Message {
        role: last_role,
        content: MessageContent::Blocks(last_blocks),
    }) = messages.last_mut()
    {
        if last_role == role {
            last_blocks.extend(blocks);
            return;
        }
    }
    messages.push(Message {
        role: role.to_owned(),
        content: MessageContent::Blocks(blocks),
    });
}

/// A `tool_result` block. An empty result omits `content`, except on errors, where Anthropic
/// requires some content ([`EMPTY_ERROR_RESULT`]).
fn tool_result_block(tool_call_id: &str, result: &Value, is_error: bool) -> ContentBlock {
    let text = json_as_text(result);
    let content = if !text.trim().is_empty() {
        Some(text)
    } else if is_error {
        Some(EMPTY_ERROR_RESULT.to_owned())
    } else {
        None
    };
    ContentBlock::tool_result(tool_call_id, content, is_error)
}

/// Tool-call arguments as the JSON object Anthropic requires: an object as is, `null` or blank
/// text as `{}`, a string holding a JSON object as that object, and anything else (arguments
/// kept verbatim because they were not valid JSON) wrapped as `{RAW_ARGUMENTS_KEY: value}`.
pub fn input_object(args: &Value) -> Value {
    match args {
        Value::Object(_) => args.clone(),
        Value::Null => Value::Object(Map::new()),
        Value::String(text) if text.trim().is_empty() => Value::Object(Map::new()),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(object @ Value::Object(_)) => object,
            _ => wrap_raw_arguments(args),
        },
        _ => wrap_raw_arguments(args),
    }
}

fn wrap_raw_arguments(args: &Value) -> Value {
    let mut object = Map::new();
    object.insert(RAW_ARGUMENTS_KEY.to_owned(), args.clone());
    Value::Object(object)
}

/// Anthropic requires `input_schema` to be an object schema: a missing schema becomes one with
/// no properties, and an object without `type` gets `"type": "object"`.
fn input_schema(parameters: &Value) -> Value {
    match parameters {
        Value::Object(schema) => {
            let mut schema = schema.clone();
            schema
                .entry("type")
                .or_insert_with(|| Value::String("object".to_owned()));
            Value::Object(schema)
        }
        _ => serde_json::json!({"type": "object", "properties": {}}),
    }
}

/// Test helper: the events of a body given as chunks.
#[cfg(test)]
fn parse_body<S>(body: S) -> impl futures::Stream<Item = crate::provider::http::ParsedItem> + Send
where
    S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
{
    crate::provider::http::parse_body(body, AnthropicStreamParser::new())
}
