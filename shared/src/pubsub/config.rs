//! `chatd_config`: providers, model configs, prompt instructions, spend limits or a user's
//! access changed, so every process drops what it cached about them (the worker's resolved
//! models and spend statuses, the API replicas' verified tokens).
//!
//! Like every notification this is a hint: a process that misses it still picks the change up
//! when its cache entries expire, so caches must keep a short TTL as well.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::notices::{to_payload, CONFIG_CHANNEL};
use super::publish::publish;

/// What changed. Consumers may simply drop their whole cache on any notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigNotice {
    pub kind: ConfigKind,
    /// What changed (see [`ConfigKind`]).
    pub id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigKind {
    Provider,
    ModelConfig,
    /// The deployment's system prompt (`id` nil) or a user's instructions (`id` the user).
    Instructions,
    /// Spend limit settings, a user's or a group's limit or membership (`id` what changed).
    Limits,
    /// A user's access (`id` the user): a token revoked, the user suspended or their admin
    /// rights changed. API replicas evict the user's cached tokens and recheck their streams.
    Auth,
    /// An MCP server was created, changed or deleted (`id` the server).
    McpServer,
    /// The advisor's settings (`id` nil).
    Advisor,
}

/// Publishes `notice` on `chatd_config`. Call it after the change committed.
pub async fn publish_config_change(
    client: &deadpool_postgres::ClientWrapper,
    notice: ConfigNotice,
) -> Result<(), tokio_postgres::Error> {
    publish(client, &[(CONFIG_CHANNEL.to_string(), to_payload(&notice))]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_notice_round_trips() {
        let notice = ConfigNotice {
            kind: ConfigKind::ModelConfig,
            id: Uuid::nil(),
        };
        let payload = to_payload(&notice);
        assert_eq!(
            payload,
            r#"{"kind":"model_config","id":"00000000-0000-0000-0000-000000000000"}"#
        );
        let parsed: ConfigNotice = serde_json::from_str(&payload).unwrap();
        assert_eq!(parsed, notice);
    }
}
