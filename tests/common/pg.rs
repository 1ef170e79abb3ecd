//! PostgreSQL for integration tests: one server per test run, shared by every test process, a
//! migrated template database, and a fresh database per test cloned from the template.
//!
//! cargo-nextest runs each test in its own process, so sharing goes through the file system:
//! the first process to take the lock `target/chatd-test-pg/lock` starts the server (data in
//! `target/chatd-test-pg/data`), the others find it running and reuse it. `scripts/test` stops
//! the server and removes `target/chatd-test-pg` after the run, so each run starts clean.
//!
//! Set `CHATD_TEST_DATABASE_URL` to a URL of an admin database (e.g. `postgres`) on a server of
//! your own to use that server instead; its user needs `CREATEDB`.
//!
//! Databases are never dropped: a failed test keeps its database for debugging. The test's
//! output names it (`chatd_t_…`).

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use chatd_shared::pg_embed::{EmbeddedOptions, EmbeddedPostgres};
use tokio_postgres::error::SqlState;

/// Environment variable naming an admin database URL of a server to use instead of the
/// embedded one.
pub const EXTERNAL_SERVER_ENV: &str = "CHATD_TEST_DATABASE_URL";

/// How long to retry creating a database while its template is busy.
const CREATE_DEADLINE: Duration = Duration::from_secs(30);

/// A fresh, migrated database that belongs to one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// `postgres://…/name`, for the code under test.
    pub url: String,
    /// The database name, `chatd_t_<random hex>`.
    pub name: String,
}

impl TestDatabase {
    /// A plain connection, driven by a task on the current runtime.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.url).await
    }
}

/// Creates a fresh database from the migrated template, starting the shared server and
/// building the template first if this is the first test of the run to get here.
///
/// Panics when PostgreSQL can't be set up: no test can run without it.
pub async fn test_database() -> TestDatabase {
    match try_test_database().await {
        Ok(database) => {
            // Printed so a failed test's output names the database it left behind.
            eprintln!("test database: {}", database.url);
            database
        }
        Err(error) => panic!("set up the test database: {error:#}"),
    }
}

async fn try_test_database() -> anyhow::Result<TestDatabase> {
    let state_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chatd-test-pg");
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("create {}", state_dir.display()))?;

    let lock = lock_exclusively(state_dir.join("lock")).await?;
    let (admin_url, is_external) = match std::env::var(EXTERNAL_SERVER_ENV) {
        Ok(url) => (url, true),
        Err(_) => (
            start_shared_server(&state_dir).await?.url("postgres"),
            false,
        ),
    };
    let admin = connect(&admin_url)
        .await
        .context("connect to the admin database")?;
    let template = format!("chatd_tpl_{}", chatd_shared::db::migrate::fingerprint());
    // Only this lock's holders build templates on the embedded server, so any half-built one
    // is a leftover of a crash; an external server may be shared with other workspaces.
    ensure_template(&admin, &admin_url, &template, !is_external).await?;
    drop(lock);

    let name = format!("chatd_t_{}", uuid::Uuid::new_v4().simple());
    create_from_template(&admin, &name, &template).await?;
    Ok(TestDatabase {
        url: with_database(&admin_url, &name)?,
        name,
    })
}

/// Takes an exclusive lock on `path`, held until the returned file is dropped.
async fn lock_exclusively(path: PathBuf) -> anyhow::Result<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("lock {}", path.display()))?;
        Ok(file)
    })
    .await
    .context("wait for the test server lock")?
}

/// Starts the run's server, or finds it running. Call with the lock held.
async fn start_shared_server(state_dir: &std::path::Path) -> anyhow::Result<EmbeddedPostgres> {
    let settings = [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
    ];
    let options = EmbeddedOptions {
        port: 0,
        settings: settings
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        ..EmbeddedOptions::new(state_dir.join("data"))
    };
    EmbeddedPostgres::start(options)
        .await
        .context("start the test PostgreSQL server")
}

