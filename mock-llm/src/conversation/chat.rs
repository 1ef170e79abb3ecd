//! OpenAI Chat Completions request bodies (`POST /v1/chat/completions`).

use serde::Deserialize;
use serde_json::Value;

use crate::conversation::{
    attachment_lines, content_text, offers_tools, tool_names, Conversation, Entry,
};

/// A parsed Chat Completions request.
#[derive(Debug)]
pub struct ChatCall {
    pub conversation: Conversation,
    /// Absent means a single JSON answer, as in the OpenAI API.
    pub stream: bool,
    /// `stream_options.include_usage`: add a final chunk with `usage`.
    pub include_usage: bool,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    /// The newer name of `max_tokens`; wins when both are sent.
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    tools: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct ToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<Function>,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    name: Option<String>,
}

/// Parses a request body; `Err` is the message of a 400 answer.
pub fn parse(body: &[u8]) -> Result<ChatCall, String> {
    let request: Request =
        serde_json::from_slice(body).map_err(|error| format!("invalid request body: {error}"))?;
    let mut entries = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let text = message.content.as_ref().map(content_text);
        match message.role.as_deref().unwrap_or_default() {
            "user" => {
                entries.push(Entry::User(text.unwrap_or_default()));
                if let Some(content) = &message.content {
                    entries.extend(attachment_lines(content).into_iter().map(Entry::Attachment));
                }
            }
            "assistant" => {
                if let Some(text) = text {
                    entries.push(Entry::AssistantText(text));
                }
                for call in message.tool_calls.iter().flatten() {
                    entries.push(Entry::ToolCall {
                        id: call.id.clone().unwrap_or_default(),
                        name: call
                            .function
                            .as_ref()
                            .and_then(|function| function.name.clone())
                            .unwrap_or_default(),
                    });
                }
            }
            "tool" => entries.push(Entry::ToolResult {
                call_id: message.tool_call_id.clone().unwrap_or_default(),
                content: text.unwrap_or_default(),
            }),
            _ => entries.push(Entry::Context(text.unwrap_or_default())),
        }
    }
    let mut conversation = Conversation::from_entries(
        request.model.as_deref().unwrap_or_default(),
        &entries,
        offers_tools(request.tools.as_ref()),
        request.max_completion_tokens.or(request.max_tokens),
    );
    conversation.tool_names = tool_names(request.tools.as_ref());
    Ok(ChatCall {
        conversation,
        stream: request.stream.unwrap_or(false),
        include_usage: request
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Ending, ToolResult};

    #[test]
    fn tool_results_are_named_after_their_calls() {
        let body = serde_json::json!({
            "model": "m",
            "stream": true,
            "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "read"}}],
            "max_tokens": 50,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "read it"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "read", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_0", "content": "file body"}
            ]
        });
        let call = parse(body.to_string().as_bytes()).expect("valid body");
        assert!(call.stream && call.include_usage);
        let conversation = call.conversation;
        assert_eq!(conversation.last_user_text, "read it");
        assert!(conversation.offers_tools);
        assert_eq!(conversation.max_tokens, Some(50));
        assert_eq!(conversation.prompt_words, 2 + 2 + 2);
        assert_eq!(
            conversation.ending,
            Ending::ToolResults(vec![ToolResult {
                name: "read".to_owned(),
                content: "file body".to_owned()
            }])
        );
        assert!(parse(b"{\"model\": \"m\"}")
            .expect_err("messages are required")
            .contains("messages"));
    }

    #[test]
    fn system_and_developer_messages_are_the_system_text() {
        let call = parse(
            serde_json::json!({"model": "m", "messages": [
                {"role": "system", "content": "deployment rules"},
                {"role": "developer", "content": [{"type": "text", "text": "user notes"}]},
                {"role": "user", "content": "hi"},
            ]})
            .to_string()
            .as_bytes(),
        )
        .expect("valid body");
        assert_eq!(
            call.conversation.system_text,
            "deployment rules\n\nuser notes"
        );
    }
}
