//! MCP tools: the tools of the MCP servers a chat uses, offered to its model as
//! `<server name>__<tool name>` and called through the official Rust SDK (`rmcp`).
//!
//! - The enabled servers are read once per `SERVERS_TTL` (a `chatd_config` notice clears
//!   them), so a turn costs no statement for them.
//! - One client session per server and worker, opened on first use and reopened after a
//!   failure or a change of the server's configuration. Its tool list is kept for
//!   `TOOLS_TTL` and read again sooner when the server sends
//!   `notifications/tools/list_changed`.
//! - Connecting and listing are bounded by `--mcp-timeout-ms`. A server that cannot be
//!   reached is offered with the tools it last listed (their calls then get an error result
//!   the model reads), or not at all if it never listed any, and is not tried again at a
//!   turn's start for `RETRY_UNREACHABLE` (unless its configuration changes), so a dead server
//!   does not add the timeout to every turn. A call that fails — unreachable
//!   server, timeout (the worker's tool timeout), a tool error — is an error result. MCP never
//!   fails a turn.

mod names;
mod sse;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use rmcp::handler::client::ClientHandler;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use uuid::Uuid;

use chatd_shared::db::mcp::{Availability, McpAuth, McpServerConfig, McpTransport};

use crate::provider::ToolSpec;
use crate::tool::{Tool, ToolContext};

/// How long the list of enabled servers is reused.
const SERVERS_TTL: Duration = Duration::from_secs(30);
/// How long a server's tool list is reused (unless it says it changed).
const TOOLS_TTL: Duration = Duration::from_secs(60);
/// How long a server that could not be reached is not tried again at a turn's start (its last
/// known tools are offered meanwhile), so a dead server does not add `--mcp-timeout-ms` to
/// every turn. A change of its configuration tries it at once.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(30);
/// Longest tool result kept, in bytes of JSON text (the rest is cut, and the result says so).
const MAX_RESULT_BYTES: usize = 256 * 1024;

/// The worker's MCP client side: servers, sessions, tool lists.
pub struct McpHub {
    pool: deadpool_postgres::Pool,
    encryption_key: Option<[u8; 32]>,
    /// Bound on connecting and listing.
    timeout: Duration,
    /// For the Streamable HTTP transport (the SDK's client).
    http: reqwest_mcp::Client,
    /// For the older SSE transport.
    legacy_http: reqwest::Client,
    servers: Mutex<Option<(Arc<Vec<McpServerConfig>>, Instant)>>,
    sessions: tokio::sync::Mutex<HashMap<Uuid, Arc<Session>>>,
    /// The tools each server last listed, by server id (kept when it becomes unreachable).
    known_tools: Mutex<HashMap<Uuid, Arc<Vec<rmcp::model::Tool>>>>,
    /// Servers that could not be listed: when, and the configuration (`updated_at`) tried.
    unreachable: Mutex<HashMap<Uuid, (Instant, time::OffsetDateTime)>>,
}

struct Session {
    /// The server's `updated_at` the session was opened with.
    version: time::OffsetDateTime,
    service: RunningService<RoleClient, Handler>,
    /// The tool list and when it was read.
    tools: Mutex<Option<(Arc<Vec<rmcp::model::Tool>>, Instant)>>,
    /// Set by `notifications/tools/list_changed`.
    tools_changed: Arc<AtomicBool>,
}

/// The client handler: chatd's identity, and list-change notifications.
#[derive(Clone)]
struct Handler {
    tools_changed: Arc<AtomicBool>,
}

impl ClientHandler for Handler {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.tools_changed.store(true, Ordering::Relaxed);
        std::future::ready(())
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("chatd", env!("CARGO_PKG_VERSION")),
        )
    }
}

impl McpHub {
    pub fn new(
        pool: deadpool_postgres::Pool,
        encryption_key: Option<[u8; 32]>,
        timeout: Duration,
        legacy_http: reqwest::Client,
    ) -> anyhow::Result<McpHub> {
        Ok(McpHub {
            pool,
            encryption_key,
            timeout,
            http: sdk_http_client()?,
            legacy_http,
            servers: Mutex::new(None),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            known_tools: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(HashMap::new()),
        })
    }

    /// Forgets the server list (a `chatd_config` notice): the next turn reads it again, and
    /// sessions of changed servers are reopened.
    pub fn clear(&self) {
        *self
            .servers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = None;
    }

