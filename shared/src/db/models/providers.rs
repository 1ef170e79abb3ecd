//! Providers: rows, creation (with the same field checks on every path), patches and
//! deletion.

use crate::db::sql::Sql;
use deadpool_postgres::Client;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::validate::{self, FieldError};

/// A provider as stored, minus the key itself (only whether there is one).
#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub id: Uuid,
    /// One of `ProviderKind`'s names (the table has a CHECK constraint).
    pub kind: String,
    pub display_name: String,
    pub base_url: String,
    pub has_api_key: bool,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const PROVIDER_COLUMNS: &str = "p.id, p.kind, p.display_name, p.base_url, \
    p.api_key_encrypted IS NOT NULL, p.enabled, p.created_at, p.updated_at";

impl ProviderRow {
    fn from_row(row: &Row) -> ProviderRow {
        ProviderRow {
            id: row.get(0),
            kind: row.get(1),
            display_name: row.get(2),
            base_url: row.get(3),
            has_api_key: row.get(4),
            enabled: row.get(5),
            created_at: row.get(6),
            updated_at: row.get(7),
        }
    }
}

/// A validated provider to insert. `sealed_api_key` is already encrypted (`crypto::seal`).
pub struct NewProvider {
    pub kind: String,
    pub display_name: String,
    pub base_url: String,
    pub sealed_api_key: Option<Vec<u8>>,
    pub enabled: bool,
}

/// A validated provider patch; `None` keeps the stored value.
#[derive(Default)]
pub struct ProviderPatch {
    pub kind: Option<String>,
    pub display_name: Option<String>,
    pub base_url: Option<String>,
    /// `Some(None)` erases the key, `Some(Some(sealed))` replaces it.
    pub sealed_api_key: Option<Option<Vec<u8>>>,
    pub enabled: Option<bool>,
}

/// What `DELETE /providers/{id}` did. Either way the provider is gone from every route.
pub enum ProviderDeletion {
    /// No model config ever used it: the row is gone.
    Deleted,
    /// Only deleted model configs (kept for spend history) still reference it, so the row
    /// stays, hidden (`deleted`), disabled and with its API key erased.
    Retired,
}

pub async fn list_providers(client: &Client) -> StoreResult<Vec<ProviderRow>> {
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers p WHERE NOT p.deleted \
         ORDER BY p.created_at, p.id"
    );
    let rows = client.rows(&sql, &[]).await?;
    Ok(rows.iter().map(ProviderRow::from_row).collect())
}

pub async fn get_provider(client: &Client, id: Uuid) -> StoreResult<ProviderRow> {
    let sql =
        format!("SELECT {PROVIDER_COLUMNS} FROM providers p WHERE p.id = $1 AND NOT p.deleted");
    client
        .row_opt(&sql, &[&id])
        .await?
        .map(|row| ProviderRow::from_row(&row))
        .ok_or(StoreError::NotFound("provider"))
}

/// Inserts a provider after checking its fields (`base_url` as `validate::base_url`, the
/// display name as `validate::name`; `kind` must be one of `ProviderKind`'s names).
pub async fn create_provider(client: &Client, provider: NewProvider) -> StoreResult<ProviderRow> {
    if crate::domain::ProviderKind::parse(&provider.kind).is_none() {
        return Err(FieldError::new(
            "kind",
            format!(
                "kind: unknown provider kind {:?} (openai, openai-responses, anthropic, \
                 openai-compatible, mock)",
                provider.kind
            ),
        )
        .into());
    }
    let base_url = validate::base_url(&provider.base_url)?;
    let display_name = validate::name(&provider.display_name, "display_name", false)?;
    let display_name = if display_name.is_empty() {
        provider.kind.clone()
    } else {
        display_name
    };
    let sql = format!(
        "INSERT INTO providers AS p (kind, display_name, base_url, api_key_encrypted, enabled) \
         VALUES ($1, $2, $3, $4, $5) RETURNING {PROVIDER_COLUMNS}"
    );
    let row = client
        .row(
            &sql,
            &[
                &provider.kind,
                &display_name,
                &base_url,
                &provider.sealed_api_key,
                &provider.enabled,
            ],
        )
        .await?;
    Ok(ProviderRow::from_row(&row))
}

