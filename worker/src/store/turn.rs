//! What a turn reads before its first step — the prompt with the chat's tool and title state
//! (one statement), the model with its provider — and the title it stores afterwards.

use anyhow::Context;
use chatd_shared::db::sql::Sql;
use serde_json::Value;
use uuid::Uuid;

use chatd_shared::domain::{decode_parts, ChatStatus, ContentPart, ProviderKind, Role};

use crate::provider::{PromptMessage, ProviderEndpoint};
use crate::turn::context::{ContextError, LoadedChat, ModelChoice};
use crate::turn::prompt_cache::{CachedPrompt, PromptRow};

/// Loads the prompt and the chat's tool and title state in one statement. With `cached` (the
/// chat's rows as this worker last read them, `turn::prompt_cache`), only rows after the
/// newest cached one are read — unless the chat's `history_epoch` moved (an edit), which makes
/// the same statement read everything. Returns the prompt and the rows to cache.
pub async fn load_prompt(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    cached: Option<CachedPrompt>,
) -> Result<(LoadedChat, CachedPrompt), ContextError> {
    let (after, epoch) = cached
        .as_ref()
        .map_or((0_i64, -1_i32), |cached| (cached.last_id, cached.epoch));
    let rows = client
        .rows(
            "SELECT m.id, m.role, m.content, m.model_config_id, c.model_config_id, \
             c.dynamic_tools, c.title = '', m.provider_response_id, c.mcp_server_ids, \
             c.history_epoch, m.compressed, pg_column_size(m.content) FROM chats c \
             LEFT JOIN chat_messages m ON m.chat_id = c.id AND NOT m.deleted \
                 AND m.visibility <> 'user' AND (m.id > $2 OR c.history_epoch <> $3) \
                 AND (m.role = 'system' OR m.id >= coalesce((SELECT max(id) FROM chat_messages \
                      WHERE chat_id = $1 AND compressed AND NOT deleted), 0)) \
             WHERE c.id = $1 ORDER BY m.id",
            &[&chat_id, &after, &epoch],
        )
        .await?;
    let mut loaded = LoadedChat::default();
    let mut prompt = CachedPrompt::default();
    let mut fresh = Vec::with_capacity(rows.len());
    let mut bytes_read = 0_u64;
    let mut chat_model: Option<Uuid> = None;
    for (index, row) in rows.iter().enumerate() {
        if index == 0 {
            let tools: Value = row.get(5);
            loaded.dynamic_tools = serde_json::from_value(tools)
                .map_err(|error| ContextError::Config(format!("stored dynamic tools: {error}")))?;
            loaded.untitled = row.get(6);
            chat_model = row.get(4);
            loaded.wanted_model = chat_model;
            loaded.mcp_server_ids = row.get(8);
            let history_epoch: i32 = row.get(9);
            prompt = match cached {
                Some(ref cached) if cached.epoch == history_epoch => cached.clone(),
                _ => CachedPrompt {
                    epoch: history_epoch,
                    ..CachedPrompt::default()
                },
            };
        }
        let Some(id) = row.get::<_, Option<i64>>(0) else {
            continue; // nothing new (LEFT JOIN)
        };
        let role = Role::parse(row.get(1)).unwrap_or(Role::User);
        let content: Value = row.get(2);
        let bytes = row.get::<_, Option<i32>>(11).unwrap_or(0).max(0) as usize;
        bytes_read += bytes as u64;
        let mut parts: Vec<ContentPart> = serde_json::from_value(content)
            .map_err(|error| ContextError::Config(format!("stored message content: {error}")))?;
        parts.retain(|part| !part.is_blank());
        decode_parts(&mut parts);
        fresh.push(PromptRow {
            id,
            role,
            parts,
            model_config_id: row.get(3),
            provider_response_id: row.get(7),
            compressed: row.get(10),
            bytes,
        });
    }
    let hit = cached.is_some_and(|cached| cached.epoch == prompt.epoch);
    metrics::counter!("chatd_prompt_loads_total", "cache" => if hit { "hit" } else { "miss" })
        .increment(1);
    metrics::counter!("chatd_prompt_rows_read_total").increment(fresh.len() as u64);
    metrics::counter!("chatd_prompt_bytes_read_total").increment(bytes_read);
    prompt.extend(fresh);
    for row in &prompt.rows {
        if row.role == Role::User {
            loaded.wanted_model = row.model_config_id.or(chat_model);
        }
        if row.parts.is_empty() {
            continue;
        }
        loaded.prompt.push(PromptMessage {
            role: row.role,
            content: row.parts.clone(),
        });
        if row.role == Role::Assistant {
            if let Some(response_id) = &row.provider_response_id {
                loaded.last_response = Some((
                    response_id.clone(),
                    row.model_config_id,
                    loaded.prompt.len(),
                ));
            }
        }
    }
    Ok((loaded, prompt))
}