    /// The MCP tools for a chat that picked `chosen` servers (plus the `force_on` ones), in a
    /// stable order. Never fails: what cannot be read is left out (and logged).
    pub async fn tools_for(self: &Arc<Self>, chosen: &[Uuid]) -> Vec<Arc<dyn Tool>> {
        let servers = match self.servers().await {
            Ok(servers) => servers,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "read the MCP servers; the turn goes on without them"
                );
                return Vec::new();
            }
        };
        let used: Vec<&McpServerConfig> = servers
            .iter()
            .filter(|server| {
                server.row.availability == Availability::ForceOn || chosen.contains(&server.row.id)
            })
            .collect();
        if used.is_empty() {
            return Vec::new();
        }
        let listed = futures::future::join_all(used.iter().map(|server| self.list(server))).await;
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for (server, listed) in used.iter().zip(listed) {
            let Some(listed) = listed else { continue };
            let mut offered: Vec<McpTool> = listed
                .iter()
                .filter(|tool| allowed(server, &tool.name))
                .map(|tool| McpTool {
                    hub: self.clone(),
                    server: Arc::new((*server).clone()),
                    offered_name: names::offered_name(&server.row.name, &tool.name, &mut taken),
                    tool_name: tool.name.to_string(),
                    description: tool.description.as_deref().unwrap_or_default().to_owned(),
                    schema: Value::Object((*tool.input_schema).clone()),
                })
                .collect();
            offered.sort_by(|a, b| a.offered_name.cmp(&b.offered_name));
            tools.extend(
                offered
                    .into_iter()
                    .map(|tool| Arc::new(tool) as Arc<dyn Tool>),
            );
        }
        tools
    }

    async fn servers(&self) -> anyhow::Result<Arc<Vec<McpServerConfig>>> {
        if let Some((servers, at)) = &*self.servers.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < SERVERS_TTL {
                return Ok(servers.clone());
            }
        }
        let client = self.pool.get().await?;
        let servers = Arc::new(chatd_shared::db::mcp::load_enabled(&*client).await?);
        *self.servers.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((servers.clone(), Instant::now()));
        Ok(servers)
    }

    /// The server's tools: fresh, or read now (bounded), or the last known ones.
    async fn list(&self, server: &McpServerConfig) -> Option<Arc<Vec<rmcp::model::Tool>>> {
        let recently_failed = self
            .unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&server.row.id)
            .is_some_and(|(at, version)| {
                *version == server.row.updated_at && at.elapsed() < RETRY_UNREACHABLE
            });
        if recently_failed {
            return self
                .known_tools
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&server.row.id)
                .cloned();
        }
        let read = tokio::time::timeout(self.timeout, async {
            let session = self.session(server).await?;
            let cached = session
                .tools
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some((tools, at)) = cached {
                if at.elapsed() < TOOLS_TTL && !session.tools_changed.load(Ordering::Relaxed) {
                    return anyhow::Ok(tools);
                }
            }
            session.tools_changed.store(false, Ordering::Relaxed);
            let tools = match session.service.list_all_tools().await {
                Ok(tools) => Arc::new(tools),
                Err(error) => {
                    self.drop_session(server.row.id).await;
                    return Err(anyhow::anyhow!("list its tools: {error}"));
                }
            };
            *session.tools.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((tools.clone(), Instant::now()));
            Ok(tools)
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {:?}", self.timeout)));
        let mut unreachable = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        match &read {
            Ok(_) => unreachable.remove(&server.row.id),
            Err(_) => unreachable.insert(server.row.id, (Instant::now(), server.row.updated_at)),
        };
        drop(unreachable);
        let mut known = self.known_tools.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(tools) => {
                known.insert(server.row.id, tools.clone());
                Some(tools)
            }
            Err(error) => {
                tracing::warn!(server = %server.row.name, error = format!("{error:#}"), "MCP server unavailable; offering the tools it last listed, if any");
                known.get(&server.row.id).cloned()
            }
        }
    }

    /// The open session to `server`, opened now if there is none (or it is for an older
    /// configuration).
    async fn session(&self, server: &McpServerConfig) -> anyhow::Result<Arc<Session>> {
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(&server.row.id) {
            if session.version == server.row.updated_at && !session.service.is_closed() {
                return Ok(session.clone());
            }
        }
        let session = Arc::new(self.connect(server).await?);
        if let Some(old) = sessions.insert(server.row.id, session.clone()) {
            old.service.cancellation_token().cancel();
        }
        Ok(session)
    }

    async fn drop_session(&self, server_id: Uuid) {
        if let Some(old) = self.sessions.lock().await.remove(&server_id) {
            old.service.cancellation_token().cancel();
        }
    }

    async fn connect(&self, server: &McpServerConfig) -> anyhow::Result<Session> {
        let auth = match (&server.sealed_auth, &self.encryption_key) {
            (None, _) => McpAuth::None,
            (Some(sealed), Some(key)) => {
                let text = chatd_shared::crypto::open(key, sealed)?;
                serde_json::from_str(&text)?
            }
            (Some(_), None) => anyhow::bail!(
                "the server's auth is sealed, and this worker has no --encryption-key to open it"
            ),
        };
        let tools_changed = Arc::new(AtomicBool::new(false));
        let handler = Handler {
            tools_changed: tools_changed.clone(),
        };
        let service = match server.row.transport {
            McpTransport::StreamableHttp => {
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                let mut config =
                    StreamableHttpClientTransportConfig::with_uri(server.row.url.as_str());
                match &auth {
                    McpAuth::None => {}
                    McpAuth::Bearer { token } => config.auth_header = Some(token.clone()),
                    McpAuth::Headers { headers } => {
                        for (name, value) in headers {
                            config.custom_headers.insert(
                                axum::http::HeaderName::from_bytes(name.as_bytes())?,
                                axum::http::HeaderValue::from_str(value)?,
                            );
                        }
                    }
                }
                let transport = rmcp::transport::StreamableHttpClientTransport::with_client(
                    self.http.clone(),
                    config,
                );
                handler.serve(transport).await?
            }
            McpTransport::Sse => {
                let transport =
                    sse::connect(&self.legacy_http, &server.row.url, &auth, self.timeout).await?;
                handler.serve(transport).await?
            }
        };
        tracing::info!(server = %server.row.name, "MCP session opened");
        Ok(Session {
            version: server.row.updated_at,
            service,
            tools: Mutex::new(None),
            tools_changed,
        })
    }

    async fn call(
        &self,
        server: &McpServerConfig,
        tool_name: &str,
        args: Value,
    ) -> Result<Value, String> {
        let name = &server.row.name;
        let session = tokio::time::timeout(self.timeout, self.session(server))
            .await
            .map_err(|_| {
                format!(
                    "the MCP server `{name}` did not answer within {:?}",
                    self.timeout
                )
            })?
            .map_err(|error| format!("the MCP server `{name}` is unreachable: {error:#}"))?;
        let arguments = match args {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => return Err(format!("the arguments must be a JSON object, got {other}")),
        };
        let params = CallToolRequestParams::new(tool_name.to_owned()).with_arguments(arguments);
        match session.service.call_tool(params).await {
            Ok(result) => result_value(serde_json::to_value(&result).unwrap_or(Value::Null)),
            Err(error) => {
                if session.service.is_closed() {
                    self.drop_session(server.row.id).await;
                }
                Err(format!("the MCP server `{name}` failed the call: {error}"))
            }
        }
    }
}

