//! `@mock {json}` lines: how a test scripts the mock from inside the user message.
//!
//! Unknown keys and malformed JSON are rejected (HTTP 400) rather than ignored, so a typo in a
//! test fails loudly instead of silently testing the default behaviour.

use serde::Deserialize;

/// Upper bound for token counts, so a typo cannot make the mock stream for hours.
const MAX_TOKENS: usize = 1_000_000;
/// Upper bound for `error_message_bytes`.
const MAX_ERROR_MESSAGE_BYTES: usize = 1 << 20;
/// Upper bound for every delay, for the same reason.
const MAX_DELAY_MS: u64 = 3_600_000;
/// Upper bound for `tool_steps`: an agent loop test never needs more, and a typo must not make a
/// turn call tools forever.
const MAX_TOOL_STEPS: usize = 1_000;

/// The behaviour requested by the `@mock` lines of the last user message (see the module docs
/// of `mock_llm` for each key).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directives {
    pub tokens: Option<usize>,
    pub tokens_per_second: Option<f64>,
    pub ttft_ms: Option<u64>,
    pub error_status: Option<u16>,
    pub retry_after_s: Option<u64>,
    pub fail_times: Option<u32>,
    pub cut_after: Option<usize>,
    pub stall_ms: Option<u64>,
    /// With `error_status`: pad the error message to this many bytes (a huge error body).
    pub error_message_bytes: Option<usize>,
    pub tool_calls: Option<Vec<ToolCallDirective>>,
    /// How many consecutive model steps call `tool_calls` before the mock answers in text.
    pub tool_steps: Option<usize>,
    /// Different calls per step: step k (tool-calling steps since the last user message)
    /// makes the calls of entry k; past the last entry the mock answers in text. Argument
    /// strings `$result.<field>` or `$result[<i>].<field>` take the field of a result the
    /// request ends with (the first that has it, or the i-th), so a step can use what an
    /// earlier one returned (e.g. an id).
    pub tool_script: Option<Vec<Vec<ToolCallDirective>>>,
    pub reasoning_tokens: Option<usize>,
    pub stream_error_after: Option<usize>,
    pub stream_error_type: Option<StreamErrorKind>,
    pub cached_tokens: Option<usize>,
    /// Responses only: clear the stored responses and do not store this one.
    pub forget_responses: Option<bool>,
    /// Answer with what the request carried instead of generated text (see [`Echo`]).
    pub echo: Option<Echo>,
}

/// `echo`: the reply is a view of the request, so a test can see exactly what a provider
/// received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Echo {
    /// Every system part of the request (system and developer messages, Responses
    /// `instructions`, Anthropic `system` blocks), in order, joined with a blank line;
    /// `(no system text)` when there is none.
    System,
    /// One line per attachment of the user messages, in order: `<media type> <bytes> <how>`
    /// (`inline`, `text` or `url`), e.g. `image/png 5120 inline`; `(no attachments)` when
    /// there is none.
    Attachments,
    /// The names of the tools offered, sorted, one per line; `(no tools)` when none.
    Tools,
}

/// The kind of an injected in-stream error; each protocol spells it its own way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamErrorKind {
    #[default]
    Overloaded,
    RateLimit,
    ServerError,
    InvalidRequest,
}