/// Makes sure the migrated template database exists. Call with the lock held.
///
/// The template is built under a temporary name and renamed when complete, so a crash never
/// leaves a half-migrated template behind under the real name.
async fn ensure_template(
    admin: &tokio_postgres::Client,
    admin_url: &str,
    template: &str,
    drop_leftovers: bool,
) -> anyhow::Result<()> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .context("look for the template database")?
        .is_some();
    if exists {
        return Ok(());
    }
    if drop_leftovers {
        let leftovers = admin
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'chatd\\_tplnew\\_%'",
                &[],
            )
            .await
            .context("look for half-built templates")?;
        for leftover in leftovers {
            let name: String = leftover.get(0);
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote(&name)))
                .await
                .with_context(|| format!("drop half-built template {name}"))?;
        }
    }

    let building = format!("chatd_tplnew_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote(&building)))
        .await
        .with_context(|| format!("create database {building}"))?;
    {
        let (mut client, connection) =
            tokio_postgres::connect(&with_database(admin_url, &building)?, tokio_postgres::NoTls)
                .await
                .with_context(|| format!("connect to {building}"))?;
        let driver = tokio::spawn(connection);
        chatd_shared::db::migrate::run(&mut client)
            .await
            .context("migrate the template database")?;
        // Disconnect before renaming: a database with sessions can't be renamed or copied.
        drop(client);
        let _ = driver.await;
    }

    let renamed = admin
        .batch_execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote(&building),
            quote(template)
        ))
        .await;
    match renamed {
        Ok(()) => {}
        // Another workspace sharing an external server finished first.
        Err(error) if error.code() == Some(&SqlState::DUPLICATE_DATABASE) => {
            admin
                .batch_execute(&format!("DROP DATABASE {}", quote(&building)))
                .await
                .with_context(|| format!("drop the redundant template {building}"))?;
            return Ok(());
        }
        Err(error) => {
            return Err(error).with_context(|| format!("rename {building} to {template}"));
        }
    }
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} IS_TEMPLATE true",
            quote(template)
        ))
        .await
        .with_context(|| format!("mark {template} as a template"))?;
    Ok(())
}

/// `CREATE DATABASE name TEMPLATE template`, retried while the template has sessions (e.g.
/// someone inspecting it) until a deadline.
async fn create_from_template(
    admin: &tokio_postgres::Client,
    name: &str,
    template: &str,
) -> anyhow::Result<()> {
    let statement = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        quote(name),
        quote(template)
    );
    let deadline = Instant::now() + CREATE_DEADLINE;
    loop {
        match admin.batch_execute(&statement).await {
            Ok(()) => return Ok(()),
            Err(error)
                if error.code() == Some(&SqlState::OBJECT_IN_USE) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("create {name} from {template}"));
            }
        }
    }
}

/// The product's own connector, so test databases reached over TLS (`sslmode=…` in the URL)
/// work like any other.
async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    chatd_shared::db::pool::connect_url(url, "test-harness").await
}

/// `url` with its database (the path) replaced by `database`, keeping any query string.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let authority_start = url
        .find("://")
        .with_context(|| format!("{url:?} is not a postgres:// URL"))?
        + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map_or("", |start| &rest[authority_end + start..]);
    Ok(format!(
        "{}{}/{database}{query}",
        &url[..authority_start],
        &rest[..authority_end]
    ))
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// A PostgreSQL server of one test's own (for faults that would disturb the shared server:
/// restarts, crashes), with one migrated database. Shut down when dropped.
pub struct PrivateServer {
    pub server: EmbeddedPostgres,
    options: EmbeddedOptions,
    pub db: TestDatabase,
}

impl PrivateServer {
    pub async fn start() -> PrivateServer {
        let data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/chatd-test-pg")
            .join(format!("private-{}", uuid::Uuid::new_v4().simple()));
        let options = EmbeddedOptions {
            port: 0,
            // fsync off is safe (the server crashes, never the OS); synchronous_commit stays
            // on, or a crash-restart would lose acknowledged commits.
            settings: vec![("fsync".to_owned(), "off".to_owned())],
            ..EmbeddedOptions::new(data_dir)
        };
        let server = EmbeddedPostgres::start(options.clone())
            .await
            .expect("start a private PostgreSQL server");
        let name = "chatd_private".to_owned();
        server
            .create_database(&name, None)
            .await
            .expect("create the database");
        let url = server.url(&name);
        let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(connection);
        chatd_shared::db::migrate::run(&mut client)
            .await
            .expect("migrate");
        drop(client);
        let _ = driver.await;
        let options = EmbeddedOptions {
            port: server.port(),
            ..options
        };
        PrivateServer {
            server,
            options,
            db: TestDatabase { url, name },
        }
    }

    /// `pg_ctl restart -m immediate`: a crash and crash recovery on the same port.
    pub async fn restart_immediately(&mut self) {
        self.server
            .stop_immediately()
            .await
            .expect("stop immediately");
        self.server = EmbeddedPostgres::start(self.options.clone())
            .await
            .expect("start again");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.server.signal_immediate_shutdown();
    }
}
