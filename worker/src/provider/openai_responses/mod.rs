//! OpenAI Responses (`POST {base_url}/responses`), also spoken by llama.cpp and `chatd
//! mock-llm`.
//!
//! Requests are stored (`store: true`) so the next step can chain onto the response with
//! `previous_response_id` and send only the new input ([`ModelRequest::chain`]). When the server
//! no longer knows the previous response (it expired, was deleted, or the server never stores),
//! it rejects the chained request before generating anything; [`stream`] then re-sends the
//! request once with the whole history. That is the only second request made here: it cannot
//! bill twice, because the first one was refused outright. Everything else about retrying is the
//! turn loop's decision.
//!
//! The response body is fed through [`ResponsesStreamParser`].

pub mod parser;
pub mod wire;

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod request_tests;
#[cfg(test)]
mod tests;

use chatd_shared::domain::{ContentPart, Role};

use crate::provider::http::{endpoint_url, json_as_text, parse_body, read_error_body};
use crate::provider::{
    EventStream, ModelRequest, PromptMessage, ProviderEndpoint, ProviderError, ResponseChain,
};
pub use parser::ResponsesStreamParser;
use wire::{InputContentPart, InputItem, MessageContent, RequestTool, ResponsesRequest};

/// Sends one streaming request (twice at most, see the module docs); see
/// [`crate::provider::stream`] for the contract.
pub async fn stream(
    http: &reqwest::Client,
    endpoint: &ProviderEndpoint,
    request: &ModelRequest,
) -> Result<EventStream, ProviderError> {
    let body = build_request(request);
    let Some(previous_response_id) = body.previous_response_id.clone() else {
        return send(http, endpoint, &body)
            .await
            .map_err(|failure| failure.error);
    };
    match send(http, endpoint, &body).await {
        Ok(events) => Ok(events),
        Err(failure) if failure.unknown_previous_response => {
            tracing::warn!(
                %previous_response_id,
                error = %failure.error,
                "provider does not know the previous response; replaying the whole history"
            );
            send(http, endpoint, &build_full_request(request))
                .await
                .map_err(|failure| failure.error)
        }
        Err(failure) => Err(failure.error),
    }
}

/// Maps the domain prompt onto a Responses request, chained onto
/// [`ResponseChain::previous_response_id`] when [`ModelRequest::chain`] is set.
///
/// System messages become `instructions` (text parts joined with `\n`, messages with a blank
/// line) wherever they are, and are sent with chained requests too, because instructions do not
/// carry over. With a chain, `input` holds only the messages from [`ResponseChain::new_from`] on.
/// Text parts of a message are joined with `\n`; blank text, reasoning (the server keeps its own
/// when chaining and accepts none without its encrypted form), file and source parts are not
/// sent. Assistant tool calls become `function_call` items after the assistant's text, and every
/// tool-result part becomes a `function_call_output` item whatever the role of its message.
pub fn build_request(request: &ModelRequest) -> ResponsesRequest {
    build(request, request.chain.as_ref())
}

/// [`build_request`] ignoring [`ModelRequest::chain`]: the whole history, no
/// `previous_response_id`.
pub fn build_full_request(request: &ModelRequest) -> ResponsesRequest {
    build(request, None)
}

fn build(request: &ModelRequest, chain: Option<&ResponseChain>) -> ResponsesRequest {
    let system_prompts: Vec<String> = request
        .messages
        .iter()
        .filter(|message| message.role == Role::System)
        .filter_map(joined_text)
        .collect();
    let first_new = chain.map_or(0, |chain| chain.new_from);
    let mut input = Vec::new();
    for message in request.messages.iter().skip(first_new) {
        push_items(message, &mut input);
    }
    ResponsesRequest {
        model: request.model.clone(),
        instructions: (!system_prompts.is_empty()).then(|| system_prompts.join("\n\n")),
        input,
        previous_response_id: chain.map(|chain| chain.previous_response_id.clone()),
        tools: request
            .tools
            .iter()
            .map(|tool| RequestTool {
                tool_type: "function".to_owned(),
                name: tool.name.clone(),
                description: tool.description.clone(),
                parameters: tool.parameters.clone(),
            })
            .collect(),
        max_output_tokens: request.max_output_tokens,
        stream: true,
        store: true,
    }
}

