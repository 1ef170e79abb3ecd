//! OpenAI Chat Completions (`POST {base_url}/chat/completions`), also spoken by vLLM,
//! llama.cpp, Ollama, LiteLLM, OpenRouter and `chatd mock-llm`.
//!
//! The request is sent once; nothing here reconnects or retries, because re-sending a request
//! bills it again (PROTOCOLS.md). The response body is fed through [`ChatStreamParser`].

pub mod parser;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use chatd_shared::domain::{ContentPart, Role};
use futures::{Stream, StreamExt};

use crate::provider::{EventStream, ModelRequest, PromptMessage, ProviderEndpoint, ProviderError};
pub use parser::ChatStreamParser;
use parser::ParsedItem;
use wire::{
    ChatMessage, ChatRequest, FunctionCall, MessageContent, RequestToolCall, StreamOptions,
};

/// Error bodies are read only this far: enough for any real error object, and a misbehaving
/// server cannot make us buffer an unbounded body.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Sends one streaming request; see [`crate::provider::stream`] for the contract.
pub async fn stream(
    http: &reqwest::Client,
    endpoint: &ProviderEndpoint,
    request: &ModelRequest,
) -> Result<EventStream, ProviderError> {
    let url = format!(
        "{}/chat/completions",
        endpoint.base_url.trim_end_matches('/')
    );
    let mut builder = http
        .post(url)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(&build_request(request));
    if let Some(api_key) = &endpoint.api_key {
        builder = builder.bearer_auth(api_key);
    }
    let response = builder
        .send()
        .await
        .map_err(|error| ProviderError::from_transport(&error))?;
    let status = response.status();
    if !status.is_success() {
        let headers = response.headers().clone();
        let body = read_error_body(response).await;
        return Err(ProviderError::from_http(status.as_u16(), &headers, &body));
    }
    Ok(Box::pin(parse_body(response.bytes_stream())))
}

/// Maps the domain prompt onto Chat Completions messages.
///
/// Text parts of a message are joined with `\n`. Reasoning parts are not sent (Chat Completions
/// has no field for them), nor are blank text parts, file and source parts. Every tool-result
/// part becomes its own `tool` message whatever the role of the message holding it.
pub fn build_request(request: &ModelRequest) -> ChatRequest {
    let mut messages = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        push_messages(message, &mut messages);
    }
    ChatRequest {
        model: request.model.clone(),
        messages,
        stream: true,
        stream_options: Some(StreamOptions {
            include_usage: true,
        }),
        max_tokens: request.max_output_tokens,
    }
}

fn push_messages(message: &PromptMessage, out: &mut Vec<ChatMessage>) {
    let texts: Vec<&str> = message
        .content
        .iter()
        .filter(|part| !part.is_blank())
        .filter_map(|part| match part {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let content = (!texts.is_empty()).then(|| MessageContent::Text(texts.join("\n")));
    let tool_calls: Vec<RequestToolCall> = message
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::ToolCall {
                tool_call_id,
                tool_name,
                args,
            } => Some(RequestToolCall {
                id: tool_call_id.clone(),
                call_type: "function".to_owned(),
                function: FunctionCall {
                    name: tool_name.clone(),
                    arguments: json_as_text(args),
                },
            }),
            _ => None,
        })
        .collect();
    match message.role {
        Role::System | Role::User => {
            if let Some(content) = content {
                out.push(ChatMessage {
                    role: message.role.as_str().to_owned(),
                    content: Some(content),
                    ..ChatMessage::default()
                });
            }
        }
        Role::Assistant => {
            // An assistant message with neither text nor calls is rejected by OpenAI.
            if content.is_some() || !tool_calls.is_empty() {
                out.push(ChatMessage {
                    role: "assistant".to_owned(),
                    content,
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                    tool_call_id: None,
                });
            }
        }
        Role::Tool => {}
    }
    for part in &message.content {
        if let ContentPart::ToolResult {
            tool_call_id,
            result,
            ..
        } = part
        {
            out.push(ChatMessage {
                role: "tool".to_owned(),
                content: Some(MessageContent::Text(json_as_text(result))),
                tool_call_id: Some(tool_call_id.clone()),
                tool_calls: None,
            });
        }
    }
}

/// A JSON string is sent as its contents (tool output text, or tool-call arguments that were
/// kept verbatim because they were not valid JSON); anything else as its JSON text.
fn json_as_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

async fn read_error_body(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = MAX_ERROR_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// State of the event stream built from a response body.
struct BodyState<S> {
    body: Pin<Box<S>>,
    /// `None` once the body ended or failed.
    parser: Option<ChatStreamParser>,
    pending: VecDeque<ParsedItem>,
}

/// Drives the parser with body chunks, yielding events as they complete. Reading stops at the
/// terminal event or the first error; dropping the stream drops the connection.
fn parse_body<S>(body: S) -> impl Stream<Item = ParsedItem> + Send
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    let state = BodyState {
        body: Box::pin(body),
        parser: Some(ChatStreamParser::new()),
        pending: VecDeque::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.pending.pop_front() {
                return Some((item, state));
            }
            let parser = state.parser.as_mut()?;
            if parser.is_done() {
                state.parser = None;
                continue;
            }
            match state.body.next().await {
                Some(Ok(bytes)) => parser.push(&bytes, &mut state.pending),
                Some(Err(error)) => {
                    state.parser = None;
                    state
                        .pending
                        .push_back(Err(ProviderError::from_transport(&error)));
                }
                None => {
                    if let Some(parser) = state.parser.take() {
                        parser.finish(&mut state.pending);
                    }
                }
            }
        }
    })
}