/// Resolves the wanted model, falling back to the default when it is disabled or deleted.
pub async fn resolve_model(
    client: &deadpool_postgres::ClientWrapper,
    wanted: Option<Uuid>,
    encryption_key: Option<&[u8; 32]>,
) -> Result<ModelChoice, ContextError> {
    let row = client
        .row_opt(
            concat!(
                "SELECT mc.id, mc.model, mc.max_output_tokens, p.kind, p.base_url, \
             p.api_key_encrypted, mc.input_price_micros, mc.output_price_micros, \
             mc.cache_read_price_micros, mc.cache_write_price_micros, mc.context_limit, \
             mc.compression_threshold, mc.supports_images \
             FROM model_configs mc JOIN providers p ON p.id = mc.provider_id \
             WHERE ",
                chatd_shared::usable_model_config!(),
                " AND (mc.id = $1 OR mc.is_default) \
             ORDER BY (mc.id = $1) DESC NULLS LAST LIMIT 1",
            ),
            &[&wanted],
        )
        .await?
        .ok_or(ContextError::NoModel)?;
    let kind_text: String = row.get(3);
    let kind = ProviderKind::parse(&kind_text)
        .ok_or_else(|| ContextError::Config(format!("unknown provider kind {kind_text}")))?;
    let encrypted: Option<Vec<u8>> = row.get(5);
    let api_key = match encrypted {
        None => None,
        Some(sealed) => {
            let key = encryption_key.ok_or_else(|| {
                ContextError::Config(
                    "the provider has an API key but this worker has no --encryption-key".into(),
                )
            })?;
            Some(
                chatd_shared::crypto::open(key, &sealed)
                    .context("decrypt the provider API key")
                    .map_err(|error| ContextError::Config(format!("{error:#}")))?,
            )
        }
    };
    Ok(ModelChoice {
        model_config_id: row.get(0),
        model: row.get(1),
        max_output_tokens: row.get::<_, Option<i32>>(2).map(|tokens| tokens as u32),
        endpoint: ProviderEndpoint {
            kind,
            base_url: row.get(4),
            api_key,
        },
        input_price_micros: row.get(6),
        output_price_micros: row.get(7),
        cache_read_price_micros: row.get(8),
        cache_write_price_micros: row.get(9),
        context_limit: i64::from(row.get::<_, i32>(10)),
        compression_threshold: i64::from(row.get::<_, i32>(11)),
        supports_images: row.get(12),
    })
}

/// Fills the bytes (base64 `data`) of the prompt's uploaded files (`file` parts with a
/// `file_id`), in one statement. The API checked at send time that each is the chat owner's; a
/// file gone since (its owner deleted) stays without data, and the turn says so.
pub async fn load_attachments(
    client: &deadpool_postgres::ClientWrapper,
    prompt: &mut [PromptMessage],
) -> Result<(), tokio_postgres::Error> {
    use base64::Engine;
    let ids: Vec<Uuid> = prompt
        .iter()
        .flat_map(|message| &message.content)
        .filter_map(|part| match part {
            ContentPart::File {
                file_id: Some(id),
                data: None,
                ..
            } => Uuid::parse_str(id).ok(),
            _ => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let rows = client
        .rows("SELECT id, data FROM files WHERE id = ANY($1)", &[&ids])
        .await?;
    let mut found: std::collections::HashMap<Uuid, String> = rows
        .iter()
        .map(|row| {
            let bytes: Vec<u8> = row.get(1);
            (
                row.get::<_, Uuid>(0),
                base64::engine::general_purpose::STANDARD.encode(bytes),
            )
        })
        .collect();
    for part in prompt
        .iter_mut()
        .flat_map(|message| message.content.iter_mut())
    {
        if let ContentPart::File {
            file_id: Some(id),
            data,
            ..
        } = part
        {
            if data.is_none() {
                if let Some(bytes) = Uuid::parse_str(id).ok().and_then(|id| found.get(&id)) {
                    *data = Some(bytes.clone());
                }
            }
        }
    }
    found.clear();
    Ok(())
}

/// Sets the title of a chat that has none yet (a user may have titled it meanwhile: then
/// nothing changes and `None` is returned). Returns `(version, status, attempt)` after it.
pub async fn set_title(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    title: &str,
) -> Result<Option<(i64, ChatStatus, i32)>, tokio_postgres::Error> {
    let row = client
        .row_opt(
            concat!(
                "UPDATE chats c SET title = $2, ",
                chatd_shared::bump_chat_version!(),
                " WHERE c.id = $1 AND c.title = '' RETURNING c.version, c.status, c.attempt"
            ),
            &[&chat_id, &title],
        )
        .await?;
    Ok(row.map(|row| {
        let status = ChatStatus::parse(row.get(1)).unwrap_or(ChatStatus::Waiting);
        (row.get(0), status, row.get(2))
    }))
}

/// Records a billed request that is not a message (`usage_records`: chat titles).
#[allow(clippy::too_many_arguments)]
pub async fn record_usage(
    client: &deadpool_postgres::ClientWrapper,
    owner_id: Uuid,
    chat_id: Uuid,
    kind: &str,
    model_config_id: Uuid,
    usage: &crate::provider::Usage,
    cost_micros: Option<i64>,
    runtime_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .exec(
            "INSERT INTO usage_records (owner_id, chat_id, kind, model_config_id, input_tokens, \
             output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens, \
             cost_micros, runtime_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &owner_id,
                &chat_id,
                &kind,
                &model_config_id,
                &usage.input_tokens,
                &usage.output_tokens,
                &usage.reasoning_tokens,
                &usage.cache_read_tokens,
                &usage.cache_write_tokens,
                &cost_micros,
                &runtime_ms,
            ],
        )
        .await?;
    Ok(())
}
