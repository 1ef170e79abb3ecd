//! Governance writes used by `chatd admin …` and `chatd dev` (users, tokens, providers,
//! model configs).

use anyhow::Context;
use uuid::Uuid;

use crate::auth::mint_token;
use crate::domain::ProviderKind;

/// Creates a user; fails clearly when the username is taken.
pub async fn create_user(
    client: &tokio_postgres::Client,
    username: &str,
    is_admin: bool,
) -> anyhow::Result<Uuid> {
    validate_username(username)?;
    let row = client
        .query_opt(
            "INSERT INTO users (username, display_name, is_admin) VALUES ($1, $1, $2) \
             ON CONFLICT (username) DO NOTHING RETURNING id",
            &[&username, &is_admin],
        )
        .await
        .context("insert the user")?;
    row.map(|row| row.get(0))
        .ok_or_else(|| anyhow::anyhow!("user {username:?} already exists"))
}

/// The user's id, creating the user when missing.
pub async fn ensure_user(
    client: &tokio_postgres::Client,
    username: &str,
    is_admin: bool,
) -> anyhow::Result<Uuid> {
    validate_username(username)?;
    let row = client
        .query_one(
            "INSERT INTO users (username, display_name, is_admin) VALUES ($1, $1, $2) \
             ON CONFLICT (username) DO UPDATE SET is_admin = users.is_admin OR EXCLUDED.is_admin \
             RETURNING id",
            &[&username, &is_admin],
        )
        .await
        .context("upsert the user")?;
    Ok(row.get(0))
}

fn validate_username(username: &str) -> anyhow::Result<()> {
    let valid = !username.is_empty()
        && username.len() <= 64
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    anyhow::ensure!(
        valid,
        "username must be 1 to 64 characters of [A-Za-z0-9_.-], got {username:?}"
    );
    Ok(())
}

/// Mints a token for `username`; returns the token (shown once, never stored).
pub async fn create_token(
    client: &tokio_postgres::Client,
    username: &str,
    name: &str,
) -> anyhow::Result<String> {
    let user = client
        .query_opt("SELECT id FROM users WHERE username = $1", &[&username])
        .await
        .context("look up the user")?
        .ok_or_else(|| anyhow::anyhow!("no user named {username:?}"))?;
    let user_id: Uuid = user.get(0);
    let minted = mint_token();
    client
        .execute(
            "INSERT INTO api_tokens (user_id, name, prefix, secret_hash) VALUES ($1, $2, $3, $4)",
            &[&user_id, &name, &minted.prefix, &minted.secret_hash],
        )
        .await
        .context("insert the token")?;
    Ok(minted.token)
}

/// Creates a provider. `sealed_api_key` is already encrypted (see `crypto::seal`).
pub async fn create_provider(
    client: &tokio_postgres::Client,
    kind: ProviderKind,
    base_url: &str,
    sealed_api_key: Option<Vec<u8>>,
) -> anyhow::Result<Uuid> {
    let parsed = base_url.trim();
    anyhow::ensure!(
        parsed.starts_with("http://") || parsed.starts_with("https://"),
        "base url must start with http:// or https://, got {base_url:?}"
    );
    let row = client
        .query_one(
            "INSERT INTO providers (kind, display_name, base_url, api_key_encrypted) \
             VALUES ($1, $1, $2, $3) RETURNING id",
            &[
                &kind.as_str(),
                &parsed.trim_end_matches('/'),
                &sealed_api_key,
            ],
        )
        .await
        .context("insert the provider")?;
    Ok(row.get(0))
}

/// Options of a new model config.
pub struct NewModel<'a> {
    pub provider_id: Uuid,
    pub model: &'a str,
    pub context_limit: Option<i32>,
    pub is_default: bool,
}

/// Creates a model config; `is_default` moves the default flag to it atomically.
pub async fn create_model(
    client: &mut tokio_postgres::Client,
    new_model: NewModel<'_>,
) -> anyhow::Result<Uuid> {
    anyhow::ensure!(
        !new_model.model.trim().is_empty(),
        "model name must not be empty"
    );
    if let Some(limit) = new_model.context_limit {
        anyhow::ensure!(limit > 0, "context limit must be positive, got {limit}");
    }
    let transaction = client.transaction().await?;
    let provider_exists = transaction
        .query_opt(
            "SELECT 1 FROM providers WHERE id = $1",
            &[&new_model.provider_id],
        )
        .await?
        .is_some();
    anyhow::ensure!(
        provider_exists,
        "no provider with id {}",
        new_model.provider_id
    );
    if new_model.is_default {
        transaction
            .execute(
                "UPDATE model_configs SET is_default = false WHERE is_default",
                &[],
            )
            .await?;
    }
    let row = transaction
        .query_one(
            "INSERT INTO model_configs (provider_id, model, display_name, context_limit, is_default) \
             VALUES ($1, $2, $2, coalesce($3, 128000), $4) RETURNING id",
            &[
                &new_model.provider_id,
                &new_model.model,
                &new_model.context_limit,
                &new_model.is_default,
            ],
        )
        .await
        .context("insert the model config")?;
    transaction.commit().await?;
    Ok(row.get(0))
}
