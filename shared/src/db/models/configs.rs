//! Model configs: rows, field rules, and the writes that keep exactly one default.

use crate::db::sql::Sql;
use deadpool_postgres::{Client, Transaction};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::validate::{self, FieldError};

/// `pg_advisory_xact_lock` key serialising changes of the default model config.
const DEFAULT_LOCK: i64 = 0x6368_6174_645f_6466; // "chatd_df"

/// A model config as stored.
#[derive(Debug, Clone)]
pub struct ModelConfigRow {
    pub id: Uuid,
    pub provider_id: Uuid,
    pub model: String,
    pub display_name: String,
    pub context_limit: i32,
    pub compression_threshold: i32,
    pub max_output_tokens: Option<i32>,
    /// Prices in micro-dollars per million tokens; `None` = unpriced.
    pub input_price_micros: Option<i64>,
    pub output_price_micros: Option<i64>,
    pub cache_read_price_micros: Option<i64>,
    pub cache_write_price_micros: Option<i64>,
    pub is_default: bool,
    pub enabled: bool,
    pub deleted: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Whether the model accepts images.
    pub supports_images: bool,
}

const MODEL_COLUMNS: &str = "mc.id, mc.provider_id, mc.model, mc.display_name, \
    mc.context_limit, mc.compression_threshold, mc.max_output_tokens, mc.input_price_micros, \
    mc.output_price_micros, mc.cache_read_price_micros, mc.cache_write_price_micros, \
    mc.is_default, mc.enabled, mc.deleted, mc.created_at, mc.updated_at, mc.supports_images";

/// Configs ordinary users may choose (what the worker can resolve).
const USABLE: &str = crate::usable_model_config!();

impl ModelConfigRow {
    fn from_row(row: &Row) -> ModelConfigRow {
        ModelConfigRow {
            id: row.get(0),
            provider_id: row.get(1),
            model: row.get(2),
            display_name: row.get(3),
            context_limit: row.get(4),
            compression_threshold: row.get(5),
            max_output_tokens: row.get(6),
            input_price_micros: row.get(7),
            output_price_micros: row.get(8),
            cache_read_price_micros: row.get(9),
            cache_write_price_micros: row.get(10),
            is_default: row.get(11),
            enabled: row.get(12),
            deleted: row.get(13),
            created_at: row.get(14),
            updated_at: row.get(15),
            supports_images: row.get(16),
        }
    }
}

/// The writable fields of a model config (a create, or a row with a patch merged in).
#[derive(Debug, Clone)]
pub struct ModelConfigFields {
    pub provider_id: Uuid,
    pub model: String,
    pub display_name: String,
    pub context_limit: i32,
    pub compression_threshold: i32,
    pub max_output_tokens: Option<i32>,
    pub input_price_micros: Option<i64>,
    pub output_price_micros: Option<i64>,
    pub cache_read_price_micros: Option<i64>,
    pub cache_write_price_micros: Option<i64>,
    pub is_default: bool,
    pub enabled: bool,
    pub supports_images: bool,
}

/// Default `context_limit` (as in the schema).
pub const DEFAULT_CONTEXT_LIMIT: i32 = 128_000;
/// Default `compression_threshold` (as in the schema).
pub const DEFAULT_COMPRESSION_THRESHOLD: i32 = 70;
/// Highest accepted price: one million dollars per million tokens.
pub const MAX_PRICE_MICROS: i64 = 1_000_000_000_000;

pub fn check_context_limit(value: i32) -> Result<i32, FieldError> {
    validate::range(value, "context_limit", 1, i32::MAX)
}

pub fn check_compression_threshold(value: i32) -> Result<i32, FieldError> {
    validate::range(value, "compression_threshold", 0, 100)
}

pub fn check_max_output_tokens(value: i32) -> Result<i32, FieldError> {
    validate::range(value, "max_output_tokens", 1, i32::MAX)
}

pub fn check_price(value: Option<i64>, field: &str) -> Result<Option<i64>, FieldError> {
    value
        .map(|value| validate::range(value, field, 0, MAX_PRICE_MICROS))
        .transpose()
}

/// The default must be usable: a disabled default would make every chat without a usable
/// model fail although a default "exists". `blamed` is the field the error names.
pub fn check_default_enabled(fields: &ModelConfigFields, blamed: &str) -> Result<(), FieldError> {
    if fields.is_default && !fields.enabled {
        return Err(FieldError::new(
            blamed,
            format!(
                "{blamed}: the default model config must be enabled (make another config the \
                 default first, or set is_default to false)"
            ),
        ));
    }
    Ok(())
}

