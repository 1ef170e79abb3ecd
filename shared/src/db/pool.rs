//! Connection pool and connection settings shared by every process.

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The pool type used everywhere.
pub type PgPool = Pool;
/// A connection taken from a [`PgPool`].
pub type PgClient = deadpool_postgres::Client;

/// How to open a connection: the parsed settings and the TLS connector their `sslmode`
/// asks for (`db::tls`).
#[derive(Clone)]
pub struct PgConnect {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// The URL with its password masked, for errors.
    pub redacted: String,
}

impl PgConnect {
    /// One plain connection, driven by a spawned task. Errors name the (redacted) URL and the
    /// cause in one line, e.g. a certificate the CA did not sign.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .with_context(|| format!("connect to {}", self.redacted))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "database connection ended");
            }
        });
        Ok(client)
    }
}

/// What sits between the pool and PostgreSQL (`--database-pooler`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooler {
    /// PostgreSQL itself, or a pooler in session mode: statements are prepared once per
    /// connection and cached.
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer, RDS Proxy, Supavisor, …): a session lasts one
    /// transaction, so the pool runs unnamed statements (`db::sql`) and sends no startup
    /// `options` (PgBouncer refuses them); the statement and idle-in-transaction timeouts
    /// must then come from the role or the pooler (README, "Connection poolers").
    Transaction,
}

/// Refuses a transaction-mode pooler without a direct URL (`--listen-database-url`): LISTEN
/// and session locks cannot go through it.
pub fn check_pooler(pooler: Pooler, listen_database_url: Option<&str>) -> Result<(), String> {
    if pooler == Pooler::Transaction && listen_database_url.is_none() {
        return Err(
            "--database-pooler transaction needs --listen-database-url: LISTEN and \
                    session locks cannot go through a transaction-mode pooler"
                .into(),
        );
    }
    Ok(())
}

/// The timeouts every direct chatd connection sets at startup: a stuck transaction can never
/// stop the notify queue from draining, nor a runaway statement hold a connection.
pub const SESSION_TIMEOUTS: &str =
    "-c idle_in_transaction_session_timeout=60000 -c statement_timeout=60000";

/// What a pooled connection sets besides the [`SESSION_TIMEOUTS`]: every prepared statement
/// runs its generic plan. chatd's statements are keyed by ids and name their status and index
/// predicates as literals, so the generic plan is the plan a custom one would be; planning
/// each execution anew cost ≈0.4 ms of PostgreSQL CPU per turn (BENCHMARKS.md, "Issue 14,
/// third step"). And a random page is priced at 1.1 sequential ones instead of 4 (the setting
/// PostgreSQL's documentation suggests for data that is cached or on SSDs): chatd reads hot
/// rows by key, and at 4 the planner preferred scanning a table of a thousand chats to ten
/// primary-key probes (0.2 ms against 0.01 ms; ARCHITECTURE.md, "Plans that hold for every
/// chat"). Not behind a transaction-mode pooler: unnamed statements are planned anyway.
pub const POOL_SESSION_OPTIONS: &str = "-c idle_in_transaction_session_timeout=60000 \
     -c statement_timeout=60000 -c plan_cache_mode=force_generic_plan \
     -c random_page_cost=1.1";

/// Parses `database_url` (TLS parameters as libpq reads them, see `db::tls`) and applies the
/// settings every chatd connection wants: TCP keepalive (a half-open socket is noticed in
/// seconds, not after the 2 h OS default), a connect timeout, an application name, and the
/// [`SESSION_TIMEOUTS`].
pub fn connection_config(database_url: &str, application_name: &str) -> anyhow::Result<PgConnect> {
    pooled_connection_config(database_url, application_name, Pooler::None)
}

