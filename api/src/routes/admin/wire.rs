//! Wire shapes of `/providers` and `/model-configs` (see `openapi.json`).
//!
//! Provider API keys are write-only: requests may carry `api_key`, responses only say
//! `has_api_key`.

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use chatd_shared::domain::ProviderKind;

use crate::store::admin::{ModelConfigRow, ProviderRow};

#[derive(Debug, Serialize)]
pub struct Provider {
    pub id: Uuid,
    pub kind: String,
    pub display_name: String,
    pub base_url: String,
    /// Whether an API key is stored; the key itself is never returned.
    pub has_api_key: bool,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&ProviderRow> for Provider {
    fn from(row: &ProviderRow) -> Provider {
        Provider {
            id: row.id,
            kind: row.kind.clone(),
            display_name: row.display_name.clone(),
            base_url: row.base_url.clone(),
            has_api_key: row.has_api_key,
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ProviderResponse {
    pub provider: Provider,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProviderRequest {
    pub kind: ProviderKind,
    /// Defaults to the kind.
    pub display_name: Option<String>,
    pub base_url: String,
    pub api_key: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchProviderRequest {
    pub kind: Option<ProviderKind>,
    pub display_name: Option<String>,
    pub base_url: Option<String>,
    /// Absent: unchanged; `null`: erase the key; a string: replace it.
    #[serde(default, deserialize_with = "present")]
    pub api_key: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// A model config as administrators see it.
#[derive(Debug, Serialize)]
pub struct ModelConfig {
    pub id: Uuid,
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
    pub deleted: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&ModelConfigRow> for ModelConfig {
    fn from(row: &ModelConfigRow) -> ModelConfig {
        ModelConfig {
            id: row.id,
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
            deleted: row.deleted,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A model config as ordinary users see it: what they need to pick one and to anticipate
/// its cost, nothing about the provider.
#[derive(Debug, Serialize)]
pub struct PublicModelConfig {
    pub id: Uuid,
    pub model: String,
    pub display_name: String,
    pub context_limit: i32,
    pub max_output_tokens: Option<i32>,
    pub input_price_micros: Option<i64>,
    pub output_price_micros: Option<i64>,
    pub cache_read_price_micros: Option<i64>,
    pub cache_write_price_micros: Option<i64>,
    pub is_default: bool,
}

impl From<&ModelConfigRow> for PublicModelConfig {
    fn from(row: &ModelConfigRow) -> PublicModelConfig {
        PublicModelConfig {
            id: row.id,
            model: row.model.clone(),
            display_name: row.display_name.clone(),
            context_limit: row.context_limit,
            max_output_tokens: row.max_output_tokens,
            input_price_micros: row.input_price_micros,
            output_price_micros: row.output_price_micros,
            cache_read_price_micros: row.cache_read_price_micros,
            cache_write_price_micros: row.cache_write_price_micros,
            is_default: row.is_default,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModelConfigResponse<T> {
    pub model_config: T,
}

/// Lists of providers and model configs are short and never paginated (`has_more` is always
/// false, `next` null); the fields keep the shape of every other list.
#[derive(Debug, Serialize)]
pub struct ItemList<T> {
    pub items: Vec<T>,
    pub has_more: bool,
    pub next: Option<String>,
}

impl<T> ItemList<T> {
    pub fn all(items: Vec<T>) -> ItemList<T> {
        ItemList {
            items,
            has_more: false,
            next: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateModelConfigRequest {
    pub provider_id: Uuid,
    pub model: String,
    /// Defaults to `model`.
    pub display_name: Option<String>,
    pub context_limit: Option<i32>,
    pub compression_threshold: Option<i32>,
    pub max_output_tokens: Option<i32>,
    pub input_price_micros: Option<i64>,
    pub output_price_micros: Option<i64>,
    pub cache_read_price_micros: Option<i64>,
    pub cache_write_price_micros: Option<i64>,
    pub is_default: Option<bool>,
    pub enabled: Option<bool>,
}

/// Absent fields are unchanged; for the nullable ones (`max_output_tokens`, prices) `null`
/// clears the value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchModelConfigRequest {
    pub provider_id: Option<Uuid>,
    pub model: Option<String>,
    pub display_name: Option<String>,
    pub context_limit: Option<i32>,
    pub compression_threshold: Option<i32>,
    #[serde(default, deserialize_with = "present")]
    pub max_output_tokens: Option<Option<i32>>,
    #[serde(default, deserialize_with = "present")]
    pub input_price_micros: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub output_price_micros: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub cache_read_price_micros: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub cache_write_price_micros: Option<Option<i64>>,
    pub is_default: Option<bool>,
    pub enabled: Option<bool>,
}

/// A field that is present (possibly `null`) becomes `Some(_)`; an absent one stays `None`
/// through `#[serde(default)]`.
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse_json;

    #[test]
    fn patch_tells_absent_from_null() {
        let absent: PatchProviderRequest = parse_json(br#"{"enabled": false}"#).unwrap();
        assert_eq!(absent.api_key, None);
        let null: PatchProviderRequest = parse_json(br#"{"api_key": null}"#).unwrap();
        assert_eq!(null.api_key, Some(None));
        let set: PatchProviderRequest = parse_json(br#"{"api_key": "sk"}"#).unwrap();
        assert_eq!(set.api_key, Some(Some("sk".into())));
        let prices: PatchModelConfigRequest =
            parse_json(br#"{"input_price_micros": null, "output_price_micros": 5}"#).unwrap();
        assert_eq!(prices.input_price_micros, Some(None));
        assert_eq!(prices.output_price_micros, Some(Some(5)));
        assert_eq!(prices.cache_read_price_micros, None);
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, field) in [
            (r#"{"kind": "gpt", "base_url": "http://x"}"#, "kind"),
            (
                r#"{"kind": "openai", "base_url": "http://x", "secret": 1}"#,
                "secret",
            ),
            (r#"{"kind": "openai", "base_url": 5}"#, "base_url"),
        ] {
            match parse_json::<CreateProviderRequest>(body.as_bytes()) {
                Err(crate::error::ApiError::Validation { field: named, .. }) => {
                    assert_eq!(named, field, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
