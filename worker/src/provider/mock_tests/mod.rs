//! Through-the-boundary tests: the mock on a real socket, called with raw HTTP (asserting the
//! bytes each protocol sends) and through the real provider clients.

mod client_chat;
mod client_other;
mod raw_anthropic;
mod raw_chat;
mod raw_responses;

use std::time::Duration;

use chatd_shared::domain::{ContentPart, ProviderKind, Role};
use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::provider::{
    self, FinishReason, ModelRequest, PromptMessage, ProviderEndpoint, ProviderError,
    ProviderEvent, ToolSpec,
};
use chatd_mock_llm::run;

/// Generous bound for conditions that should hold in milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

struct MockServer {
    http: reqwest::Client,
    /// `http://<address>/v1/`, the provider base URL.
    base_url: String,
    /// `http://<address>`.
    root: String,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// One SSE event as sent: the `event:` name (if any) and the `data:` text.
#[derive(Debug, Clone)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

impl MockServer {
    async fn start() -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let address = listener.local_addr().expect("mock address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(listener, shutdown.clone()));
        MockServer {
            http: reqwest::Client::new(),
            base_url: format!("http://{address}/v1/"),
            root: format!("http://{address}"),
            shutdown,
            task,
        }
    }

    fn endpoint(&self, kind: ProviderKind) -> ProviderEndpoint {
        ProviderEndpoint {
            kind,
            base_url: self.base_url.clone(),
            api_key: Some("test-key".to_owned()),
        }
    }

    /// One call through the real provider client for `kind`.
    async fn call(
        &self,
        kind: ProviderKind,
        request: &ModelRequest,
    ) -> Result<Vec<Result<ProviderEvent, ProviderError>>, ProviderError> {
        let stream = provider::stream(&self.http, &self.endpoint(kind), request).await?;
        Ok(tokio::time::timeout(DEADLINE, stream.collect::<Vec<_>>())
            .await
            .expect("stream ends before the deadline"))
    }

    /// A client call that must succeed end to end.
    async fn events(&self, kind: ProviderKind, request: &ModelRequest) -> Vec<ProviderEvent> {
        self.call(kind, request)
            .await
            .expect("request accepted")
            .into_iter()
            .map(|item| item.expect("no stream error"))
            .collect()
    }

    /// POSTs `body` to `/v1/<path>` with the headers a real client sends.
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("x-api-key", "test-key")
            .header("anthropic-version", "2023-06-01")
            .bearer_auth("test-key")
            .json(body)
            .send();
        tokio::time::timeout(DEADLINE, request)
            .await
            .expect("answer before the deadline")
            .expect("request sent")
    }

    /// A JSON answer with its status.
    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.post(path, body).await;
        let status = response.status().as_u16();
        let json = response.json().await.expect("JSON answer");
        (status, json)
    }

    /// A 200 SSE answer, read to its end and split into events.
    async fn sse(&self, path: &str, body: &Value) -> Vec<SseEvent> {
        let response = self.post(path, body).await;
        assert_eq!(response.status().as_u16(), 200, "stream answers 200");
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok()),
            Some("text/event-stream")
        );
        let text = tokio::time::timeout(DEADLINE, response.text())
            .await
            .expect("stream ends before the deadline")
            .expect("stream body");
        parse_sse(&text)
    }

    async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/mock/stats", self.root))
            .send()
            .await
            .expect("stats answer")
            .json()
            .await
            .expect("stats JSON")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("mock shuts down before the deadline")
            .expect("mock task does not panic");
        result.expect("mock serves without error");
    }
}

/// Splits the mock's SSE text (it writes `\n` line ends only) into events.
fn parse_sse(text: &str) -> Vec<SseEvent> {
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "every event is dispatched: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|block| {
            let mut event = SseEvent {
                event: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event.event = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data = data.to_owned();
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            event
        })
        .collect()
}

/// The `event:` names in order.
fn event_names(events: &[SseEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event.event.as_deref().unwrap_or(""))
        .collect()
}

/// The data of the events named `name`, as JSON.
fn events_named(events: &[SseEvent], name: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|event| event.event.as_deref() == Some(name))
        .map(SseEvent::json)
        .collect()
}

/// A function tool in the Chat Completions shape.
fn chat_tool(name: &str) -> Value {
    serde_json::json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}})
}

/// The script used by the tool tests: two parallel calls.
const TWO_CALLS: &str = r#"@mock {"tool_calls": [{"name": "read_file", "arguments": {"path": "/tmp/a.txt"}}, {"name": "sum", "arguments": {"a": 1, "b": 2}}]}"#;

fn message(role: Role, content: Vec<ContentPart>) -> PromptMessage {
    PromptMessage { role, content }
}

/// A system prompt of 4 words and one user message.
fn ask(text: &str) -> ModelRequest {
    ModelRequest {
        model: "mock-model".to_owned(),
        messages: vec![
            message(Role::System, vec![ContentPart::text("You are a test.")]),
            message(Role::User, vec![ContentPart::text(text)]),
        ],
        max_output_tokens: None,
        ..ModelRequest::default()
    }
}

/// [`ask`] offering the tools `read_file` and `sum`.
fn ask_with_tools(text: &str) -> ModelRequest {
    let tool = |name: &str| ToolSpec {
        name: name.to_owned(),
        description: format!("the {name} tool"),
        parameters: serde_json::json!({"type": "object"}),
    };
    ModelRequest {
        tools: vec![tool("read_file"), tool("sum")],
        ..ask(text)
    }
}

fn text_deltas(events: &[ProviderEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|event| match event {
            ProviderEvent::TextDelta(delta) => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

fn finish_reason(events: &[ProviderEvent]) -> Option<&FinishReason> {
    match events.last() {
        Some(ProviderEvent::Finish { reason, .. }) => Some(reason),
        _ => None,
    }
}

fn usage_of(events: &[ProviderEvent]) -> Option<provider::Usage> {
    events.iter().find_map(|event| match event {
        ProviderEvent::Usage(usage) => Some(*usage),
        _ => None,
    })
}

/// `request` (which asked for [`TWO_CALLS`]) followed by the assistant's two calls and their
/// results, as the turn loop sends it in the next step.
fn two_calls_answered(mut follow_up: ModelRequest) -> ModelRequest {
    follow_up.messages.push(message(
        Role::Assistant,
        vec![
            ContentPart::ToolCall {
                tool_call_id: "call_0".to_owned(),
                tool_name: "read_file".to_owned(),
                args: serde_json::json!({"path": "/tmp/a.txt"}),
            },
            ContentPart::ToolCall {
                tool_call_id: "call_1".to_owned(),
                tool_name: "sum".to_owned(),
                args: serde_json::json!({"a": 1, "b": 2}),
            },
        ],
    ));
    follow_up.messages.push(message(
        Role::Tool,
        vec![
            ContentPart::ToolResult {
                tool_call_id: "call_0".to_owned(),
                tool_name: "read_file".to_owned(),
                result: serde_json::json!("hello  world"),
                is_error: false,
            },
            ContentPart::ToolResult {
                tool_call_id: "call_1".to_owned(),
                tool_name: "sum".to_owned(),
                result: serde_json::json!({"total": 3}),
                is_error: false,
            },
        ],
    ));
    follow_up
}

/// The mock's reply to [`two_calls_answered`].
fn two_calls_quoted() -> String {
    chatd_mock_llm::tool_results_reply([("read_file", "hello  world"), ("sum", "{\"total\":3}")])
}
