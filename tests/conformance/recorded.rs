//! Recorded answers of the real server, replayed through chatd's parsers (always run).

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/worker/tests/fixtures/llamacpp/",
                $name
            ))
            .as_slice(),
        )
    };
}

/// The greedy answer to [`SHORT_PROMPT`], the same on every endpoint.
const RECORDED_SKY: &str =
    "The sky is a deep shade of indigo, a celestial wonder that holds the essence of the universe.";
/// The greedy first five tokens for [`LONG_PROMPT`].
const RECORDED_STORY_START: &str = "Once upon a time,";

#[test]
fn recorded_text_answers_parse_on_every_protocol() {
    // (protocol, fixture, input tokens, cached input tokens): the usage as recorded. Messages'
    // 43 is `input_tokens` 19 + `cache_read_input_tokens` 24 (Anthropic counts them apart).
    let cases = [
        (Protocol::Chat, fixture!("chat_text.sse"), 43, 0),
        (Protocol::Responses, fixture!("responses_text.sse"), 43, 24),
        (Protocol::Messages, fixture!("messages_text.sse"), 43, 24),
        // Without `max_tokens` (Anthropic requires it; llama.cpp does not).
        (
            Protocol::Messages,
            fixture!("messages_no_max_tokens.sse"),
            43,
            42,
        ),
    ];
    for (protocol, (name, body), input_tokens, cached_tokens) in cases {
        let events = replay_fixture(protocol, name, body);
        let (text, usage) = assert_text_answer(name, &events);
        assert_eq!(text, RECORDED_SKY, "{name}");
        assert_eq!(
            (
                usage.input_tokens,
                usage.cache_read_tokens,
                usage.output_tokens
            ),
            (input_tokens, cached_tokens, 21),
            "{name}: {usage:?}"
        );
    }
}

#[test]
fn recorded_system_prompt_answers_parse() {
    for (protocol, (name, body)) in [
        (Protocol::Responses, fixture!("responses_instructions.sse")),
        (Protocol::Messages, fixture!("messages_system.sse")),
    ] {
        let events = replay_fixture(protocol, name, body);
        let (text, usage) = assert_text_answer(name, &events);
        assert_eq!(text, "A colour is a color.", "{name}");
        assert_eq!((usage.input_tokens, usage.output_tokens), (23, 7), "{name}");
    }
}

#[test]
fn recorded_length_answers_finish_with_the_limit() {
    for (protocol, (name, body)) in [
        (Protocol::Chat, fixture!("chat_length.sse")),
        (Protocol::Responses, fixture!("responses_length.sse")),
        (Protocol::Messages, fixture!("messages_length.sse")),
    ] {
        let events = replay_fixture(protocol, name, body);
        let text = assert_length_answer(protocol, name, &events);
        assert_eq!(text, RECORDED_STORY_START, "{name}");
    }
}

#[test]
fn recorded_keepalive_comments_are_ignored() {
    // Long answers from a server sending `:` keep-alive comments every second (the chat one
    // starts with one, before any data).
    for (protocol, (name, body)) in [
        (Protocol::Chat, fixture!("chat_keepalive.sse")),
        (Protocol::Responses, fixture!("responses_keepalive.sse")),
        (Protocol::Messages, fixture!("messages_keepalive.sse")),
    ] {
        let text = utf8(name, body);
        assert!(
            text.lines().any(|line| line == ":"),
            "{name} still holds a keep-alive comment (re-record it if not)"
        );
        let events = replay_fixture(protocol, name, body);
        let (answer, usage, reason) = assert_complete_answer(name, &events);
        assert_eq!(answer, recorded_text(protocol, &text), "{name}");
        // 300 tokens as recorded; record.sh asks for more when an answer carried no keep-alive.
        assert!(usage.output_tokens >= 300, "{name}: {usage:?}");
        if protocol.reports_length() {
            assert_eq!(reason, FinishReason::Length, "{name}");
        }
    }
}

