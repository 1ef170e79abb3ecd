//! Provider failures, classified so the turn loop can decide whether and when to retry.
//!
//! Classification: the HTTP status decides first, the
//! error body refines it (OpenAI's `insufficient_quota` is a 429 that must not be retried), and an
//! explicit `x-should-retry` header overrides both. The same vocabulary classifies error objects
//! that arrive inside a stream that already answered 200.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// Why a provider call failed; published to clients in `retry` and `error` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Overloaded,
    RateLimit,
    Timeout,
    /// Set by the turn loop when a stream sent nothing within `startup_timeout`; never produced
    /// by this module.
    StartupTimeout,
    Auth,
    Config,
    /// The provider sent something that cannot be used or stored (e.g. a NUL in a tool call's
    /// id or name, which must round-trip to the provider unchanged). Never retried.
    InvalidResponse,
    Generic,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::RateLimit => "rate_limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::StartupTimeout => "startup_timeout",
            ErrorKind::Auth => "auth",
            ErrorKind::Config => "config",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Generic => "generic",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
    /// Whether sending the same request again may succeed.
    pub retryable: bool,
    /// The HTTP status when the failure was an HTTP answer.
    pub status_code: Option<u16>,
    /// The provider's requested delay, only when it is within (0, 60 s]; otherwise the caller
    /// uses its own backoff.
    pub retry_after: Option<Duration>,
}

/// The error object of OpenAI (`{"error": {...}}`) and Anthropic (`{"type": "error", "error":
/// {...}}`) bodies. Every field is optional because compatible servers fill them loosely (vLLM
/// puts the HTTP status in `code` as a number).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// A string (`"rate_limit_exceeded"`) or, on some servers, a number (the HTTP status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<serde_json::Value>,
}

/// Longest body excerpt quoted in an error message when the body is not a known error shape.
const BODY_EXCERPT_CHARS: usize = 300;

/// Provider delays longer than this are ignored in favour of our own capped backoff.
const MAX_HONOURED_RETRY_AFTER: Duration = Duration::from_secs(60);

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>, retryable: bool) -> ProviderError {
        ProviderError {
            kind,
            message: message.into(),
            retryable,
            status_code: None,
            retry_after: None,
        }
    }

    /// A stream that ended without its terminal marker: the output may be incomplete, and the
    /// same request will most likely succeed again.
    pub fn truncated() -> ProviderError {
        ProviderError::new(
            ErrorKind::Generic,
            "provider stream truncated: ended before its terminal event",
            true,
        )
    }

    /// Classifies a non-2xx answer from its status, headers and body.
    pub fn from_http(status: u16, headers: &HeaderMap, body: &str) -> ProviderError {
        ProviderError::from_http_at(status, headers, body, SystemTime::now())
    }

    /// [`ProviderError::from_http`] with the clock injected, so HTTP-date `Retry-After` values
    /// are testable.
    pub fn from_http_at(
        status: u16,
        headers: &HeaderMap,
        body: &str,
        now: SystemTime,
    ) -> ProviderError {
        let api_error = parse_error_body(body);
        let (mut kind, mut retryable) = classify_status(status);
        if let Some((body_kind, body_retryable)) = api_error.as_ref().and_then(classify_codes) {
            match body_kind {
                // A quota error is a 429 that no amount of waiting fixes.
                ErrorKind::RateLimit if !body_retryable => retryable = false,
                ErrorKind::Overloaded => {
                    kind = ErrorKind::Overloaded;
                    retryable = true;
                }
                _ => {}
            }
        }
        if let Some(should_retry) = header_str(headers, "x-should-retry") {
            match should_retry.trim() {
                "true" => retryable = true,
                "false" => retryable = false,
                _ => {}
            }
        }
        let detail = match api_error
            .as_ref()
            .and_then(|error| error.message.as_deref())
        {
            Some(message) => message.to_owned(),
            None => body_excerpt(body),
        };
        ProviderError {
            kind,
            message: format!("provider returned HTTP {status}: {detail}"),
            retryable,
            status_code: Some(status),
            retry_after: parse_retry_after(headers, now),
        }
    }

    /// Classifies a failure to send the request or to read the response body.
    pub fn from_transport(error: &reqwest::Error) -> ProviderError {
        let message = format!("provider request failed: {}", error_chain(error));
        if error.is_timeout() && !error.is_connect() {
            // The client's read timeout: no bytes at all for the stream idle timeout.
            ProviderError::new(
                ErrorKind::Timeout,
                format!("the provider sent nothing for the stream idle timeout ({message})"),
                true,
            )
        } else if error.is_timeout() {
            ProviderError::new(ErrorKind::Timeout, message, true)
        } else if error.is_builder() {
            // A malformed URL or header: the same request can never succeed.
            ProviderError::new(ErrorKind::Config, message, false)
        } else {
            ProviderError::new(ErrorKind::Generic, message, true)
        }
    }

    /// Classifies an error object that arrived inside a 2xx stream.
    pub fn from_stream_error(error: &ApiErrorObject) -> ProviderError {
        let numeric_status = error
            .code
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .and_then(|code| u16::try_from(code).ok())
            .filter(|code| (400..=599).contains(code));
        let (kind, retryable) = classify_codes(error)
            .or_else(|| numeric_status.map(classify_status))
            // Mid-stream failures are overwhelmingly server-side hiccups.
            .unwrap_or((ErrorKind::Generic, true));
        let detail = error.message.as_deref().unwrap_or("unknown error");
        ProviderError {
            kind,
            message: format!("provider stream error: {detail}"),
            retryable,
            status_code: numeric_status,
            retry_after: None,
        }
    }
}

