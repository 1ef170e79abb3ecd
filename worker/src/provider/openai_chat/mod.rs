//! OpenAI Chat Completions (`POST {base_url}/chat/completions`), also spoken by vLLM,
//! llama.cpp, Ollama, LiteLLM, OpenRouter and `chatd mock-llm`.
//!
//! The request is sent once; nothing here reconnects or retries, because re-sending a request
//! bills it again. The response body is fed through [`ChatStreamParser`].

pub mod parser;
pub mod wire;

#[cfg(test)]
mod tests;

use chatd_shared::domain::{ContentPart, Role};

#[cfg(test)]
use crate::provider::http::ParsedItem;
use crate::provider::http::{endpoint_url, json_as_text, send_streaming};
use crate::provider::{EventStream, ModelRequest, PromptMessage, ProviderEndpoint, ProviderError};
pub use parser::ChatStreamParser;
use wire::{
    ChatMessage, ChatRequest, FileData, FunctionCall, FunctionSpec, ImageUrl, MessageContent,
    RequestContentPart, RequestTool, RequestToolCall, StreamOptions,
};

/// Sends one streaming request; see [`crate::provider::stream`] for the contract.
pub async fn stream(
    http: &reqwest::Client,
    endpoint: &ProviderEndpoint,
    request: &ModelRequest,
) -> Result<EventStream, ProviderError> {
    let mut builder = http
        .post(endpoint_url(&endpoint.base_url, "chat/completions"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(&build_request(request));
    if let Some(api_key) = &endpoint.api_key {
        builder = builder.bearer_auth(api_key);
    }
    send_streaming(builder, ChatStreamParser::new()).await
}

/// Maps the domain prompt onto Chat Completions messages.
///
/// Text parts of a message are joined with `\n`; a user message with attachments is sent as
/// typed parts instead (`user_parts`). Reasoning parts are not sent (Chat Completions has no
/// field for them), nor are blank text parts and source parts. Every tool-result
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
        tools: (!request.tools.is_empty()).then(|| {
            request
                .tools
                .iter()
                .map(|tool| RequestTool {
                    tool_type: "function".to_owned(),
                    function: FunctionSpec {
                        name: tool.name.clone(),
                        description: tool.description.clone(),
                        parameters: tool.parameters.clone(),
                    },
                })
                .collect()
        }),
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
    let has_files = message
        .content
        .iter()
        .any(|part| matches!(part, ContentPart::File { .. }));
    let content = if has_files && message.role == Role::User {
        Some(MessageContent::Parts(user_parts(message)))
    } else {
        (!texts.is_empty()).then(|| MessageContent::Text(texts.join("\n")))
    };
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

/// A user message with attachments as typed parts, in order: text, images as `image_url` data
/// URLs, PDFs as `file` parts, text files as text parts (Chat Completions has no text
/// documents).
fn user_parts(message: &PromptMessage) -> Vec<RequestContentPart> {
    let text = |text: String| RequestContentPart {
        part_type: "text".to_owned(),
        text: Some(text),
        ..RequestContentPart::default()
    };
    message
        .content
        .iter()
        .filter(|part| !part.is_blank())
        .filter_map(|part| match part {
            ContentPart::Text { text: value } => Some(text(value.clone())),
            ContentPart::File {
                media_type, name, ..
            } => {
                if let Some(value) = crate::provider::attachment_as_text(part) {
                    return Some(text(value));
                }
                let url = crate::provider::data_url(part)?;
                Some(if chatd_shared::files::is_image(media_type) {
                    RequestContentPart {
                        part_type: "image_url".to_owned(),
                        image_url: Some(ImageUrl { url }),
                        ..RequestContentPart::default()
                    }
                } else {
                    RequestContentPart {
                        part_type: "file".to_owned(),
                        file: Some(FileData {
                            filename: Some(name.clone().unwrap_or_else(|| "attachment.pdf".into())),
                            file_data: url,
                        }),
                        ..RequestContentPart::default()
                    }
                })
            }
            _ => None,
        })
        .collect()
}

/// Test helper: the events of a body given as chunks.
#[cfg(test)]
fn parse_body<S>(body: S) -> impl futures::Stream<Item = ParsedItem> + Send
where
    S: futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + 'static,
{
    crate::provider::http::parse_body(body, ChatStreamParser::new())
}
