//! A response as OpenAI's API shows it, from durable state: the `responses` row, the chat's
//! status and the response's output rows. The stream's final event and `GET` use the same
//! function, so what was streamed is what is stored.
//!
//! Output items, in row order: an assistant row's reasoning (`reasoning`), text (`message`,
//! consecutive text parts as one `output_text`) and calls of client tools (`function_call`);
//! the worker's own tools (built-in and MCP) run inside the response, so their calls appear,
//! with their results, as `mcp_call` items where their result row is.

use std::collections::HashMap;

use chatd_shared::db::rows::{ChatRow, MessageRow};
use chatd_shared::domain::{decode_tool_result, ChatStatus, ContentPart, Role};
use serde_json::{json, Value};

use super::store::{ResponseRow, Snapshot};
use super::unix_seconds;

/// One output item before it gets its place (id and `output_index`).
#[derive(Debug, Clone, PartialEq)]
pub enum OutItem {
    Message {
        text: String,
    },
    Reasoning {
        text: String,
    },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    ToolRun {
        call_id: String,
        name: String,
        arguments: String,
        output: String,
        is_error: bool,
    },
}

impl OutItem {
    pub fn prefix(&self) -> &'static str {
        match self {
            OutItem::Message { .. } => "msg",
            OutItem::Reasoning { .. } => "rs",
            OutItem::FunctionCall { .. } => "fc",
            OutItem::ToolRun { .. } => "mcp",
        }
    }
}

/// Calls of the worker's tools seen in assistant rows, by call id: (name, arguments).
pub type ToolRuns = HashMap<String, (String, String)>;