/// Parses a provider error body in the OpenAI or Anthropic shape; `None` for anything else.
pub fn parse_error_body(body: &str) -> Option<ApiErrorObject> {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<serde_json::Value>,
    }
    let envelope: Envelope = serde_json::from_str(body).ok()?;
    match envelope.error? {
        serde_json::Value::String(message) => Some(ApiErrorObject {
            message: Some(message),
            ..ApiErrorObject::default()
        }),
        object @ serde_json::Value::Object(_) => serde_json::from_value(object).ok(),
        _ => None,
    }
}

/// The delay a provider asked for: `retry-after-ms`, else `retry-after` as seconds or an HTTP
/// date, each honoured only when 0 < value <= 60 s.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let from_millis = header_str(headers, "retry-after-ms")
        .and_then(|value| value.trim().parse::<f64>().ok())
        .and_then(|millis| duration_from_secs(millis / 1000.0));
    from_millis.or_else(|| {
        let value = header_str(headers, "retry-after")?.trim();
        match value.parse::<f64>() {
            Ok(seconds) => duration_from_secs(seconds),
            Err(_) => {
                let at = parse_http_date(value)?;
                at.duration_since(now).ok().and_then(within_honoured_range)
            }
        }
    })
}

/// The status-only classification (retry 408, 409, 429, 5xx, 529).
fn classify_status(status: u16) -> (ErrorKind, bool) {
    match status {
        408 => (ErrorKind::Timeout, true),
        409 => (ErrorKind::Generic, true),
        429 => (ErrorKind::RateLimit, true),
        401 | 403 => (ErrorKind::Auth, false),
        400 | 404 | 422 => (ErrorKind::Config, false),
        503 | 529 => (ErrorKind::Overloaded, true),
        500..=599 => (ErrorKind::Generic, true),
        _ => (ErrorKind::Generic, false),
    }
}

/// Classification from the error's `code` (more specific) or `type`.
fn classify_codes(error: &ApiErrorObject) -> Option<(ErrorKind, bool)> {
    let code = error.code.as_ref().and_then(serde_json::Value::as_str);
    [code, error.error_type.as_deref()]
        .into_iter()
        .flatten()
        .find_map(classify_label)
}

