//! Request mapping (JSON asserts) and the fallback from a chained request to a full replay,
//! exercised against a tiny HTTP server on 127.0.0.1.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chatd_shared::domain::{ContentPart, ProviderKind, Role};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::tests::{outcomes, parse, Outcome, TEXT};
use super::{build_request, is_unknown_previous_response, stream};
use crate::provider::{
    ErrorKind, ModelRequest, PromptMessage, ProviderEndpoint, ResponseChain, ToolSpec,
};

fn message(role: Role, content: Vec<ContentPart>) -> PromptMessage {
    PromptMessage { role, content }
}

/// A conversation whose first step (messages 0..=2) ended with response `resp_1` calling tools.
fn conversation() -> ModelRequest {
    ModelRequest {
        model: "gpt-test".to_owned(),
        max_output_tokens: Some(512),
        messages: vec![
            message(Role::System, vec![ContentPart::text("Be brief.")]),
            message(
                Role::User,
                vec![
                    ContentPart::text("Weather and time?"),
                    ContentPart::text("  \n"),
                    ContentPart::text("In Paris."),
                ],
            ),
            message(
                Role::Assistant,
                vec![
                    ContentPart::Reasoning {
                        text: "two tools".to_owned(),
                        signature: None,
                    },
                    ContentPart::text("Checking."),
                    ContentPart::ToolCall {
                        tool_call_id: "call_1".to_owned(),
                        tool_name: "weather".to_owned(),
                        args: json!({"city": "Paris"}),
                    },
                    ContentPart::ToolCall {
                        tool_call_id: "call_2".to_owned(),
                        tool_name: "time".to_owned(),
                        args: json!("{broken"),
                    },
                ],
            ),
            message(
                Role::Tool,
                vec![
                    ContentPart::ToolResult {
                        tool_call_id: "call_1".to_owned(),
                        tool_name: "weather".to_owned(),
                        result: json!({"temp": 21}),
                        is_error: false,
                    },
                    ContentPart::ToolResult {
                        tool_call_id: "call_2".to_owned(),
                        tool_name: "time".to_owned(),
                        result: json!("12:00"),
                        is_error: true,
                    },
                ],
            ),
            message(Role::System, vec![ContentPart::text("Answer in French.")]),
            message(
                Role::Assistant,
                vec![
                    ContentPart::text(""),
                    ContentPart::Reasoning {
                        text: "only thoughts".to_owned(),
                        signature: None,
                    },
                ],
            ),
        ],
        ..ModelRequest::default()
    }
}

fn chained(new_from: usize) -> ModelRequest {
    ModelRequest {
        chain: Some(ResponseChain {
            previous_response_id: "resp_1".to_owned(),
            new_from,
        }),
        ..conversation()
    }
}

