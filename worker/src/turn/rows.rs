//! Turning a step's output into the rows it stores and the prompt messages it becomes:
//! accounting (tokens, cost, runtime, response id) and prompt hygiene.

use serde_json::Value;

use chatd_shared::domain::{contains_nul, encode_tool_result, replace_nul, ContentPart, Role};

use super::context::ModelChoice;
use super::step::StepOutput;
use crate::provider::{PromptMessage, Usage};
use crate::store::{NewRow, RowUsage};
use crate::tool::CallOutcome;

/// The rows of one step and the prompt messages they add.
pub struct StepRows {
    pub rows: Vec<NewRow>,
    pub prompt: Vec<PromptMessage>,
}

/// What a model call of `model` with `usage` stores on its row: the tokens and their cost.
pub fn billed(model: &ModelChoice, usage: &Usage) -> RowUsage {
    RowUsage {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        reasoning_tokens: usage.reasoning_tokens,
        cache_read_tokens: usage.cache_read_tokens,
        cache_write_tokens: usage.cache_write_tokens,
        cost_micros: cost_micros(model, usage),
    }
}

/// The outcomes an interrupted step stores: calls waiting for the client or a sub-agent will
/// never be answered now, so they get the interrupted result — in place, as outcomes match
/// calls by position.
pub fn interrupted_outcomes(outcomes: &[CallOutcome]) -> Vec<CallOutcome> {
    outcomes
        .iter()
        .map(|outcome| {
            if outcome.is_waiting() {
                CallOutcome::error(crate::tool::execute::INTERRUPTED_RESULT)
            } else {
                outcome.clone()
            }
        })
        .collect()
}

/// Builds the assistant row (parts, then the tool calls) and the tool row (results in call
/// order; pending calls have none yet). `outcomes` is parallel to `output.tool_calls`; missing
/// outcomes (a step stopped before its tools ran) get `missing_result` as an error result.
pub fn step_rows(
    model: &ModelChoice,
    output: &StepOutput,
    outcomes: &[CallOutcome],
    missing_result: &str,
    runtime_ms: i64,
) -> StepRows {
    let mut parts: Vec<ContentPart> = output
        .parts
        .iter()
        .filter(|part| !part.is_blank())
        .map(sanitize_part)
        .collect();
    let mut results = Vec::new();
    for (index, call) in output.tool_calls.iter().enumerate() {
        if call.id.is_empty() {
            continue;
        }
        parts.push(ContentPart::ToolCall {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            args: sanitize_value(call.args.clone()),
        });
        let (result, is_error) = match outcomes.get(index) {
            Some(CallOutcome::Pending | CallOutcome::AwaitAgent { .. }) => continue,
            Some(CallOutcome::Done { result, is_error }) => (result.clone(), *is_error),
            None => (Value::String(missing_result.to_owned()), true),
        };
        results.push(ContentPart::ToolResult {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            result,
            is_error,
        });
    }
    let mut rows = Vec::new();
    let mut prompt = Vec::new();
    if !parts.is_empty() {
        let usage = &output.usage;
        rows.push(NewRow {
            role: Role::Assistant,
            content: serde_json::to_value(&parts).unwrap_or(Value::Array(Vec::new())),
            model_config_id: Some(model.model_config_id),
            usage: Some(billed(model, usage)),
            runtime_ms: Some(runtime_ms),
            provider_response_id: output.response_id.clone(),
            compressed: false,
        });
        prompt.push(PromptMessage {
            role: Role::Assistant,
            content: parts,
        });
    }
    if !results.is_empty() {
        let stored: Vec<ContentPart> = results.iter().cloned().map(encode_part).collect();
        rows.push(NewRow {
            role: Role::Tool,
            content: serde_json::to_value(&stored).unwrap_or(Value::Array(Vec::new())),
            model_config_id: Some(model.model_config_id),
            usage: None,
            runtime_ms: None,
            provider_response_id: None,
            compressed: false,
        });
        prompt.push(PromptMessage {
            role: Role::Tool,
            content: results,
        });
    }
    StepRows { rows, prompt }
}

