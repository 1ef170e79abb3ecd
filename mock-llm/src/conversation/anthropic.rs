//! Anthropic Messages request bodies (`POST /v1/messages`), validated like the real API on the
//! points that catch client bugs: `max_tokens` is required, and empty or whitespace-only text
//! blocks are rejected ("text content blocks must be non-empty").

use serde::Deserialize;
use serde_json::Value;

use crate::conversation::{
    attachment_lines, content_text, offers_tools, tool_names, Conversation, Entry,
};

/// The message of the real API for an empty (or, here, whitespace-only) text block.
pub const EMPTY_TEXT_BLOCK: &str = "text content blocks must be non-empty";

/// A parsed Messages request.
#[derive(Debug)]
pub struct MessagesCall {
    pub conversation: Conversation,
    pub stream: bool,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<Value>,
}

/// Parses and validates a request body; `Err` is the message of a 400 `invalid_request_error`.
pub fn parse(body: &[u8]) -> Result<MessagesCall, String> {
    let request: Request =
        serde_json::from_slice(body).map_err(|error| format!("invalid request body: {error}"))?;
    let Some(max_tokens) = request.max_tokens else {
        return Err("max_tokens: Field required".to_owned());
    };
    let Some(messages) = request.messages else {
        return Err("messages: Field required".to_owned());
    };
    let mut entries = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = &request.system {
        if let Value::Array(blocks) = system {
            check_text_blocks(blocks, "system")?;
            // One system part per block, as a client sends them.
            for block in blocks {
                let text = content_text(block);
                if !text.is_empty() {
                    entries.push(Entry::Context(text));
                }
            }
        }
        let text = match system {
            Value::Array(_) => String::new(),
            _ => content_text(system),
        };
        if !text.is_empty() {
            entries.push(Entry::Context(text));
        }
    }
    let last = messages.len().saturating_sub(1);
    for (index, message) in messages.iter().enumerate() {
        let path = format!("messages.{index}");
        let role = message.role.as_deref().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(format!(
                "{path}.role: Input should be 'user' or 'assistant'"
            ));
        }
        let blocks = match &message.content {
            Some(Value::String(text)) if !text.is_empty() => {
                if text.trim().is_empty() {
                    return Err(format!("{path}.content: {EMPTY_TEXT_BLOCK}"));
                }
                vec![serde_json::json!({"type": "text", "text": text})]
            }
            Some(Value::Array(blocks)) if !blocks.is_empty() => {
                check_text_blocks(blocks, &format!("{path}.content"))?;
                blocks.clone()
            }
            Some(Value::String(_) | Value::Array(_)) | None
                if role == "assistant" && index == last =>
            {
                Vec::new()
            }
            Some(Value::String(_) | Value::Array(_)) | None => {
                return Err(format!(
                    "{path}: all messages must have non-empty content except for the optional final assistant message"
                ))
            }
            Some(_) => {
                return Err(format!(
                    "{path}.content: Input should be a valid string or list"
                ))
            }
        };
        push_message(role, &blocks, &mut entries);
    }
    let mut conversation = Conversation::from_entries(
        request.model.as_deref().unwrap_or_default(),
        &entries,
        offers_tools(request.tools.as_ref()),
        Some(max_tokens),
    );
    conversation.tool_names = tool_names(request.tools.as_ref());
    Ok(MessagesCall {
        conversation,
        stream: request.stream.unwrap_or(false),
    })
}

