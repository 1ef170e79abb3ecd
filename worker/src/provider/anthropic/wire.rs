//! Wire types of Anthropic Messages, used by the client and by `chatd mock-llm`.
//!
//! Deserialization is lenient on purpose: every field defaults, unknown fields
//! are ignored, and unknown event and delta types deserialize to an `Unknown` variant instead of
//! failing, so a new server feature never breaks a stream. Content blocks are one flat struct
//! rather than an enum because provider-executed tools add result block types by name
//! (`web_search_tool_result`, `code_execution_tool_result`, …) that must survive verbatim.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::provider::error::ApiErrorObject;

/// The `anthropic-version` header every request carries.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Content block `type` values this layer produces or interprets.
pub mod block_type {
    pub const TEXT: &str = "text";
    pub const THINKING: &str = "thinking";
    pub const REDACTED_THINKING: &str = "redacted_thinking";
    pub const TOOL_USE: &str = "tool_use";
    pub const TOOL_RESULT: &str = "tool_result";
    pub const SERVER_TOOL_USE: &str = "server_tool_use";
    /// Suffix of the result blocks of provider-executed tools (`web_search_tool_result`, …).
    pub const PROVIDER_TOOL_RESULT_SUFFIX: &str = "_tool_result";
}

/// `POST /messages` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    /// Required by Anthropic; the client always sends one.
    #[serde(default)]
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDefinition>>,
    /// Absent means a single JSON answer, as in the Anthropic API.
    #[serde(default)]
    pub stream: bool,
}

/// `system`: the client sends a string; other clients may send an array of text blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl SystemPrompt {
    /// The prompt's text; text blocks are joined with `\n`.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            SystemPrompt::Text(text) => Cow::Borrowed(text),
            SystemPrompt::Blocks(blocks) => Cow::Owned(join_texts(blocks)),
        }
    }
}

/// One turn of the conversation. Anthropic requires `user` and `assistant` to alternate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `user` or `assistant`; a string so unknown roles survive.
    pub role: String,
    pub content: MessageContent,
}

/// Message content: the client sends blocks; other clients may send a plain string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl MessageContent {
    /// The text of the content; text blocks are joined with `\n`, other blocks are skipped.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            MessageContent::Text(text) => Cow::Borrowed(text),
            MessageContent::Blocks(blocks) => Cow::Owned(join_texts(blocks)),
        }
    }

    /// The content as blocks (a plain string is one text block).
    pub fn blocks(&self) -> Cow<'_, [ContentBlock]> {
        match self {
            MessageContent::Text(text) => Cow::Owned(vec![ContentBlock::text(text.clone())]),
            MessageContent::Blocks(blocks) => Cow::Borrowed(blocks),
        }
    }
}

fn join_texts(blocks: &[ContentBlock]) -> String {
    let texts: Vec<&str> = blocks
        .iter()
        .filter(|block| block.block_type == block_type::TEXT)
        .filter_map(|block| block.text.as_deref())
        .collect();
    texts.join("\n")
}

/// `{name, description, input_schema}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// JSON Schema of the `input` object; Anthropic requires `"type": "object"` at the top.
    #[serde(default)]
    pub input_schema: serde_json::Value,
}