fn classify_label(label: &str) -> Option<(ErrorKind, bool)> {
    Some(match label {
        "insufficient_quota" | "billing_error" => (ErrorKind::RateLimit, false),
        "rate_limit_exceeded" | "rate_limit_error" | "requests" | "tokens" => {
            (ErrorKind::RateLimit, true)
        }
        "overloaded_error" | "overloaded" | "server_overloaded" => (ErrorKind::Overloaded, true),
        "server_error" | "api_error" | "internal_error" | "internal_server_error" => {
            (ErrorKind::Generic, true)
        }
        "timeout" | "timeout_error" | "request_timeout" => (ErrorKind::Timeout, true),
        "authentication_error" | "invalid_api_key" | "permission_error" | "permission_denied" => {
            (ErrorKind::Auth, false)
        }
        "invalid_request_error"
        | "not_found_error"
        | "model_not_found"
        | "context_length_exceeded" => (ErrorKind::Config, false),
        _ => return None,
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok()
}

fn duration_from_secs(seconds: f64) -> Option<Duration> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(within_honoured_range)
}

fn within_honoured_range(delay: Duration) -> Option<Duration> {
    (!delay.is_zero() && delay <= MAX_HONOURED_RETRY_AFTER).then_some(delay)
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only HTTP-date form servers still send.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let parsed = time::PrimitiveDateTime::parse(value, format).ok()?;
    Some(parsed.assume_utc().into())
}

fn body_excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "empty response body".to_owned();
    }
    match trimmed.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

