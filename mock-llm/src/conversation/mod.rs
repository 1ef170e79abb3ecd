//! The protocol-neutral view of one model request: what the mock's planning needs to know,
//! whichever wire protocol carried it.
//!
//! Each protocol module parses its own request body with lenient serde types (unknown fields and
//! `null`s are ignored, as real servers do) and flattens the transcript into [`Entry`]s;
//! [`Conversation::from_entries`] then derives everything from the entries, so the three
//! protocols cannot drift apart in how they count words or tool rounds.
//!
//! **Invariant:** this module does not depend on the provider client's wire types; the mock
//! checks the clients, so it must not share their parsing mistakes.

pub mod anthropic;
pub mod chat;
pub mod responses;

use serde_json::Value;

use crate::reply::count_words;

/// What one request asks of the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    /// The requested model name, echoed in answers; `mock` when the request names none.
    pub model: String,
    /// The text of the last user message that is not just tool results; `@mock` directives are
    /// read from it and the generated reply is seeded by it.
    pub last_user_text: String,
    pub ending: Ending,
    /// Tool calls anywhere in the transcript, so new call ids continue the numbering.
    pub tool_calls_so_far: usize,
    /// Assistant steps that called tools since the last user message (a step's parallel calls
    /// count once).
    pub tool_rounds_since_user: usize,
    /// Whitespace-separated words of all text: system prompt, messages and tool results (not
    /// tool-call arguments, not reasoning). The mock's prompt token count.
    pub prompt_words: usize,
    /// Whether the request offered any tool; a model cannot call tools it was not given.
    pub offers_tools: bool,
    /// The request's output limit (`max_tokens`, `max_output_tokens`, …).
    pub max_tokens: Option<u64>,
    /// The system parts (system and developer messages, instructions, system blocks), in
    /// order, joined with a blank line (`"echo": "system"`).
    pub system_text: String,
    /// One line per attachment of the user messages, in order (`"echo": "attachments"`):
    /// `<media type> <bytes> <how>`, how being `inline` (base64 or a data URL), `text` (an
    /// Anthropic plain-text document) or `url` (bytes `-`).
    pub attachments: Vec<String>,
    /// The names of the tools offered, sorted (`"echo": "tools"`); set by each protocol.
    pub tool_names: Vec<String>,
}

/// How the transcript ends, which decides the kind of answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Ending {
    /// A user message: answer it (or call the scripted tools).
    UserMessage,
    /// Results of tool calls, in request order: quote them (or call the tools again).
    ToolResults(Vec<ToolResult>),
    /// Anything else (an assistant prefill, an empty transcript): answer with generated text.
    #[default]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The name of the call this result answers; the call id when no such call is found.
    pub name: String,
    pub content: String,
}

/// One protocol-neutral piece of a transcript, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A user message (its text parts joined with `\n`).
    User(String),
    /// A system part: a system or developer message, Responses `instructions`, an Anthropic
    /// `system` block. Counts as prompt words; echoed by `"echo": "system"`.
    Context(String),
    AssistantText(String),
    /// An attachment of a user message ([`attachment_lines`]); no words, no turn.
    Attachment(String),
    ToolCall {
        id: String,
        name: String,
    },
    ToolResult {
        call_id: String,
        content: String,
    },
}

