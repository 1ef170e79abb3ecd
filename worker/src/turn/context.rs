//! What a turn works with: the resolved model (with its provider), the loaded chat, and the
//! per-worker cache of resolved models. The statements that read them are in
//! `store::turn`.

use uuid::Uuid;

use crate::provider::{PromptMessage, ProviderEndpoint};
use crate::tool::DynamicTool;

/// The resolved model of a turn.
#[derive(Clone)]
pub struct ModelChoice {
    pub model_config_id: Uuid,
    pub model: String,
    pub max_output_tokens: Option<u32>,
    pub endpoint: ProviderEndpoint,
    /// Prices per million tokens, micro-dollars (None = unpriced).
    pub input_price_micros: Option<i64>,
    pub output_price_micros: Option<i64>,
    /// Cache prices; `None` bills cached tokens at the input price.
    pub cache_read_price_micros: Option<i64>,
    pub cache_write_price_micros: Option<i64>,
    /// The model's context window in tokens.
    pub context_limit: i64,
    /// Compact when a step's input tokens reach this percentage of `context_limit` (0 = never).
    pub compression_threshold: i64,
    /// Whether the model accepts images (`model_configs.supports_images`).
    pub supports_images: bool,
}

/// Why a turn cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("no model is configured: create one with `chatd admin create-model --default`")]
    NoModel,
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// What a turn reads about its chat before the first step.
#[derive(Debug, Default)]
pub struct LoadedChat {
    /// System rows plus the messages from the latest compaction summary on, in order, with
    /// blank text/reasoning parts dropped and tool results decoded from their storage form.
    pub prompt: Vec<PromptMessage>,
    /// The model the newest user message (or the chat) asked for.
    pub wanted_model: Option<Uuid>,
    /// The chat's client-executed tools.
    pub dynamic_tools: Vec<DynamicTool>,
    /// Whether the chat still has no title (the turn then generates one).
    pub untitled: bool,
    /// The MCP servers the chat picked at creation (`force_on` ones apply besides).
    pub mcp_server_ids: Vec<uuid::Uuid>,
    /// The newest assistant row with a provider response id: (response id, its model config,
    /// index in `prompt` of the first message after it). Lets OpenAI Responses chain.
    pub last_response: Option<(String, Option<Uuid>, usize)>,
}

/// Resolved models cached for a few seconds per worker, so a turn does not pay a statement to
/// re-resolve the same model. Configuration changes take effect within `MODEL_CACHE_TTL`.
/// Read at the start of every turn by every turn task: a sharded map.
///
/// It also keeps, per chat owner, the system parts every step's prompt starts with (the
/// deployment's system prompt and the owner's instructions, `db::instructions`), so a step
/// costs no statement for them; a `chatd_config` notice (or the TTL) brings changes in from
/// the next step.
#[derive(Default)]
pub struct ModelCache {
    entries: dashmap::DashMap<Option<Uuid>, (ModelChoice, std::time::Instant)>,
    instructions: dashmap::DashMap<Uuid, (std::sync::Arc<Vec<PromptMessage>>, std::time::Instant)>,
    advisor:
        std::sync::Mutex<Option<(chatd_shared::db::advisor::AdvisorConfig, std::time::Instant)>>,
}

/// How long a resolved model is reused.
pub const MODEL_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl ModelCache {
    pub async fn resolve(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        wanted: Option<Uuid>,
        encryption_key: Option<&[u8; 32]>,
    ) -> Result<ModelChoice, ContextError> {
        if let Some(choice) = self.get(wanted) {
            return Ok(choice);
        }
        let choice = crate::store::turn::resolve_model(client, wanted, encryption_key).await?;
        if self.entries.len() > 1000 {
            self.entries.clear();
        }
        self.entries
            .insert(wanted, (choice.clone(), std::time::Instant::now()));
        Ok(choice)
    }

    /// Forgets every resolved model and instruction (a `chatd_config` notice or a listener
    /// reconnect).
    pub fn clear(&self) {
        self.entries.clear();
        self.instructions.clear();
        *self
            .advisor
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = None;
    }

    /// The advisor's settings (cached like models; the defaults, disabled, when they cannot
    /// be read and none are known).
    pub async fn advisor(
        &self,
        pool: &deadpool_postgres::Pool,
    ) -> chatd_shared::db::advisor::AdvisorConfig {
        if let Some((config, at)) = &*self.advisor.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < MODEL_CACHE_TTL {
                return config.clone();
            }
        }
        let read = async {
            let client = pool.get().await?;
            anyhow::Ok(chatd_shared::db::advisor::read(&*client).await?)
        };
        match read.await {
            Ok(config) => {
                *self.advisor.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((config.clone(), std::time::Instant::now()));
                config
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "read the advisor's settings");
                self.advisor
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|(config, _)| config.clone())
                    .unwrap_or_default()
            }
        }
    }

    /// The system messages that precede the chat's own for `owner_id`: the deployment's
    /// system prompt, then the owner's instructions, each its own system part. When they
    /// cannot be read, the last known ones (however old); an error only when there are none.
    pub async fn instructions(
        &self,
        pool: &deadpool_postgres::Pool,
        owner_id: Uuid,
    ) -> anyhow::Result<std::sync::Arc<Vec<PromptMessage>>> {
        if let Some(entry) = self.instructions.get(&owner_id) {
            let (parts, at) = entry.value();
            if at.elapsed() < MODEL_CACHE_TTL {
                return Ok(parts.clone());
            }
        }
        let read = async {
            let client = pool.get().await?;
            anyhow::Ok(chatd_shared::db::instructions::prompt_parts(&*client, owner_id).await?)
        };
        let parts = match read.await {
            Ok(parts) => parts,
            // The database is briefly away: the last known instructions beat none.
            Err(error) => match self.instructions.get(&owner_id) {
                Some(entry) => return Ok(entry.value().0.clone()),
                None => return Err(error),
            },
        };
        let messages: std::sync::Arc<Vec<PromptMessage>> = std::sync::Arc::new(
            parts
                .into_iter()
                .map(|text| PromptMessage {
                    role: chatd_shared::domain::Role::System,
                    content: vec![chatd_shared::domain::ContentPart::text(text)],
                })
                .collect(),
        );
        if self.instructions.len() > 10_000 {
            self.instructions.clear();
        }
        self.instructions
            .insert(owner_id, (messages.clone(), std::time::Instant::now()));
        Ok(messages)
    }

    fn get(&self, wanted: Option<Uuid>) -> Option<ModelChoice> {
        let entry = self.entries.get(&wanted)?;
        let (choice, at) = entry.value();
        (at.elapsed() < MODEL_CACHE_TTL).then(|| choice.clone())
    }
}