impl StreamErrorKind {
    /// OpenAI's `type` of the error object (Chat Completions).
    pub fn openai_type(self) -> &'static str {
        match self {
            StreamErrorKind::Overloaded => "overloaded_error",
            StreamErrorKind::RateLimit => "requests",
            StreamErrorKind::ServerError => "server_error",
            StreamErrorKind::InvalidRequest => "invalid_request_error",
        }
    }

    /// OpenAI's `code` (Chat Completions error object, Responses `error` event).
    pub fn openai_code(self) -> &'static str {
        match self {
            StreamErrorKind::Overloaded => "server_overloaded",
            StreamErrorKind::RateLimit => "rate_limit_exceeded",
            StreamErrorKind::ServerError => "server_error",
            StreamErrorKind::InvalidRequest => "invalid_request_error",
        }
    }

    /// Anthropic's `error.type`.
    pub fn anthropic_type(self) -> &'static str {
        match self {
            StreamErrorKind::Overloaded => "overloaded_error",
            StreamErrorKind::RateLimit => "rate_limit_error",
            StreamErrorKind::ServerError => "api_error",
            StreamErrorKind::InvalidRequest => "invalid_request_error",
        }
    }

    /// The human-readable message, the same in every protocol.
    pub fn message(self) -> &'static str {
        match self {
            StreamErrorKind::Overloaded => "mock stream error: overloaded",
            StreamErrorKind::RateLimit => "mock stream error: rate limited",
            StreamErrorKind::ServerError => "mock stream error: internal server error",
            StreamErrorKind::InvalidRequest => "mock stream error: invalid request",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallDirective {
    pub name: String,
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Reads every `@mock` line of `message` (later lines override earlier keys) and validates the
/// result. The error is a sentence for the 400 body.
pub fn parse_directives(message: &str) -> Result<Directives, String> {
    let mut merged = serde_json::Map::new();
    for line in message.lines() {
        let Some(rest) = line.trim_start().strip_prefix("@mock") else {
            continue;
        };
        if rest.starts_with(|character: char| character.is_alphanumeric() || character == '_') {
            continue; // `@mockery` is prose, not a directive
        }
        let json = rest.trim();
        match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(object)) => merged.extend(object),
            Ok(_) => {
                return Err(format!(
                    "invalid @mock directive: expected a JSON object, got `{json}`"
                ))
            }
            Err(error) => {
                return Err(format!(
                    "invalid @mock directive: bad JSON `{json}`: {error}"
                ))
            }
        }
    }
    let directives: Directives = serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|error| format!("invalid @mock directive: {error}"))?;
    directives.validate()?;
    Ok(directives)
}

