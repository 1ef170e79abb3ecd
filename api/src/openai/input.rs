//! Reading OpenAI-shaped input (Responses `input` items, Chat Completions `messages`, `tools`)
//! into chatd's rows. Every refusal names the offending place (`input[2].content[0].type`).

use chatd_shared::domain::{ContentPart, DynamicTool};
use serde_json::{Map, Value};

use crate::dto::{MessageInput, UserPart};
use crate::error::ApiError;

/// One conversation item in chatd's terms.
#[derive(Debug, Clone)]
pub enum Item {
    /// A system or developer message: part of the chat's system prompt.
    System(String),
    User(MessageInput),
    /// An assistant turn given as history: text and/or calls of client tools.
    Assistant(Vec<ContentPart>),
    /// The result of a client tool call.
    ToolOutput {
        call_id: String,
        output: String,
    },
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::field(field, message)
}

fn str_field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a str, ApiError> {
    match object.get(key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(bad(
            format!("{field}.{key}"),
            format!("{field}.{key} must be a string"),
        )),
        None => Err(bad(
            format!("{field}.{key}"),
            format!("{field}.{key} is required"),
        )),
    }
}

/// Responses `input`: a string (one user message) or a list of items.
pub fn responses_input(input: &Value) -> Result<Vec<Item>, ApiError> {
    match input {
        Value::String(text) => Ok(vec![Item::User(MessageInput::Text(text.clone()))]),
        Value::Array(items) => {
            let mut out = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let field = format!("input[{index}]");
                let Value::Object(object) = item else {
                    return Err(bad(&field, format!("{field} must be an object")));
                };
                let kind = object
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message");
                match kind {
                    "message" => out.push(message_item(object, &field, false)?),
                    "function_call" => {
                        let call_id = str_field(object, "call_id", &field)?.to_string();
                        let name = str_field(object, "name", &field)?.to_string();
                        let arguments = str_field(object, "arguments", &field)?;
                        push_assistant(&mut out, vec![tool_call(call_id, name, arguments)]);
                    }
                    "function_call_output" => out.push(Item::ToolOutput {
                        call_id: str_field(object, "call_id", &field)?.to_string(),
                        output: output_text(object.get("output"), &format!("{field}.output"))?,
                    }),
                    // Reasoning items a client echoes back: the model's own notes, not input.
                    "reasoning" => {}
                    other => {
                        return Err(bad(
                            format!("{field}.type"),
                            format!("{field}.type: `{other}` items are not supported (message, function_call, function_call_output)"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(bad("input", "input must be a string or a list of items")),
    }
}

/// The request's `model` (a model config's id, model or display name; `models::resolve`);
/// absent or `null` for the default model config.
pub fn model(body: &Value) -> Result<Option<&str>, ApiError> {
    match body.get("model") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(ApiError::field("model", "model must be a string")),
    }
}

/// Chat Completions `messages`.
pub fn chat_messages(messages: &Value) -> Result<Vec<Item>, ApiError> {
    let Value::Array(messages) = messages else {
        return Err(bad("messages", "messages must be a list"));
    };
    if messages.is_empty() {
        return Err(bad("messages", "messages must not be empty"));
    }
    let mut out = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let field = format!("messages[{index}]");
        let Value::Object(object) = message else {
            return Err(bad(&field, format!("{field} must be an object")));
        };
        match object.get("role").and_then(Value::as_str) {
            Some("tool") => out.push(Item::ToolOutput {
                call_id: str_field(object, "tool_call_id", &field)?.to_string(),
                output: output_text(object.get("content"), &format!("{field}.content"))?,
            }),
            Some("assistant") => {
                let mut parts = Vec::new();
                if !matches!(object.get("content"), None | Some(Value::Null)) {
                    let text = output_text(object.get("content"), &format!("{field}.content"))?;
                    if !text.is_empty() {
                        parts.push(ContentPart::Text { text });
                    }
                }
                if let Some(calls) = object.get("tool_calls").filter(|calls| !calls.is_null()) {
                    let Value::Array(calls) = calls else {
                        return Err(bad(
                            format!("{field}.tool_calls"),
                            format!("{field}.tool_calls must be a list"),
                        ));
                    };
                    for (call_index, call) in calls.iter().enumerate() {
                        let call_field = format!("{field}.tool_calls[{call_index}]");
                        let Some(call) = call.as_object() else {
                            return Err(bad(
                                &call_field,
                                format!("{call_field} must be an object"),
                            ));
                        };
                        let id = str_field(call, "id", &call_field)?.to_string();
                        let function =
                            call.get("function")
                                .and_then(Value::as_object)
                                .ok_or_else(|| {
                                    bad(
                                        format!("{call_field}.function"),
                                        format!("{call_field}.function is required"),
                                    )
                                })?;
                        let function_field = format!("{call_field}.function");
                        let name = str_field(function, "name", &function_field)?.to_string();
                        let arguments = str_field(function, "arguments", &function_field)?;
                        parts.push(tool_call(id, name, arguments));
                    }
                }
                if parts.is_empty() {
                    return Err(bad(
                        &field,
                        format!("{field}: an assistant message needs content or tool_calls"),
                    ));
                }
                push_assistant(&mut out, parts);
            }
            Some(_) => out.push(message_item(object, &field, true)?),
            None => {
                return Err(bad(
                    format!("{field}.role"),
                    format!("{field}.role is required"),
                ))
            }
        }
    }
    Ok(out)
}

fn tool_call(call_id: String, name: String, arguments: &str) -> ContentPart {
    // Arguments that are not JSON stay a string: the model wrote them, the client echoes them.
    let args = serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.into()));
    ContentPart::ToolCall {
        tool_call_id: call_id,
        tool_name: name,
        args,
    }
}

/// Consecutive assistant items become one assistant row (a text and the calls it made).
fn push_assistant(out: &mut Vec<Item>, parts: Vec<ContentPart>) {
    if let Some(Item::Assistant(previous)) = out.last_mut() {
        previous.extend(parts);
    } else {
        out.push(Item::Assistant(parts));
    }
}

/// `{role, content}` (Responses `message` items, Chat Completions messages other than tool and
/// assistant).
fn message_item(object: &Map<String, Value>, field: &str, chat: bool) -> Result<Item, ApiError> {
    let role = str_field(object, "role", field)?;
    let content = object.get("content").unwrap_or(&Value::Null);
    let content_field = format!("{field}.content");
    match role {
        "system" | "developer" => Ok(Item::System(output_text(Some(content), &content_field)?)),
        "assistant" => {
            let text = output_text(Some(content), &content_field)?;
            Ok(Item::Assistant(vec![ContentPart::Text { text }]))
        }
        "user" => Ok(Item::User(user_parts(content, &content_field, chat)?)),
        other => Err(bad(
            format!("{field}.role"),
            format!(
                "{field}.role: `{other}` is not a role here (user, assistant, system, developer{})",
                if chat { ", tool" } else { "" }
            ),
        )),
    }
}

/// A user message's content: a string, or text, image and file parts.
fn user_parts(content: &Value, field: &str, chat: bool) -> Result<MessageInput, ApiError> {
    let parts = match content {
        Value::String(text) => return Ok(MessageInput::Text(text.clone())),
        Value::Array(parts) => parts,
        _ => {
            return Err(bad(
                field,
                format!("{field} must be a string or a list of parts"),
            ))
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let part_field = format!("{field}[{index}]");
        let Some(part) = part.as_object() else {
            return Err(bad(&part_field, format!("{part_field} must be an object")));
        };
        let kind = str_field(part, "type", &part_field)?;
        match kind {
            "input_text" | "text" => out.push(UserPart::Text {
                text: str_field(part, "text", &part_field)?.to_string(),
            }),
            "input_image" | "image_url" => {
                // Responses: {image_url: "<url>", file_id}; Chat Completions: {image_url: {url}}.
                let url = match part.get("image_url") {
                    Some(Value::String(url)) => Some(url.as_str()),
                    Some(Value::Object(inner)) if chat => inner.get("url").and_then(Value::as_str),
                    _ => None,
                };
                let file_id = part.get("file_id").and_then(Value::as_str);
                out.push(file_part(url, file_id, &part_field)?);
            }
            "input_file" | "file" => {
                let holder = if kind == "file" {
                    part.get("file").and_then(Value::as_object).unwrap_or(part)
                } else {
                    part
                };
                let data = holder.get("file_data").and_then(Value::as_str);
                let file_id = holder.get("file_id").and_then(Value::as_str);
                out.push(file_part(data, file_id, &part_field)?);
            }
            other => {
                return Err(bad(
                    format!("{part_field}.type"),
                    format!("{part_field}.type: `{other}` parts are not supported in user messages (input_text, input_image, input_file)"),
                ))
            }
        }
    }
    Ok(MessageInput::Parts(out))
}

/// An attachment given as a `data:` URL (or bare base64) or as the id of a file uploaded with
/// `POST /api/v1/files`. Remote URLs are refused: chatd does not fetch them.
fn file_part(data: Option<&str>, file_id: Option<&str>, field: &str) -> Result<UserPart, ApiError> {
    match (data, file_id) {
        (Some(data), None) => {
            if data.starts_with("http://") || data.starts_with("https://") {
                return Err(bad(
                    field,
                    format!("{field}: remote URLs are not fetched; send a data: URL or upload the file (POST /api/v1/files) and give its file_id"),
                ));
            }
            let (media_type, base64) = match data.strip_prefix("data:") {
                Some(rest) => {
                    let (header, base64) = rest
                        .split_once(',')
                        .ok_or_else(|| bad(field, format!("{field}: a data: URL needs a comma")))?;
                    let media_type = header.strip_suffix(";base64").ok_or_else(|| {
                        bad(
                            field,
                            format!("{field}: only base64 data: URLs are supported"),
                        )
                    })?;
                    (
                        Some(media_type.to_string()).filter(|m| m.starts_with("text/")),
                        base64,
                    )
                }
                None => (None, data),
            };
            Ok(UserPart::File {
                media_type,
                file_id: None,
                data: Some(base64.to_string()),
            })
        }
        (None, Some(file_id)) => Ok(UserPart::File {
            media_type: None,
            file_id: Some(file_id.to_string()),
            data: None,
        }),
        _ => Err(bad(
            field,
            format!("{field}: give exactly one of a data URL and a file_id"),
        )),
    }
}

/// Text of an output, an assistant or a system message: a string or a list of text parts.
fn output_text(content: Option<&Value>, field: &str) -> Result<String, ApiError> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (index, part) in parts.iter().enumerate() {
                let part_field = format!("{field}[{index}]");
                match part.get("text").and_then(Value::as_str) {
                    Some(piece) => text.push_str(piece),
                    None => match part.get("refusal").and_then(Value::as_str) {
                        Some(piece) => text.push_str(piece),
                        None => {
                            return Err(bad(
                                &part_field,
                                format!("{part_field}: only text parts are supported here"),
                            ))
                        }
                    },
                }
            }
            Ok(text)
        }
        _ => Err(bad(
            field,
            format!("{field} must be a string or a list of text parts"),
        )),
    }
}

/// `tools`: function tools only (Responses' flat shape or Chat Completions' nested one).
pub fn tools(tools: &Value, field: &str) -> Result<Vec<DynamicTool>, ApiError> {
    let Value::Array(list) = tools else {
        return Err(bad(field, format!("{field} must be a list")));
    };
    let mut out = Vec::with_capacity(list.len());
    for (index, tool) in list.iter().enumerate() {
        let tool_field = format!("{field}[{index}]");
        let Value::Object(object) = tool else {
            return Err(bad(&tool_field, format!("{tool_field} must be an object")));
        };
        match object.get("type").and_then(Value::as_str) {
            Some("function") => {}
            other => {
                return Err(bad(
                    format!("{tool_field}.type"),
                    format!(
                        "{tool_field}.type: only `function` tools are supported (got {})",
                        other.unwrap_or("none")
                    ),
                ))
            }
        }
        out.push(
            chatd_shared::tool_decl::parse(object.clone())
                .map_err(|message| bad(&tool_field, format!("{tool_field}: {message}")))?,
        );
    }
    Ok(out)
}
