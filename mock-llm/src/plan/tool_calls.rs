//! The scripted tool calls of a reply: which apply to this request (`tool_calls` with
//! `tool_steps`, or one step of `tool_script`), their arguments with `$result.<field>`
//! placeholders filled from the tool results the request ends with, and the fragments their
//! arguments stream in.

use std::ops::Range;

use super::PlannedToolCall;
use crate::conversation::{Conversation, Ending, ToolResult};
use crate::directives::Directives;

/// The scripted tool calls, when they apply: the request offers tools, and it ends with a user
/// message or with tool results of fewer than `tool_steps` (default 1) tool-calling steps since
/// the last user message.
pub(super) fn planned_tool_calls(
    conversation: &Conversation,
    directives: &Directives,
    prefix: &str,
) -> Option<Vec<PlannedToolCall>> {
    let round = conversation.tool_rounds_since_user;
    let calls = match &directives.tool_script {
        Some(script) => script.get(round)?,
        None => {
            let calls = directives
                .tool_calls
                .as_ref()
                .filter(|calls| !calls.is_empty())?;
            if round >= directives.tool_steps.unwrap_or(1) {
                return None;
            }
            calls
        }
    };
    let results: &[ToolResult] = match &conversation.ending {
        Ending::UserMessage => &[],
        Ending::ToolResults(results) => results,
        Ending::Other => return None,
    };
    if !conversation.offers_tools {
        return None;
    }
    let planned = calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let number = conversation.tool_calls_so_far + index;
            let value = fill_placeholders(&call.arguments, results);
            let arguments = value.to_string();
            PlannedToolCall {
                id: format!("{prefix}{number}"),
                number,
                name: call.name.clone(),
                fragments: fragment_ranges(&arguments),
                arguments,
                arguments_value: value,
            }
        })
        .collect();
    Some(planned)
}

/// Replaces every string `$result.<field>` / `$result[<i>].<field>` in `arguments` with that
/// field of a result (JSON text) the request ends with: the first result that has it, or the
/// i-th. A placeholder nothing answers stays as it is.
fn fill_placeholders(arguments: &serde_json::Value, results: &[ToolResult]) -> serde_json::Value {
    use serde_json::Value;
    match arguments {
        Value::String(text) => {
            placeholder_value(text, results).unwrap_or_else(|| arguments.clone())
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| fill_placeholders(item, results))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), fill_placeholders(value, results)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn placeholder_value(text: &str, results: &[ToolResult]) -> Option<serde_json::Value> {
    let rest = text.strip_prefix("$result")?;
    let (index, field) = match rest.strip_prefix('[') {
        Some(indexed) => {
            let (index, field) = indexed.split_once("].")?;
            (Some(index.parse::<usize>().ok()?), field)
        }
        None => (None, rest.strip_prefix('.')?),
    };
    let field_of = |result: &ToolResult| {
        serde_json::from_str::<serde_json::Value>(&result.content)
            .ok()?
            .get(field)
            .cloned()
    };
    match index {
        Some(index) => results.get(index).and_then(field_of),
        None => results.iter().find_map(field_of),
    }
}

/// Splits JSON text into 3 fragments (2 when it is too short), at character boundaries.
pub(super) fn fragment_ranges(arguments: &str) -> Vec<Range<usize>> {
    let boundaries: Vec<usize> = arguments.char_indices().map(|(offset, _)| offset).collect();
    let parts = boundaries.len().clamp(1, 3);
    let mut ranges = Vec::with_capacity(parts);
    let mut start = 0;
    for part in 1..=parts {
        let end = if part == parts {
            arguments.len()
        } else {
            boundaries
                .get(boundaries.len() * part / parts)
                .copied()
                .unwrap_or(arguments.len())
        };
        ranges.push(start..end);
        start = end;
    }
    ranges
}