/// # Locks
/// Row lock on the provider until the transaction ends.
pub async fn patch_provider(
    client: &mut Client,
    id: Uuid,
    patch: ProviderPatch,
) -> StoreResult<ProviderRow> {
    let transaction = client.transaction().await?;
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM providers p WHERE p.id = $1 AND NOT p.deleted FOR UPDATE"
    );
    let current = transaction
        .row_opt(&sql, &[&id])
        .await?
        .map(|row| ProviderRow::from_row(&row))
        .ok_or(StoreError::NotFound("provider"))?;
    let kind = patch.kind.unwrap_or(current.kind);
    let display_name = match patch.display_name {
        Some(name) => validate::name(&name, "display_name", false)?,
        None => current.display_name,
    };
    let base_url = match patch.base_url {
        Some(url) => validate::base_url(&url)?,
        None => current.base_url,
    };
    let enabled = patch.enabled.unwrap_or(current.enabled);
    let (set_key, sealed_key) = match patch.sealed_api_key {
        Some(sealed) => (true, sealed),
        None => (false, None),
    };
    let sql = format!(
        "UPDATE providers p SET kind = $2, display_name = $3, base_url = $4, enabled = $5, \
         api_key_encrypted = CASE WHEN $6 THEN $7 ELSE p.api_key_encrypted END, \
         updated_at = now() WHERE p.id = $1 RETURNING {PROVIDER_COLUMNS}"
    );
    let row = transaction
        .row(
            &sql,
            &[
                &id,
                &kind,
                &display_name,
                &base_url,
                &enabled,
                &set_key,
                &sealed_key,
            ],
        )
        .await?;
    transaction.commit().await?;
    Ok(ProviderRow::from_row(&row))
}

/// Deletes a provider no live model config uses (409 naming them otherwise).
///
/// # Locks
/// Row lock on the provider, so a concurrent model config insert referencing it waits for
/// this transaction (and then fails its foreign key if the row was deleted).
pub async fn delete_provider(client: &mut Client, id: Uuid) -> StoreResult<ProviderDeletion> {
    let transaction = client.transaction().await?;
    transaction
        .row_opt(
            "SELECT 1 FROM providers WHERE id = $1 AND NOT deleted FOR UPDATE",
            &[&id],
        )
        .await?
        .ok_or(StoreError::NotFound("provider"))?;
    let users = transaction
        .rows(
            "SELECT id, model, deleted FROM model_configs WHERE provider_id = $1 \
             ORDER BY deleted, created_at, id",
            &[&id],
        )
        .await?;
    let live: Vec<String> = users
        .iter()
        .filter(|row| !row.get::<_, bool>(2))
        .map(|row| format!("{} ({})", row.get::<_, Uuid>(0), row.get::<_, String>(1)))
        .collect();
    if !live.is_empty() {
        let shown = live.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
        let more = if live.len() > 20 { ", …" } else { "" };
        return Err(StoreError::Conflict(format!(
            "the provider is used by {} model config(s): {shown}{more}; delete them or move \
             them to another provider first",
            live.len()
        )));
    }
    let deletion = if users.is_empty() {
        transaction
            .exec("DELETE FROM providers WHERE id = $1", &[&id])
            .await
            .map_err(foreign_key_conflict)?;
        ProviderDeletion::Deleted
    } else {
        transaction
            .exec(
                "UPDATE providers SET deleted = true, enabled = false, api_key_encrypted = NULL, \
                 updated_at = now() WHERE id = $1",
                &[&id],
            )
            .await?;
        ProviderDeletion::Retired
    };
    transaction.commit().await?;
    Ok(deletion)
}

fn foreign_key_conflict(error: tokio_postgres::Error) -> StoreError {
    if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        StoreError::Conflict("the provider is still referenced by a model config".into())
    } else {
        error.into()
    }
}