/// The answer text a recorded body holds, read with plain JSON lookups: Chat's
/// `choices[].delta.content`, the output text of Responses' `response.completed`, Messages'
/// `text_delta`s.
fn recorded_text(protocol: Protocol, body: &str) -> String {
    let mut text = String::new();
    for line in body.lines() {
        let Some(Ok(data)) = line
            .strip_prefix("data: ")
            .map(serde_json::from_str::<Value>)
        else {
            continue;
        };
        match protocol {
            Protocol::Chat => {
                for choice in data["choices"].as_array().into_iter().flatten() {
                    text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
                }
            }
            Protocol::Responses if data["type"] == "response.completed" => {
                for item in data["response"]["output"].as_array().into_iter().flatten() {
                    for part in item["content"].as_array().into_iter().flatten() {
                        text.push_str(part["text"].as_str().unwrap_or_default());
                    }
                }
            }
            Protocol::Messages if data["delta"]["type"] == "text_delta" => {
                text.push_str(data["delta"]["text"].as_str().unwrap_or_default());
            }
            _ => {}
        }
    }
    text
}

#[test]
fn recorded_truncated_streams_are_retryable_errors() {
    // The same real answers cut before their end: never a success. (Chat counts a finish
    // reason at EOF as complete, so its cut comes before the finish chunk, not `[DONE]`.)
    for (protocol, (name, body), cut_before) in [
        (
            Protocol::Chat,
            fixture!("chat_text.sse"),
            r#"data: {"choices":[{"finish_reason":"stop""#,
        ),
        (
            Protocol::Responses,
            fixture!("responses_text.sse"),
            "event: response.completed",
        ),
        (
            Protocol::Messages,
            fixture!("messages_text.sse"),
            "event: message_delta",
        ),
    ] {
        let text = std::str::from_utf8(body).expect("fixtures are UTF-8");
        let cut = text
            .find(cut_before)
            .unwrap_or_else(|| panic!("{name} has {cut_before:?}"));
        let items = protocol.replay(&body[..cut], 64);
        assert!(
            !items
                .iter()
                .any(|item| matches!(item, Ok(ProviderEvent::Finish { .. }))),
            "{name} cut before {cut_before:?}: no Finish: {items:?}"
        );
        match items.last() {
            Some(Err(error)) => assert!(error.retryable, "{name}: {error:?}"),
            other => panic!("{name} cut before {cut_before:?} ends with an error: {other:?}"),
        }
    }
}

#[test]
fn recorded_error_bodies_are_classified() {
    // (fixture, HTTP status as recorded in statuses.txt, text the message must quote)
    let bad_requests = [
        (
            fixture!("chat_context_error.json"),
            "exceeds the available context size",
        ),
        (
            fixture!("responses_context_error.json"),
            "exceeds the available context size",
        ),
        (
            fixture!("messages_context_error.json"),
            "exceeds the available context size",
        ),
        (fixture!("chat_bad_json_error.json"), "parse error"),
        (
            fixture!("chat_missing_messages_error.json"),
            "'messages' is required",
        ),
        (
            fixture!("responses_missing_input_error.json"),
            "'input' is required",
        ),
        (
            fixture!("responses_previous_response_id_error.json"),
            "does not support 'previous_response_id'",
        ),
    ];
    for ((name, body), quoted) in bad_requests {
        let error = ProviderError::from_http(400, &HeaderMap::new(), &utf8(name, body));
        assert_bad_request(name, &error, 400, quoted);
    }
    // llama.cpp answers a Messages request without `messages` with a 500: classified by its
    // status like any server error (chatd always sends `messages`).
    let (name, body) = fixture!("messages_missing_messages_error.json");
    let error = ProviderError::from_http(500, &HeaderMap::new(), &utf8(name, body));
    assert_eq!(error.status_code, Some(500), "{name}: {error:?}");
    assert!(error.retryable, "{name}: a 5xx is retryable: {error:?}");
    assert!(
        error.message.contains("'messages' is required"),
        "{name}: {error:?}"
    );
}

#[test]
fn recorded_statuses_match_the_fixture_list() {
    // Keeps the statuses used above honest: they are the ones record.sh saw.
    let (_, statuses) = fixture!("statuses.txt");
    let statuses = utf8("statuses.txt", statuses);
    for line in statuses.lines() {
        let (file, status) = line.split_once(' ').expect("`file status` lines");
        let expected = match file {
            "messages_missing_messages_error.json" => "500",
            file if file.ends_with("_error.json") => "400",
            _ => "200",
        };
        assert_eq!(status, expected, "{file}");
    }
}

fn utf8(name: &str, body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).unwrap_or_else(|_| panic!("{name} is UTF-8"))
}
