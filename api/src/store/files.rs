//! Uploaded files (`files`), their links to chats (`chat_files`), and the check of the `file`
//! parts of a message before it is stored.

use base64::Engine;
use chatd_shared::db::sql::Sql;
use serde_json::Value;
use sha2::Digest;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Decoded bytes a `file` part may carry inline (`data`); larger files are uploaded.
pub const MAX_INLINE_BYTES: usize = 512 * 1024;

/// A `files` row without its bytes.
pub struct FileRow {
    pub id: Uuid,
    pub name: String,
    pub media_type: String,
    pub size_bytes: i64,
    pub sha256: Vec<u8>,
    pub created_at: OffsetDateTime,
}

const FILE_COLUMNS: &str = "f.id, f.name, f.media_type, f.size_bytes, f.sha256, f.created_at";

impl FileRow {
    fn from_row(row: &tokio_postgres::Row) -> FileRow {
        FileRow {
            id: row.get(0),
            name: row.get(1),
            media_type: row.get(2),
            size_bytes: row.get(3),
            sha256: row.get(4),
            created_at: row.get(5),
        }
    }
}

pub async fn insert_file(
    client: &impl Sql,
    owner_id: Uuid,
    name: &str,
    media_type: &str,
    bytes: &[u8],
) -> ApiResult<FileRow> {
    let sha256 = sha2::Sha256::digest(bytes).to_vec();
    let sql = format!(
        "INSERT INTO files AS f (owner_id, name, media_type, size_bytes, sha256, data) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {FILE_COLUMNS}"
    );
    let row = client
        .row(
            &sql,
            &[
                &owner_id,
                &name,
                &media_type,
                &(bytes.len() as i64),
                &sha256,
                &bytes,
            ],
        )
        .await?;
    Ok(FileRow::from_row(&row))
}

/// The caller's file (`NotFound` for missing and foreign files alike).
pub async fn file_meta(client: &impl Sql, owner_id: Uuid, file_id: Uuid) -> ApiResult<FileRow> {
    let sql = format!("SELECT {FILE_COLUMNS} FROM files f WHERE f.id = $1 AND f.owner_id = $2");
    let row = client
        .row_opt(&sql, &[&file_id, &owner_id])
        .await?
        .ok_or(ApiError::NotFound("file"))?;
    Ok(FileRow::from_row(&row))
}

/// The caller's file with its bytes.
pub async fn file_data(
    client: &impl Sql,
    owner_id: Uuid,
    file_id: Uuid,
) -> ApiResult<(FileRow, Vec<u8>)> {
    let sql =
        format!("SELECT {FILE_COLUMNS}, f.data FROM files f WHERE f.id = $1 AND f.owner_id = $2");
    let row = client
        .row_opt(&sql, &[&file_id, &owner_id])
        .await?
        .ok_or(ApiError::NotFound("file"))?;
    Ok((FileRow::from_row(&row), row.get(6)))
}

/// What the `file` parts of a checked message refer to.
#[derive(Default)]
pub struct Attachments {
    /// Uploaded files the message uses (linked to its chat once stored).
    pub file_ids: Vec<Uuid>,
    /// Whether any part is an image (the model must accept images).
    pub has_images: bool,
}