impl Directives {
    fn validate(&self) -> Result<(), String> {
        let invalid = |message: String| Err(format!("invalid @mock directive: {message}"));
        for (key, value) in [
            ("tokens", self.tokens),
            ("reasoning_tokens", self.reasoning_tokens),
            ("cached_tokens", self.cached_tokens),
        ] {
            if value.is_some_and(|count| count > MAX_TOKENS) {
                return invalid(format!("`{key}` must be at most {MAX_TOKENS}"));
            }
        }
        if let Some(rate) = self.tokens_per_second {
            if !rate.is_finite() || rate < 0.0 {
                return invalid("`tokens_per_second` must be a number >= 0".to_owned());
            }
        }
        for (key, value) in [("ttft_ms", self.ttft_ms), ("stall_ms", self.stall_ms)] {
            if value.is_some_and(|millis| millis > MAX_DELAY_MS) {
                return invalid(format!("`{key}` must be at most {MAX_DELAY_MS}"));
            }
        }
        if self
            .error_message_bytes
            .is_some_and(|bytes| bytes > MAX_ERROR_MESSAGE_BYTES)
        {
            return invalid(format!(
                "`error_message_bytes` must be at most {MAX_ERROR_MESSAGE_BYTES}"
            ));
        }
        if let Some(status) = self.error_status {
            if !(400..=599).contains(&status) {
                return invalid(format!("`error_status` must be 400-599, got {status}"));
            }
        }
        if self
            .retry_after_s
            .is_some_and(|seconds| seconds > MAX_DELAY_MS / 1000)
        {
            return invalid("`retry_after_s` must be at most 3600".to_owned());
        }
        for call in self.tool_calls.iter().flatten() {
            if call.name.trim().is_empty() {
                return invalid("every entry of `tool_calls` needs a non-empty `name`".to_owned());
            }
        }
        if let Some(steps) = self.tool_steps {
            if !(1..=MAX_TOOL_STEPS).contains(&steps) {
                return invalid(format!(
                    "`tool_steps` must be 1-{MAX_TOOL_STEPS}, got {steps}"
                ));
            }
            if self.tool_calls.as_ref().is_none_or(Vec::is_empty) {
                return invalid("`tool_steps` needs `tool_calls`".to_owned());
            }
        }
        if let Some(script) = &self.tool_script {
            if self.tool_calls.is_some() || self.tool_steps.is_some() {
                return invalid(
                    "`tool_script` replaces `tool_calls` and `tool_steps`: give one or the other"
                        .to_owned(),
                );
            }
            if script.is_empty() || script.len() > MAX_TOOL_STEPS {
                return invalid(format!("`tool_script` must have 1-{MAX_TOOL_STEPS} steps"));
            }
            for step in script {
                if step.is_empty() || step.iter().any(|call| call.name.trim().is_empty()) {
                    return invalid(
                        "every step of `tool_script` needs calls with non-empty names".to_owned(),
                    );
                }
            }
        }
        if self.stream_error_type.is_some() && self.stream_error_after.is_none() {
            return invalid("`stream_error_type` needs `stream_error_after`".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_directive_means_defaults() {
        assert_eq!(
            parse_directives("just a question"),
            Ok(Directives::default())
        );
        assert_eq!(
            parse_directives("ask @mockery about it"),
            Ok(Directives::default())
        );
    }

    #[test]
    fn directives_are_read_from_any_line_and_merged() {
        let message =
            "Hello\n  @mock {\"tokens\": 3, \"ttft_ms\": 5}\nmore text\n@mock {\"tokens\": 4}";
        let directives = parse_directives(message).expect("valid directives");
        assert_eq!(directives.tokens, Some(4));
        assert_eq!(directives.ttft_ms, Some(5));
        let calls = parse_directives(
            r#"@mock {"tool_calls": [{"name": "read"}, {"name": "sum", "arguments": {"a": 1}}]}"#,
        )
        .expect("valid tool calls")
        .tool_calls
        .unwrap_or_default();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments, serde_json::json!({}));
        assert_eq!(calls[1].arguments, serde_json::json!({"a": 1}));
        let errors = parse_directives(
            r#"@mock {"stream_error_after": 2, "stream_error_type": "rate_limit", "cached_tokens": 3}"#,
        )
        .expect("valid stream error");
        assert_eq!(errors.stream_error_type, Some(StreamErrorKind::RateLimit));
        assert_eq!(errors.cached_tokens, Some(3));
    }

    #[test]
    fn bad_directives_name_the_problem() {
        let error = |message: &str| parse_directives(message).expect_err("rejected");
        let unknown = error("@mock {\"tokenz\": 3}");
        assert!(unknown.contains("unknown field `tokenz`"), "{unknown}");
        let bad_json = error("@mock {tokens: 3}");
        assert!(bad_json.contains("bad JSON"), "{bad_json}");
        let not_object = error("@mock [1]");
        assert!(
            not_object.contains("expected a JSON object"),
            "{not_object}"
        );
        let wrong_type = error("@mock {\"tokens\": \"many\"}");
        assert!(wrong_type.contains("invalid type"), "{wrong_type}");
        let status = error("@mock {\"error_status\": 200}");
        assert!(status.contains("error_status"), "{status}");
        let rate = error("@mock {\"tokens_per_second\": -1}");
        assert!(rate.contains("tokens_per_second"), "{rate}");
        let nameless = error("@mock {\"tool_calls\": [{\"name\": \"\"}]}");
        assert!(nameless.contains("name"), "{nameless}");
        let steps = error("@mock {\"tool_steps\": 0, \"tool_calls\": [{\"name\": \"t\"}]}");
        assert!(steps.contains("tool_steps"), "{steps}");
        let lonely_steps = error("@mock {\"tool_steps\": 2}");
        assert!(
            lonely_steps.contains("needs `tool_calls`"),
            "{lonely_steps}"
        );
        let error_type = error("@mock {\"stream_error_type\": \"overloaded\"}");
        assert!(error_type.contains("stream_error_after"), "{error_type}");
        let unknown_type =
            error("@mock {\"stream_error_after\": 1, \"stream_error_type\": \"meteor\"}");
        assert!(unknown_type.contains("unknown variant"), "{unknown_type}");
        assert!(parse_directives("@mock").is_err());
    }
}