pub fn arguments_text(args: &Value) -> String {
    match args {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The items of one output row (`runs` collects the worker tool calls an assistant row makes,
/// for the tool row that answers them).
pub fn items_of(row: &MessageRow, client_tools: &[String], runs: &mut ToolRuns) -> Vec<OutItem> {
    let parts: Vec<ContentPart> = serde_json::from_value(row.content.clone()).unwrap_or_default();
    let mut items = Vec::new();
    match row.role {
        Role::Assistant => {
            for part in parts {
                match part {
                    ContentPart::Text { text } => {
                        if let Some(OutItem::Message { text: previous }) = items.last_mut() {
                            previous.push_str(&text);
                        } else {
                            items.push(OutItem::Message { text });
                        }
                    }
                    ContentPart::Reasoning { text, .. } => {
                        if let Some(OutItem::Reasoning { text: previous }) = items.last_mut() {
                            previous.push_str(&text);
                        } else {
                            items.push(OutItem::Reasoning { text });
                        }
                    }
                    ContentPart::ToolCall {
                        tool_call_id,
                        tool_name,
                        args,
                    } => {
                        let arguments = arguments_text(&args);
                        if client_tools.contains(&tool_name) {
                            items.push(OutItem::FunctionCall {
                                call_id: tool_call_id,
                                name: tool_name,
                                arguments,
                            });
                        } else {
                            runs.insert(tool_call_id, (tool_name, arguments));
                        }
                    }
                    _ => {}
                }
            }
        }
        Role::Tool => {
            for part in parts {
                if let ContentPart::ToolResult {
                    tool_call_id,
                    tool_name,
                    result,
                    is_error,
                } = part
                {
                    if client_tools.contains(&tool_name) {
                        continue; // a synthetic result for an abandoned client call
                    }
                    let arguments = runs
                        .get(&tool_call_id)
                        .map(|(_, args)| args.clone())
                        .unwrap_or_default();
                    let output = match decode_tool_result(result) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    items.push(OutItem::ToolRun {
                        call_id: tool_call_id,
                        name: tool_name,
                        arguments,
                        output,
                        is_error,
                    });
                }
            }
        }
        _ => {}
    }
    items
}

pub fn item_id(response: &ResponseRow, item: &OutItem, index: usize) -> String {
    format!("{}_{}_{index}", item.prefix(), response.id.simple())
}

/// An item as OpenAI shows it; `status` is `in_progress`, `completed` or `incomplete`.
pub fn item_json(id: &str, item: &OutItem, status: &str) -> Value {
    match item {
        OutItem::Message { text } => json!({"type": "message", "id": id, "role": "assistant",
            "status": status, "content": [text_part(text)]}),
        OutItem::Reasoning { text } => json!({"type": "reasoning", "id": id, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}], "status": status}),
        OutItem::FunctionCall {
            call_id,
            name,
            arguments,
        } => json!({"type": "function_call",
            "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status}),
        OutItem::ToolRun {
            call_id,
            name,
            arguments,
            output,
            is_error,
        } => {
            // `<server>__<tool>` for MCP tools, the bare name for chatd's built-in ones.
            let (server, tool) = name.split_once("__").unwrap_or(("chatd", name.as_str()));
            json!({"type": "mcp_call", "id": id, "call_id": call_id, "server_label": server,
                "name": tool, "arguments": arguments,
                "output": if *is_error { Value::Null } else { json!(output) },
                "error": if *is_error { json!(output) } else { Value::Null },
                "status": status})
        }
    }
}

pub fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// Every output item of the response, in order.
pub fn output(response: &ResponseRow, rows: &[MessageRow], client_tools: &[String]) -> Vec<Value> {
    let mut runs = ToolRuns::new();
    rows.iter()
        .flat_map(|row| items_of(row, client_tools, &mut runs))
        .enumerate()
        .map(|(index, item)| item_json(&item_id(response, &item, index), &item, "completed"))
        .collect()
}

/// The response's status and error from its chat (`superseded`: a later turn began).
pub fn status(
    response: &ResponseRow,
    chat: &ChatRow,
    superseded: bool,
) -> (&'static str, Option<Value>) {
    if superseded {
        return (
            if response.cancelled {
                "cancelled"
            } else {
                "completed"
            },
            None,
        );
    }
    match chat.status {
        ChatStatus::Waiting => (
            if response.cancelled {
                "cancelled"
            } else {
                "completed"
            },
            None,
        ),
        ChatStatus::RequiresAction => ("completed", None),
        ChatStatus::Error => {
            let error = chat.last_error.clone().unwrap_or(Value::Null);
            let kind = error["kind"].as_str().unwrap_or("generic");
            let code = match kind {
                "rate_limit" => "rate_limit_exceeded",
                _ => "server_error",
            };
            let message = format!(
                "{kind}: {}",
                error["message"].as_str().unwrap_or("the turn failed")
            );
            ("failed", Some(json!({"code": code, "message": message})))
        }
        ChatStatus::Pending if chat.attempt == response.start_attempt => ("queued", None),
        _ => ("in_progress", None),
    }
}

pub fn is_final(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled" | "incomplete")
}

fn usage(rows: &[MessageRow]) -> Value {
    let sum = |pick: fn(&MessageRow) -> Option<i64>| rows.iter().filter_map(pick).sum::<i64>();
    let input = sum(|row| row.input_tokens);
    let output = sum(|row| row.output_tokens);
    json!({"input_tokens": input,
        "input_tokens_details": {"cached_tokens": sum(|row| row.cache_read_tokens)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": sum(|row| row.reasoning_tokens)},
        "total_tokens": input + output})
}

/// The response object with `status` (and `error`) and the given output.
pub fn object(
    response: &ResponseRow,
    status: &str,
    error: Option<Value>,
    output: Vec<Value>,
    rows: &[MessageRow],
) -> Value {
    let final_ = is_final(status);
    json!({
        "id": super::response_id(response.id),
        "object": "response",
        "created_at": unix_seconds(response.created_at),
        "status": status,
        "background": response.background,
        "error": error,
        "incomplete_details": null,
        "instructions": response.instructions,
        "max_output_tokens": null,
        "model": response.model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": response.previous_response_id.map(super::response_id),
        "reasoning": {"effort": null, "summary": null},
        "store": response.store,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": response.tools.as_array().map(|tools| tools.iter().map(|tool| json!({
            "type": "function", "name": tool["name"], "description": tool["description"],
            "parameters": tool["schema"], "strict": false})).collect::<Vec<_>>()).unwrap_or_default(),
        "top_p": null,
        "truncation": "disabled",
        "usage": if final_ { usage(rows) } else { Value::Null },
        "user": null,
        "metadata": response.metadata,
    })
}

/// The whole response from a snapshot.
pub fn from_snapshot(
    response: &ResponseRow,
    snapshot: &Snapshot,
    client_tools: &[String],
) -> Value {
    let (status, error) = status(response, &snapshot.chat, snapshot.superseded);
    object(
        response,
        status,
        error,
        output(response, &snapshot.output, client_tools),
        &snapshot.output,
    )
}
