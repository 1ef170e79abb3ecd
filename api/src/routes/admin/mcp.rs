//! `GET/POST /mcp-servers`, `GET/PATCH/DELETE /mcp-servers/{mcp_server_id}` (admins only):
//! the MCP servers whose tools chats are offered (as `<name>__<tool>`).
//!
//! A server's token or headers are sealed with the replica's `--encryption-key` like provider
//! API keys and never returned (`has_auth`).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use chatd_shared::db::mcp::{self as store, Availability, McpAuth, McpServerRow, McpTransport};
use chatd_shared::pubsub::ConfigKind;

use super::wire::ItemList;
use super::{config_changed, AdminUser};
use crate::body::StrictJson;
use crate::cursor::parse_uuid;
use crate::error::{ApiError, ApiResult};
use crate::routes::json_response;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct McpServer {
    pub id: Uuid,
    /// Tools are offered to models as `<name>__<tool>`.
    pub name: String,
    pub url: String,
    pub transport: McpTransport,
    /// `none`, `bearer` or `headers`.
    pub auth_type: String,
    /// Whether a token or headers are stored; they are never returned.
    pub has_auth: bool,
    /// Only these tools (by the server's names) are offered; `null`: all.
    pub tool_allowlist: Option<Vec<String>>,
    /// These tools are never offered.
    pub tool_denylist: Option<Vec<String>>,
    pub availability: Availability,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&McpServerRow> for McpServer {
    fn from(row: &McpServerRow) -> McpServer {
        McpServer {
            id: row.id,
            name: row.name.clone(),
            url: row.url.clone(),
            transport: row.transport,
            auth_type: row.auth_type.clone(),
            has_auth: row.has_auth,
            tool_allowlist: row.tool_allowlist.clone(),
            tool_denylist: row.tool_denylist.clone(),
            availability: row.availability,
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct McpServerResponse {
    pub mcp_server: McpServer,
}

/// How chatd authenticates to the server (write-only).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpAuthInput {
    None,
    /// Sent as `Authorization: Bearer <token>`; no whitespace or control characters.
    Bearer {
        #[schema(
            min_length = 1,
            max_length = 4096,
            pattern = r"^[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+(?!\n)$"
        )]
        token: String,
    },
    /// Sent with every request: 1-32 headers, names of token characters (not `Host`,
    /// `Content-Type`, `Content-Length`, `Accept`, `Mcp-Session-Id`, `Mcp-Protocol-Version`,
    /// `Last-Event-ID`, in any case), values of 1-4096 visible ASCII characters.
    Headers {
        #[schema(schema_with = crate::openapi::schemas::mcp_headers)]
        headers: BTreeMap<String, String>,
    },
}

impl From<McpAuthInput> for McpAuth {
    fn from(input: McpAuthInput) -> McpAuth {
        match input {
            McpAuthInput::None => McpAuth::None,
            McpAuthInput::Bearer { token } => McpAuth::Bearer { token },
            McpAuthInput::Headers { headers } => McpAuth::Headers { headers },
        }
    }
}

/// `url`: `http(s)://host[:port][/path]`, the grammar of provider base URLs (no query).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMcpServerRequest {
    #[schema(pattern = r"^[a-z0-9_-]{1,32}$")]
    pub name: String,
    #[schema(max_length = 2048)] // pattern: validate::base_url_pattern, set by openapi::finish
    pub url: String,
    /// Default `streamable-http`.
    pub transport: Option<McpTransport>,
    /// Default `{"type": "none"}`.
    pub auth: Option<McpAuthInput>,
    #[schema(schema_with = crate::openapi::schemas::tool_list_or_null)]
    pub tool_allowlist: Option<Vec<String>>,
    #[schema(schema_with = crate::openapi::schemas::tool_list_or_null)]
    pub tool_denylist: Option<Vec<String>>,
    /// Default `default_on`.
    pub availability: Option<Availability>,
    pub enabled: Option<bool>,
}

/// Absent fields are unchanged; `auth` replaces the stored one; a `null` list clears it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMcpServerRequest {
    #[schema(pattern = r"^[a-z0-9_-]{1,32}$")]
    pub name: Option<String>,
    #[schema(max_length = 2048)] // pattern: validate::base_url_pattern, set by openapi::finish
    pub url: Option<String>,
    pub transport: Option<McpTransport>,
    pub auth: Option<McpAuthInput>,
    #[serde(default, deserialize_with = "super::wire::present")]
    #[schema(schema_with = crate::openapi::schemas::tool_list_or_null)]
    pub tool_allowlist: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "super::wire::present")]
    #[schema(schema_with = crate::openapi::schemas::tool_list_or_null)]
    pub tool_denylist: Option<Option<Vec<String>>>,
    pub availability: Option<Availability>,
    pub enabled: Option<bool>,
}

#[utoipa::path(get, path = "/mcp-servers", operation_id = "listMcpServers", tag = "admin",
    responses((status = 200, description = "Every MCP server, by name", body = ItemList<McpServer>)))]
