//! How pooled connections run statements: [`Sql`] on a pool client or a transaction.
//!
//! By default a statement is prepared once per connection and kept (deadpool's statement
//! cache): each later run is one Bind/Execute round trip and PostgreSQL reuses the plan.
//!
//! Behind a transaction-mode pooler (PgBouncer before 1.21, or with
//! `max_prepared_statements = 0`) a connection's statements do not survive the transaction:
//! the next transaction may run on another server connection, where the name is unknown (or
//! names another process's statement). [`use_unnamed_statements`] switches the process to
//! unnamed statements: every run sends Parse/Bind/Describe/Execute/Sync in one message batch,
//! which a pooler keeps on one server connection, at the price of planning each run. Unnamed
//! statements need their parameter types up front (the binary encoding depends on them);
//! they are learnt from PostgreSQL once per statement text per process, by preparing it on a
//! direct connection of its own (never through the pooler), and kept in memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, RwLock};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Row};

use super::pool::PgConnect;

/// Statement texts whose parameter types are kept; beyond it the map starts over (the texts
/// chatd runs are a few hundred at most, so this is only a guard).
const MAX_KNOWN_STATEMENTS: usize = 4096;

static UNNAMED: OnceLock<Unnamed> = OnceLock::new();

/// Makes every [`Sql`] call of this process use unnamed statements, learning parameter types
/// through a connection made with `connect` (a direct one: a transaction waiting for a type
/// must not wait for the pooler's server connections its peers hold). Called once, when the
/// process builds a pool for a transaction-mode pooler; later calls change nothing.
pub fn use_unnamed_statements(connect: PgConnect) {
    let _ = UNNAMED.set(Unnamed {
        connect,
        session: tokio::sync::Mutex::new(None),
        types: RwLock::new(HashMap::new()),
    });
}

/// Whether this process runs unnamed statements.
pub fn unnamed_statements() -> bool {
    UNNAMED.get().is_some()
}

/// Runs one statement on a pool client or a transaction, prepared and cached or unnamed as
/// the process is configured (see the module documentation).
pub trait Sql: Sync {
    /// All rows.
    fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send;
    /// Exactly one row (an error otherwise).
    fn row(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, Error>> + Send;
    /// At most one row (an error for more).
    fn row_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send;
    /// The number of rows changed.
    fn exec(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, Error>> + Send;
}

macro_rules! impl_sql {
    ($client:ty) => {
        impl Sql for $client {
            async fn rows(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Vec<Row>, Error> {
                match UNNAMED.get() {
                    None => self.query(&self.prepare_cached(sql).await?, params).await,
                    Some(unnamed) => {
                        let typed = unnamed.typed(sql, params).await?;
                        self.query_typed(sql, &typed).await
                    }
                }
            }

            async fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
                match UNNAMED.get() {
                    None => {
                        self.query_one(&self.prepare_cached(sql).await?, params)
                            .await
                    }
                    Some(unnamed) => {
                        let typed = unnamed.typed(sql, params).await?;
                        self.query_typed_one(sql, &typed).await
                    }
                }
            }

            async fn row_opt(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Option<Row>, Error> {
                match UNNAMED.get() {
                    None => {
                        self.query_opt(&self.prepare_cached(sql).await?, params)
                            .await
                    }
                    Some(unnamed) => {
                        let typed = unnamed.typed(sql, params).await?;
                        self.query_typed_opt(sql, &typed).await
                    }
                }
            }

            async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
                match UNNAMED.get() {
                    None => self.execute(&self.prepare_cached(sql).await?, params).await,
                    Some(unnamed) => {
                        let typed = unnamed.typed(sql, params).await?;
                        self.execute_typed(sql, &typed).await
                    }
                }
            }
        }
    };
}

impl_sql!(deadpool_postgres::ClientWrapper);
impl_sql!(deadpool_postgres::Transaction<'_>);

struct Unnamed {
    connect: PgConnect,
    /// The connection that learns parameter types; `None` until first needed, and again after
    /// a failure (or a cancelled caller) left it in an unknown state.
    session: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    types: RwLock<HashMap<Box<str>, Arc<[Type]>>>,
}

impl Unnamed {
    /// `params` paired with the statement's parameter types. A count that does not match is
    /// left for PostgreSQL to refuse (the extra parameters are sent as `unknown`).
    async fn typed<'a>(
        &self,
        sql: &str,
        params: &[&'a (dyn ToSql + Sync)],
    ) -> Result<Vec<(&'a (dyn ToSql + Sync), Type)>, Error> {
        let types = self.param_types(sql).await?;
        Ok(params
            .iter()
            .enumerate()
            .map(|(index, param)| (*param, types.get(index).cloned().unwrap_or(Type::UNKNOWN)))
            .collect())
    }

    async fn param_types(&self, sql: &str) -> Result<Arc<[Type]>, Error> {
        if let Some(types) = self.known(sql) {
            return Ok(types);
        }
        let mut session = self.session.lock().await;
        // Learnt by another caller while this one waited for the lock.
        if let Some(types) = self.known(sql) {
            return Ok(types);
        }
        // Taken out while in use: a caller cancelled half-way drops the connection instead of
        // leaving it with an unread answer for the next one.
        let client = match session.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                let (client, connection) = self
                    .connect
                    .config
                    .connect(self.connect.tls.clone())
                    .await?;
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "statement-types connection ended");
                    }
                });
                client
            }
        };
        // A statement PostgreSQL refuses is not remembered; running it reports the same error
        // (the connection stays usable).
        let statement = client.prepare(sql).await;
        *session = Some(client);
        // Dropping the statement closes it.
        let types: Arc<[Type]> = statement?.params().into();
        let mut known = self
            .types
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if known.len() >= MAX_KNOWN_STATEMENTS {
            known.clear();
        }
        known.insert(sql.into(), types.clone());
        Ok(types)
    }

    fn known(&self, sql: &str) -> Option<Arc<[Type]>> {
        self.types
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(sql)
            .cloned()
    }
}
