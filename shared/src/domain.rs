//! Domain types shared by the API and the worker.
//!
//! These are *not* the public wire format (that lives in `chatd-api`), but message content parts
//! are stored as JSON in `chat_messages.content`, so their serde shape is the storage format.

use serde::{Deserialize, Serialize};

/// `chats.status`. See DESIGN.md section 2 for the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    Waiting,
    Pending,
    Running,
    Interrupting,
    RequiresAction,
    Error,
}

impl ChatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatStatus::Waiting => "waiting",
            ChatStatus::Pending => "pending",
            ChatStatus::Running => "running",
            ChatStatus::Interrupting => "interrupting",
            ChatStatus::RequiresAction => "requires_action",
            ChatStatus::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<ChatStatus> {
        Some(match text {
            "waiting" => ChatStatus::Waiting,
            "pending" => ChatStatus::Pending,
            "running" => ChatStatus::Running,
            "interrupting" => ChatStatus::Interrupting,
            "requires_action" => ChatStatus::RequiresAction,
            "error" => ChatStatus::Error,
            _ => return None,
        })
    }

    /// A chat is busy while a turn is runnable or running; sends then go to the queue.
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            ChatStatus::Pending
                | ChatStatus::Running
                | ChatStatus::Interrupting
                | ChatStatus::RequiresAction
        )
    }
}

/// `chat_messages.role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

/// One part of a message's content. The storage format of `chat_messages.content` is a JSON
/// array of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ContentPart {
    Text {
        text: String,
    },
    Reasoning {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    ToolCall {
        tool_call_id: String,
        tool_name: String,
        args: serde_json::Value,
    },
    ToolResult {
        tool_call_id: String,
        tool_name: String,
        result: serde_json::Value,
        #[serde(default)]
        is_error: bool,
    },
    /// Reasoning the provider returned encrypted (Anthropic `redacted_thinking`): sent back
    /// verbatim, never shown.
    RedactedReasoning {
        data: String,
    },
    /// A tool the provider ran itself (Anthropic `server_tool_use`, e.g. web search). It stays in
    /// the assistant message with its result; chatd never executes it.
    ProviderToolCall {
        tool_call_id: String,
        tool_name: String,
        args: serde_json::Value,
    },
    /// The result block of a [`ContentPart::ProviderToolCall`], kept as the provider sent it
    /// (`block_type` e.g. `web_search_tool_result`) so it can be replayed exactly.
    ProviderToolResult {
        tool_call_id: String,
        block_type: String,
        content: serde_json::Value,
    },
    File {
        media_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
    Source {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
    },
}

impl ContentPart {
    pub fn text(text: impl Into<String>) -> ContentPart {
        ContentPart::Text { text: text.into() }
    }

    /// Empty or whitespace-only text and reasoning parts must never reach a provider
    /// (Anthropic rejects them), so they are dropped before storage and before prompting.
    pub fn is_blank(&self) -> bool {
        match self {
            ContentPart::Text { text } | ContentPart::Reasoning { text, .. } => {
                text.trim().is_empty()
            }
            _ => false,
        }
    }
}

/// Concatenated text of all `text` parts (what a terminal client prints).
pub fn plain_text(parts: &[ContentPart]) -> String {
    let mut out = String::new();
    for part in parts {
        if let ContentPart::Text { text } = part {
            out.push_str(text);
        }
    }
    out
}

/// Provider kinds known to `providers.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    OpenaiResponses,
    Anthropic,
    OpenaiCompatible,
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiResponses => "openai-responses",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::Mock => "mock",
        }
    }

    pub fn parse(text: &str) -> Option<ProviderKind> {
        Some(match text {
            "openai" => ProviderKind::Openai,
            "openai-responses" => ProviderKind::OpenaiResponses,
            "anthropic" => ProviderKind::Anthropic,
            "openai-compatible" => ProviderKind::OpenaiCompatible,
            "mock" => ProviderKind::Mock,
            _ => return None,
        })
    }
}
