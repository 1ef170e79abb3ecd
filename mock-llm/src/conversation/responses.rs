//! OpenAI Responses request bodies (`POST /v1/responses`).
//!
//! The transcript of a chained request (`previous_response_id`) is the stored items of the chain
//! followed by the new `input`; the caller looks the chain up and passes its items in.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::conversation::{
    attachment_lines, content_text, offers_tools, tool_names, Conversation, Entry,
};

/// A parsed Responses request.
#[derive(Debug)]
pub struct ResponsesCall {
    pub model: String,
    pub stream: bool,
    /// Whether to remember this response for later `previous_response_id`s; the API's default
    /// is `true`.
    pub store: bool,
    pub previous_response_id: Option<String>,
    /// `instructions` (never carried over a chain, as in the real API).
    pub instructions: Option<String>,
    /// The new input items; a string `input` becomes one user message item.
    pub input_items: Vec<Value>,
    pub offers_tools: bool,
    /// The offered tools' names, sorted (`"echo": "tools"`).
    pub tool_names: Vec<String>,
    pub max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    instructions: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
}

/// Parses a request body; `Err` is the message of a 400 answer.
pub fn parse(body: &[u8]) -> Result<ResponsesCall, String> {
    let request: Request =
        serde_json::from_slice(body).map_err(|error| format!("invalid request body: {error}"))?;
    let input_items = match request.input {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => {
            vec![json!({"type": "message", "role": "user", "content": text})]
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(format!(
                "invalid request body: `input` must be a string or an array, got {other}"
            ))
        }
    };
    Ok(ResponsesCall {
        model: request.model.unwrap_or_default(),
        stream: request.stream.unwrap_or(false),
        store: request.store.unwrap_or(true),
        previous_response_id: request.previous_response_id.filter(|id| !id.is_empty()),
        instructions: request
            .instructions
            .as_ref()
            .map(content_text)
            .filter(|text| !text.is_empty()),
        input_items,
        offers_tools: offers_tools(request.tools.as_ref()),
        tool_names: tool_names(request.tools.as_ref()),
        max_output_tokens: request.max_output_tokens,
    })
}

impl ResponsesCall {
    /// The conversation of `history` (the stored items of the chain, oldest first) followed by
    /// this request's input.
    pub fn conversation<'a>(
        &'a self,
        history: impl IntoIterator<Item = &'a Value>,
    ) -> Conversation {
        let mut entries: Vec<Entry> = self
            .instructions
            .iter()
            .map(|text| Entry::Context(text.clone()))
            .collect();
        for item in history.into_iter().chain(&self.input_items) {
            push_item(item, &mut entries);
        }
        let mut conversation = Conversation::from_entries(
            &self.model,
            &entries,
            self.offers_tools,
            self.max_output_tokens,
        );
        conversation.tool_names = self.tool_names.clone();
        conversation
    }
}

fn push_item(item: &Value, entries: &mut Vec<Entry>) {
    let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or_default();
    let item_type = match item.get("type").and_then(Value::as_str) {
        Some(item_type) => item_type,
        // The "easy input message" form: `{"role", "content"}` without a type.
        None if item.get("role").is_some() => "message",
        None => return,
    };
    match item_type {
        "message" => {
            let text = item.get("content").map(content_text).unwrap_or_default();
            let role = field("role");
            entries.push(match role {
                "user" => Entry::User(text),
                "assistant" => Entry::AssistantText(text),
                _ => Entry::Context(text),
            });
            if role == "user" {
                if let Some(content) = item.get("content") {
                    entries.extend(attachment_lines(content).into_iter().map(Entry::Attachment));
                }
            }
        }
        "function_call" => entries.push(Entry::ToolCall {
            id: field("call_id").to_owned(),
            name: field("name").to_owned(),
        }),
        "function_call_output" => entries.push(Entry::ToolResult {
            call_id: field("call_id").to_owned(),
            content: item.get("output").map(content_text).unwrap_or_default(),
        }),
        // Reasoning items and anything newer carry no text the mock counts.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Ending, ToolResult};

    #[test]
    fn string_input_is_a_user_message_and_store_defaults_to_true() {
        let call = parse(br#"{"model": "m", "input": "hello there", "instructions": "be kind"}"#)
            .expect("valid body");
        assert!(call.store && !call.stream);
        let conversation = call.conversation([]);
        assert_eq!(conversation.last_user_text, "hello there");
        assert_eq!(conversation.ending, Ending::UserMessage);
        assert_eq!(conversation.prompt_words, 4);
        assert!(parse(br#"{"input": 3}"#).is_err());
    }

    #[test]
    fn chained_history_comes_before_the_new_input() {
        let history = [
            json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "use the tool"}]}),
            json!({"type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm"}]}),
            json!({"type": "function_call", "call_id": "call_0", "name": "read", "arguments": "{}"}),
        ];
        let call = parse(
            br#"{"previous_response_id": "resp_1", "store": false, "max_output_tokens": 9,
                "tools": [{"type": "function", "name": "read"}],
                "input": [{"type": "function_call_output", "call_id": "call_0", "output": "body text"}]}"#,
        )
        .expect("valid body");
        assert_eq!(call.previous_response_id.as_deref(), Some("resp_1"));
        assert!(!call.store);
        let conversation = call.conversation(&history);
        assert_eq!(conversation.last_user_text, "use the tool");
        assert_eq!(conversation.tool_rounds_since_user, 1);
        assert_eq!(conversation.prompt_words, 3 + 2);
        assert!(conversation.offers_tools);
        assert_eq!(conversation.max_tokens, Some(9));
        assert_eq!(
            conversation.ending,
            Ending::ToolResults(vec![ToolResult {
                name: "read".to_owned(),
                content: "body text".to_owned()
            }])
        );
    }

    #[test]
    fn instructions_and_system_items_are_the_system_text() {
        let call = parse(
            br#"{"model": "m", "instructions": "deployment rules", "input": [
                {"role": "developer", "content": "user notes"},
                {"role": "user", "content": "hi"}]}"#,
        )
        .expect("valid body");
        assert_eq!(
            call.conversation([]).system_text,
            "deployment rules\n\nuser notes"
        );
    }
}
