//! Validation of provider and model-config fields, shared by every path that writes them (the
//! admin API, `chatd admin`, `chatd dev`). Every error names the field; the API answers it as a
//! 400 `validation` error, the command line prints it.

/// A value refused, with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Longest accepted `base_url` (characters).
pub const MAX_BASE_URL_CHARS: usize = 2048;
/// Longest accepted provider API key (characters).
pub const MAX_API_KEY_CHARS: usize = 4096;
/// Longest accepted `model` / `display_name` (characters).
pub const MAX_NAME_CHARS: usize = 200;

/// Whether `text` has more than `max` characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them, so the OpenAPI document can state every limit exactly).
pub fn longer_than(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().count() > max
}

/// The grammar of a base URL: `http(s)://`, a host name (labels of letters, digits and
/// hyphens, not `xn--`, the last starting with a letter) or a dotted IPv4 address, an optional port 1–65535, a path of unreserved,
/// sub-delimiter, `:` `@` characters and `%XX` escapes. `for_document` adds what Python's
/// regular expressions (the fuzzer's) need to read it exactly as Rust's do: no `xn--` label
/// (a lookahead; Rust checks it separately) and no `$` match before a final newline.
pub fn base_url_pattern(for_document: bool) -> String {
    let no_punycode = if for_document { "(?![Xx][Nn]--)" } else { "" };
    // Any label may start with a digit but the last (a numeric last label makes the host an
    // IPv4 address to URL parsers).
    let label = format!("{no_punycode}[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?");
    let last = format!("{no_punycode}[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?");
    let octet = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    let port =
        "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
    let segment = "(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*";
    let end = if for_document { r"(?!\n)$" } else { "$" };
    format!(
        "^https?://(?:(?:{label}\\.)*{last}|{octet}(?:\\.{octet}){{3}})(?::{port})?(?:/{segment})*{end}"
    )
}

static BASE_URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(&base_url_pattern(false)).expect("the base URL pattern compiles")
});

/// A provider base URL: absolute `http`/`https` with a host, no credentials, query or
/// fragment (the worker appends paths such as `/chat/completions` to it), no whitespace or
/// control characters. Returns it without trailing slashes.
///
/// Private and loopback addresses are allowed on purpose: only administrators set base URLs,
/// and self-hosted models (and the mock LLM) live there.
pub fn base_url(text: &str) -> Result<String, FieldError> {
    let bad = |reason: &str| FieldError::new("base_url", format!("base_url: {reason}"));
    if longer_than(text, MAX_BASE_URL_CHARS) {
        return Err(bad(&format!("longer than {MAX_BASE_URL_CHARS} characters")));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace or control characters"));
    }
    let url =
        url::Url::parse(text).map_err(|error| bad(&format!("not an absolute URL ({error})")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("a host is required"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not contain credentials; set api_key instead (it is encrypted at rest)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    let punycode = url.host_str().is_some_and(|host| {
        host.split('.')
            .any(|label| label.to_ascii_lowercase().starts_with("xn--"))
    });
    if !BASE_URL.is_match(text) || punycode {
        return Err(bad(
            "expected http(s)://host[:port][/path] with a host name (labels starting with a \
             letter, no xn--) or an IPv4 address, and only unreserved characters or %XX \
             escapes in the path (see base_url_pattern)",
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// A short name (`model`, `display_name`): at most `MAX_NAME_CHARS`, no control characters;
/// `required` names must not be blank.
pub fn name(text: &str, field: &str, required: bool) -> Result<String, FieldError> {
    if longer_than(text, MAX_NAME_CHARS) {
        return Err(FieldError::new(
            field,
            format!("{field}: longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("{field}: control characters are not allowed"),
        ));
    }
    let trimmed = text.trim();
    if required && trimmed.is_empty() {
        return Err(FieldError::new(
            field,
            format!("{field}: must not be blank"),
        ));
    }
    Ok(trimmed.to_string())
}

/// A provider API key: not blank, at most `MAX_API_KEY_CHARS`, no whitespace or control
/// characters (it travels in an HTTP header). The message never echoes the key.
pub fn api_key(text: &str) -> Result<&str, FieldError> {
    let bad = |reason: &str| FieldError::new("api_key", format!("api_key: {reason}"));
    if text.is_empty() {
        return Err(bad("must not be empty (use null to remove the key)"));
    }
    if longer_than(text, MAX_API_KEY_CHARS) {
        return Err(bad(&format!("longer than {MAX_API_KEY_CHARS} characters")));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain whitespace or control characters"));
    }
    Ok(text)
}

/// `value` must lie in `min..=max`.
pub fn range<T: PartialOrd + std::fmt::Display>(
    value: T,
    field: &str,
    min: T,
    max: T,
) -> Result<T, FieldError> {
    if value < min || value > max {
        return Err(FieldError::new(
            field,
            format!("{field}: must be between {min} and {max}"),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_grammar_is_what_the_server_accepts() {
        for good in [
            "http://127.0.0.1:9090/v1",
            "http://mock-llm:8080",
            "https://api.openai.com/v1/",
            "http://a.b/x%20y/*",
            "http://1password.example",
        ] {
            assert!(base_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://[::1]:80/v1",
            "http://xn--nxasmq6b.com",
            "HTTP://x.example",
            "http://256.1.1.1",
            "http://x.example:0",
            "http://x.example/a%zz",
            "http://abc.1example",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
        // The document's form differs only by lookaheads Rust's engine does not need.
        let document = base_url_pattern(true);
        assert_eq!(
            document
                .replace("(?![Xx][Nn]--)", "")
                .replace(r"(?!\n)", ""),
            base_url_pattern(false)
        );
    }

    fn field_of(result: Result<String, FieldError>) -> String {
        match result {
            Err(FieldError { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn base_urls_are_checked_and_normalised() {
        assert_eq!(
            base_url("https://api.openai.com/v1/").unwrap(),
            "https://api.openai.com/v1"
        );
        assert_eq!(
            base_url("http://127.0.0.1:9090/v1").unwrap(),
            "http://127.0.0.1:9090/v1"
        );
        let too_long = format!("https://x.example/{}", "a".repeat(MAX_BASE_URL_CHARS));
        for bad in [
            "",
            "api.openai.com/v1",
            "/v1",
            "ftp://example.com",
            "file:///etc/passwd",
            "https://user:pass@example.com/v1",
            "https://user@example.com/v1",
            "https://example.com/v1?key=1",
            "https://example.com/v1#x",
            " https://example.com",
            "https://exa\tmple.com",
            "https://example.com/\0",
            "http://",
            too_long.as_str(),
        ] {
            assert_eq!(field_of(base_url(bad)), "base_url", "{bad:?}");
        }
    }

    #[test]
    fn names_keys_and_ranges() {
        assert_eq!(name("  gpt-4o ", "model", true).unwrap(), "gpt-4o");
        assert_eq!(field_of(name("  ", "model", true)), "model");
        assert_eq!(name("", "display_name", false).unwrap(), "");
        assert_eq!(
            field_of(name("a\nb", "display_name", false)),
            "display_name"
        );
        assert!(api_key("sk-abc").is_ok());
        for bad in ["", "sk abc", "sk\u{0}"] {
            assert!(api_key(bad).is_err(), "{bad:?}");
        }
        assert_eq!(range(70, "compression_threshold", 0, 100).unwrap(), 70);
        assert!(range(101, "compression_threshold", 0, 100).is_err());
        assert!(range(-1, "compression_threshold", 0, 100).is_err());
    }
}
