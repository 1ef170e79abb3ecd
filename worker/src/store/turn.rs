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

/// A chat's prompt state: what a turn needs of the chat row besides the messages.
#[derive(Debug, Clone, Default)]
pub struct ChatPromptState {
    model_config_id: Option<Uuid>,
    dynamic_tools: Value,
    untitled: bool,
    mcp_server_ids: Vec<Uuid>,
    history_epoch: i32,
}

/// What the claim statement read of a chat's prompt (`store::acquire`): its prompt state and
/// its newest `CLAIM_TAIL_ROWS` prompt rows. With those, a chat this worker has cached (or a
/// chat short enough to be all in the tail) starts its turn without a read of its own.
#[derive(Debug, Clone, Default)]
pub struct ClaimedPrompt {
    state: ChatPromptState,
    /// Whether the tail was read in the snapshot of the version the claim bumped.
    valid: bool,
    /// Oldest first once `finish_tail` ran.
    tail: Vec<PromptRow>,
    /// Rows the claim returned, readable or not.
    rows: i64,
    /// Whether the tail started at the chat's prompt anchor (then fewer rows than asked for
    /// are not the whole history).
    bounded: bool,
    bytes: u64,
}

impl ClaimedPrompt {
    /// The chat's columns of a claim row (see `claim_picked!`).
    pub fn from_claim_row(row: &tokio_postgres::Row) -> ClaimedPrompt {
        ClaimedPrompt {
            state: ChatPromptState {
                model_config_id: row.get(9),
                dynamic_tools: row.get(10),
                untitled: row.get(11),
                mcp_server_ids: row.get(12),
                history_epoch: row.get(13),
            },
            valid: row.get::<_, Option<bool>>(14).unwrap_or(false),
            bounded: row.get::<_, Option<bool>>(22).unwrap_or(true),
            ..ClaimedPrompt::default()
        }
    }

    /// The message columns of a claim row, if it has a message.
    pub fn push_tail_row(&mut self, row: &tokio_postgres::Row) {
        let Some(id) = row.get::<_, Option<i64>>(15) else {
            return; // a chat without prompt rows
        };
        self.rows += 1;
        let bytes = row.get::<_, Option<i32>>(21).unwrap_or(0).max(0) as usize;
        self.bytes += bytes as u64;
        let parsed = prompt_row(
            id,
            row.get::<_, Option<&str>>(16).unwrap_or("user"),
            row.get::<_, Option<Value>>(17).unwrap_or(Value::Null),
            row.get(18),
            row.get(19),
            row.get::<_, Option<bool>>(20).unwrap_or(false),
            bytes,
        );
        match parsed {
            Ok(parsed) => self.tail.push(parsed),
            // The separate read names the problem.
            Err(_) => self.valid = false,
        }
    }

    pub fn finish_tail(&mut self) {
        self.tail.sort_by_key(|row| row.id);
    }

    /// The prompt from the tail and `cached`, when they hold all of it; otherwise `Err` gives
    /// `cached` back for `load_prompt`.
    pub fn serve(
        &self,
        cached: Option<CachedPrompt>,
    ) -> Result<Result<(LoadedChat, CachedPrompt), ContextError>, Option<CachedPrompt>> {
        if !self.valid {
            return Err(cached);
        }
        // Fewer rows than asked for from a chat never claimed before (no anchor): the tail is
        // the chat's whole history.
        let whole = !self.bounded && self.rows < super::CLAIM_TAIL_ROWS;
        let epoch = self.state.history_epoch;
        let reaches = |cached: &CachedPrompt| {
            whole
                || self
                    .tail
                    .first()
                    .is_some_and(|row| row.id <= cached.last_id)
        };
        let (base, hit) = match cached {
            Some(cached) if cached.epoch == epoch && reaches(&cached) => (cached, true),
            cached if !whole => return Err(cached),
            _ => (
                CachedPrompt {
                    epoch,
                    ..CachedPrompt::default()
                },
                false,
            ),
        };
        count_load(hit, "claim", self.tail.len(), self.bytes);
        let mut prompt = base;
        prompt.extend(self.tail.clone());
        Ok(assemble(&self.state, &prompt).map(|loaded| (loaded, prompt)))
    }
}

fn count_load(hit: bool, read: &'static str, rows: usize, bytes: u64) {
    metrics::counter!("chatd_prompt_loads_total",
        "cache" => if hit { "hit" } else { "miss" }, "read" => read)
    .increment(1);
    metrics::counter!("chatd_prompt_rows_read_total").increment(rows as u64);
    metrics::counter!("chatd_prompt_bytes_read_total").increment(bytes);
}