/// Rejects empty or whitespace-only `text` blocks, also inside `tool_result` content.
fn check_text_blocks(blocks: &[Value], path: &str) -> Result<(), String> {
    for (index, block) in blocks.iter().enumerate() {
        let block_path = format!("{path}.{index}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if text.trim().is_empty() {
                    return Err(format!("{block_path}.text: {EMPTY_TEXT_BLOCK}"));
                }
            }
            Some("tool_result") => {
                if let Some(Value::Array(inner)) = block.get("content") {
                    check_text_blocks(inner, &format!("{block_path}.content"))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A user message that carries tool results ends the tool round; text sent after the results in
/// the same message (Anthropic requires results first, and our client merges a new user message
/// into a pending tool-result message) is a new user turn, as it is in Chat Completions.
fn push_message(role: &str, blocks: &[Value], entries: &mut Vec<Entry>) {
    let block_type = |block: &Value| {
        block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let field = |block: &Value, name: &str| {
        block
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let texts: Vec<&str> = blocks
        .iter()
        .filter(|block| block_type(block) == "text")
        .filter_map(|block| block.get("text").and_then(Value::as_str))
        .collect();
    let text = texts.join("\n");
    if role == "assistant" {
        if !texts.is_empty() {
            entries.push(Entry::AssistantText(text));
        }
        for block in blocks
            .iter()
            .filter(|block| block_type(block) == "tool_use")
        {
            entries.push(Entry::ToolCall {
                id: field(block, "id"),
                name: field(block, "name"),
            });
        }
        return;
    }
    let mut has_results = false;
    for block in blocks
        .iter()
        .filter(|block| block_type(block) == "tool_result")
    {
        has_results = true;
        entries.push(Entry::ToolResult {
            call_id: field(block, "tool_use_id"),
            content: block.get("content").map(content_text).unwrap_or_default(),
        });
    }
    if !has_results || !texts.is_empty() {
        entries.push(Entry::User(text));
    }
    entries.extend(
        attachment_lines(&Value::Array(blocks.to_vec()))
            .into_iter()
            .map(Entry::Attachment),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Ending, ToolResult};

    fn parse_json(body: serde_json::Value) -> Result<MessagesCall, String> {
        parse(body.to_string().as_bytes())
    }

    #[test]
    fn tool_results_follow_tool_use_blocks() {
        let call = parse_json(serde_json::json!({
            "model": "claude",
            "max_tokens": 100,
            "stream": true,
            "system": [{"type": "text", "text": "be brief"}],
            "tools": [{"name": "read", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "read the file"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "ok", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_0", "name": "read", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_0", "content": [{"type": "text", "text": "file body"}]}
                ]}
            ]
        }))
        .expect("valid body");
        assert!(call.stream);
        let conversation = call.conversation;
        assert_eq!(conversation.last_user_text, "read the file");
        assert_eq!(conversation.max_tokens, Some(100));
        assert_eq!(conversation.tool_rounds_since_user, 1);
        assert_eq!(conversation.prompt_words, 2 + 3 + 2);
        assert_eq!(
            conversation.ending,
            Ending::ToolResults(vec![ToolResult {
                name: "read".to_owned(),
                content: "file body".to_owned()
            }])
        );
    }

    #[test]
    fn text_after_tool_results_is_a_new_user_turn() {
        let call = parse_json(serde_json::json!({
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t0", "name": "read", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t0", "content": "body"},
                    {"type": "text", "text": "second"}
                ]}
            ]
        }))
        .expect("valid body");
        assert_eq!(call.conversation.last_user_text, "second");
        assert_eq!(call.conversation.ending, Ending::UserMessage);
        assert_eq!(call.conversation.tool_rounds_since_user, 0);
    }

    #[test]
    fn rejects_what_the_real_api_rejects() {
        let error = |body: serde_json::Value| parse_json(body).expect_err("rejected");
        let user = |content: serde_json::Value| serde_json::json!({"max_tokens": 5, "messages": [{"role": "user", "content": content}]});
        assert_eq!(
            error(serde_json::json!({"messages": []})),
            "max_tokens: Field required"
        );
        let blank = error(user(serde_json::json!([{"type": "text", "text": " \n"}])));
        assert_eq!(
            blank,
            format!("messages.0.content.0.text: {EMPTY_TEXT_BLOCK}")
        );
        let empty = error(user(serde_json::json!([
            {"type": "text", "text": "ok"},
            {"type": "text", "text": ""}
        ])));
        assert!(empty.ends_with(EMPTY_TEXT_BLOCK), "{empty}");
        let nested = error(user(serde_json::json!([
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": ""}]}
        ])));
        assert!(nested.ends_with(EMPTY_TEXT_BLOCK), "{nested}");
        assert!(error(user(serde_json::json!("  "))).ends_with(EMPTY_TEXT_BLOCK));
        assert!(error(user(serde_json::json!(""))).contains("non-empty content"));
        let system = error(serde_json::json!({
            "max_tokens": 5, "system": [{"type": "text", "text": ""}],
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert!(system.starts_with("system.0.text"), "{system}");
        let role = error(serde_json::json!({
            "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]
        }));
        assert!(role.contains("role"), "{role}");
        // An empty final assistant message (a prefill slot) is allowed.
        let prefill = parse_json(serde_json::json!({
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": []}]
        }))
        .expect("valid prefill");
        assert_eq!(prefill.conversation.ending, Ending::UserMessage);
    }

    #[test]
    fn each_system_block_is_a_system_part() {
        let call = parse_json(serde_json::json!({
            "model": "claude", "max_tokens": 10,
            "system": [{"type": "text", "text": "deployment rules"},
                       {"type": "text", "text": "user notes"}],
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .expect("valid body");
        assert_eq!(
            call.conversation.system_text,
            "deployment rules\n\nuser notes"
        );
        let plain = parse_json(serde_json::json!({
            "model": "claude", "max_tokens": 10, "system": "one prompt",
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .expect("valid body");
        assert_eq!(plain.conversation.system_text, "one prompt");
    }
}
