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
    /// The newest assistant row with a provider response id: (response id, its model config,
    /// index in `prompt` of the first message after it). Lets OpenAI Responses chain.
    pub last_response: Option<(String, Option<Uuid>, usize)>,
}

/// Resolved models cached for a few seconds per worker, so a turn does not pay a statement to
/// re-resolve the same model. Configuration changes take effect within `MODEL_CACHE_TTL`.
/// Read at the start of every turn by every turn task: a sharded map.
#[derive(Default)]
pub struct ModelCache {
    entries: dashmap::DashMap<Option<Uuid>, (ModelChoice, std::time::Instant)>,
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

    /// Forgets every resolved model (a `chatd_config` notice or a listener reconnect).
    pub fn clear(&self) {
        self.entries.clear();
    }

    fn get(&self, wanted: Option<Uuid>) -> Option<ModelChoice> {
        let entry = self.entries.get(&wanted)?;
        let (choice, at) = entry.value();
        (at.elapsed() < MODEL_CACHE_TTL).then(|| choice.clone())
    }
}
