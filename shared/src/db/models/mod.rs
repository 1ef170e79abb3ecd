//! Providers and model configs: their rows, what makes a config usable, and the one write
//! path for each, used by the admin API, `chatd admin` and `chatd dev` alike.
//!
//! Updates lock the row (`SELECT … FOR UPDATE`), merge the patch in Rust and write every
//! column back, so a patch is applied to the row as it is at commit time. Callers publish
//! `chatd_config` after the commit (`pubsub::publish_config_change`).
//!
//! **Invariant:** at most one non-deleted model config has `is_default` (the partial unique
//! index `model_configs_one_default`). Every write that sets it first takes
//! `DEFAULT_LOCK` and clears the previous default in the same transaction, so concurrent
//! switches serialise instead of failing on the index.
//!
//! `providers` and `configs` hold each table's rows and writes; this module the shared error
//! type, the rule of a usable config and the seed of a fresh database.

mod configs;
mod providers;

pub use configs::*;
pub use providers::*;

use deadpool_postgres::Client;
use uuid::Uuid;

use crate::validate::FieldError;

/// Why a provider or model-config operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A field was refused (the API answers 400 naming it).
    #[error(transparent)]
    Field(#[from] FieldError),
    /// A field names something that does not exist, e.g. an unknown `provider_id` (the API
    /// answers 404 naming the field).
    #[error("{}", .0.message)]
    MissingReference(FieldError),
    /// The operation contradicts the current state (the API answers 409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

pub(crate) type StoreResult<T> = Result<T, StoreError>;

/// An `openai-compatible` provider at `base_url` and model `mock` on it as the default: how
/// `chatd chaos` and the test clusters seed a fresh database for `chatd mock-llm`.
pub async fn seed_default_model(client: &mut Client, base_url: &str) -> StoreResult<Uuid> {
    let provider = create_provider(
        client,
        NewProvider {
            kind: crate::domain::ProviderKind::OpenaiCompatible
                .as_str()
                .to_owned(),
            display_name: String::new(),
            base_url: base_url.to_owned(),
            sealed_api_key: None,
            enabled: true,
        },
    )
    .await?;
    let mut model = ModelConfigFields::new(provider.id, "mock")?;
    model.is_default = true;
    Ok(create_model_config(client, model).await?.id)
}

/// The condition a model config must meet to be chosen by users and run by workers: enabled,
/// not deleted, and its provider enabled. One definition for the API (lists, checks at chat
/// create and send) and the worker (model resolution); the config is aliased `mc`.
///
/// A macro so statements stay `&'static str` (`concat!`) for the prepared-statement cache.
#[macro_export]
macro_rules! usable_model_config {
    () => {
        "(mc.enabled AND NOT mc.deleted AND EXISTS \
         (SELECT 1 FROM providers up WHERE up.id = mc.provider_id AND up.enabled))"
    };
}
