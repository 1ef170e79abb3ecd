//! The advisor's configuration (`site_config` key `advisor`, `GET`/`PUT
//! /api/v1/config/advisor`): whether root chats are offered the `advisor` tool, how often a
//! turn may use it, how long its answers may be, and the model it runs on.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::sql::Sql;
use crate::validate::FieldError;

const KEY: &str = "advisor";
/// Bounds of the settings.
pub const MAX_USES_PER_TURN: i32 = 20;
pub const MAX_OUTPUT_TOKENS: i32 = 32_000;

/// The advisor's settings as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdvisorConfig {
    /// Offer the `advisor` tool to root chats.
    pub enabled: bool,
    /// Consultations one turn may make (1-20); later ones get a `limit_reached` result.
    pub max_uses_per_turn: i32,
    /// Longest advice, in tokens (1-32000).
    pub max_output_tokens: i32,
    /// The model config the advisor runs on; `null`: the chat's own model.
    pub model_config_id: Option<Uuid>,
}

impl Default for AdvisorConfig {
    fn default() -> AdvisorConfig {
        AdvisorConfig {
            enabled: false,
            max_uses_per_turn: 3,
            max_output_tokens: 1024,
            model_config_id: None,
        }
    }
}

impl AdvisorConfig {
    /// Checks the ranges, naming the field.
    pub fn check(&self) -> Result<(), FieldError> {
        if !(1..=MAX_USES_PER_TURN).contains(&self.max_uses_per_turn) {
            return Err(FieldError::new(
                "max_uses_per_turn",
                format!("max_uses_per_turn: from 1 to {MAX_USES_PER_TURN}"),
            ));
        }
        if !(1..=MAX_OUTPUT_TOKENS).contains(&self.max_output_tokens) {
            return Err(FieldError::new(
                "max_output_tokens",
                format!("max_output_tokens: from 1 to {MAX_OUTPUT_TOKENS}"),
            ));
        }
        Ok(())
    }
}

/// The stored settings (the defaults, disabled, when none are).
pub async fn read<C: Sql>(client: &C) -> Result<AdvisorConfig, tokio_postgres::Error> {
    Ok(super::site_config::get(client, KEY)
        .await?
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default())
}

/// Stores the settings (checked by the caller).
pub async fn write<C: Sql>(
    client: &C,
    config: &AdvisorConfig,
) -> Result<(), tokio_postgres::Error> {
    let value = serde_json::to_value(config).unwrap_or_default();
    super::site_config::put(client, KEY, &value).await
}