/// reqwest's own message is terse ("error sending request"); the cause is in the source chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("test header"));
        }
        map
    }

    fn classify(status: u16, pairs: &[(&'static str, &str)], body: &str) -> ProviderError {
        ProviderError::from_http(status, &headers(pairs), body)
    }

    #[test]
    fn statuses_classify_per_protocols_table() {
        let cases = [
            (408, ErrorKind::Timeout, true),
            (409, ErrorKind::Generic, true),
            (429, ErrorKind::RateLimit, true),
            (500, ErrorKind::Generic, true),
            (502, ErrorKind::Generic, true),
            (503, ErrorKind::Overloaded, true),
            (529, ErrorKind::Overloaded, true),
            (401, ErrorKind::Auth, false),
            (403, ErrorKind::Auth, false),
            (400, ErrorKind::Config, false),
            (404, ErrorKind::Config, false),
            (422, ErrorKind::Config, false),
            (418, ErrorKind::Generic, false),
        ];
        for (status, kind, retryable) in cases {
            let error = classify(status, &[], "");
            assert_eq!((error.kind, error.retryable), (kind, retryable), "{status}");
            assert_eq!(error.status_code, Some(status));
        }
    }

    #[test]
    fn insufficient_quota_is_not_retryable_but_rate_limit_is() {
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let error = classify(429, &[], quota);
        assert_eq!(error.kind, ErrorKind::RateLimit);
        assert!(!error.retryable);
        assert!(error.message.contains("You exceeded your current quota"));

        let limited = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let error = classify(429, &[], limited);
        assert_eq!((error.kind, error.retryable), (ErrorKind::RateLimit, true));
    }

    #[test]
    fn anthropic_overloaded_body_wins_over_status() {
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let error = classify(500, &[], body);
        assert_eq!((error.kind, error.retryable), (ErrorKind::Overloaded, true));
        assert_eq!(error.message, "provider returned HTTP 500: Overloaded");
    }

    #[test]
    fn should_retry_header_overrides_both_ways() {
        assert!(!classify(500, &[("x-should-retry", "false")], "").retryable);
        assert!(classify(400, &[("x-should-retry", "true")], "").retryable);
        assert!(!classify(400, &[("x-should-retry", "maybe")], "").retryable);
    }

    #[test]
    fn unknown_body_is_quoted_briefly() {
        let error = classify(502, &[], "<html>bad gateway</html>");
        assert_eq!(
            error.message,
            "provider returned HTTP 502: <html>bad gateway</html>"
        );
        let long = "x".repeat(1000);
        assert!(classify(502, &[], &long).message.chars().count() < 400);
        assert!(classify(502, &[], "")
            .message
            .ends_with("empty response body"));
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let now = SystemTime::now();
        let parsed = parse_retry_after(
            &headers(&[("retry-after-ms", "1500"), ("retry-after", "7")]),
            now,
        );
        assert_eq!(parsed, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn retry_after_seconds_and_bounds() {
        let now = SystemTime::now();
        let seconds = |value: &str| parse_retry_after(&headers(&[("retry-after", value)]), now);
        assert_eq!(seconds("7"), Some(Duration::from_secs(7)));
        assert_eq!(seconds(" 60 "), Some(Duration::from_secs(60)));
        assert_eq!(seconds("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(seconds("61"), None);
        assert_eq!(seconds("0"), None);
        assert_eq!(seconds("-3"), None);
        assert_eq!(seconds("soon"), None);
        // An out-of-range millisecond value falls back to the seconds header.
        let both = headers(&[("retry-after-ms", "600000"), ("retry-after", "2")]);
        assert_eq!(parse_retry_after(&both, now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retry_after_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let date = |value: &str| parse_retry_after(&headers(&[("retry-after", value)]), now);
        assert_eq!(
            date("Sun, 06 Nov 1994 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(date("Sun, 06 Nov 1994 08:49:37 GMT"), None, "zero delay");
        assert_eq!(date("Sun, 06 Nov 1994 08:48:00 GMT"), None, "in the past");
        assert_eq!(date("Sun, 06 Nov 1994 09:49:37 GMT"), None, "beyond 60 s");
        let error = ProviderError::from_http_at(
            429,
            &headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")]),
            "",
            now,
        );
        assert_eq!(error.retry_after, Some(Duration::from_secs(10)));
    }

    #[test]
    fn stream_errors_classify_by_type_code_or_numeric_status() {
        let error = |json: &str| {
            let object: ApiErrorObject = serde_json::from_str(json).expect("test json");
            ProviderError::from_stream_error(&object)
        };
        let overloaded = error(r#"{"type":"overloaded_error","message":"busy"}"#);
        assert_eq!(
            (overloaded.kind, overloaded.retryable),
            (ErrorKind::Overloaded, true)
        );
        assert_eq!(overloaded.message, "provider stream error: busy");
        let quota = error(r#"{"type":"insufficient_quota","code":"insufficient_quota"}"#);
        assert_eq!((quota.kind, quota.retryable), (ErrorKind::RateLimit, false));
        let vllm = error(r#"{"type":"BadRequestError","code":400,"message":"bad"}"#);
        assert_eq!((vllm.kind, vllm.retryable), (ErrorKind::Config, false));
        assert_eq!(vllm.status_code, Some(400));
        let unknown = error(r#"{"message":"boom"}"#);
        assert_eq!(
            (unknown.kind, unknown.retryable),
            (ErrorKind::Generic, true)
        );
    }

    #[test]
    fn error_bodies_in_both_shapes_parse() {
        let openai = parse_error_body(r#"{"error":{"message":"m","type":"t","code":null}}"#);
        assert_eq!(
            openai.and_then(|error| error.error_type),
            Some("t".to_owned())
        );
        let plain = parse_error_body(r#"{"error":"model not loaded"}"#);
        assert_eq!(
            plain.and_then(|error| error.message),
            Some("model not loaded".to_owned())
        );
        assert_eq!(parse_error_body("not json"), None);
        assert_eq!(parse_error_body(r#"{"choices":[]}"#), None);
    }

    #[test]
    fn kinds_serialize_snake_case() {
        for kind in [
            ErrorKind::Overloaded,
            ErrorKind::RateLimit,
            ErrorKind::StartupTimeout,
            ErrorKind::Generic,
        ] {
            let json = serde_json::to_value(kind).expect("serialize kind");
            assert_eq!(json, serde_json::Value::String(kind.as_str().to_owned()));
        }
    }
}
