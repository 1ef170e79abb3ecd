//! MCP servers an administrator configured (`mcp_servers`): rows, field checks, the secrets
//! they carry (sealed like provider API keys, never returned), and which servers a chat uses.
//!
//! A chat records the servers it picked at creation (`chats.mcp_server_ids`: the ids it
//! named, else the `default_on` servers of that moment); `force_on` servers apply to every
//! chat at every turn. Disabled or deleted servers are skipped.

use std::collections::BTreeMap;

use deadpool_postgres::Client;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use uuid::Uuid;

use super::models::StoreError;
use super::sql::Sql;
use crate::validate::{self, longer_than, FieldError};

/// Server names: what tool names are prefixed with (`<name>__<tool>`).
pub const NAME_PATTERN: &str = "^[a-z0-9_-]{1,32}$";
/// Entries of an allow or deny list, and their length.
pub const MAX_TOOL_LIST: usize = 256;
pub const MAX_TOOL_NAME_CHARS: usize = 128;
/// Custom headers of a `headers` auth.
pub const MAX_HEADERS: usize = 32;
pub const MAX_HEADER_VALUE_CHARS: usize = 4096;
/// Headers chatd sets itself; `headers` auth cannot name them (in any case).
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// How chatd reaches the server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum McpTransport {
    /// The current transport: JSON-RPC over POST, answers as JSON or SSE, one endpoint.
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    /// The older HTTP+SSE transport: an SSE stream (GET) names the endpoint to POST to.
    #[serde(rename = "sse")]
    Sse,
}

impl McpTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            McpTransport::StreamableHttp => "streamable-http",
            McpTransport::Sse => "sse",
        }
    }

    fn parse(text: &str) -> McpTransport {
        match text {
            "sse" => McpTransport::Sse,
            _ => McpTransport::StreamableHttp,
        }
    }
}

/// Which chats get the server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Every chat, whatever it asked for.
    ForceOn,
    /// Chats created without `mcp_server_ids`, and those that name it.
    DefaultOn,
    /// Only chats that name it in `mcp_server_ids`.
    DefaultOff,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::ForceOn => "force_on",
            Availability::DefaultOn => "default_on",
            Availability::DefaultOff => "default_off",
        }
    }

    fn parse(text: &str) -> Availability {
        match text {
            "force_on" => Availability::ForceOn,
            "default_off" => Availability::DefaultOff,
            _ => Availability::DefaultOn,
        }
    }
}

/// The secret part of a server's authentication, sealed as JSON (`crypto::seal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum McpAuth {
    None,
    Bearer { token: String },
    Headers { headers: BTreeMap<String, String> },
}