/// One stored prompt row, decoded.
fn prompt_row(
    id: i64,
    role: &str,
    content: Value,
    model_config_id: Option<Uuid>,
    provider_response_id: Option<String>,
    compressed: bool,
    bytes: usize,
) -> Result<PromptRow, ContextError> {
    let mut parts: Vec<ContentPart> = serde_json::from_value(content)
        .map_err(|error| ContextError::Config(format!("stored message content: {error}")))?;
    parts.retain(|part| !part.is_blank());
    decode_parts(&mut parts);
    Ok(PromptRow {
        id,
        role: Role::parse(role).unwrap_or(Role::User),
        parts,
        model_config_id,
        provider_response_id,
        compressed,
        bytes,
    })
}

/// The turn's view of a chat: its prompt state and its prompt rows.
fn assemble(state: &ChatPromptState, prompt: &CachedPrompt) -> Result<LoadedChat, ContextError> {
    let mut loaded = LoadedChat {
        dynamic_tools: serde_json::from_value(state.dynamic_tools.clone())
            .map_err(|error| ContextError::Config(format!("stored dynamic tools: {error}")))?,
        untitled: state.untitled,
        wanted_model: state.model_config_id,
        mcp_server_ids: state.mcp_server_ids.clone(),
        ..LoadedChat::default()
    };
    for row in &prompt.rows {
        if row.role == Role::User {
            loaded.wanted_model = row.model_config_id.or(state.model_config_id);
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
    Ok(loaded)
}

/// Loads the prompt and the chat's tool and title state in one statement (when the claim's
/// tail did not hold it, `ClaimedPrompt::serve`). With `cached` (the chat's rows as this
/// worker last read them, `turn::prompt_cache`), only rows after the newest cached one are
/// read — unless the chat's `history_epoch` moved (an edit), which makes the same statement
/// read everything. Returns the prompt and the rows to cache.
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
            "WITH c AS (SELECT id, model_config_id, dynamic_tools, title = '' AS untitled, \
                 mcp_server_ids, history_epoch FROM chats WHERE id = $1) \
             SELECT NULL::bigint, NULL::text, NULL::jsonb, NULL::uuid, c.model_config_id, \
                 c.dynamic_tools, c.untitled, NULL::text, c.mcp_server_ids, c.history_epoch, \
                 NULL::bool, NULL::int FROM c \
             UNION ALL \
             SELECT m.id, m.role, m.content, m.model_config_id, NULL, NULL, NULL, \
                 m.provider_response_id, NULL, NULL, m.compressed, pg_column_size(m.content) \
             FROM c JOIN chat_messages m ON m.chat_id = c.id AND NOT m.deleted \
                 AND m.visibility <> 'user' AND (m.id > $2 OR c.history_epoch <> $3) \
                 AND (m.role = 'system' OR m.id >= coalesce((SELECT max(id) FROM chat_messages \
                      WHERE chat_id = $1 AND compressed AND NOT deleted), 0)) \
             ORDER BY 1 NULLS FIRST",
            &[&chat_id, &after, &epoch],
        )
        .await?;
    // The chat's own row comes first (its id column is NULL): its columns are not repeated
    // on each of the (up to hundreds of) message rows, which PostgreSQL would encode again
    // for every row.
    let Some(first) = rows.first() else {
        return Err(ContextError::Config("the chat is gone".into()));
    };
    let state = ChatPromptState {
        model_config_id: first.get(4),
        dynamic_tools: first.get(5),
        untitled: first.get(6),
        mcp_server_ids: first.get(8),
        history_epoch: first.get(9),
    };
    let hit = cached
        .as_ref()
        .is_some_and(|cached| cached.epoch == state.history_epoch);
    let mut prompt = match cached {
        Some(cached) if hit => cached,
        _ => CachedPrompt {
            epoch: state.history_epoch,
            ..CachedPrompt::default()
        },
    };
    let mut fresh = Vec::with_capacity(rows.len());
    let mut bytes_read = 0_u64;
    for row in &rows {
        let Some(id) = row.get::<_, Option<i64>>(0) else {
            continue; // the chat row
        };
        let bytes = row.get::<_, Option<i32>>(11).unwrap_or(0).max(0) as usize;
        bytes_read += bytes as u64;
        fresh.push(prompt_row(
            id,
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(7),
            row.get(10),
            bytes,
        )?);
    }
    count_load(hit, "query", fresh.len(), bytes_read);
    prompt.extend(fresh);
    Ok((assemble(&state, &prompt)?, prompt))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, role: Role, text: &str) -> PromptRow {
        PromptRow {
            id,
            role,
            parts: vec![ContentPart::text(text)],
            model_config_id: None,
            provider_response_id: None,
            compressed: false,
            bytes: text.len(),
        }
    }

    fn claimed(valid: bool, rows: i64, tail: Vec<PromptRow>) -> ClaimedPrompt {
        ClaimedPrompt {
            state: ChatPromptState {
                dynamic_tools: Value::Array(Vec::new()),
                history_epoch: 3,
                ..ChatPromptState::default()
            },
            valid,
            tail,
            rows,
            bounded: false,
            bytes: 0,
        }
    }

    fn cached(last_id: i64, epoch: i32) -> CachedPrompt {
        let mut prompt = CachedPrompt {
            epoch,
            ..CachedPrompt::default()
        };
        prompt.extend(vec![
            row(1, Role::User, "q1"),
            row(2, Role::Assistant, "a1"),
        ]);
        prompt.extend(vec![row(last_id, Role::User, "q2")]);
        prompt
    }

    fn texts(loaded: &LoadedChat) -> Vec<String> {
        loaded
            .prompt
            .iter()
            .map(|message| format!("{:?}", message.content))
            .collect()
    }

    #[test]
    fn a_cached_chat_is_served_by_a_tail_that_reaches_the_cache() {
        let full = CLAIM_TAIL_ROWS_FOR_TESTS;
        let tail = vec![
            row(5, Role::User, "q2"),
            row(6, Role::Assistant, "a2"),
            row(7, Role::User, "q3"),
        ];
        // A full tail whose oldest row the cache has: nothing else to read.
        let (loaded, prompt) = claimed(true, full, tail.clone())
            .serve(Some(cached(5, 3)))
            .expect("served")
            .expect("assembled");
        assert_eq!(prompt.last_id, 7);
        assert_eq!(loaded.prompt.len(), 5);
        assert!(texts(&loaded)[4].contains("q3"));
        // A full tail that starts after the cache's newest row: a gap, so the read decides.
        let gap = claimed(true, full, tail[1..].to_vec()).serve(Some(cached(5, 3)));
        assert!(matches!(gap, Err(Some(_))));
        // Another history epoch (an edit): the cache is stale.
        assert!(claimed(true, full, tail.clone())
            .serve(Some(cached(5, 2)))
            .is_err());
        // A tail read in an older snapshot than the claim's version: never trusted.
        assert!(claimed(false, 3, tail.clone()).serve(None).is_err());
    }

    #[test]
    fn a_short_chat_is_all_in_its_tail() {
        let tail = vec![row(8, Role::User, "hello")];
        let (loaded, prompt) = claimed(true, 1, tail.clone())
            .serve(None)
            .expect("served")
            .expect("assembled");
        assert_eq!((prompt.epoch, prompt.last_id), (3, 8));
        assert_eq!(loaded.prompt.len(), 1);
        // A stale cache (other epoch) is replaced by the whole tail.
        let (loaded, _) = claimed(true, 1, tail)
            .serve(Some(cached(5, 2)))
            .expect("served")
            .expect("assembled");
        assert_eq!(loaded.prompt.len(), 1);
        // Without a cache, a full tail may not be the whole history.
        assert!(claimed(true, CLAIM_TAIL_ROWS_FOR_TESTS, Vec::new())
            .serve(None)
            .is_err());
    }

    #[test]
    fn a_tail_from_the_anchor_is_never_the_whole_history() {
        let tail = vec![row(6, Role::Assistant, "a2"), row(7, Role::User, "q3")];
        let bounded = |tail: Vec<PromptRow>| ClaimedPrompt {
            bounded: true,
            ..claimed(true, tail.len() as i64, tail)
        };
        // Two rows from the anchor on, with a cache that holds the anchor: served.
        let (loaded, prompt) = bounded(tail.clone())
            .serve(Some(cached(6, 3)))
            .expect("served")
            .expect("assembled");
        assert_eq!(prompt.last_id, 7);
        assert!(texts(&loaded).last().unwrap().contains("q3"));
        // Without a cache, or with one that ends before the anchor, the read decides.
        assert!(matches!(bounded(tail.clone()).serve(None), Err(None)));
        assert!(matches!(
            bounded(tail).serve(Some(cached(5, 3))),
            Err(Some(_))
        ));
    }

    const CLAIM_TAIL_ROWS_FOR_TESTS: i64 = super::super::CLAIM_TAIL_ROWS;
}
