//! The one place where errors become HTTP responses.
//!
//! Body: `{"error": {"code", "message", "details"}}`. Internal details never reach clients in
//! 5xx bodies; they are logged here, where the error is handled.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Every error response: `{"error": {code, message, details}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    pub code: ErrorCode,
    /// For people; 5xx messages never carry internal details.
    pub message: String,
    pub details: ErrorDetails,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Validation,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    InvalidReference,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    SpendLimitExceeded,
    Unavailable,
    Internal,
}

/// What a client can act on: the field refused (`validation`, `invalid_reference`), the body limit, the wait before retrying.
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(deny_unknown_fields)] // `additionalProperties: false` in the document
pub struct ErrorDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// `spend_limit_exceeded`: the caller's limit for the current period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_micros: Option<i64>,
    /// `spend_limit_exceeded`: what the caller spent in the current period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_micros: Option<i64>,
    /// `spend_limit_exceeded`: when the period ends and the spend starts from zero.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resets_at: Option<time::OffsetDateTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with the offending field.
    #[error("{message}")]
    Validation { field: String, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("admin rights required")]
    Forbidden,
    /// 404. The same body for "does not exist" and "not yours" (never leak existence).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 422 for a body field that names something that does not exist (or is not the
    /// caller's): an unknown `model_config_id`, `parent_chat_id`, `provider_id`. Not 404: the
    /// addressed resource exists; what the body refers to does not.
    #[error("{message}")]
    MissingReference { field: String, message: String },
    /// 409 state conflict.
    #[error("{0}")]
    Conflict(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: a file of a type chatd does not accept (read from its bytes).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_s: u64 },
    /// 429 `spend_limit_exceeded` with `Retry-After` until the period resets.
    #[error("spend limit reached: {spent_micros} of {limit_micros} micro-dollars spent this {period}; it resets at {resets_at}")]
    SpendLimit {
        limit_micros: i64,
        spent_micros: i64,
        period: String,
        resets_at: time::OffsetDateTime,
    },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<chatd_shared::validate::FieldError> for ApiError {
    fn from(error: chatd_shared::validate::FieldError) -> ApiError {
        ApiError::Validation {
            field: error.field,
            message: error.message,
        }
    }
}

impl From<chatd_shared::db::models::StoreError> for ApiError {
    fn from(error: chatd_shared::db::models::StoreError) -> ApiError {
        use chatd_shared::db::models::StoreError;
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Field(field) => field.into(),
            StoreError::MissingReference(field) => ApiError::MissingReference {
                field: field.field,
                message: field.message,
            },
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Database(error) => error.into(),
        }
    }
}

impl ApiError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A query string named a parameter the route does not take.
    pub fn unknown_query_parameter(name: &str) -> ApiError {
        ApiError::field(name, format!("unknown query parameter `{name}`"))
    }

    /// Seconds until a 429 may succeed (at least 1).
    fn retry_after_s(&self) -> u64 {
        match self {
            ApiError::TooManyRequests { retry_after_s, .. } => *retry_after_s,
            ApiError::SpendLimit { resets_at, .. } => {
                let left = (*resets_at - time::OffsetDateTime::now_utc()).whole_seconds();
                left.max(1) as u64
            }
            _ => 1,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MissingReference { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } | ApiError::SpendLimit { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::Validation { .. } => ErrorCode::Validation,
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MissingReference { .. } => ErrorCode::InvalidReference,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::TooManyRequests { .. } => ErrorCode::RateLimited,
            ApiError::SpendLimit { .. } => ErrorCode::SpendLimitExceeded,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> ApiError {
        ApiError::Internal(anyhow::Error::new(error).context("query the database"))
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> ApiError {
        ApiError::Unavailable(format!("database connection: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let details = match &self {
            ApiError::Validation { field, .. } | ApiError::MissingReference { field, .. } => {
                ErrorDetails {
                    field: Some(field.clone()),
                    ..ErrorDetails::default()
                }
            }
            ApiError::PayloadTooLarge { limit } => ErrorDetails {
                limit_bytes: Some(*limit),
                ..ErrorDetails::default()
            },
            ApiError::TooManyRequests { retry_after_s, .. } => ErrorDetails {
                retry_after_s: Some(*retry_after_s),
                ..ErrorDetails::default()
            },
            ApiError::SpendLimit {
                limit_micros,
                spent_micros,
                resets_at,
                ..
            } => ErrorDetails {
                retry_after_s: Some(self.retry_after_s()),
                limit_micros: Some(*limit_micros),
                spent_micros: Some(*spent_micros),
                resets_at: Some(*resets_at),
                ..ErrorDetails::default()
            },
            _ => ErrorDetails::default(),
        };
        let message = match &self {
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                "internal error".to_string()
            }
            ApiError::Unavailable(reason) => {
                tracing::warn!(reason, "service unavailable");
                "service unavailable, retry later".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code(),
                message,
                details,
            },
        };
        let retry_after_s = match &self {
            ApiError::TooManyRequests { retry_after_s, .. } => Some(*retry_after_s),
            ApiError::SpendLimit { .. } => Some(self.retry_after_s()),
            _ => None,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(retry_after_s) = retry_after_s {
            if let Ok(value) = HeaderValue::from_str(&retry_after_s.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