/// Cost in micro-dollars, rounded up; `None` when the model has no prices.
///
/// Prices are micro-dollars per million tokens. Cached input tokens are billed at the cache
/// prices (the input price when a cache price is unset) and the rest of the input at the input
/// price; output tokens (reasoning included) at the output price.
pub fn cost_micros(model: &ModelChoice, usage: &Usage) -> Option<i64> {
    if model.input_price_micros.is_none() && model.output_price_micros.is_none() {
        return None;
    }
    let input_price = model.input_price_micros.unwrap_or(0) as i128;
    let cache_read_price = model
        .cache_read_price_micros
        .map_or(input_price, i128::from);
    let cache_write_price = model
        .cache_write_price_micros
        .map_or(input_price, i128::from);
    let cached = usage.cache_read_tokens.max(0) + usage.cache_write_tokens.max(0);
    let plain_input = (usage.input_tokens.max(0) - cached).max(0) as i128;
    let total = plain_input * input_price
        + usage.cache_read_tokens.max(0) as i128 * cache_read_price
        + usage.cache_write_tokens.max(0) as i128 * cache_write_price
        + usage.output_tokens.max(0) as i128 * model.output_price_micros.unwrap_or(0) as i128;
    let micros = (total + 999_999) / 1_000_000;
    Some(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Tool results are stored in their NUL-safe form (`domain::encode_tool_result`).
fn encode_part(part: ContentPart) -> ContentPart {
    match part {
        ContentPart::ToolResult {
            tool_call_id,
            tool_name,
            result,
            is_error,
        } => ContentPart::ToolResult {
            tool_call_id,
            tool_name,
            result: encode_tool_result(result),
            is_error,
        },
        other => other,
    }
}

/// Model output cannot be refused, but `jsonb` cannot store NUL: it becomes U+FFFD in text,
/// reasoning and call arguments (tool *results* are encoded reversibly instead).
fn sanitize_part(part: &ContentPart) -> ContentPart {
    match part {
        ContentPart::Text { text } => ContentPart::text(strip_nul(text)),
        ContentPart::Reasoning { text, signature } => ContentPart::Reasoning {
            text: strip_nul(text),
            signature: signature.clone(),
        },
        other => serde_json::to_value(other)
            .ok()
            .map(sanitize_value)
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_else(|| other.clone()),
    }
}

fn strip_nul(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.to_owned()
    }
}

fn sanitize_value(value: Value) -> Value {
    if contains_nul(&value) {
        replace_nul(value)
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::provider::ProviderEndpoint;
    use crate::turn::step::ToolCall;
    use chatd_shared::domain::ProviderKind;

    fn model(input: Option<i64>, output: Option<i64>, cache_read: Option<i64>) -> ModelChoice {
        ModelChoice {
            model_config_id: Uuid::nil(),
            model: "m".into(),
            max_output_tokens: None,
            endpoint: ProviderEndpoint {
                kind: ProviderKind::Mock,
                base_url: String::new(),
                api_key: None,
            },
            input_price_micros: input,
            output_price_micros: output,
            cache_read_price_micros: cache_read,
            cache_write_price_micros: None,
            context_limit: 1000,
            compression_threshold: 70,
            supports_images: true,
        }
    }

    #[test]
    fn cost_rounds_up_and_bills_cache_separately() {
        let usage = Usage {
            input_tokens: 1000,
            output_tokens: 10,
            cache_read_tokens: 400,
            ..Usage::default()
        };
        assert_eq!(cost_micros(&model(None, None, None), &usage), None);
        // $3 / $15 per million, cache reads $0.30: 600·3 + 400·0.3 + 10·15 = 2070 µ$
        assert_eq!(
            cost_micros(
                &model(Some(3_000_000), Some(15_000_000), Some(300_000)),
                &usage
            ),
            Some(2070)
        );
        let one_token = Usage {
            input_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(
            cost_micros(&model(Some(1), Some(0), None), &one_token),
            Some(1)
        );
        assert_eq!(cost_micros(&model(Some(0), Some(0), None), &usage), Some(0));
    }

    #[test]
    fn rows_keep_call_order_encode_nul_and_skip_pending() {
        let output = StepOutput {
            parts: vec![ContentPart::text("  "), ContentPart::text("a\0b")],
            tool_calls: vec![
                ToolCall {
                    id: "1".into(),
                    name: "x".into(),
                    args: json!({"k": "v\0"}),
                },
                ToolCall {
                    id: "2".into(),
                    name: "client".into(),
                    args: json!({}),
                },
                ToolCall {
                    id: "3".into(),
                    name: "y".into(),
                    args: json!({}),
                },
            ],
            ..StepOutput::default()
        };
        let outcomes = [
            CallOutcome::Done {
                result: json!("bin\0ary"),
                is_error: false,
            },
            CallOutcome::Pending,
        ];
        let built = step_rows(
            &model(None, None, None),
            &output,
            &outcomes,
            "interrupted",
            5,
        );
        assert_eq!(built.rows.len(), 2);
        assert!(
            !chatd_shared::domain::contains_nul(&built.rows[1].content),
            "{}",
            built.rows[1].content
        );
        assert_eq!(
            built.rows[0].content,
            json!([{"type": "text", "text": "a\u{FFFD}b"},
                {"type": "tool-call", "tool_call_id": "1", "tool_name": "x", "args": {"k": "v\u{FFFD}"}},
                {"type": "tool-call", "tool_call_id": "2", "tool_name": "client", "args": {}},
                {"type": "tool-call", "tool_call_id": "3", "tool_name": "y", "args": {}}])
        );
        // The prompt keeps the decoded result; call 3 (never run) got the synthetic error.
        assert_eq!(
            built.prompt[1].content,
            vec![
                ContentPart::ToolResult {
                    tool_call_id: "1".into(),
                    tool_name: "x".into(),
                    result: json!("bin\0ary"),
                    is_error: false
                },
                ContentPart::ToolResult {
                    tool_call_id: "3".into(),
                    tool_name: "y".into(),
                    result: json!("interrupted"),
                    is_error: true
                },
            ]
        );
    }

    /// An interrupted step's waiting calls (client or sub-agent) get the interrupted result
    /// in their own place: the results of the calls after them stay theirs. (Before, the
    /// waiting outcomes were dropped from the list, and a later call's result went to an
    /// earlier call.)
    #[test]
    fn an_interrupted_step_answers_waiting_calls_in_place() {
        let output = StepOutput {
            tool_calls: ["client", "spawn_agent", "wait_agent", "current_time"]
                .iter()
                .enumerate()
                .map(|(index, name)| ToolCall {
                    id: index.to_string(),
                    name: (*name).into(),
                    args: json!({}),
                })
                .collect(),
            ..StepOutput::default()
        };
        let outcomes = interrupted_outcomes(&[
            CallOutcome::Pending,
            CallOutcome::Done {
                result: json!({"chat_id": "c"}),
                is_error: false,
            },
            CallOutcome::AwaitAgent {
                chat_id: Uuid::nil(),
                timeout: std::time::Duration::from_secs(1),
            },
            CallOutcome::Done {
                result: json!("now"),
                is_error: false,
            },
        ]);
        let built = step_rows(&model(None, None, None), &output, &outcomes, "missing", 5);
        let results: Vec<(String, Value, bool)> = built.prompt[1]
            .content
            .iter()
            .map(|part| match part {
                ContentPart::ToolResult {
                    tool_name,
                    result,
                    is_error,
                    ..
                } => (tool_name.clone(), result.clone(), *is_error),
                other => panic!("not a result: {other:?}"),
            })
            .collect();
        let interrupted = json!(crate::tool::execute::INTERRUPTED_RESULT);
        assert_eq!(
            results,
            [
                ("client".to_owned(), interrupted.clone(), true),
                ("spawn_agent".to_owned(), json!({"chat_id": "c"}), false),
                ("wait_agent".to_owned(), interrupted, true),
                ("current_time".to_owned(), json!("now"), false),
            ]
        );
    }
}
