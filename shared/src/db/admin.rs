//! Users and API tokens as `chatd admin …`, `chatd dev` and the tests create them (providers
//! and model configs: `models`).

use anyhow::Context;
use uuid::Uuid;

use crate::auth::mint_token;

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
