//! The HTTP/SSE client of the public API, used by `chatd chat`, `chatd scaletest` and
//! `chatd chaos`. It speaks the public wire format as JSON (`serde_json::Value`) rather than
//! through the API crate's types: it is a client like any other, and a test of that format,
//! so it depends on nothing of the server. Streams are decoded with the project's own SSE
//! decoder (`chatd_shared::sse`), the one the worker reads providers with.

pub mod chat;
pub mod scaletest;

use std::collections::VecDeque;

use anyhow::Context;
use futures::{Stream, StreamExt};
use serde_json::Value;

use chatd_shared::sse::{Decoder, SseEvent};

/// A client bound to one API base URL and token.
#[derive(Clone)]
pub struct ApiClient {
    pub base_url: String,
    token: String,
    http: reqwest::Client,
}

/// One received SSE event.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl ApiClient {
    pub fn new(base_url: &str, token: &str, http: reqwest::Client) -> ApiClient {
        ApiClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base_url, path)
    }

    /// POSTs JSON; returns (status, body). Non-2xx bodies are returned, not turned into errors.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// PUTs JSON; returns (status, body), like [`ApiClient::post`].
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send_json(reqwest::Method::PUT, path, body).await
    }

    /// PATCHes JSON; returns (status, body), like [`ApiClient::post`].
    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        self.send_json(reqwest::Method::PATCH, path, body).await
    }

    /// DELETEs; returns (status, body) (`Null` for an empty body).
    pub async fn delete(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .delete(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("DELETE {path}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Opens `GET /chats/watch` and yields its events.
    pub async fn watch(
        &self,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<StreamEvent>> + Send + Unpin> {
        let response = self
            .http
            .get(self.url("/chats/watch"))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("open the watch stream")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("watch answered {status}: {body}");
        }
        Ok(Box::pin(sse_events(response.bytes_stream())))
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Opens `GET /chats/{id}/stream` from `cursor` (an SSE id) and yields its events.
    pub async fn stream(
        &self,
        chat_id: &str,
        cursor: Option<&str>,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<StreamEvent>> + Send + Unpin> {
        let mut request = self
            .http
            .get(self.url(&format!("/chats/{chat_id}/stream")))
            .bearer_auth(&self.token);
        if let Some(cursor) = cursor {
            request = request.header("Last-Event-ID", cursor);
        }
        let response = request.send().await.context("open the stream")?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("stream answered {status}: {body}");
        }
        Ok(Box::pin(sse_events(response.bytes_stream())))
    }
}

/// The events of an SSE body, decoded incrementally; keep-alive comments and events without
/// data are skipped. `id` is the last event id seen (SSE carries it over to later events, as
/// `Last-Event-ID` does).
pub fn sse_events<B>(body: B) -> impl Stream<Item = anyhow::Result<StreamEvent>> + Send
where
    B: Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Unpin,
{
    struct State<B> {
        body: B,
        decoder: Decoder,
        ready: VecDeque<SseEvent>,
        last_id: String,
        done: bool,
    }
    let state = State {
        body,
        decoder: Decoder::new(),
        ready: VecDeque::new(),
        last_id: String::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.ready.pop_front() {
                if let Some(id) = event.id {
                    state.last_id = id;
                }
                if event.data.is_empty() {
                    continue;
                }
                let decoded = StreamEvent {
                    event: event.event.unwrap_or_else(|| "message".to_owned()),
                    id: state.last_id.clone(),
                    data: serde_json::from_str(&event.data).unwrap_or(Value::Null),
                };
                return Some((Ok(decoded), state));
            }
            if state.done {
                return None;
            }
            match state.body.next().await {
                Some(Ok(chunk)) => state.ready.extend(state.decoder.push(&chunk)),
                Some(Err(error)) => {
                    state.done = true;
                    return Some((Err(anyhow::anyhow!("read the stream: {error}")), state));
                }
                None => {
                    state.done = true;
                    state
                        .ready
                        .extend(std::mem::take(&mut state.decoder).finish());
                }
            }
        }
    })
}

/// Text of a message's content parts.
pub fn content_text(content: &Value) -> String {
    content
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|part| part["type"] == "text")
                .filter_map(|part| part["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

/// A readable error from an API error body.
pub fn error_message(status: u16, body: &Value) -> String {
    let message = body["error"]["message"].as_str().unwrap_or("no details");
    format!("the API answered {status}: {message}")
}
