//! Validation of user-supplied message content.

use chatd_shared::domain::ContentPart;
use serde_json::Value;

use crate::dto::MessageInput;
use crate::error::ApiError;

/// Longest text a user message may carry (the body cap bounds it too).
const MAX_TEXT_BYTES: usize = 512 * 1024;
const MAX_PARTS: usize = 100;

/// Validates a user message and returns its storage form (a JSON array of parts).
///
/// Users may send `text`, `file` and `source` parts; blank text parts are dropped; at least one
/// part must remain. NUL characters cannot be stored in jsonb and are refused here.
pub fn user_content(input: MessageInput, field: &str) -> Result<Value, ApiError> {
    let parts = match input {
        MessageInput::Text(text) => vec![ContentPart::Text { text }],
        MessageInput::Parts(parts) => parts,
    };
    if parts.len() > MAX_PARTS {
        return Err(ApiError::field(
            field,
            format!("{field}: at most {MAX_PARTS} parts"),
        ));
    }
    let mut kept = Vec::with_capacity(parts.len());
    for (index, part) in parts.into_iter().enumerate() {
        let part_field = format!("{field}[{index}]");
        match &part {
            ContentPart::Text { text } => check_text(text, &part_field)?,
            ContentPart::File {
                media_type,
                file_id,
                data,
            } => {
                check_text(media_type, &format!("{part_field}.media_type"))?;
                for (name, value) in [("file_id", file_id), ("data", data)] {
                    if let Some(value) = value {
                        check_text(value, &format!("{part_field}.{name}"))?;
                    }
                }
            }
            ContentPart::Source { url, title } => {
                check_text(url, &format!("{part_field}.url"))?;
                if let Some(title) = title {
                    check_text(title, &format!("{part_field}.title"))?;
                }
            }
            ContentPart::Reasoning { .. }
            | ContentPart::RedactedReasoning { .. }
            | ContentPart::ToolCall { .. }
            | ContentPart::ToolResult { .. }
            | ContentPart::ProviderToolCall { .. }
            | ContentPart::ProviderToolResult { .. } => {
                return Err(ApiError::field(
                    format!("{part_field}.type"),
                    format!("{part_field}.type: users may send text, file and source parts only"),
                ))
            }
        }
        if !part.is_blank() {
            kept.push(part);
        }
    }
    if kept.is_empty() {
        return Err(ApiError::field(field, format!("{field} must not be empty")));
    }
    serde_json::to_value(kept).map_err(|error| ApiError::Internal(error.into()))
}

fn check_text(text: &str, field: &str) -> Result<(), ApiError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::field(
            field,
            format!("{field}: text longer than {MAX_TEXT_BYTES} bytes"),
        ));
    }
    if text.contains('\0') {
        return Err(ApiError::field(
            field,
            format!("{field}: NUL characters are not allowed"),
        ));
    }
    Ok(())
}

/// Validates a free-text field such as a title or a system prompt.
pub fn plain_field(text: &str, field: &str, max_bytes: usize) -> Result<(), ApiError> {
    if text.len() > max_bytes {
        return Err(ApiError::field(
            field,
            format!("{field}: longer than {max_bytes} bytes"),
        ));
    }
    if text.contains('\0') {
        return Err(ApiError::field(
            field,
            format!("{field}: NUL characters are not allowed"),
        ));
    }
    Ok(())
}

/// Labels: at most 50 string-valued entries with short keys.
pub fn labels(labels: &serde_json::Map<String, Value>) -> Result<Value, ApiError> {
    if labels.len() > 50 {
        return Err(ApiError::field("labels", "labels: at most 50 entries"));
    }
    for (key, value) in labels {
        let field = format!("labels.{key}");
        if key.is_empty() || key.len() > 64 || key.contains('\0') {
            return Err(ApiError::field(
                "labels",
                "labels: keys must be 1 to 64 bytes without NUL",
            ));
        }
        match value {
            Value::String(text) => plain_field(text, &field, 256)?,
            _ => return Err(ApiError::field(&field, format!("{field} must be a string"))),
        }
    }
    Ok(Value::Object(labels.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_nul_and_tool_parts_are_refused() {
        assert!(user_content(MessageInput::Text("  ".into()), "message").is_err());
        assert!(user_content(MessageInput::Text("a\0b".into()), "message").is_err());
        let parts = vec![ContentPart::ToolCall {
            tool_call_id: "1".into(),
            tool_name: "x".into(),
            args: Value::Null,
        }];
        assert!(user_content(MessageInput::Parts(parts), "content").is_err());
        let stored = user_content(MessageInput::Text("hi".into()), "message").unwrap();
        assert_eq!(stored, serde_json::json!([{"type": "text", "text": "hi"}]));
    }
}