/// [`connection_config`] for connections that go through `pooler`.
pub fn pooled_connection_config(
    database_url: &str,
    application_name: &str,
    pooler: Pooler,
) -> anyhow::Result<PgConnect> {
    let redacted = redact_url(database_url);
    let (rest, tls_options) =
        super::tls::split_url(database_url).with_context(|| format!("database url {redacted}"))?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .with_context(|| format!("parse database url {redacted}"))?;
    let tls = super::tls::connector(&tls_options).with_context(|| format!("TLS for {redacted}"))?;
    config
        .ssl_mode(tls_options.postgres_mode())
        .application_name(application_name)
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    if pooler == Pooler::None {
        config.options(SESSION_TIMEOUTS);
    }
    Ok(PgConnect {
        config,
        tls,
        redacted,
    })
}

/// At startup: a database that answers but refuses the connection (TLS verification, no TLS
/// where `sslmode` requires it, `pg_hba.conf`, password, missing database) is a configuration
/// error no retry fixes, so the process fails with it (one line naming the cause). One that
/// does not answer yet is only logged: the pool and the listener keep trying, as in a rolling
/// start where the database comes up last.
///
/// Behind a transaction-mode pooler, where the startup `options` cannot set the
/// [`SESSION_TIMEOUTS`], a role without them is logged as a warning naming the fix.
pub async fn check_at_startup(
    database_url: &str,
    application_name: &str,
    pooler: Pooler,
) -> anyhow::Result<()> {
    let connect = pooled_connection_config(database_url, application_name, pooler)?;
    match connect.config.connect(connect.tls.clone()).await {
        Ok((client, connection)) => {
            let connection = tokio::spawn(connection);
            if pooler == Pooler::Transaction {
                warn_without_timeouts(&client).await;
            }
            drop(client);
            let _ = connection.await;
            Ok(())
        }
        Err(error) if refused(&error) => {
            Err(anyhow::Error::new(error).context(format!("connect to {}", connect.redacted)))
        }
        Err(error) => {
            tracing::warn!(url = %connect.redacted, %error, "the database does not answer yet; retrying");
            Ok(())
        }
    }
}

async fn warn_without_timeouts(client: &tokio_postgres::Client) {
    let sql = "SELECT current_user, current_setting('idle_in_transaction_session_timeout'), \
               current_setting('statement_timeout')";
    let Ok(messages) = client.simple_query(sql).await else {
        return;
    };
    let Some(row) = messages.into_iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    }) else {
        return;
    };
    let role = row.get(0).unwrap_or("chatd");
    for (index, setting) in [
        (1, "idle_in_transaction_session_timeout"),
        (2, "statement_timeout"),
    ] {
        if row.get(index) == Some("0") {
            tracing::warn!(
                setting,
                "no {setting} through the pooler: set it for the role, e.g. \
                 ALTER ROLE {role} SET {setting} = '60s'"
            );
        }
    }
}

/// Whether the server answered and said no (as opposed to not answering).
fn refused(error: &tokio_postgres::Error) -> bool {
    if error.as_db_error().is_some() || error.to_string().contains("TLS") {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// One plain connection to `database_url` (`chatd migrate`, admin commands, tests).
pub async fn connect_url(
    database_url: &str,
    application_name: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    connection_config(database_url, application_name)?
        .connect()
        .await
}

/// Builds a pool of at most `max_size` connections. Connections are opened lazily. A pool
/// behind a transaction-mode `pooler` switches the process to unnamed statements, which learn
/// their parameter types over a direct connection to `session_url`
/// (`db::sql::use_unnamed_statements`).
pub fn build_pool(
    database_url: &str,
    application_name: &str,
    max_size: usize,
    pooler: Pooler,
    session_url: &str,
) -> anyhow::Result<PgPool> {
    let mut connect = pooled_connection_config(database_url, application_name, pooler)?;
    if pooler == Pooler::None {
        connect.config.options(POOL_SESSION_OPTIONS);
    }
    if pooler == Pooler::Transaction {
        // Not through the pooler: a transaction that needs a statement's types while the
        // pooler's server connections are all held by such transactions would wait forever.
        super::sql::use_unnamed_statements(connection_config(
            session_url,
            &format!("{application_name}-statements"),
        )?);
    }
    let manager = Manager::from_config(
        connect.config,
        connect.tls,
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
    let pool = build_pool(
        database_url,
        application_name,
        1,
        Pooler::None,
        database_url,
    )?;
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