pub async fn list(State(state): State<AppState>, _admin: AdminUser) -> ApiResult<Response> {
    let client = state.pool.get().await?;
    let rows = store::list(&client).await?;
    Ok(json_response(
        StatusCode::OK,
        ItemList::all(rows.iter().map(McpServer::from).collect()),
    ))
}

#[utoipa::path(get, path = "/mcp-servers/{mcp_server_id}", operation_id = "getMcpServer", tag = "admin",
    params(("mcp_server_id" = Uuid, Path, description = "An MCP server")),
    responses((status = 200, description = "The MCP server", body = McpServerResponse)))]
pub async fn get(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_uuid(&id, "mcp_server_id")?;
    let client = state.pool.get().await?;
    Ok(response(StatusCode::OK, &store::get(&client, id).await?))
}

#[utoipa::path(post, path = "/mcp-servers", operation_id = "createMcpServer", tag = "admin",
    request_body = CreateMcpServerRequest,
    responses((status = 201, description = "Created (409 when the name is taken)", body = McpServerResponse)))]
pub async fn create(
    State(state): State<AppState>,
    admin: AdminUser,
    StrictJson(request): StrictJson<CreateMcpServerRequest>,
) -> ApiResult<Response> {
    store::check_name(&request.name)?;
    let fields = store::McpServerFields {
        name: Some(request.name),
        url: Some(store::check_url(&request.url)?),
        transport: request.transport,
        auth: request.auth.map(|auth| seal(&state, auth)).transpose()?,
        tool_allowlist: Some(tool_list(request.tool_allowlist, "tool_allowlist")?),
        tool_denylist: Some(tool_list(request.tool_denylist, "tool_denylist")?),
        availability: request.availability,
        enabled: request.enabled,
    };
    let client = state.pool.get().await?;
    let row = store::create(&client, fields).await?;
    config_changed(&client, admin, ConfigKind::McpServer, row.id).await;
    Ok(response(StatusCode::CREATED, &row))
}

#[utoipa::path(patch, path = "/mcp-servers/{mcp_server_id}", operation_id = "patchMcpServer", tag = "admin",
    params(("mcp_server_id" = Uuid, Path, description = "An MCP server")), request_body = PatchMcpServerRequest,
    responses((status = 200, description = "The updated MCP server", body = McpServerResponse)))]
pub async fn patch(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
    StrictJson(request): StrictJson<PatchMcpServerRequest>,
) -> ApiResult<Response> {
    let id = parse_uuid(&id, "mcp_server_id")?;
    if let Some(name) = &request.name {
        store::check_name(name)?;
    }
    let fields = store::McpServerFields {
        name: request.name,
        url: request.url.as_deref().map(store::check_url).transpose()?,
        transport: request.transport,
        auth: request.auth.map(|auth| seal(&state, auth)).transpose()?,
        tool_allowlist: request
            .tool_allowlist
            .map(|list| tool_list(list, "tool_allowlist"))
            .transpose()?,
        tool_denylist: request
            .tool_denylist
            .map(|list| tool_list(list, "tool_denylist"))
            .transpose()?,
        availability: request.availability,
        enabled: request.enabled,
    };
    let mut client = state.pool.get().await?;
    let row = store::patch(&mut client, id, fields).await?;
    config_changed(&client, admin, ConfigKind::McpServer, row.id).await;
    Ok(response(StatusCode::OK, &row))
}

/// 204; chats that named the server go on without it.
#[utoipa::path(delete, path = "/mcp-servers/{mcp_server_id}", operation_id = "deleteMcpServer", tag = "admin",
    params(("mcp_server_id" = Uuid, Path, description = "An MCP server")),
    responses((status = 204, description = "Deleted; chats that named it go on without it")))]
pub async fn delete(
    State(state): State<AppState>,
    admin: AdminUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_uuid(&id, "mcp_server_id")?;
    let client = state.pool.get().await?;
    store::delete(&client, id).await?;
    config_changed(&client, admin, ConfigKind::McpServer, id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn response(status: StatusCode, row: &McpServerRow) -> Response {
    json_response(
        status,
        McpServerResponse {
            mcp_server: McpServer::from(row),
        },
    )
}

fn tool_list(list: Option<Vec<String>>, field: &str) -> ApiResult<Option<Vec<String>>> {
    if let Some(names) = &list {
        store::check_tool_list(names, field)?;
    }
    Ok(list)
}

/// Checks the auth and seals its secret with the replica's key.
fn seal(state: &AppState, input: McpAuthInput) -> ApiResult<(&'static str, Option<Vec<u8>>)> {
    let auth = McpAuth::from(input);
    auth.validate()?;
    if auth == McpAuth::None {
        return Ok(("none", None));
    }
    let key = state.config.encryption_key.as_ref().ok_or_else(|| {
        ApiError::field(
            "auth",
            "auth: this API replica has no encryption key to store secrets with; start it \
             with --encryption-key (CHATD_ENCRYPTION_KEY), the same key the workers use",
        )
    })?;
    let secret = serde_json::to_string(&auth).map_err(anyhow::Error::from)?;
    let sealed = chatd_shared::crypto::seal(&key.0, &secret)
        .map_err(|error| ApiError::Internal(error.context("seal the MCP server's auth")))?;
    Ok((auth.kind(), Some(sealed)))
}
