//! Plain-SQL migrations from `migrations/`, compiled into the binary and applied in order under
//! a session advisory lock, so many replicas may start (and migrate) at the same time.

use anyhow::Context;

/// One migration file. `version` is the numeric prefix of the file name.
///
/// Migrations follow expand/contract: a migration that only adds (a nullable column, a column
/// with a default, a table, an index) leaves older builds running correctly, and says so with
/// `compatible_from` — the oldest *schema version a build knows* (a build's newest migration)
/// whose code still runs correctly once this migration is applied. One that removes or
/// changes what older code reads or writes sets it to its own version. `chatd migrate`
/// records it with each migration, so an older build (which does not know the migration)
/// can read from the database whether it may run against it: during a rolling update the
/// migration Job runs first while old pods keep serving, and a rollback works while every
/// migration newer than the rolled-back build is compatible with it.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
    pub compatible_from: i32,
}

/// Every migration, oldest first. Add new files here.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init",
        sql: include_str!("../../../migrations/0001_init.sql"),
        compatible_from: 1,
    },
    // Changed how workers commit (idempotency keys): builds before it must not run beside it.
    Migration {
        version: 2,
        name: "0002_fault_tolerance",
        sql: include_str!("../../../migrations/0002_fault_tolerance.sql"),
        compatible_from: 2,
    },
    // Adds `providers.deleted` with a default: builds at version 2 ignore it.
    Migration {
        version: 3,
        name: "0003_provider_soft_delete",
        sql: include_str!("../../../migrations/0003_provider_soft_delete.sql"),
        compatible_from: 2,
    },
    // Adds `users.instructions` with a default: builds at version 3 ignore it.
    Migration {
        version: 4,
        name: "0004_instructions",
        sql: include_str!("../../../migrations/0004_instructions.sql"),
        compatible_from: 3,
    },
    // Adds deleted chats, history resets and unread tracking: builds at version 4 would show
    // deleted chats and stop keeping `last_reply_id`, so they must not run beside it.
    Migration {
        version: 5,
        name: "0005_conversations",
        sql: include_str!("../../../migrations/0005_conversations.sql"),
        compatible_from: 5,
    },
    // Adds a table, a column with a default and indexes: builds at version 5 ignore them
    // (they do not enforce limits or suspensions, which a rolling update tolerates).
    Migration {
        version: 6,
        name: "0006_governance",
        sql: include_str!("../../../migrations/0006_governance.sql"),
        compatible_from: 5,
    },
    // Adds tables and a column with a default: builds at version 6 ignore them.
    Migration {
        version: 7,
        name: "0007_files",
        sql: include_str!("../../../migrations/0007_files.sql"),
        compatible_from: 6,
    },
    // A new chat status (`awaiting_agents`) older builds cannot parse.
    Migration {
        version: 8,
        name: "0008_sub_agents",
        sql: include_str!("../../../migrations/0008_sub_agents.sql"),
        compatible_from: 8,
    },
    // A new table and a column with a default: builds at version 8 ignore them.
    Migration {
        version: 9,
        name: "0009_mcp_servers",
        sql: include_str!("../../../migrations/0009_mcp_servers.sql"),
        compatible_from: 8,
    },
    // A new table and columns with defaults: builds at version 9 ignore them (they list
    // hidden chats and never purge ephemeral ones, which a rolling update tolerates).
    Migration {
        version: 10,
        name: "0010_responses",
        sql: include_str!("../../../migrations/0010_responses.sql"),
        compatible_from: 9,
    },
    // A nullable column and indexes: builds at version 10 ignore the column (they claim
    // without preferring the chat's last worker) and their statements run unchanged.
    Migration {
        version: 11,
        name: "0011_turn_cost",
        sql: include_str!("../../../migrations/0011_turn_cost.sql"),
        compatible_from: 10,
    },
    // An index dropped and a nullable column: builds at version 11 run unchanged (their
    // sweep finds the leased chats without the index; they neither read nor move the anchor,
    // and a stale anchor only makes the next claim's tail miss the cache).
    Migration {
        version: 12,
        name: "0012_lease_index",
        sql: include_str!("../../../migrations/0012_lease_index.sql"),
        compatible_from: 11,
    },
    // A function only this build calls: builds at version 12 run unchanged.
    Migration {
        version: 13,
        name: "0013_message_pages",
        sql: include_str!("../../../migrations/0013_message_pages.sql"),
        compatible_from: 12,
    },
    // A column's type from `jsonb` to `json`: builds at version 13 write `jsonb` frames,
    // which the assignment cast stores, and read the column as JSON either way.
    Migration {
        version: 14,
        name: "0014_frame_text",
        sql: include_str!("../../../migrations/0014_frame_text.sql"),
        compatible_from: 13,
    },
    // The same CHECK conditions under the same names, stored in a cheaper form: builds at
    // version 14 run unchanged.
    Migration {
        version: 15,
        name: "0015_check_constants",
        sql: include_str!("../../../migrations/0015_check_constants.sql"),
        compatible_from: 14,
    },
];

