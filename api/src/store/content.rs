//! Validation of user-supplied message content.

use chatd_shared::domain::ContentPart;
use serde_json::Value;

use crate::dto::{MessageInput, UserPart};
use crate::error::ApiError;

/// Longest text (characters) a user message part may carry; the body cap bounds it too.
const MAX_TEXT_CHARS: usize = 512 * 1024;
const MAX_PARTS: usize = 100;

/// Validates a user message and returns its storage form (a JSON array of parts).
///
/// Users send `text`, `file` and `source` parts (`UserPart`: the others cannot even be
/// parsed), 1 to 100 of them; text must contain a non-whitespace character (blank text must
/// never reach a provider). NUL characters cannot be stored in jsonb and are refused here.
/// The OpenAPI document states each rule as a schema (`UserPart`, `MessageInput`).
pub fn user_content(input: MessageInput, field: &str) -> Result<Value, ApiError> {
    let parts = match input {
        MessageInput::Text(text) => {
            check_text(&text, field)?;
            vec![ContentPart::Text { text }]
        }
        MessageInput::Parts(parts) => {
            if parts.is_empty() {
                return Err(ApiError::field(field, format!("{field} must not be empty")));
            }
            if parts.len() > MAX_PARTS {
                return Err(ApiError::field(
                    field,
                    format!("{field}: at most {MAX_PARTS} parts"),
                ));
            }
            let mut checked = Vec::with_capacity(parts.len());
            for (index, part) in parts.into_iter().enumerate() {
                let part_field = format!("{field}[{index}]");
                match &part {
                    UserPart::Text { text } => check_text(text, &format!("{part_field}.text"))?,
                    UserPart::File {
                        media_type,
                        file_id,
                        data,
                    } => {
                        // What the parts refer to is checked against the database
                        // (`store::files::check_parts`); here only their shape.
                        if let Some(media_type) = media_type {
                            plain_field(media_type, &format!("{part_field}.media_type"), 255)?;
                        }
                        if let Some(file_id) = file_id {
                            let field = format!("{part_field}.file_id");
                            plain_field(file_id, &field, 36)?;
                            if uuid::Uuid::parse_str(file_id).is_err() {
                                return Err(ApiError::field(
                                    field.clone(),
                                    format!("{field}: not a valid UUID"),
                                ));
                            }
                        }
                        if let Some(data) = data {
                            plain_field(data, &format!("{part_field}.data"), 699_052)?;
                        }
                        if file_id.is_some() == data.is_some() {
                            return Err(ApiError::field(
                                part_field.clone(),
                                format!("{part_field}: a file part has either `file_id` or `data`"),
                            ));
                        }
                    }
                    UserPart::Source { url, title } => {
                        plain_field(url, &format!("{part_field}.url"), MAX_TEXT_CHARS)?;
                        if let Some(title) = title {
                            plain_field(title, &format!("{part_field}.title"), MAX_TEXT_CHARS)?;
                        }
                    }
                }
                checked.push(ContentPart::from(part));
            }
            checked
        }
    };
    serde_json::to_value(parts).map_err(|error| ApiError::Internal(error.into()))
}

/// Message text: not blank, no NUL, at most `MAX_TEXT_CHARS`.
fn check_text(text: &str, field: &str) -> Result<(), ApiError> {
    plain_field(text, field, MAX_TEXT_CHARS)?;
    if text.trim().is_empty() {
        return Err(ApiError::field(
            field,
            format!("{field} must contain a non-whitespace character"),
        ));
    }
    Ok(())
}

/// Validates a free-text field such as a title or a system prompt: at most `max_chars`
/// characters (as JSON Schema's `maxLength` counts), no NUL.
pub fn plain_field(text: &str, field: &str, max_chars: usize) -> Result<(), ApiError> {
    if chatd_shared::validate::longer_than(text, max_chars) {
        return Err(ApiError::field(
            field,
            format!("{field}: longer than {max_chars} characters"),
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
        if key.is_empty() || chatd_shared::validate::longer_than(key, 64) || key.contains('\0') {
            return Err(ApiError::field(
                "labels",
                "labels: keys must be 1 to 64 characters without NUL",
            ));
        }
        match value {
            Value::String(text) => plain_field(text, &field, 256)?,
            _ => return Err(ApiError::field(&field, format!("{field} must be a string"))),
        }
    }
    Ok(Value::Object(labels.clone()))
}

/// Validates client tool declarations (already read into chatd's shape) and returns their
/// storage form: at most 128, names 1 to 64 characters of `[A-Za-z0-9_-]` and unique,
/// descriptions plain text, schemas JSON objects without NUL.
pub fn dynamic_tools(
    dynamic_tools: &[chatd_shared::domain::DynamicTool],
    field: &str,
) -> Result<Value, ApiError> {
    if dynamic_tools.len() > 128 {
        return Err(ApiError::field(
            field,
            format!("{field}: at most 128 tools"),
        ));
    }
    for (index, tool) in dynamic_tools.iter().enumerate() {
        let valid = !tool.name.is_empty()
            && tool.name.len() <= 64
            && tool
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ApiError::field(
                format!("{field}[{index}].name"),
                "tool names are 1 to 64 characters of [A-Za-z0-9_-]",
            ));
        }
        if dynamic_tools[..index]
            .iter()
            .any(|other| other.name == tool.name)
        {
            return Err(ApiError::field(
                format!("{field}[{index}].name"),
                format!("{field}[{index}].name: `{}` is declared twice", tool.name),
            ));
        }
        plain_field(
            &tool.description,
            &format!("{field}[{index}].description"),
            16 * 1024,
        )?;
        if !tool.schema.is_object() || chatd_shared::domain::contains_nul(&tool.schema) {
            return Err(ApiError::field(
                format!("{field}[{index}].schema"),
                format!("{field}[{index}].schema must be a JSON Schema object without NUL"),
            ));
        }
    }
    Ok(serde_json::to_value(dynamic_tools).map_err(anyhow::Error::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_nul_and_tool_parts_are_refused() {
        assert!(user_content(MessageInput::Text("  ".into()), "message").is_err());
        assert!(user_content(MessageInput::Text("a\0b".into()), "message").is_err());
        let blank = vec![
            UserPart::Text { text: "hi".into() },
            UserPart::Text { text: " \n".into() },
        ];
        assert!(user_content(MessageInput::Parts(blank), "content").is_err());
        assert!(user_content(MessageInput::Parts(Vec::new()), "content").is_err());
        let tool_call = serde_json::json!([{"type": "tool-call", "tool_call_id": "1",
            "tool_name": "x", "args": null}]);
        let error = crate::body::parse_json::<crate::dto::SendMessageRequest>(
            serde_json::json!({ "content": tool_call })
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown variant `tool-call`"),
            "{error}"
        );
        let stored = user_content(MessageInput::Text("hi".into()), "message").unwrap();
        assert_eq!(stored, serde_json::json!([{"type": "text", "text": "hi"}]));
    }
}
