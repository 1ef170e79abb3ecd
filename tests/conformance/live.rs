//! A live llama.cpp server through chatd's provider layer (run when `LLAMA_URL` is set).

use super::*;

fn endpoint(protocol: Protocol, base_url: &str) -> ProviderEndpoint {
    ProviderEndpoint {
        kind: protocol.kind(),
        base_url: base_url.to_owned(),
        api_key: None,
    }
}

fn user_text(text: &str) -> PromptMessage {
    PromptMessage {
        role: Role::User,
        content: vec![ContentPart::Text {
            text: text.to_owned(),
        }],
    }
}

fn request(messages: Vec<PromptMessage>, max_output_tokens: Option<u32>) -> ModelRequest {
    ModelRequest {
        model: MODEL.to_owned(),
        messages,
        max_output_tokens,
        ..ModelRequest::default()
    }
}

/// Runs one model step; panics on a transport or HTTP error, returns every stream item.
async fn live_step(protocol: Protocol, base_url: &str, request: &ModelRequest) -> Vec<ParsedItem> {
    let http = reqwest::Client::new();
    let call = async {
        let stream = match provider::stream(&http, &endpoint(protocol, base_url), request).await {
            Ok(stream) => stream,
            Err(error) => panic!("{protocol:?}: request refused: {error:?}"),
        };
        stream.collect::<Vec<_>>().await
    };
    tokio::time::timeout(LIVE_CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{protocol:?}: no complete answer within {LIVE_CALL_TIMEOUT:?}"))
}

fn successful_events(label: &str, items: Vec<ParsedItem>) -> Vec<ProviderEvent> {
    items
        .into_iter()
        .map(|item| item.unwrap_or_else(|error| panic!("{label}: stream error {error:?}")))
        .collect()
}

async fn live_text_answer(protocol: Protocol) {
    let Some(url) = llama_url(&format!("live_text_answer({protocol:?})")) else {
        return;
    };
    let label = format!("live {protocol:?} text");
    let step = request(vec![user_text(SHORT_PROMPT)], Some(200));
    let events = successful_events(&label, live_step(protocol, &url, &step).await);
    assert_text_answer(&label, &events);
}

async fn live_length_answer(protocol: Protocol) {
    let Some(url) = llama_url(&format!("live_length_answer({protocol:?})")) else {
        return;
    };
    let label = format!("live {protocol:?} length");
    let step = request(vec![user_text(LONG_PROMPT)], Some(LENGTH_LIMIT));
    let events = successful_events(&label, live_step(protocol, &url, &step).await);
    assert_length_answer(protocol, &label, &events);
}

/// A prompt larger than the server's context window is refused with a 400 before any output.
async fn live_bad_request(protocol: Protocol) {
    let Some(url) = llama_url(&format!("live_bad_request({protocol:?})")) else {
        return;
    };
    let label = format!("live {protocol:?} oversized prompt");
    // About 10,000 tokens; `scripts/llama-server` serves an 8,192-token context.
    let step = request(vec![user_text(&"word ".repeat(10_000))], Some(5));
    let http = reqwest::Client::new();
    let endpoint = endpoint(protocol, &url);
    let call = provider::stream(&http, &endpoint, &step);
    let result = tokio::time::timeout(LIVE_CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{label}: no answer within {LIVE_CALL_TIMEOUT:?}"));
    match result {
        Ok(_) => panic!("{label}: the server accepted a prompt larger than its context"),
        Err(error) => assert_bad_request(&label, &error, 400, "exceeds the available context size"),
    }
}

#[tokio::test]
async fn live_openai_chat_text_answer_streams() {
    live_text_answer(Protocol::Chat).await;
}

#[tokio::test]
async fn live_openai_responses_text_answer_streams() {
    live_text_answer(Protocol::Responses).await;
}

#[tokio::test]
async fn live_anthropic_text_answer_streams() {
    live_text_answer(Protocol::Messages).await;
}

#[tokio::test]
async fn live_openai_chat_max_tokens_finishes_with_length() {
    live_length_answer(Protocol::Chat).await;
}

#[tokio::test]
async fn live_openai_responses_max_tokens_finishes_with_length() {
    live_length_answer(Protocol::Responses).await;
}

#[tokio::test]
async fn live_anthropic_max_tokens_finishes_with_length() {
    live_length_answer(Protocol::Messages).await;
}

#[tokio::test]
async fn live_openai_chat_bad_request_is_final() {
    live_bad_request(Protocol::Chat).await;
}

#[tokio::test]
async fn live_openai_responses_bad_request_is_final() {
    live_bad_request(Protocol::Responses).await;
}

#[tokio::test]
async fn live_anthropic_bad_request_is_final() {
    live_bad_request(Protocol::Messages).await;
}

/// llama.cpp refuses `previous_response_id` outright (400 "llama.cpp does not support
/// 'previous_response_id'."); a chained step must still get its answer by re-sending the whole
/// history.
#[tokio::test]
async fn live_openai_responses_chained_step_falls_back_to_full_history() {
    let Some(url) = llama_url("live_openai_responses_chained_step_falls_back_to_full_history")
    else {
        return;
    };
    let label = "live Responses chained step";
    let mut step = request(
        vec![
            user_text("Name a colour."),
            PromptMessage {
                role: Role::Assistant,
                content: vec![ContentPart::Text {
                    text: "Blue.".to_owned(),
                }],
            },
            user_text(SHORT_PROMPT),
        ],
        Some(200),
    );
    step.chain = Some(ResponseChain {
        previous_response_id: "resp_from_an_earlier_step".to_owned(),
        new_from: 2,
    });
    let events = successful_events(label, live_step(Protocol::Responses, &url, &step).await);
    assert_complete_answer(label, &events);
}
