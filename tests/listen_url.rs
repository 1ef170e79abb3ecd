//! `--listen-database-url`: the connections that need a session of their own (the LISTEN
//! connection of API replicas and workers, the worker's liveness lock) use it, everything else
//! the pool's `--database-url` — so the pool can go through a transaction pooler. Here the two
//! URLs name different roles, and `pg_stat_activity` shows which connection used which.

mod common;

use std::time::Duration;

use common::cluster::{assistant_texts, create_chat, wait_until, Cluster};

/// `url` with its user (and password) replaced.
fn as_role(url: &str, role: &str, password: &str) -> String {
    let start = url.find("://").expect("a URL") + 3;
    let rest = &url[start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{}{role}:{password}@{host}", &url[..start])
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_use_the_listen_url_and_the_pool_the_database_url() {
    let mut cluster = Cluster::start(0, 0).await;
    let role = format!("listen_{}", uuid::Uuid::new_v4().simple());
    let sql = cluster.sql().await;
    sql.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'listen-secret'"
    ))
    .await
    .expect("create the listen role");
    let listen_url = as_role(&cluster.db.url, &role, "listen-secret");
    cluster
        .add_api_with(&["--listen-database-url", &listen_url])
        .await
        .expect("start the API replica");
    cluster
        .add_worker(&["--listen-database-url", &listen_url])
        .await
        .expect("start the worker");

    // Streams (through the listener) and turns (through the pool) work.
    let api = cluster.api(0);
    let (chat_id, _) = create_chat(&api, "hello").await;
    wait_until(Duration::from_secs(30), "the answer", || {
        let api = api.clone();
        let chat_id = chat_id.clone();
        async move { (!assistant_texts(&api, &chat_id).await.is_empty()).then_some(()) }
    })
    .await;

    let rows = sql
        .query(
            "SELECT application_name, usename::text FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'chatd-%' \
             GROUP BY 1, 2 ORDER BY 1",
            &[],
        )
        .await
        .expect("read pg_stat_activity");
    let sessions: Vec<(String, String)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    for name in [
        "chatd-api-listener",
        "chatd-worker-listener",
        "chatd-worker-liveness",
    ] {
        let users: Vec<&str> = sessions
            .iter()
            .filter(|(application, _)| application == name)
            .map(|(_, user)| user.as_str())
            .collect();
        assert_eq!(users, [role.as_str()], "{name}: {sessions:?}");
    }
    for name in ["chatd-api", "chatd-worker"] {
        assert!(
            sessions
                .iter()
                .any(|(application, user)| application == name && user != &role),
            "{name} uses the database URL: {sessions:?}"
        );
    }
    drop(cluster);
    let _ = sql
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
}
