//! Wire shapes of `/providers` and `/model-configs` (each derives its OpenAPI schema).
//!
//! Provider API keys are write-only: requests may carry `api_key`, responses only say
//! `has_api_key`.

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use chatd_shared::domain::ProviderKind;

use crate::body::JsonInt;
use crate::store::admin::{ModelConfigRow, ProviderRow};

#[derive(Debug, Serialize, ToSchema)]
pub struct Provider {
    pub id: Uuid,
    #[schema(value_type = ProviderKind)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderResponse {
    pub provider: Provider,
}

/// `base_url`: `http(s)://host[:port][/path]` — a host name (no `xn--` labels, the last
/// starting with a letter) or an IPv4 address (IPv6 literals are not accepted), no credentials, query or
/// fragment; trailing slashes are dropped. The document's pattern is the server's rule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProviderRequest {
    pub kind: ProviderKind,
    /// Defaults to the kind. No control characters; trimmed.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*(?!\n)$")]
    pub display_name: Option<String>,
    #[schema(max_length = 2048)] // pattern: validate::base_url_pattern, set by openapi::finish
    pub base_url: String,
    /// Write-only: no whitespace or control characters.
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+(?!\n)$"
    )]
    pub api_key: Option<String>,
    pub enabled: Option<bool>,
}

/// Absent or `null` fields are unchanged, except `api_key`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProviderRequest {
    pub kind: Option<ProviderKind>,
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*(?!\n)$")]
    pub display_name: Option<String>,
    #[schema(max_length = 2048)] // pattern: validate::base_url_pattern, set by openapi::finish
    pub base_url: Option<String>,
    /// Absent: unchanged; `null`: erase the key; a string: replace it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+(?!\n)$")]
    pub api_key: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// A model config as administrators see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)] // `additionalProperties: false`: tells it from the public shape
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
    /// Whether the model accepts images (else a message with one is refused, 400).
    pub supports_images: bool,
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
            supports_images: row.supports_images,
            deleted: row.deleted,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A model config as ordinary users see it: what they need to pick one and to anticipate
/// its cost, nothing about the provider.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelConfigResponse<T> {
    pub model_config: T,
}

/// What `GET /model-configs` and `GET /model-configs/{id}` answer: every field for
/// administrators, the public fields for other users.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ModelConfigView<T, P> {
    Admin(T),
    Public(P),
}

/// Lists of providers and model configs are short and never paginated (`has_more` is always
/// false, `next` null); the fields keep the shape of every other list.
#[derive(Debug, Serialize, ToSchema)]
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

/// Prices are micro-dollars per million tokens. A default config must be enabled
/// (`is_default: true` with `enabled: false` is refused).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelConfigRequest {
    /// An existing provider (else 404).
    pub provider_id: Uuid,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*(?!\n)$"
    )]
    pub model: String,
    /// Defaults to `model`.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*(?!\n)$")]
    pub display_name: Option<String>,
    #[schema(value_type = Option<i32>, minimum = 1)]
    pub context_limit: Option<JsonInt<i32>>,
    /// Percent of the context at which history is compacted.
    #[schema(value_type = Option<i32>, minimum = 0, maximum = 100)]
    pub compression_threshold: Option<JsonInt<i32>>,
    #[schema(value_type = Option<i32>, minimum = 1)]
    pub max_output_tokens: Option<JsonInt<i32>>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000_i64)]
    pub input_price_micros: Option<JsonInt<i64>>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000_i64)]
    pub output_price_micros: Option<JsonInt<i64>>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000_i64)]
    pub cache_read_price_micros: Option<JsonInt<i64>>,
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000_i64)]
    pub cache_write_price_micros: Option<JsonInt<i64>>,
    pub is_default: Option<bool>,
    pub enabled: Option<bool>,
    /// Default true; false refuses messages with images (400).
    pub supports_images: Option<bool>,
}

/// Absent fields are unchanged; for the nullable ones (`max_output_tokens`, prices) `null`
/// clears the value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchModelConfigRequest {
    /// An existing provider (else 404).
    pub provider_id: Option<Uuid>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*(?!\n)$"
    )]
    pub model: Option<String>,
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*(?!\n)$")]
    pub display_name: Option<String>,
    #[schema(value_type = Option<i32>, minimum = 1)]
    pub context_limit: Option<JsonInt<i32>>,
    #[schema(value_type = Option<i32>, minimum = 0, maximum = 100)]
    pub compression_threshold: Option<JsonInt<i32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>, minimum = 1)]
    pub max_output_tokens: Option<Option<JsonInt<i32>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000_i64)]
    pub input_price_micros: Option<Option<JsonInt<i64>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000_i64)]
    pub output_price_micros: Option<Option<JsonInt<i64>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000_i64)]
    pub cache_read_price_micros: Option<Option<JsonInt<i64>>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1000000000000_i64)]
    pub cache_write_price_micros: Option<Option<JsonInt<i64>>>,
    pub is_default: Option<bool>,
    pub enabled: Option<bool>,
    /// Default true; false refuses messages with images (400).
    pub supports_images: Option<bool>,
}

/// A field that is present (possibly `null`) becomes `Some(_)`; an absent one stays `None`
/// through `#[serde(default)]`.
pub(super) fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
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
        assert_eq!(prices.output_price_micros, Some(Some(JsonInt(5))));
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
