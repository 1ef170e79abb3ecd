//! What every turn's prompt starts with: the deployment's system prompt (`site_config` key
//! `system_prompt`, optionally after chatd's built-in agent prompt) and the chat owner's own
//! instructions (`users.instructions`). The chat's own `system_prompt` follows them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::sql::Sql;

/// chatd's built-in agent prompt, placed first when the deployment's `include_default` is set.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are an AI agent working for the user in a chat. \
Answer directly and accurately. Use the tools you are given when they help, read their results \
before you go on, and say plainly when you cannot do something or do not know.";

/// The `site_config` key of [`SystemPrompt`].
const SYSTEM_PROMPT_KEY: &str = "system_prompt";

/// The deployment's system prompt (`GET`/`PUT /api/v1/config/system-prompt`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SystemPrompt {
    /// Sent as the first system part of every turn (after the built-in prompt when
    /// `include_default`); empty = none.
    pub system_prompt: String,
    /// Put chatd's built-in agent prompt first.
    pub include_default: bool,
}

impl SystemPrompt {
    /// The system parts it contributes, in order.
    pub fn parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if self.include_default {
            parts.push(DEFAULT_SYSTEM_PROMPT.to_owned());
        }
        if !self.system_prompt.trim().is_empty() {
            parts.push(self.system_prompt.clone());
        }
        parts
    }
}

/// The deployment's system prompt (the default — none — when never set).
pub async fn system_prompt(client: &impl Sql) -> Result<SystemPrompt, tokio_postgres::Error> {
    Ok(super::site_config::get(client, SYSTEM_PROMPT_KEY)
        .await?
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default())
}

pub async fn set_system_prompt(
    client: &impl Sql,
    prompt: &SystemPrompt,
) -> Result<(), tokio_postgres::Error> {
    let value = serde_json::to_value(prompt).expect("a system prompt serializes");
    super::site_config::put(client, SYSTEM_PROMPT_KEY, &value).await
}

/// A user's instructions (`""` for none or an unknown user).
pub async fn user_instructions(
    client: &impl Sql,
    user_id: Uuid,
) -> Result<String, tokio_postgres::Error> {
    let row = client
        .row_opt("SELECT instructions FROM users WHERE id = $1", &[&user_id])
        .await?;
    Ok(row.map(|row| row.get(0)).unwrap_or_default())
}

pub async fn set_user_instructions(
    client: &impl Sql,
    user_id: Uuid,
    instructions: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .exec(
            "UPDATE users SET instructions = $2 WHERE id = $1",
            &[&user_id, &instructions],
        )
        .await?;
    Ok(())
}

/// Both, for a turn: the system parts that precede the chat's own, in order. One statement.
pub async fn prompt_parts(
    client: &impl Sql,
    owner_id: Uuid,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let row = client
        .row(
            "SELECT (SELECT value FROM site_config WHERE key = $1), \
                    coalesce((SELECT instructions FROM users WHERE id = $2), '')",
            &[&SYSTEM_PROMPT_KEY, &owner_id],
        )
        .await?;
    let deployment: SystemPrompt = row
        .get::<_, Option<serde_json::Value>>(0)
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default();
    let mut parts = deployment.parts();
    let instructions: String = row.get(1);
    if !instructions.trim().is_empty() {
        parts.push(instructions);
    }
    Ok(parts)
}
