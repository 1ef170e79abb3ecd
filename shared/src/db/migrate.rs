//! Plain-SQL migrations from `migrations/`, compiled into the binary and applied in order under
//! a session advisory lock, so many replicas may start (and migrate) at the same time.

use anyhow::Context;

/// One migration file. `version` is the numeric prefix of the file name.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Add new files here.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_fault_tolerance",
        sql: include_str!("../../../migrations/0002_fault_tolerance.sql"),
    },
    Migration {
        version: 3,
        name: "0003_provider_soft_delete",
        sql: include_str!("../../../migrations/0003_provider_soft_delete.sql"),
    },
];

/// The newest migration this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// The newest applied migration, `None` when the database has no chatd schema at all.
pub async fn applied_version(client: &tokio_postgres::Client) -> anyhow::Result<Option<i32>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .context("look for schema_migrations")?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .context("read the schema version")?;
    Ok(row.get::<_, Option<i32>>(0))
}

/// At startup of `chatd api` and `chatd worker`: the schema must be at least this build's
/// (`chatd migrate` runs first, e.g. as the Kubernetes migration Job). Behind, the process
/// fails naming both versions — or, with `wait`, waits for the migration to land. A newer
/// schema is accepted with a warning (migrations are additive, so an older build keeps
/// working during a rolling update). A database that does not answer is left to the pool's
/// retries, as at any start.
pub async fn require_schema(database_url: &str, wait: bool) -> anyhow::Result<()> {
    let needed = latest_version();
    let mut logged = false;
    loop {
        let client = match super::pool::connect_url(database_url, "chatd-schema-check").await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "schema version not checked");
                return Ok(());
            }
        };
        let applied = applied_version(&client).await?;
        match applied {
            Some(version) if version >= needed => {
                if version > needed {
                    tracing::warn!(
                        schema = version,
                        this_build = needed,
                        "the database schema is newer than this chatd build"
                    );
                }
                return Ok(());
            }
            _ if wait => {
                if !logged {
                    tracing::info!(
                        schema = applied.unwrap_or(0),
                        needed,
                        "waiting for `chatd migrate` (--wait-for-migrations)"
                    );
                    logged = true;
                }
                drop(client);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Some(version) => anyhow::bail!(
                "the database schema is at version {version}, this chatd needs version \
                 {needed}: run `chatd migrate` first (or start with --wait-for-migrations)"
            ),
            None => anyhow::bail!(
                "the database has no chatd schema (this chatd needs version {needed}): run \
                 `chatd migrate` first (or start with --wait-for-migrations)"
            ),
        }
    }
}

/// Arbitrary constant key of the advisory lock that serialises migrations.
const MIGRATION_LOCK_KEY: i64 = 0x6368_6174_645f_6d67; // "chatd_mg"

/// A fingerprint of all migrations (used to name the tests' template database).
pub fn fingerprint() -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for migration in MIGRATIONS {
        hasher.update(migration.version.to_le_bytes());
        hasher.update(migration.sql.as_bytes());
    }
    hex::encode(&hasher.finalize()[..6])
}

/// Applies every migration not yet applied. Returns how many were applied.
///
/// # Locks
/// Holds `pg_advisory_lock(MIGRATION_LOCK_KEY)` on this session for the whole run; each
/// migration runs in its own transaction together with its `schema_migrations` row.
pub async fn run(client: &mut tokio_postgres::Client) -> anyhow::Result<usize> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("take the migration lock")?;
    let result = apply_pending(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .context("release the migration lock");
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_pending(client: &mut tokio_postgres::Client) -> anyhow::Result<usize> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .context("create schema_migrations")?;
    let rows = client
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .context("read applied migrations")?;
    let applied: std::collections::HashSet<i32> = rows.iter().map(|row| row.get(0)).collect();
    let mut count = 0;
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let transaction = client.transaction().await.context("begin migration")?;
        transaction
            .batch_execute(migration.sql)
            .await
            .with_context(|| format!("apply migration {}", migration.name))?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .context("record migration")?;
        transaction.commit().await.context("commit migration")?;
        tracing::info!(migration = migration.name, "applied migration");
        count += 1;
    }
    Ok(count)
}

/// Connects to `database_url` with a plain (non-pooled) connection and migrates.
pub async fn run_url(database_url: &str) -> anyhow::Result<usize> {
    let mut client = super::pool::connect_url(database_url, "chatd-migrate").await?;
    run(&mut client).await
}