/// The non-blank text parts of a message joined with `\n`; `None` when there are none.
fn joined_text(message: &PromptMessage) -> Option<String> {
    let texts: Vec<&str> = message
        .content
        .iter()
        .filter(|part| !part.is_blank())
        .filter_map(|part| match part {
            ContentPart::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join("\n"))
}

fn push_items(message: &PromptMessage, out: &mut Vec<InputItem>) {
    match message.role {
        Role::System | Role::Tool => {}
        Role::User
            if message
                .content
                .iter()
                .any(|part| matches!(part, ContentPart::File { .. })) =>
        {
            out.push(InputItem::Message {
                role: "user".to_owned(),
                content: MessageContent::Parts(user_parts(message)),
            });
        }
        Role::User | Role::Assistant => {
            if let Some(text) = joined_text(message) {
                out.push(InputItem::Message {
                    role: message.role.as_str().to_owned(),
                    content: MessageContent::Text(text),
                });
            }
        }
    }
    for part in &message.content {
        match part {
            ContentPart::ToolCall {
                tool_call_id,
                tool_name,
                args,
            } if message.role == Role::Assistant => out.push(InputItem::FunctionCall {
                call_id: tool_call_id.clone(),
                name: tool_name.clone(),
                arguments: json_as_text(args),
            }),
            ContentPart::ToolResult {
                tool_call_id,
                result,
                ..
            } => out.push(InputItem::FunctionCallOutput {
                call_id: tool_call_id.clone(),
                output: json_as_text(result),
            }),
            _ => {}
        }
    }
}

/// A user message with attachments as typed parts, in order: `input_text`, images as
/// `input_image`, PDFs as `input_file` (data URLs), text files as `input_text`.
fn user_parts(message: &PromptMessage) -> Vec<InputContentPart> {
    let text = |text: String| InputContentPart {
        part_type: "input_text".to_owned(),
        text: Some(text),
        ..InputContentPart::default()
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
                    InputContentPart {
                        part_type: "input_image".to_owned(),
                        image_url: Some(url),
                        ..InputContentPart::default()
                    }
                } else {
                    InputContentPart {
                        part_type: "input_file".to_owned(),
                        filename: Some(name.clone().unwrap_or_else(|| "attachment.pdf".into())),
                        file_data: Some(url),
                        ..InputContentPart::default()
                    }
                })
            }
            _ => None,
        })
        .collect()
}

/// A rejected request, and whether the rejection was "unknown previous response".
struct SendFailure {
    error: ProviderError,
    unknown_previous_response: bool,
}

/// Like [`crate::provider::http::send_streaming`], but keeps what the fallback needs to know
/// about an error body before it is consumed.
async fn send(
    http: &reqwest::Client,
    endpoint: &ProviderEndpoint,
    body: &ResponsesRequest,
) -> Result<EventStream, SendFailure> {
    let mut builder = http
        .post(endpoint_url(&endpoint.base_url, "responses"))
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(body);
    if let Some(api_key) = &endpoint.api_key {
        builder = builder.bearer_auth(api_key);
    }
    let response = builder.send().await.map_err(|error| SendFailure {
        error: ProviderError::from_transport(&error),
        unknown_previous_response: false,
    })?;
    let status = response.status();
    if !status.is_success() {
        let headers = response.headers().clone();
        let error_body = read_error_body(response).await;
        return Err(SendFailure {
            error: ProviderError::from_http(status.as_u16(), &headers, &error_body),
            unknown_previous_response: is_unknown_previous_response(status.as_u16(), &error_body),
        });
    }
    Ok(Box::pin(parse_body(
        response.bytes_stream(),
        ResponsesStreamParser::new(),
    )))
}

/// Whether an error answer rejects the chain: OpenAI's 400 with code
/// `previous_response_not_found` (or about `previous_response_id` and "not found"), a server
/// that does not support the field at all (llama.cpp's 400 "does not support
/// 'previous_response_id'"), or a 404 that mentions the previous response.
pub fn is_unknown_previous_response(status: u16, body: &str) -> bool {
    let error = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("error").cloned())
        .unwrap_or(serde_json::Value::Null);
    let field = |name: &str| {
        error
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let (code, param, message) = (field("code"), field("param"), field("message"));
    if code == "previous_response_not_found" {
        return matches!(status, 400 | 404);
    }
    match status {
        400 => {
            let about_chaining =
                param == "previous_response_id" || message.contains("previous_response_id");
            // OpenAI: "… not found"; servers without stored responses (llama.cpp) reject the
            // field itself: "llama.cpp does not support 'previous_response_id'".
            about_chaining
                && (message.contains("not found")
                    || message.contains("not support")
                    || message.contains("unsupported"))
        }
        404 => {
            let text = body.to_ascii_lowercase();
            text.contains("previous response") || text.contains("previous_response")
        }
        _ => false,
    }
}
