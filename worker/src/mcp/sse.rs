//! The older MCP transport, HTTP with SSE (protocol 2024-11-05), which the SDK no longer
//! ships: a GET opens an event stream whose first event (`endpoint`) names the URL to POST
//! JSON-RPC messages to; the server's messages arrive as `message` events on the stream.
//! Given to the SDK as a sink of client messages and a stream of server messages.

use std::time::Duration;

use futures::{Sink, Stream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use tokio::sync::mpsc;

use chatd_shared::db::mcp::McpAuth;
use chatd_shared::sse::{Decoder, SseEvent};

type ClientSink = std::pin::Pin<Box<dyn Sink<ClientJsonRpcMessage, Error = std::io::Error> + Send>>;
type ServerStream = std::pin::Pin<Box<dyn Stream<Item = ServerJsonRpcMessage> + Send>>;

fn with_auth(request: reqwest::RequestBuilder, auth: &McpAuth) -> reqwest::RequestBuilder {
    match auth {
        McpAuth::None => request,
        McpAuth::Bearer { token } => request.bearer_auth(token),
        McpAuth::Headers { headers } => headers.iter().fold(request, |request, (name, value)| {
            request.header(name, value)
        }),
    }
}

/// Opens the event stream and waits (at most `timeout`) for the endpoint.
pub async fn connect(
    http: &reqwest::Client,
    url: &str,
    auth: &McpAuth,
    timeout: Duration,
) -> anyhow::Result<(ClientSink, ServerStream)> {
    let base = reqwest::Url::parse(url)?;
    let opened = tokio::time::timeout(timeout, async {
        let response = with_auth(http.get(base.clone()), auth)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await?
            .error_for_status()?;
        let mut body = response.bytes_stream();
        let mut decoder = Decoder::new();
        let mut early = Vec::new();
        loop {
            let Some(chunk) = body.next().await else {
                anyhow::bail!("the event stream ended before naming its endpoint");
            };
            let events = decoder.push(&chunk?);
            let mut endpoint = None;
            for event in events {
                match event.event.as_deref() {
                    Some("endpoint") if endpoint.is_none() => {
                        endpoint = Some(base.join(event.data.trim())?);
                    }
                    _ => early.push(event),
                }
            }
            if let Some(endpoint) = endpoint {
                return anyhow::Ok((endpoint, body, decoder, early));
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no endpoint event within {timeout:?}"))??;
    let (endpoint, mut body, mut decoder, early) = opened;
    let (sender, mut receiver) = mpsc::channel::<ServerJsonRpcMessage>(64);
    tokio::spawn(async move {
        let forward = |events: Vec<SseEvent>| {
            events
                .into_iter()
                .filter(|event| matches!(event.event.as_deref(), None | Some("message")))
                .filter_map(|event| match serde_json::from_str(&event.data) {
                    Ok(message) => Some(message),
                    Err(error) => {
                        tracing::warn!(%error, "unreadable MCP message on the event stream");
                        None
                    }
                })
                .collect::<Vec<ServerJsonRpcMessage>>()
        };
        for message in forward(early) {
            if sender.send(message).await.is_err() {
                return;
            }
        }
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                _ = sender.closed() => return,
            };
            let Some(Ok(chunk)) = chunk else {
                return; // the stream ended: the session closes
            };
            for message in forward(decoder.push(&chunk)) {
                if sender.send(message).await.is_err() {
                    return;
                }
            }
        }
    });
    let state = (http.clone(), endpoint, auth.clone());
    let sink = futures::sink::unfold(
        state,
        |(http, endpoint, auth), message: ClientJsonRpcMessage| async move {
            let response = with_auth(http.post(endpoint.clone()), &auth)
                .json(&message)
                .send()
                .await
                .map_err(std::io::Error::other)?;
            if !response.status().is_success() {
                return Err(std::io::Error::other(format!(
                    "the MCP server answered a message with HTTP {}",
                    response.status()
                )));
            }
            Ok((http, endpoint, auth))
        },
    );
    let stream = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
    Ok((Box::pin(sink), Box::pin(stream)))
}
