//! Connection pool and connection settings shared by every process.

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

/// The pool type used everywhere.
pub type PgPool = Pool;
/// A connection taken from a [`PgPool`].
pub type PgClient = deadpool_postgres::Client;

/// Parses `database_url` and applies the settings every chatd connection wants: TCP keepalive
/// (a half-open socket is noticed in seconds, not after the 2 h OS default), a connect timeout,
/// an application name, and `idle_in_transaction_session_timeout` so a stuck transaction can
/// never stop the notify queue from draining.
pub fn connection_config(
    database_url: &str,
    application_name: &str,
) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = database_url
        .parse()
        .with_context(|| format!("parse database url {}", redact_url(database_url)))?;
    config
        .application_name(application_name)
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .options("-c idle_in_transaction_session_timeout=60000 -c statement_timeout=60000");
    Ok(config)
}

/// Builds a pool of at most `max_size` connections. Connections are opened lazily.
pub fn build_pool(
    database_url: &str,
    application_name: &str,
    max_size: usize,
) -> anyhow::Result<PgPool> {
    let config = connection_config(database_url, application_name)?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .context("build the connection pool")
}

/// One pooled-style connection for a short-lived command (`chatd admin`, seeding): the same
/// client type the servers use, so the same store functions serve both.
pub async fn one_client(database_url: &str, application_name: &str) -> anyhow::Result<PgClient> {
    let pool = build_pool(database_url, application_name, 1)?;
    pool.get()
        .await
        .with_context(|| format!("connect to {}", redact_url(database_url)))
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db` for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_password_only() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url("host=x"), "host=x");
    }
}
