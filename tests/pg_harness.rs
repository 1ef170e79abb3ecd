//! The PostgreSQL test harness itself: every test gets its own migrated database, and every
//! test process of a run shares one server.

mod common;

use anyhow::Context;
use common::pg::{test_database, with_database, EXTERNAL_SERVER_ENV};

#[tokio::test]
async fn each_test_database_is_fresh_migrated_and_separate() -> anyhow::Result<()> {
    let first = test_database().await;
    let second = test_database().await;
    assert_ne!(first.name, second.name);
    assert_ne!(first.url, second.url);

    let expected_versions: Vec<i32> = chatd_shared::db::migrate::MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .collect();
    for database in [&first, &second] {
        let client = database.connect().await?;
        let current: String = client
            .query_one("SELECT current_database()", &[])
            .await?
            .get(0);
        assert_eq!(current, database.name);
        let chats: i64 = client
            .query_one("SELECT count(*) FROM chats", &[])
            .await
            .context("count chats")?
            .get(0);
        assert_eq!(chats, 0);
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .context("read schema_migrations")?
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(versions, expected_versions);
    }

    // A write in one test's database is invisible in another's.
    let first_client = first.connect().await?;
    first_client
        .execute("INSERT INTO users (username) VALUES ('harness')", &[])
        .await
        .context("insert a user")?;
    let second_client = second.connect().await?;
    let users_in_second: i64 = second_client
        .query_one("SELECT count(*) FROM users", &[])
        .await?
        .get(0);
    assert_eq!(users_in_second, 0);
    Ok(())
}

/// Runs concurrently with the test above (nextest gives each its own process): both must end up
/// on the one server started from `target/chatd-test-pg/data`.
#[tokio::test]
async fn test_processes_share_the_server_in_the_target_dir() -> anyhow::Result<()> {
    let database = test_database().await;
    if std::env::var_os(EXTERNAL_SERVER_ENV).is_some() {
        return Ok(()); // an external server's data directory is none of our business
    }
    let data_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chatd-test-pg/data");
    let postmaster_pid = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .context("read postmaster.pid of the shared server")?;
    let port = postmaster_pid
        .lines()
        .nth(3)
        .context("port line of postmaster.pid")?;
    assert!(
        database
            .url
            .contains(&format!("@127.0.0.1:{}/", port.trim())),
        "{} is not on the shared server's port {port}",
        database.url
    );
    let client = database.connect().await?;
    let server_data_dir: String = client.query_one("SHOW data_directory", &[]).await?.get(0);
    assert_eq!(
        std::fs::canonicalize(server_data_dir)?,
        std::fs::canonicalize(&data_dir)?
    );
    Ok(())
}

#[test]
fn with_database_replaces_only_the_path() -> anyhow::Result<()> {
    assert_eq!(
        with_database("postgres://u:p@db:5432/postgres?sslmode=disable", "t")?,
        "postgres://u:p@db:5432/t?sslmode=disable"
    );
    assert_eq!(with_database("postgresql://db", "t")?, "postgresql://db/t");
    assert_eq!(
        with_database("postgres://db?x=1", "t")?,
        "postgres://db/t?x=1"
    );
    assert!(with_database("host=db dbname=x", "t").is_err());
    Ok(())
}
