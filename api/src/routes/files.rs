//! `POST /files`, `GET /files/{id}`, `GET /files/{id}/meta`: attachments, owner-scoped.
//!
//! An upload is the raw body (its `Content-Type` is only a hint) or a `multipart/form-data`
//! body with one field, `file`; `?name=` names it (else the multipart filename). At
//! most `--max-file-bytes` (413, read no further); the type is sniffed from the bytes
//! (`chatd_shared::files`; an empty file is empty text), anything not accepted is 415. Messages refer to a file with a part
//! `{"type": "file", "file_id"}`.

use axum::body::Body;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::cursor::{parse_uuid, query_pairs};
use crate::error::{ApiError, ApiResult};
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::content::plain_field;
use crate::store::files::{self as store, FileRow};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileMeta {
    pub id: Uuid,
    pub name: String,
    /// Read from the bytes: `image/png`, `image/jpeg`, `image/gif`, `image/webp`,
    /// `application/pdf` or `text/*`.
    pub media_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&FileRow> for FileMeta {
    fn from(row: &FileRow) -> FileMeta {
        FileMeta {
            id: row.id,
            name: row.name.clone(),
            media_type: row.media_type.clone(),
            size_bytes: row.size_bytes,
            sha256: hex::encode(&row.sha256),
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileResponse {
    pub file: FileMeta,
}

/// A multipart upload: one field, `file`.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the multipart form only
pub struct FileUpload {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[utoipa::path(post, path = "/files", operation_id = "uploadFile", tag = "files",
    params(("name" = Option<String>, Query, max_length = 255, pattern = r"^[^\u0000/\\]*$",
        description = "The file's name (default: the multipart filename, else empty)")),
    request_body(content(
        (Vec<u8> = "application/octet-stream"),
        (FileUpload = "multipart/form-data"),
    ), description = "The bytes (any Content-Type; the type is read from them), or a multipart form"),
    responses((status = 201, description = "Stored; refer to it in a message part `{\"type\": \"file\", \"file_id\"}`", body = FileResponse)))]
pub async fn upload(
    State(state): State<AppState>,
    user: CurrentUser,
    RawQuery(raw): RawQuery,
    request: Request,
) -> ApiResult<Response> {
    let mut name = None;
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "name" => {
                check_name(&value, "name")?;
                name = Some(value);
            }
            other => return Err(ApiError::unknown_query_parameter(other)),
        }
    }
    let limit = state.config.max_file_bytes;
    if let Some(length) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
    {
        // A multipart body carries a little framing around the file.
        if length > limit as u64 + 64 * 1024 {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.is_empty() {
        return Err(ApiError::BadRequest(
            "send the file as the body, with a Content-Type (any: the type is read from the \
             bytes), or as multipart/form-data"
                .into(),
        ));
    }
    let (bytes, declared, filename) = if content_type.starts_with("multipart/form-data") {
        read_multipart(request, &state, limit).await?
    } else {
        let bytes = read_limited(request.into_body(), limit).await?;
        (bytes, Some(content_type), None)
    };
    let media_type = chatd_shared::files::sniff(&bytes, declared.as_deref()).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!("chatd accepts {}", chatd_shared::files::ACCEPTED))
    })?;
    let name = match name.or(filename) {
        Some(name) => {
            check_name(&name, "name")?;
            name
        }
        None => String::new(),
    };
    let client = state.pool.get().await?;
    let row = store::insert_file(&*client, user.id, &name, &media_type, &bytes).await?;
    Ok(json_response(
        StatusCode::CREATED,
        FileResponse {
            file: FileMeta::from(&row),
        },
    ))
}

fn check_name(name: &str, field: &str) -> ApiResult<()> {
    plain_field(name, field, 255)?;
    if name.contains(['/', '\\']) {
        return Err(ApiError::field(
            field,
            format!("{field}: a file name, without `/` or `\\`"),
        ));
    }
    Ok(())
}

async fn read_limited(body: Body, limit: usize) -> ApiResult<Vec<u8>> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(error)
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(error) => Err(ApiError::BadRequest(format!("read the body: {error}"))),
    }
}

/// The `file` field of a multipart body — the only field it may have: (bytes, its
/// Content-Type, its filename).
async fn read_multipart(
    request: Request,
    state: &AppState,
    limit: usize,
) -> ApiResult<(Vec<u8>, Option<String>, Option<String>)> {
    let bad = |error: axum::extract::multipart::MultipartError| {
        ApiError::BadRequest(format!("malformed multipart body: {}", error.body_text()))
    };
    let mut multipart = axum::extract::Multipart::from_request(request, state)
        .await
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let mut file = None;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name != "file" {
            return Err(ApiError::field(
                name.clone(),
                format!("unknown multipart field `{name}`: send one field named `file`"),
            ));
        }
        if file.is_some() {
            return Err(ApiError::field("file", "file: send one file per upload"));
        }
        let filename = field.file_name().map(str::to_owned);
        let declared = field.content_type().map(str::to_owned);
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        file = Some((bytes, declared, filename));
    }
    file.ok_or_else(|| ApiError::field("file", "file: the multipart body has no `file` field"))
}

#[utoipa::path(get, path = "/files/{file_id}", operation_id = "downloadFile", tag = "files",
    params(("file_id" = Uuid, Path, description = "A file of the caller")),
    responses((status = 200, description = "The bytes, with their type and `Content-Disposition: attachment`",
        content_type = "*/*", body = Vec<u8>)))]
pub async fn download(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(file_id): Path<String>,
) -> ApiResult<Response> {
    let file_id = parse_uuid(&file_id, "file_id")?;
    let client = state.pool.get().await?;
    let (row, bytes) = store::file_data(&*client, user.id, file_id).await?;
    drop(client);
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&row.media_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let disposition = content_disposition(&row.name, row.id);
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>` (RFC 6266).
fn content_disposition(name: &str, id: Uuid) -> String {
    let name = if name.is_empty() {
        id.to_string()
    } else {
        name.to_owned()
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[utoipa::path(get, path = "/files/{file_id}/meta", operation_id = "getFileMeta", tag = "files",
    params(("file_id" = Uuid, Path, description = "A file of the caller")),
    responses((status = 200, description = "The file's name, type, size and hash", body = FileResponse)))]
pub async fn meta(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(file_id): Path<String>,
) -> ApiResult<Response> {
    let file_id = parse_uuid(&file_id, "file_id")?;
    let client = state.pool.get().await?;
    let row = store::file_meta(&*client, user.id, file_id).await?;
    Ok(json_response(
        StatusCode::OK,
        FileResponse {
            file: FileMeta::from(&row),
        },
    ))
}