/// A content block of a request message or of `content_block_start`. Which fields are set
/// depends on `block_type`; the constructors build each kind the way the API expects it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentBlock {
    #[serde(rename = "type", default)]
    pub block_type: String,
    /// `text` blocks; must be non-empty in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `thinking` blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// `thinking` blocks: the provider's signature, required to replay the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// `redacted_thinking` blocks: the encrypted reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// `tool_use` and `server_tool_use` blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tool_use` and `server_tool_use` blocks: always a JSON object in requests; `{}` at
    /// `content_block_start` (the input then streams as `input_json_delta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// `tool_result` and provider result blocks: the call answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    /// `tool_result` (a string from this client) and provider result blocks (any JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// `image` and `document` blocks: `{"type": "base64", media_type, data}` or
    /// `{"type": "text", "media_type": "text/plain", data}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<serde_json::Value>,
    /// `document` blocks: a title shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl ContentBlock {
    /// An attachment: images as `image` blocks, PDFs as base64 `document` blocks, text files
    /// as plain-text `document` blocks. `None` for a part without bytes.
    pub fn attachment(part: &chatd_shared::domain::ContentPart) -> Option<ContentBlock> {
        use base64::Engine;
        let chatd_shared::domain::ContentPart::File {
            media_type,
            data: Some(data),
            name,
            ..
        } = part
        else {
            return None;
        };
        let title = name.clone().filter(|name| !name.is_empty());
        if chatd_shared::files::is_image(media_type) {
            return Some(ContentBlock {
                block_type: "image".to_owned(),
                source: Some(serde_json::json!({
                    "type": "base64", "media_type": media_type, "data": data})),
                ..ContentBlock::default()
            });
        }
        let source = if media_type.starts_with("text/") {
            let bytes = chatd_shared::files::BASE64.decode(data.as_bytes()).ok()?;
            let text = String::from_utf8(bytes).ok()?;
            if text.is_empty() {
                // Anthropic refuses empty documents: say what it was instead.
                let name = title.as_deref().unwrap_or("attachment");
                return Some(ContentBlock::text(format!(
                    "{name} ({media_type}): (empty)"
                )));
            }
            serde_json::json!({"type": "text", "media_type": "text/plain", "data": text})
        } else {
            serde_json::json!({"type": "base64", "media_type": media_type, "data": data})
        };
        Some(ContentBlock {
            block_type: "document".to_owned(),
            source: Some(source),
            title,
            ..ContentBlock::default()
        })
    }

    pub fn text(text: impl Into<String>) -> ContentBlock {
        ContentBlock {
            block_type: block_type::TEXT.to_owned(),
            text: Some(text.into()),
            ..ContentBlock::default()
        }
    }

    pub fn thinking(thinking: impl Into<String>, signature: impl Into<String>) -> ContentBlock {
        ContentBlock {
            block_type: block_type::THINKING.to_owned(),
            thinking: Some(thinking.into()),
            signature: Some(signature.into()),
            ..ContentBlock::default()
        }
    }

    pub fn redacted_thinking(data: impl Into<String>) -> ContentBlock {
        ContentBlock {
            block_type: block_type::REDACTED_THINKING.to_owned(),
            data: Some(data.into()),
            ..ContentBlock::default()
        }
    }

    /// A `tool_use` (or, with [`block_type::SERVER_TOOL_USE`], a `server_tool_use`) block.
    pub fn tool_use(
        kind: &str,
        id: impl Into<String>,
        name: impl Into<String>,
        input: serde_json::Value,
    ) -> ContentBlock {
        ContentBlock {
            block_type: kind.to_owned(),
            id: Some(id.into()),
            name: Some(name.into()),
            input: Some(input),
            ..ContentBlock::default()
        }
    }

    /// A `tool_result` block; `content: None` omits the field (an empty result).
    pub fn tool_result(
        tool_use_id: impl Into<String>,
        content: Option<String>,
        is_error: bool,
    ) -> ContentBlock {
        ContentBlock {
            block_type: block_type::TOOL_RESULT.to_owned(),
            tool_use_id: Some(tool_use_id.into()),
            content: content.map(serde_json::Value::String),
            is_error: Some(is_error),
            ..ContentBlock::default()
        }
    }

    /// The result block of a provider-executed tool, e.g. `web_search_tool_result`.
    pub fn provider_tool_result(
        kind: impl Into<String>,
        tool_use_id: impl Into<String>,
        content: serde_json::Value,
    ) -> ContentBlock {
        ContentBlock {
            block_type: kind.into(),
            tool_use_id: Some(tool_use_id.into()),
            content: Some(content),
            ..ContentBlock::default()
        }
    }
}

/// One `data:` payload of a streaming answer; the SSE `event:` name repeats `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        #[serde(default)]
        message: StartMessage,
    },
    ContentBlockStart {
        /// Position of the block in the final message (text blocks count too).
        #[serde(default)]
        index: usize,
        #[serde(default)]
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: usize,
        #[serde(default)]
        delta: BlockDelta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: usize,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        /// Cumulative counts so far, not an increment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<WireUsage>,
    },
    /// The terminal event of a successful stream.
    MessageStop,
    Ping,
    /// A failure inside a stream that already answered 200.
    Error {
        #[serde(default)]
        error: ApiErrorObject,
    },
    /// Any event type this layer does not know; ignored.
    #[serde(other)]
    Unknown,
}

/// The message skeleton of `message_start` (its `content` is empty while streaming).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartMessage {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(rename = "type", default)]
    pub message_type: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    #[serde(default)]
    pub model: Option<String>,
    /// `null` in `message_start`; the reason arrives in `message_delta`.
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        #[serde(default)]
        text: String,
    },
    /// A fragment of a tool's input JSON; fragments concatenate, the first may be empty.
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        #[serde(default)]
        thinking: String,
    },
    /// The signature of the current thinking block, sent just before its `content_block_stop`.
    SignatureDelta {
        #[serde(default)]
        signature: String,
    },
    /// `citations_delta` and any delta type this layer does not know; ignored.
    #[default]
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// Token counts. `input_tokens` excludes the cache reads and writes, which are counted apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<i64>,
}

/// The error body of a failed request: `{"type": "error", "error": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type", default)]
    pub body_type: String,
    pub error: ApiErrorObject,
}