impl ModelConfigFields {
    /// A new enabled, non-default config of `model` with the schema's defaults.
    pub fn new(provider_id: Uuid, model: &str) -> Result<ModelConfigFields, FieldError> {
        let model = validate::name(model, "model", true)?;
        Ok(ModelConfigFields {
            provider_id,
            display_name: model.clone(),
            model,
            context_limit: DEFAULT_CONTEXT_LIMIT,
            compression_threshold: DEFAULT_COMPRESSION_THRESHOLD,
            max_output_tokens: None,
            input_price_micros: None,
            output_price_micros: None,
            cache_read_price_micros: None,
            cache_write_price_micros: None,
            is_default: false,
            enabled: true,
            supports_images: true,
        })
    }

    /// Every rule a stored config obeys; every write path checks it.
    pub fn check(&self, blamed_for_default: &str) -> Result<(), FieldError> {
        validate::name(&self.model, "model", true)?;
        validate::name(&self.display_name, "display_name", false)?;
        check_context_limit(self.context_limit)?;
        check_compression_threshold(self.compression_threshold)?;
        if let Some(tokens) = self.max_output_tokens {
            check_max_output_tokens(tokens)?;
        }
        for (value, field) in [
            (self.input_price_micros, "input_price_micros"),
            (self.output_price_micros, "output_price_micros"),
            (self.cache_read_price_micros, "cache_read_price_micros"),
            (self.cache_write_price_micros, "cache_write_price_micros"),
        ] {
            check_price(value, field)?;
        }
        check_default_enabled(self, blamed_for_default)
    }
}

impl From<&ModelConfigRow> for ModelConfigFields {
    fn from(row: &ModelConfigRow) -> ModelConfigFields {
        ModelConfigFields {
            provider_id: row.provider_id,
            model: row.model.clone(),
            display_name: row.display_name.clone(),
            context_limit: row.context_limit,
            compression_threshold: row.compression_threshold,
            max_output_tokens: row.max_output_tokens,
            input_price_micros: row.input_price_micros,
            output_price_micros: row.output_price_micros,
            cache_read_price_micros: row.cache_read_price_micros,
            cache_write_price_micros: row.cache_write_price_micros,
            is_default: row.is_default,
            enabled: row.enabled,
            supports_images: row.supports_images,
        }
    }
}

/// All configs (`include_deleted`: also soft-deleted ones), defaults first.
pub async fn list_model_configs(
    client: &Client,
    include_deleted: bool,
) -> StoreResult<Vec<ModelConfigRow>> {
    let sql = format!(
        "SELECT {MODEL_COLUMNS} FROM model_configs mc WHERE $1 OR NOT mc.deleted \
         ORDER BY mc.is_default DESC, mc.created_at, mc.id"
    );
    let rows = client.rows(&sql, &[&include_deleted]).await?;
    Ok(rows.iter().map(ModelConfigRow::from_row).collect())
}

/// Configs an ordinary user may choose, defaults first.
pub async fn list_usable_model_configs(client: &Client) -> StoreResult<Vec<ModelConfigRow>> {
    let sql = format!(
        "SELECT {MODEL_COLUMNS} FROM model_configs mc WHERE {USABLE} \
         ORDER BY mc.is_default DESC, mc.created_at, mc.id"
    );
    let rows = client.rows(&sql, &[]).await?;
    Ok(rows.iter().map(ModelConfigRow::from_row).collect())
}

/// One config; `usable_only` hides what ordinary users may not choose.
pub async fn get_model_config(
    client: &Client,
    id: Uuid,
    usable_only: bool,
) -> StoreResult<ModelConfigRow> {
    let sql = format!(
        "SELECT {MODEL_COLUMNS} FROM model_configs mc WHERE mc.id = $1 AND NOT mc.deleted \
         AND (NOT $2 OR ({USABLE}))"
    );
    client
        .row_opt(&sql, &[&id, &usable_only])
        .await?
        .map(|row| ModelConfigRow::from_row(&row))
        .ok_or(StoreError::NotFound("model config"))
}

/// Inserts a config; `is_default` moves the default to it in the same transaction.
pub async fn create_model_config(
    client: &mut Client,
    fields: ModelConfigFields,
) -> StoreResult<ModelConfigRow> {
    fields.check("is_default")?;
    let transaction = client.transaction().await?;
    if fields.is_default {
        take_default_lock(&transaction).await?;
    }
    check_provider(&transaction, fields.provider_id).await?;
    if fields.is_default {
        clear_default(&transaction, None).await?;
    }
    let sql = format!(
        "INSERT INTO model_configs AS mc (provider_id, model, display_name, context_limit, \
         compression_threshold, max_output_tokens, input_price_micros, output_price_micros, \
         cache_read_price_micros, cache_write_price_micros, is_default, enabled, \
         supports_images) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {MODEL_COLUMNS}"
    );
    let row = transaction
        .row(&sql, &field_params(&fields))
        .await
        .map_err(model_write_error)?;
    transaction.commit().await?;
    Ok(ModelConfigRow::from_row(&row))
}

