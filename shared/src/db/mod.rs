//! Database access: pool, migrations, row types and what both sides (and the command line)
//! share.
//!
//! State transitions live with the side that performs them (`chatd-api` store module,
//! `chatd-worker` store module); this module holds what both need.

pub mod admin;
pub mod advisor;
pub mod agents;
pub mod instructions;
pub mod limits;
pub mod mcp;
pub mod migrate;
pub mod models;
pub mod pool;
pub mod queue;
pub mod rows;
pub mod sql;
pub mod tls;
pub mod tool_calls;

/// The end of the `SET` list of every statement that changes what readers see of a chat:
/// `chats.version` orders changes for every replica (a hub drops any notice not newer than
/// what it has, and re-reads on a gap), `updated_at` orders chat lists and the queue sweep.
/// The updated table must be aliased `c` (`UPDATE chats c SET … , ` + this). Only the
/// heartbeat, which changes nothing readers see, updates `chats` without it.
///
/// A macro so statements stay `&'static str` (`concat!`) for the prepared-statement cache.
#[macro_export]
macro_rules! bump_chat_version {
    () => {
        "version = c.version + 1, updated_at = now()"
    };
}

/// `site_config`: deployment-wide settings, one JSON value per key.
pub mod site_config {
    use super::sql::Sql;

    /// The value stored under `key`, if any.
    pub async fn get(
        client: &impl Sql,
        key: &str,
    ) -> Result<Option<serde_json::Value>, tokio_postgres::Error> {
        let row = client
            .row_opt("SELECT value FROM site_config WHERE key = $1", &[&key])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Stores `value` under `key`.
    pub async fn put(
        client: &impl Sql,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), tokio_postgres::Error> {
        client
            .exec(
                "INSERT INTO site_config (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
                &[&key, value],
            )
            .await?;
        Ok(())
    }
}