/// This binary's version, recorded with the migrations it applies and named in errors.
pub const CHATD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The newest migration this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// The newest applied migration, `None` when the database has no chatd schema at all.
///
/// Unnamed statements throughout (`query_typed`), so the startup check works through a
/// transaction-mode pooler too.
pub async fn applied_version(client: &tokio_postgres::Client) -> anyhow::Result<Option<i32>> {
    let exists: bool = client
        .query_typed_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .context("look for schema_migrations")?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_typed_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .context("read the schema version")?;
    Ok(row.get::<_, Option<i32>>(0))
}

/// What a build may do against the schema it finds.
#[derive(Debug, PartialEq, Eq)]
pub enum SchemaCheck {
    /// No chatd schema at all.
    Missing,
    /// Older than this build needs: `chatd migrate` has not run yet.
    Behind { applied: i32 },
    /// Exactly this build's schema.
    Current,
    /// Newer, and every newer migration declares this build compatible.
    NewerCompatible { applied: i32 },
    /// Newer, and some newer migration needs a build at least `needs`.
    NewerIncompatible {
        applied: i32,
        needs: i32,
        applied_by: Option<String>,
    },
}

/// Compares the database's schema with `known` (this build's newest migration).
pub async fn check_schema(
    client: &tokio_postgres::Client,
    known: i32,
) -> anyhow::Result<SchemaCheck> {
    let Some(applied) = applied_version(client).await? else {
        return Ok(SchemaCheck::Missing);
    };
    if applied < known {
        return Ok(SchemaCheck::Behind { applied });
    }
    if applied == known {
        return Ok(SchemaCheck::Current);
    }
    // Rows recorded before `compatible_from` existed count as compatible only with their own
    // version.
    let row = client
        .query_typed_one(
            "SELECT coalesce(max(coalesce(compatible_from, version)), 0), \
                    (SELECT chatd_version FROM schema_migrations ORDER BY version DESC LIMIT 1) \
             FROM schema_migrations WHERE version > $1",
            &[(&known, tokio_postgres::types::Type::INT4)],
        )
        .await
        .context("read the schema's compatibility")?;
    let needs: i32 = row.get(0);
    if needs > known {
        return Ok(SchemaCheck::NewerIncompatible {
            applied,
            needs,
            applied_by: row.get(1),
        });
    }
    Ok(SchemaCheck::NewerCompatible { applied })
}

/// At startup of `chatd api` and `chatd worker` (on the pool's URL): the schema must be one
/// this build runs against. Behind (`chatd migrate` runs first, e.g. as the Kubernetes
/// migration Job), the process fails naming both versions — or, with `wait`, waits for the
/// migration to land. Newer is accepted (with a warning) when every newer migration declares
/// this build compatible (see [`Migration`]), refused naming both versions otherwise. A
/// database that does not answer is left to the pool's retries, as at any start.
pub async fn require_schema(
    database_url: &str,
    pooler: super::pool::Pooler,
    wait: bool,
) -> anyhow::Result<()> {
    let known = latest_version();
    let mut logged = false;
    loop {
        let connect =
            super::pool::pooled_connection_config(database_url, "chatd-schema-check", pooler)?;
        let client = match connect.connect().await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "schema version not checked");
                return Ok(());
            }
        };
        let check = check_schema(&client, known).await?;
        match check {
            SchemaCheck::Current => return Ok(()),
            SchemaCheck::NewerCompatible { applied } => {
                tracing::warn!(
                    schema = applied,
                    this_build = known,
                    "the database schema is newer than this chatd build, and compatible with it"
                );
                return Ok(());
            }
            SchemaCheck::NewerIncompatible {
                applied,
                needs,
                applied_by,
            } => anyhow::bail!(
                "the database schema is at version {applied}{by}, which needs a chatd that \
                 knows schema version {needs} or later; this chatd ({CHATD_VERSION}) knows \
                 version {known}: run a newer chatd",
                by = applied_by
                    .map(|version| format!(" (migrated by chatd {version})"))
                    .unwrap_or_default()
            ),
            SchemaCheck::Missing | SchemaCheck::Behind { .. } if wait => {
                if !logged {
                    let applied = match check {
                        SchemaCheck::Behind { applied } => applied,
                        _ => 0,
                    };
                    tracing::info!(
                        schema = applied,
                        needed = known,
                        "waiting for `chatd migrate` (--wait-for-migrations)"
                    );
                    logged = true;
                }
                drop(client);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            SchemaCheck::Behind { applied } => anyhow::bail!(
                "the database schema is at version {applied}, this chatd ({CHATD_VERSION}) \
                 needs version {known}: run `chatd migrate` first (or start with \
                 --wait-for-migrations)"
            ),
            SchemaCheck::Missing => anyhow::bail!(
                "the database has no chatd schema (this chatd ({CHATD_VERSION}) needs version \
                 {known}): run `chatd migrate` first (or start with --wait-for-migrations)"
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
                 applied_at timestamptz NOT NULL DEFAULT now());
             ALTER TABLE schema_migrations
                 ADD COLUMN IF NOT EXISTS compatible_from integer,
                 ADD COLUMN IF NOT EXISTS chatd_version text;",
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
                "INSERT INTO schema_migrations (version, name, compatible_from, chatd_version) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &migration.version,
                    &migration.name,
                    &migration.compatible_from,
                    &CHATD_VERSION,
                ],
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