/// Whether the server's allow and deny lists let `tool` through.
fn allowed(server: &McpServerConfig, tool: &str) -> bool {
    let allow = server
        .row
        .tool_allowlist
        .as_ref()
        .is_none_or(|list| list.iter().any(|name| name == tool));
    let deny = server
        .row
        .tool_denylist
        .as_ref()
        .is_some_and(|list| list.iter().any(|name| name == tool));
    allow && !deny
}

/// What the model reads of a `tools/call` result (as JSON): the structured content when
/// there is some, else the text blocks joined (other blocks as JSON); `isError` makes it an
/// error result.
fn result_value(result: Value) -> Result<Value, String> {
    let is_error = result
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let value = match result.get("structuredContent") {
        Some(structured) if !structured.is_null() => structured.clone(),
        _ => {
            let blocks = result
                .get("content")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let all_text = blocks.iter().all(|block| block["type"] == "text");
            if all_text {
                Value::String(
                    blocks
                        .iter()
                        .filter_map(|block| block["text"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            } else {
                Value::Array(blocks)
            }
        }
    };
    let text = value.to_string();
    let value = if text.len() > MAX_RESULT_BYTES {
        let mut end = MAX_RESULT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Value::String(format!(
            "{}… (cut: the result has {} bytes)",
            &text[..end],
            text.len()
        ))
    } else {
        value
    };
    if is_error {
        Err(match value {
            Value::String(text) => text,
            other => other.to_string(),
        })
    } else {
        Ok(value)
    }
}

/// A tool of an MCP server, as one turn offers it.
struct McpTool {
    hub: Arc<McpHub>,
    server: Arc<McpServerConfig>,
    offered_name: String,
    tool_name: String,
    description: String,
    schema: Value,
}

impl Tool for McpTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.offered_name.clone(),
            description: self.description.clone(),
            parameters: self.schema.clone(),
        }
    }

    fn call(
        &self,
        args: Value,
        _context: ToolContext,
    ) -> BoxFuture<'static, Result<Value, String>> {
        let hub = self.hub.clone();
        let server = self.server.clone();
        let tool_name = self.tool_name.clone();
        async move { hub.call(&server, &tool_name, args).await }.boxed()
    }
}

/// The reqwest (0.13) client the SDK's Streamable HTTP transport uses: rustls with ring and
/// the system's roots, like every other client of chatd.
fn sdk_http_client() -> anyhow::Result<reqwest_mcp::Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest_mcp::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(10))
        .build()?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn results_read_structured_content_then_text_and_errors_are_errors() {
        assert_eq!(
            result_value(
                json!({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
            ),
            Ok(json!("a\nb"))
        );
        assert_eq!(
            result_value(
                json!({"content": [{"type": "text", "text": "x"}], "structuredContent": {"n": 1}})
            ),
            Ok(json!({"n": 1}))
        );
        let image = json!({"type": "image", "data": "AA==", "mimeType": "image/png"});
        assert_eq!(
            result_value(json!({"content": [image.clone()]})),
            Ok(json!([image]))
        );
        assert_eq!(
            result_value(json!({"content": [{"type": "text", "text": "bad"}], "isError": true})),
            Err("bad".to_owned())
        );
        let long = "x".repeat(MAX_RESULT_BYTES + 10);
        let cut = result_value(json!({"content": [{"type": "text", "text": long}]})).unwrap();
        assert!(cut.as_str().unwrap().ends_with(&format!(
            "(cut: the result has {} bytes)",
            MAX_RESULT_BYTES + 12
        )));
    }
}