/// Checks the `file` parts of a message's storage form (`content`, an array of parts) for
/// `owner_id` and completes them: an uploaded file (`file_id`) must be the owner's (else 422
/// naming the part) and gets its stored type and name; inline `data` must be base64 of at most
/// [`MAX_INLINE_BYTES`] of an accepted type (the type is read from the bytes: 415 otherwise).
pub async fn check_parts(
    client: &impl Sql,
    owner_id: Uuid,
    content: &mut Value,
    field: &str,
) -> ApiResult<Attachments> {
    let mut attachments = Attachments::default();
    let Value::Array(parts) = content else {
        return Ok(attachments);
    };
    for (index, part) in parts.iter_mut().enumerate() {
        if part.get("type").and_then(Value::as_str) != Some("file") {
            continue;
        }
        let part_field = format!("{field}[{index}]");
        let file_id = part
            .get("file_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let data = part.get("data").and_then(Value::as_str).map(str::to_owned);
        let media_type = match (file_id, data) {
            (Some(file_id), None) => {
                let id = Uuid::parse_str(&file_id).map_err(|_| {
                    ApiError::field(
                        format!("{part_field}.file_id"),
                        format!("{part_field}.file_id: not a valid UUID"),
                    )
                })?;
                let file = file_meta(client, owner_id, id)
                    .await
                    .map_err(|error| match error {
                        ApiError::NotFound(_) => ApiError::MissingReference {
                            field: format!("{part_field}.file_id"),
                            message: format!(
                                "{part_field}.file_id: no such file (upload it with POST /files)"
                            ),
                        },
                        other => other,
                    })?;
                part["media_type"] = Value::String(file.media_type.clone());
                if !file.name.is_empty() {
                    part["name"] = Value::String(file.name.clone());
                }
                attachments.file_ids.push(id);
                file.media_type
            }
            (None, Some(data)) => {
                let bytes = chatd_shared::files::BASE64
                    .decode(data.as_bytes())
                    .map_err(|_| {
                        ApiError::field(
                            format!("{part_field}.data"),
                            format!("{part_field}.data: not valid base64"),
                        )
                    })?;
                if bytes.is_empty() || bytes.len() > MAX_INLINE_BYTES {
                    return Err(ApiError::field(
                        format!("{part_field}.data"),
                        format!(
                            "{part_field}.data: 1 to {MAX_INLINE_BYTES} bytes inline; upload larger files with POST /files"
                        ),
                    ));
                }
                let declared = part.get("media_type").and_then(Value::as_str);
                let media_type = chatd_shared::files::sniff(&bytes, declared).ok_or_else(|| {
                    ApiError::UnsupportedMediaType(format!(
                        "{part_field}.data: chatd accepts {}",
                        chatd_shared::files::ACCEPTED
                    ))
                })?;
                part["media_type"] = Value::String(media_type.clone());
                media_type
            }
            _ => {
                return Err(ApiError::field(
                    part_field.clone(),
                    format!("{part_field}: a file part has either `file_id` or `data`"),
                ))
            }
        };
        attachments.has_images |= chatd_shared::files::is_image(&media_type);
    }
    Ok(attachments)
}

/// 400 when the message has images and the model it runs on (`model_config_id`, else the
/// chat's — `chat` is `(chat_id, owner_id)` — else the default) says it accepts none.
pub async fn check_images_accepted(
    client: &impl Sql,
    attachments: &Attachments,
    model_config_id: Option<Uuid>,
    chat: Option<(Uuid, Uuid)>,
    field: &str,
) -> ApiResult<()> {
    let (chat_id, owner_id) = chat.unzip();
    if !attachments.has_images {
        return Ok(());
    }
    let row = client
        .row_opt(
            "SELECT mc.supports_images, mc.model FROM model_configs mc WHERE mc.id = coalesce( \
                 $1::uuid, \
                 (SELECT c.model_config_id FROM chats c WHERE c.id = $2::uuid \
                  AND c.owner_id = $3::uuid), \
                 (SELECT d.id FROM model_configs d WHERE d.is_default AND NOT d.deleted))",
            &[&model_config_id, &chat_id, &owner_id],
        )
        .await?;
    match row {
        Some(row) if !row.get::<_, bool>(0) => Err(ApiError::field(
            field,
            format!(
                "{field}: the model `{}` accepts no images (its config says supports_images: false)",
                row.get::<_, String>(1)
            ),
        )),
        _ => Ok(()),
    }
}

/// [`check_parts`], then [`check_images_accepted`]: what every route that stores a user
/// message runs on its content.
pub async fn check_message(
    client: &impl Sql,
    owner_id: Uuid,
    content: &mut Value,
    field: &str,
    model_config_id: Option<Uuid>,
    chat_id: Option<Uuid>,
) -> ApiResult<Attachments> {
    let attachments = check_parts(client, owner_id, content, field).await?;
    let chat = chat_id.map(|chat_id| (chat_id, owner_id));
    check_images_accepted(client, &attachments, model_config_id, chat, field).await?;
    Ok(attachments)
}

/// Links the files a message uses to its chat (idempotent).
pub async fn link(client: &impl Sql, chat_id: Uuid, file_ids: &[Uuid]) -> ApiResult<()> {
    if file_ids.is_empty() {
        return Ok(());
    }
    client
        .exec(
            "INSERT INTO chat_files (chat_id, file_id) SELECT $1, unnest($2::uuid[]) \
             ON CONFLICT DO NOTHING",
            &[&chat_id, &file_ids],
        )
        .await?;
    Ok(())
}