impl McpAuth {
    pub fn kind(&self) -> &'static str {
        match self {
            McpAuth::None => "none",
            McpAuth::Bearer { .. } => "bearer",
            McpAuth::Headers { .. } => "headers",
        }
    }

    /// Checks a token or headers (they travel in HTTP headers). Messages never echo them.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            McpAuth::None => Ok(()),
            McpAuth::Bearer { token } => validate::api_key(token).map(|_| ()).map_err(|error| {
                FieldError::new(
                    "auth.token",
                    error.message.replacen("api_key", "auth.token", 1),
                )
            }),
            McpAuth::Headers { headers } => {
                if headers.is_empty() || headers.len() > MAX_HEADERS {
                    return Err(FieldError::new(
                        "auth.headers",
                        format!("auth.headers: give 1 to {MAX_HEADERS} headers"),
                    ));
                }
                for (name, value) in headers {
                    let valid_name = !name.is_empty()
                        && name.len() <= 128
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                    if !valid_name {
                        return Err(FieldError::new(
                            "auth.headers",
                            "auth.headers: a header name must be 1-128 token characters (letters, digits, !#$%&'*+-.^_`|~)",
                        ));
                    }
                    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                        return Err(FieldError::new(
                            "auth.headers",
                            format!("auth.headers: `{name}` is set by chatd itself"),
                        ));
                    }
                    if value.is_empty()
                        || longer_than(value, MAX_HEADER_VALUE_CHARS)
                        || !value.bytes().all(|b| (0x20..0x7f).contains(&b))
                    {
                        return Err(FieldError::new(
                            "auth.headers",
                            format!("auth.headers: the value of `{name}` must be 1-{MAX_HEADER_VALUE_CHARS} visible ASCII characters"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A server as stored, minus its secret (only whether there is one).
#[derive(Debug, Clone)]
pub struct McpServerRow {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub transport: McpTransport,
    /// `none`, `bearer` or `headers`.
    pub auth_type: String,
    pub has_auth: bool,
    pub tool_allowlist: Option<Vec<String>>,
    pub tool_denylist: Option<Vec<String>>,
    pub availability: Availability,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "s.id, s.name, s.url, s.transport, s.auth_type, \
    s.auth_encrypted IS NOT NULL, s.tool_allowlist, s.tool_denylist, s.availability, s.enabled, \
    s.created_at, s.updated_at";

impl McpServerRow {
    fn from_row(row: &Row) -> McpServerRow {
        McpServerRow {
            id: row.get(0),
            name: row.get(1),
            url: row.get(2),
            transport: McpTransport::parse(row.get(3)),
            auth_type: row.get(4),
            has_auth: row.get(5),
            tool_allowlist: row.get(6),
            tool_denylist: row.get(7),
            availability: Availability::parse(row.get(8)),
            enabled: row.get(9),
            created_at: row.get(10),
            updated_at: row.get(11),
        }
    }
}

/// The fields of a server; on a patch, `None` keeps the stored value.
#[derive(Debug, Default)]
pub struct McpServerFields {
    pub name: Option<String>,
    pub url: Option<String>,
    pub transport: Option<McpTransport>,
    /// `(kind, sealed secret)`: `none` has no secret.
    pub auth: Option<(&'static str, Option<Vec<u8>>)>,
    /// `Some(None)` clears the list.
    pub tool_allowlist: Option<Option<Vec<String>>>,
    pub tool_denylist: Option<Option<Vec<String>>>,
    pub availability: Option<Availability>,
    pub enabled: Option<bool>,
}

/// Checks a server name (see [`NAME_PATTERN`]).
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            "name: 1-32 characters of a-z, 0-9, `_` and `-` (tools are offered as `<name>__<tool>`)",
        ))
    }
}

/// Checks an MCP endpoint URL (the grammar of provider base URLs).
pub fn check_url(url: &str) -> Result<String, FieldError> {
    validate::base_url(url)
        .map_err(|error| FieldError::new("url", error.message.replacen("base_url", "url", 1)))
}

/// Checks an allow or deny list of tool names (as the server names them).
pub fn check_tool_list(list: &[String], field: &str) -> Result<(), FieldError> {
    if list.len() > MAX_TOOL_LIST {
        return Err(FieldError::new(
            field,
            format!("{field}: at most {MAX_TOOL_LIST} tool names"),
        ));
    }
    for name in list {
        if name.is_empty()
            || longer_than(name, MAX_TOOL_NAME_CHARS)
            || name.chars().any(char::is_control)
        {
            return Err(FieldError::new(
                field,
                format!("{field}: tool names are 1-{MAX_TOOL_NAME_CHARS} characters without control characters"),
            ));
        }
    }
    Ok(())
}

pub async fn list(client: &Client) -> Result<Vec<McpServerRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM mcp_servers s ORDER BY s.name");
    let rows = client.rows(&sql, &[]).await?;
    Ok(rows.iter().map(McpServerRow::from_row).collect())
}

pub async fn get(client: &Client, id: Uuid) -> Result<McpServerRow, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM mcp_servers s WHERE s.id = $1");
    client
        .row_opt(&sql, &[&id])
        .await?
        .map(|row| McpServerRow::from_row(&row))
        .ok_or(StoreError::NotFound("MCP server"))
}

/// Inserts a server; `name` and `url` are required (checked by the caller), the rest default
/// (`streamable-http`, no auth, `default_on`, enabled). A taken name is 409.
pub async fn create(client: &Client, fields: McpServerFields) -> Result<McpServerRow, StoreError> {
    let name = fields.name.unwrap_or_default();
    check_name(&name)?;
    let url = check_url(&fields.url.unwrap_or_default())?;
    let (auth_type, sealed) = fields.auth.unwrap_or(("none", None));
    let sql = format!(
        "INSERT INTO mcp_servers AS s (name, url, transport, auth_type, auth_encrypted, \
             tool_allowlist, tool_denylist, availability, enabled) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    );
    let row = client
        .row(
            &sql,
            &[
                &name,
                &url,
                &fields
                    .transport
                    .unwrap_or(McpTransport::StreamableHttp)
                    .as_str(),
                &auth_type,
                &sealed,
                &fields.tool_allowlist.flatten(),
                &fields.tool_denylist.flatten(),
                &fields
                    .availability
                    .unwrap_or(Availability::DefaultOn)
                    .as_str(),
                &fields.enabled.unwrap_or(true),
            ],
        )
        .await
        .map_err(|error| name_taken(error, &name))?;
    Ok(McpServerRow::from_row(&row))
}

/// Applies a patch (fields already checked by the caller).
///
/// # Locks
/// Row lock on the server until the transaction ends.
pub async fn patch(
    client: &mut Client,
    id: Uuid,
    fields: McpServerFields,
) -> Result<McpServerRow, StoreError> {
    let transaction = client.transaction().await?;
    let sql = format!("SELECT {COLUMNS} FROM mcp_servers s WHERE s.id = $1 FOR UPDATE");
    let current = transaction
        .row_opt(&sql, &[&id])
        .await?
        .map(|row| McpServerRow::from_row(&row))
        .ok_or(StoreError::NotFound("MCP server"))?;
    let name = fields.name.unwrap_or(current.name);
    check_name(&name)?;
    let url = match fields.url {
        Some(url) => check_url(&url)?,
        None => current.url,
    };
    let (set_auth, auth_type, sealed) = match fields.auth {
        Some((kind, sealed)) => (true, kind.to_owned(), sealed),
        None => (false, current.auth_type, None),
    };
    let sql = format!(
        "UPDATE mcp_servers s SET name = $2, url = $3, transport = $4, auth_type = $5, \
             auth_encrypted = CASE WHEN $6 THEN $7 ELSE s.auth_encrypted END, \
             tool_allowlist = $8, tool_denylist = $9, availability = $10, enabled = $11, \
             updated_at = now() \
         WHERE s.id = $1 RETURNING {COLUMNS}"
    );
    let row = transaction
        .row(
            &sql,
            &[
                &id,
                &name,
                &url,
                &fields.transport.unwrap_or(current.transport).as_str(),
                &auth_type,
                &set_auth,
                &sealed,
                &fields.tool_allowlist.unwrap_or(current.tool_allowlist),
                &fields.tool_denylist.unwrap_or(current.tool_denylist),
                &fields.availability.unwrap_or(current.availability).as_str(),
                &fields.enabled.unwrap_or(current.enabled),
            ],
        )
        .await
        .map_err(|error| name_taken(error, &name))?;
    transaction.commit().await?;
    Ok(McpServerRow::from_row(&row))
}

/// Deletes a server (chats that named it go on without it).
pub async fn delete(client: &Client, id: Uuid) -> Result<(), StoreError> {
    let deleted = client
        .exec("DELETE FROM mcp_servers WHERE id = $1", &[&id])
        .await?;
    if deleted == 0 {
        return Err(StoreError::NotFound("MCP server"));
    }
    Ok(())
}

fn name_taken(error: tokio_postgres::Error, name: &str) -> StoreError {
    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(format!("an MCP server named `{name}` exists already"))
    } else {
        error.into()
    }
}

/// The servers a new chat records: the ones it names (each must exist and be enabled: 422
/// naming the entry otherwise), else the `default_on` ones. `force_on` servers are not
/// recorded: they apply at every turn.
pub async fn pick_for_chat<C: Sql>(
    client: &C,
    named: Option<&[Uuid]>,
) -> Result<Vec<Uuid>, StoreError> {
    match named {
        None => {
            let rows = client
                .rows(
                    "SELECT id FROM mcp_servers WHERE enabled AND availability = 'default_on' \
                     ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        }
        Some(ids) => {
            let rows = client
                .rows(
                    "SELECT id FROM mcp_servers WHERE enabled AND id = ANY($1)",
                    &[&ids],
                )
                .await?;
            let found: Vec<Uuid> = rows.iter().map(|row| row.get(0)).collect();
            if let Some(index) = ids.iter().position(|id| !found.contains(id)) {
                let field = format!("mcp_server_ids[{index}]");
                return Err(StoreError::MissingReference(FieldError::new(
                    field.clone(),
                    format!("{field}: no enabled MCP server with this id"),
                )));
            }
            let mut unique: Vec<Uuid> = Vec::with_capacity(ids.len());
            for id in ids {
                if !unique.contains(id) {
                    unique.push(*id);
                }
            }
            Ok(unique)
        }
    }
}

/// What a worker needs to reach a server: its row and its unsealed secret.
#[derive(Debug, Clone)]
pub struct McpServerConfig {
    pub row: McpServerRow,
    /// The sealed secret (`crypto::open` with the encryption key, then JSON [`McpAuth`]).
    pub sealed_auth: Option<Vec<u8>>,
}

/// Every enabled server, for a worker's cache.
pub async fn load_enabled<C: Sql>(
    client: &C,
) -> Result<Vec<McpServerConfig>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {COLUMNS}, s.auth_encrypted FROM mcp_servers s WHERE s.enabled ORDER BY s.name"
    );
    let rows = client.rows(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|row| McpServerConfig {
            row: McpServerRow::from_row(row),
            sealed_auth: row.get(12),
        })
        .collect())
}