/// Locks the config, lets `merge` validate and apply a patch to it, and writes the result.
/// A deleted config is not found (deletion is final).
///
/// # Locks
/// `DEFAULT_LOCK` when the patch makes it the default, then the config's row lock.
pub async fn patch_model_config(
    client: &mut Client,
    id: Uuid,
    becomes_default: bool,
    merge: impl FnOnce(&ModelConfigRow) -> StoreResult<ModelConfigFields>,
) -> StoreResult<ModelConfigRow> {
    let transaction = client.transaction().await?;
    if becomes_default {
        take_default_lock(&transaction).await?;
    }
    let sql = format!("SELECT {MODEL_COLUMNS} FROM model_configs mc WHERE mc.id = $1 FOR UPDATE");
    let current = transaction
        .row_opt(&sql, &[&id])
        .await?
        .map(|row| ModelConfigRow::from_row(&row))
        .ok_or(StoreError::NotFound("model config"))?;
    if current.deleted {
        // Deleted is gone, for every route (the list shows it to admins with
        // `include_deleted=true`, for spend history).
        return Err(StoreError::NotFound("model config"));
    }
    let fields = merge(&current)?;
    fields.check("is_default")?;
    if fields.provider_id != current.provider_id {
        check_provider(&transaction, fields.provider_id).await?;
    }
    if fields.is_default && !current.is_default {
        clear_default(&transaction, Some(id)).await?;
    }
    let sql = format!(
        "UPDATE model_configs mc SET provider_id = $1, model = $2, display_name = $3, \
         context_limit = $4, compression_threshold = $5, max_output_tokens = $6, \
         input_price_micros = $7, output_price_micros = $8, cache_read_price_micros = $9, \
         cache_write_price_micros = $10, is_default = $11, enabled = $12, \
         supports_images = $13, updated_at = now() \
         WHERE mc.id = $14 RETURNING {MODEL_COLUMNS}"
    );
    let mut params = field_params(&fields);
    params.push(&id);
    let row = transaction
        .row(&sql, &params)
        .await
        .map_err(model_write_error)?;
    transaction.commit().await?;
    Ok(ModelConfigRow::from_row(&row))
}

/// Soft delete: `deleted = true` (spend history keeps referencing the row) and no longer the
/// default. Deleting the default leaves the deployment without one. A deleted config is not
/// found again (every route answers 404 for it; only the admin list with
/// `include_deleted=true` still shows it).
pub async fn delete_model_config(client: &Client, id: Uuid) -> StoreResult<()> {
    let sql = "UPDATE model_configs SET deleted = true, is_default = false, updated_at = now() \
               WHERE id = $1 AND NOT deleted RETURNING id";
    client
        .row_opt(sql, &[&id])
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound("model config"))
}

async fn take_default_lock(transaction: &Transaction<'_>) -> StoreResult<()> {
    transaction
        .exec("SELECT pg_advisory_xact_lock($1)", &[&DEFAULT_LOCK])
        .await?;
    Ok(())
}

/// Clears the current default (except `keep`). The caller holds `DEFAULT_LOCK`.
async fn clear_default(transaction: &Transaction<'_>, keep: Option<Uuid>) -> StoreResult<()> {
    transaction
        .exec(
            "UPDATE model_configs SET is_default = false, updated_at = now() \
             WHERE is_default AND ($1::uuid IS NULL OR id <> $1)",
            &[&keep],
        )
        .await?;
    Ok(())
}

async fn check_provider(transaction: &Transaction<'_>, provider_id: Uuid) -> StoreResult<()> {
    transaction
        .row_opt(
            "SELECT 1 FROM providers WHERE id = $1 AND NOT deleted",
            &[&provider_id],
        )
        .await?
        .map(|_| ())
        .ok_or_else(unknown_provider)
}

fn unknown_provider() -> StoreError {
    StoreError::MissingReference(FieldError::new(
        "provider_id",
        "provider_id: no provider with this id",
    ))
}

/// Maps the constraint errors a race can still produce to client errors.
fn model_write_error(error: tokio_postgres::Error) -> StoreError {
    match error.code() {
        Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => unknown_provider(),
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
            StoreError::Conflict("another model config became the default concurrently".into())
        }
        _ => error.into(),
    }
}

fn field_params(fields: &ModelConfigFields) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    vec![
        &fields.provider_id,
        &fields.model,
        &fields.display_name,
        &fields.context_limit,
        &fields.compression_threshold,
        &fields.max_output_tokens,
        &fields.input_price_micros,
        &fields.output_price_micros,
        &fields.cache_read_price_micros,
        &fields.cache_write_price_micros,
        &fields.is_default,
        &fields.enabled,
        &fields.supports_images,
    ]
}
