//! Strict JSON request bodies: capped before buffering, unknown fields rejected, and every
//! error names the offending field (`serde_path_to_error`).

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body of type `T`. Types used with it carry `#[serde(deny_unknown_fields)]`.
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        if let Some(length) = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
        {
            if length > limit as u64 {
                return Err(ApiError::PayloadTooLarge { limit });
            }
        }
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/json") {
            return Err(ApiError::BadRequest(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = read_capped(request.into_body(), limit).await?;
        parse_json(&bytes).map(StrictJson)
    }
}

/// An optional JSON body: none at all (no bytes) is `None`; anything else is parsed as
/// [`StrictJson`] would.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let has_json_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        let bytes = read_capped(request.into_body(), limit).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        if !has_json_type {
            return Err(ApiError::BadRequest(
                "expected no body, or a JSON body with Content-Type: application/json".into(),
            ));
        }
        // `null` is no body too (the document's schema for an optional body allows it).
        parse_json::<Option<T>>(&bytes).map(OptionalJson)
    }
}

/// Reads at most `limit` bytes; a longer (e.g. chunked) body fails as soon as it passes the
/// limit, without buffering the rest.
async fn read_capped(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::PayloadTooLarge { limit })
            } else {
                Err(ApiError::BadRequest(format!(
                    "read the request body: {error}"
                )))
            }
        }
    }
}

/// Parses JSON into `T`, mapping errors to a 400 that names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // For an unknown field the path already ends with the field's own name.
        let field = if path == "." { String::new() } else { path };
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if field.is_empty() {
            format!("invalid body: {inner}")
        } else {
            format!("invalid field `{field}`: {inner}")
        };
        ApiError::Validation { field, message }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::BadRequest(format!("malformed JSON: {error}")))?;
    Ok(value)
}

/// An integer field of a request. JSON Schema (and so the OpenAPI document) counts `5.0` as
/// an integer; serde does not. This accepts any JSON number with no fractional part that
/// fits `T`, and names the field otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonInt<T>(pub T);

impl<T: serde::Serialize> serde::Serialize for JsonInt<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: TryFrom<i64>> serde::Deserialize<'de> for JsonInt<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<T: TryFrom<i64>> serde::de::Visitor<'_> for Visitor<T> {
            type Value = JsonInt<T>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(formatter, "an integer in range")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<JsonInt<T>, E> {
                T::try_from(value)
                    .map(JsonInt)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(value), &self))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<JsonInt<T>, E> {
                let signed = i64::try_from(value)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))?;
                self.visit_i64(signed)
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<JsonInt<T>, E> {
                // 2^63 is exactly representable; anything at or past it does not fit i64.
                if value.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&value)
                {
                    self.visit_i64(value as i64)
                } else {
                    Err(E::invalid_type(serde::de::Unexpected::Float(value), &self))
                }
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::JsonInt;

    #[test]
    fn integral_numbers_are_integers() {
        let parse = |text: &str| serde_json::from_str::<JsonInt<i32>>(text).map(|int| int.0);
        assert_eq!(parse("5").unwrap(), 5);
        assert_eq!(parse("-7.0").unwrap(), -7);
        assert_eq!(parse("1e3").unwrap(), 1000);
        for bad in ["5.5", "3000000000", "1e300", "\"5\"", "null", "true"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