impl Conversation {
    /// Derives the view from a flattened transcript.
    pub fn from_entries(
        model: &str,
        entries: &[Entry],
        offers_tools: bool,
        max_tokens: Option<u64>,
    ) -> Conversation {
        let last_user = entries
            .iter()
            .rposition(|entry| matches!(entry, Entry::User(_)));
        let last_user_text = match last_user.and_then(|index| entries.get(index)) {
            Some(Entry::User(text)) => text.clone(),
            _ => String::new(),
        };
        let since_user = last_user.map_or(0, |index| index + 1);
        Conversation {
            model: if model.is_empty() {
                "mock".to_owned()
            } else {
                model.to_owned()
            },
            last_user_text,
            ending: ending_of(entries),
            tool_calls_so_far: entries
                .iter()
                .filter(|entry| matches!(entry, Entry::ToolCall { .. }))
                .count(),
            tool_rounds_since_user: tool_rounds(entries.get(since_user..).unwrap_or_default()),
            prompt_words: entries.iter().map(entry_words).sum(),
            offers_tools,
            max_tokens,
            system_text: entries
                .iter()
                .filter_map(|entry| match entry {
                    Entry::Context(text) if !text.is_empty() => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n\n"),
            attachments: entries
                .iter()
                .filter_map(|entry| match entry {
                    Entry::Attachment(line) => Some(line.clone()),
                    _ => None,
                })
                .collect(),
            tool_names: Vec::new(),
        }
    }
}

/// Trailing context entries (a system reminder after the user turn) do not change the ending.
fn ending_of(entries: &[Entry]) -> Ending {
    let meaningful: Vec<&Entry> = entries
        .iter()
        .filter(|entry| !matches!(entry, Entry::Context(_) | Entry::Attachment(_)))
        .collect();
    match meaningful.last() {
        Some(Entry::User(_)) => Ending::UserMessage,
        Some(Entry::ToolResult { .. }) => {
            let trailing = meaningful
                .iter()
                .rev()
                .take_while(|entry| matches!(entry, Entry::ToolResult { .. }))
                .count();
            let results = meaningful[meaningful.len() - trailing..]
                .iter()
                .filter_map(|entry| match entry {
                    Entry::ToolResult { call_id, content } => Some(ToolResult {
                        name: tool_name(entries, call_id),
                        content: content.clone(),
                    }),
                    _ => None,
                })
                .collect();
            Ending::ToolResults(results)
        }
        _ => Ending::Other,
    }
}

fn tool_name(entries: &[Entry], call_id: &str) -> String {
    entries
        .iter()
        .find_map(|entry| match entry {
            Entry::ToolCall { id, name } if id == call_id => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_else(|| call_id.to_owned())
}

/// Runs of tool calls, each ended by a user message or a tool result; assistant text between
/// calls of one step does not start a new round.
fn tool_rounds(entries: &[Entry]) -> usize {
    let mut rounds = 0;
    let mut in_round = false;
    for entry in entries {
        match entry {
            Entry::ToolCall { .. } => {
                if !in_round {
                    rounds += 1;
                    in_round = true;
                }
            }
            Entry::AssistantText(_) | Entry::Attachment(_) => {}
            Entry::User(_) | Entry::Context(_) | Entry::ToolResult { .. } => in_round = false,
        }
    }
    rounds
}

fn entry_words(entry: &Entry) -> usize {
    match entry {
        Entry::User(text) | Entry::Context(text) | Entry::AssistantText(text) => count_words(text),
        Entry::ToolResult { content, .. } => count_words(content),
        Entry::ToolCall { .. } | Entry::Attachment(_) => 0,
    }
}

/// The attachments among a message's content parts, in any protocol's shape, as
/// `<media type> <bytes> <how>` lines: Chat `image_url` and `file` parts, Responses
/// `input_image` and `input_file`, Anthropic `image` and `document` blocks.
pub fn attachment_lines(content: &Value) -> Vec<String> {
    let Value::Array(parts) = content else {
        return Vec::new();
    };
    parts.iter().filter_map(attachment_line).collect()
}

fn attachment_line(part: &Value) -> Option<String> {
    let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    match part.get("type").and_then(Value::as_str)? {
        "image_url" => {
            let url = part.get("image_url").and_then(|image| text(image, "url"))?;
            Some(url_line(&url, "image/*"))
        }
        "file" => {
            let file = part.get("file")?;
            let data = text(file, "file_data")?;
            Some(url_line(&data, "application/octet-stream"))
        }
        "input_image" => Some(url_line(&text(part, "image_url")?, "image/*")),
        "input_file" => Some(url_line(
            &text(part, "file_data")?,
            "application/octet-stream",
        )),
        "image" | "document" => {
            let source = part.get("source")?;
            let media_type = text(source, "media_type").unwrap_or_else(|| "-".to_owned());
            match text(source, "type").as_deref() {
                Some("base64") => {
                    let size = decoded_len(&text(source, "data").unwrap_or_default());
                    Some(format!("{media_type} {size} inline"))
                }
                Some("text") => {
                    let size = text(source, "data").unwrap_or_default().len();
                    Some(format!("{media_type} {size} text"))
                }
                _ => Some(format!("{media_type} - url")),
            }
        }
        _ => None,
    }
}

/// A data URL (`data:<type>;base64,<data>`) is `inline` with its decoded size; anything else
/// is a `url`.
fn url_line(url: &str, unknown_type: &str) -> String {
    match url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
    {
        Some((media_type, data)) => format!("{media_type} {} inline", decoded_len(data)),
        None => format!("{unknown_type} - url"),
    }
}

/// Bytes the base64 text decodes to (`-` when it is not valid base64).
fn decoded_len(data: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map(|bytes| bytes.len().to_string())
        .unwrap_or_else(|_| "-".to_owned())
}

/// The names of the offered tools, sorted: Chat's `function.name`, or `name` (Responses,
/// Anthropic).
pub fn tool_names(tools: Option<&Value>) -> Vec<String> {
    let mut names: Vec<String> = tools
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tool| {
            tool.get("function")
                .and_then(|function| function.get("name"))
                .or_else(|| tool.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// The text of a message `content` in any of the protocols' shapes: a string, or an array of
/// parts whose `text` fields are joined with `\n` (other parts, such as images, are skipped).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect();
            texts.join("\n")
        }
        Value::Object(part) => part
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

/// Whether a `tools` field offers at least one tool.
pub fn offers_tools(tools: Option<&Value>) -> bool {
    tools
        .and_then(Value::as_array)
        .is_some_and(|tools| !tools.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, name: &str) -> Entry {
        Entry::ToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
        }
    }

    fn result(id: &str, content: &str) -> Entry {
        Entry::ToolResult {
            call_id: id.to_owned(),
            content: content.to_owned(),
        }
    }

    #[test]
    fn rounds_results_and_words_are_derived_from_entries() {
        let entries = vec![
            Entry::Context("be brief".to_owned()),
            Entry::User("first question".to_owned()),
            call("c0", "old"),
            result("c0", "old result"),
            Entry::AssistantText("done".to_owned()),
            Entry::User("second question here".to_owned()),
            Entry::AssistantText("let me look".to_owned()),
            call("c1", "read"),
            call("c2", "sum"),
            result("c1", "file text"),
            result("c2", "3"),
            call("c3", "read"),
            result("c3", "again"),
            Entry::Context("reminder".to_owned()),
        ];
        let conversation = Conversation::from_entries("", &entries, true, Some(5));
        assert_eq!(conversation.model, "mock");
        assert_eq!(conversation.last_user_text, "second question here");
        assert_eq!(conversation.tool_calls_so_far, 4);
        assert_eq!(conversation.tool_rounds_since_user, 2);
        assert_eq!(
            conversation.prompt_words,
            2 + 2 + 2 + 1 + 3 + 3 + 2 + 1 + 1 + 1
        );
        assert_eq!(
            conversation.ending,
            Ending::ToolResults(vec![ToolResult {
                name: "read".to_owned(),
                content: "again".to_owned()
            }])
        );
    }

    #[test]
    fn endings_and_unknown_call_ids() {
        let user = Conversation::from_entries("m", &[Entry::User("hi".to_owned())], false, None);
        assert_eq!(user.ending, Ending::UserMessage);
        assert_eq!(user.tool_rounds_since_user, 0);
        let prefill = [
            Entry::User("hi".to_owned()),
            Entry::AssistantText("Sure".to_owned()),
        ];
        assert_eq!(
            Conversation::from_entries("m", &prefill, false, None).ending,
            Ending::Other
        );
        let orphan = Conversation::from_entries("m", &[result("x9", "r")], false, None);
        assert_eq!(
            orphan.ending,
            Ending::ToolResults(vec![ToolResult {
                name: "x9".to_owned(),
                content: "r".to_owned()
            }])
        );
        assert_eq!(orphan.last_user_text, "");
    }

    #[test]
    fn attachments_are_read_in_every_protocol_s_shape() {
        let png = "aGVsbG8="; // "hello": 5 bytes
        let parts = serde_json::json!([
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": format!("data:application/pdf;base64,{png}")}},
            {"type": "input_image", "image_url": "https://example.com/x.png"},
            {"type": "input_file", "file_data": format!("data:text/plain;base64,{png}")},
            {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": png}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "abc"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "!!"}}
        ]);
        assert_eq!(
            attachment_lines(&parts),
            [
                "image/png 5 inline",
                "application/pdf 5 inline",
                "image/* - url",
                "text/plain 5 inline",
                "image/webp 5 inline",
                "text/plain 3 text",
                "application/pdf - inline",
            ]
        );
        assert!(attachment_lines(&serde_json::json!("text only")).is_empty());
        let tools = serde_json::json!([
            {"type": "function", "function": {"name": "zeta"}},
            {"type": "function", "name": "alpha"},
            {"name": "mid", "input_schema": {}}
        ]);
        assert_eq!(tool_names(Some(&tools)), ["alpha", "mid", "zeta"]);
        assert!(tool_names(None).is_empty());
    }

    #[test]
    fn content_text_reads_every_shape() {
        assert_eq!(content_text(&serde_json::json!("plain")), "plain");
        let parts = serde_json::json!([
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "input_text", "text": "b"}
        ]);
        assert_eq!(content_text(&parts), "a\nb");
        assert_eq!(content_text(&Value::Null), "");
        assert!(offers_tools(Some(&serde_json::json!([{"name": "t"}]))));
        assert!(!offers_tools(Some(&serde_json::json!([]))));
        assert!(!offers_tools(None));
    }
}