fn full_replay_json() -> Value {
    json!({
        "model": "gpt-test",
        "instructions": "Be brief.\n\nAnswer in French.",
        "input": [
            {"type": "message", "role": "user", "content": "Weather and time?\nIn Paris."},
            {"type": "message", "role": "assistant", "content": "Checking."},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{broken"},
            {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp\":21}"},
            {"type": "function_call_output", "call_id": "call_2", "output": "12:00"}
        ],
        "max_output_tokens": 512,
        "stream": true,
        "store": true
    })
}

fn to_json(request: &ModelRequest) -> Value {
    serde_json::to_value(build_request(request)).expect("serialize request")
}

#[test]
fn full_replay_maps_every_part_and_drops_blank_and_reasoning_parts() {
    assert_eq!(to_json(&conversation()), full_replay_json());
}

#[test]
fn chained_request_sends_only_new_non_system_messages_and_always_instructions() {
    assert_eq!(
        to_json(&chained(3)),
        json!({
            "model": "gpt-test",
            "instructions": "Be brief.\n\nAnswer in French.",
            "previous_response_id": "resp_1",
            "input": [
                {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp\":21}"},
                {"type": "function_call_output", "call_id": "call_2", "output": "12:00"}
            ],
            "max_output_tokens": 512,
            "stream": true,
            "store": true
        })
    );
    // Nothing new (or an index past the end) chains with an empty input.
    let body = to_json(&chained(99));
    assert_eq!(body["input"], json!([]));
    assert_eq!(body["previous_response_id"], json!("resp_1"));
}

#[test]
fn tools_are_flat_function_specs() {
    let request = ModelRequest {
        model: "m".to_owned(),
        tools: vec![ToolSpec {
            name: "weather".to_owned(),
            description: "Current weather".to_owned(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }],
        messages: vec![message(Role::User, vec![ContentPart::text("hi")])],
        ..ModelRequest::default()
    };
    assert_eq!(
        to_json(&request),
        json!({
            "model": "m",
            "input": [{"type": "message", "role": "user", "content": "hi"}],
            "tools": [{"type": "function", "name": "weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "stream": true,
            "store": true
        })
    );
}

#[test]
fn unknown_previous_response_is_recognised_only_in_its_shapes() {
    let openai = r#"{"error":{"message":"Previous response with id 'resp_1' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#;
    assert!(is_unknown_previous_response(400, openai));
    assert!(is_unknown_previous_response(404, openai));
    let by_param = r#"{"error":{"message":"Previous response not found","param":"previous_response_id","code":null}}"#;
    assert!(is_unknown_previous_response(400, by_param));
    assert!(is_unknown_previous_response(
        404,
        "previous response resp_1 does not exist"
    ));
    // Recorded from llama.cpp's server (worker/tests/fixtures/llamacpp): no stored responses.
    let llama = r#"{"error":{"code":400,"message":"llama.cpp does not support 'previous_response_id'.","type":"invalid_request_error"}}"#;
    assert!(is_unknown_previous_response(400, llama));
    assert!(!is_unknown_previous_response(500, openai));
    assert!(!is_unknown_previous_response(404, "Not Found"));
    let other = r#"{"error":{"message":"Invalid 'input'","param":"input","code":"invalid_value"}}"#;
    assert!(!is_unknown_previous_response(400, other));
}

/// What the test server answers a request carrying `previous_response_id`.
#[derive(Clone)]
struct ChainedAnswer {
    status: StatusCode,
    body: &'static str,
}

/// A request as the test server saw it: its `authorization` header and its body.
type Recorded = (Option<String>, Value);

#[derive(Clone)]
struct ServerState {
    /// Every request, in arrival order.
    requests: Arc<Mutex<Vec<Recorded>>>,
    chained_answer: Option<ChainedAnswer>,
}

async fn responses(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let is_chained = body.get("previous_response_id").is_some();
    if let Ok(mut requests) = state.requests.lock() {
        requests.push((authorization, body));
    }
    match (&state.chained_answer, is_chained) {
        (Some(answer), true) => (answer.status, answer.body).into_response(),
        _ => ([("content-type", "text/event-stream")], TEXT).into_response(),
    }
}

/// A `/v1/responses` server on an ephemeral port, stopped through its token.
struct TestServer {
    base_url: String,
    state: ServerState,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(chained_answer: Option<ChainedAnswer>) -> TestServer {
        let state = ServerState {
            requests: Arc::default(),
            chained_answer,
        };
        let router = Router::new()
            .route("/v1/responses", post(responses))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test server");
        let address = listener.local_addr().expect("test server address");
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(signal)
                .await;
            served.expect("serve test server");
        });
        TestServer {
            base_url: format!("http://{address}/v1/"),
            state,
            shutdown,
            task,
        }
    }

    /// Sends `request` through [`stream`]: the events, or the error kind and message.
    async fn call(&self, request: &ModelRequest) -> Result<Vec<Outcome>, (ErrorKind, String)> {
        let endpoint = ProviderEndpoint {
            kind: ProviderKind::OpenaiResponses,
            base_url: self.base_url.clone(),
            api_key: Some("sk-test".to_owned()),
        };
        match stream(&reqwest::Client::new(), &endpoint, request).await {
            Ok(events) => Ok(outcomes(events.collect::<Vec<_>>().await)),
            Err(error) => Err((error.kind, error.message)),
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .map(|requests| requests.clone())
            .unwrap_or_default()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("test server task");
    }
}

const PREVIOUS_NOT_FOUND: &str = r#"{"error":{"message":"Previous response with id 'resp_1' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#;

#[tokio::test]
async fn rejected_chain_is_resent_once_with_the_whole_history() {
    for answer in [
        ChainedAnswer {
            status: StatusCode::BAD_REQUEST,
            body: PREVIOUS_NOT_FOUND,
        },
        ChainedAnswer {
            status: StatusCode::NOT_FOUND,
            body: "previous response resp_1 not found",
        },
    ] {
        let server = TestServer::start(Some(answer)).await;
        assert_eq!(server.call(&chained(3)).await, Ok(parse(TEXT)));
        let requests = server.requests();
        assert_eq!(requests.len(), 2, "one chained request, one full replay");
        assert_eq!(requests[0].1, to_json(&chained(3)));
        assert_eq!(requests[1].1, full_replay_json());
        for (authorization, _) in &requests {
            assert_eq!(authorization.as_deref(), Some("Bearer sk-test"));
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn accepted_chain_is_sent_once() {
    let server = TestServer::start(None).await;
    assert_eq!(server.call(&chained(3)).await, Ok(parse(TEXT)));
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1["previous_response_id"], json!("resp_1"));
    server.stop().await;
}

#[tokio::test]
async fn other_rejections_are_not_replayed() {
    let server = TestServer::start(Some(ChainedAnswer {
        status: StatusCode::BAD_REQUEST,
        body: r#"{"error":{"message":"Invalid 'input'","type":"invalid_request_error","param":"input","code":"invalid_value"}}"#,
    }))
    .await;
    assert_eq!(
        server.call(&chained(3)).await,
        Err((
            ErrorKind::Config,
            "provider returned HTTP 400: Invalid 'input'".to_owned()
        ))
    );
    assert_eq!(server.requests().len(), 1);
    server.stop().await;
}
