//! A replica started against a database `chatd migrate` has not brought to its schema version
//! says so and exits — or, with `--wait-for-migrations`, waits (answering its liveness probe)
//! and starts once it has; against a newer schema it runs only when the newer migrations
//! declare it compatible.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::{test_database, with_database};

fn chatd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatd"));
    command.env_remove("CHATD_DATABASE_URL");
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmigrated_database_is_refused_or_waited_for() {
    // An empty database next to the test's own.
    let db = test_database().await;
    let name = format!("{}_empty", db.name);
    let sql = db.connect().await.expect("connect");
    sql.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create an empty database");
    let empty = with_database(&db.url, &name).unwrap();

    let refused = chatd()
        .args(["api", "--database-url", &empty, "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .output()
        .expect("run chatd api");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("no chatd schema") && stderr.contains("chatd migrate"),
        "{stderr}"
    );
    let worker = chatd()
        .args(["worker", "--database-url", &empty])
        .stdout(Stdio::null())
        .output()
        .expect("run chatd worker");
    assert!(!worker.status.success());
    assert!(
        String::from_utf8_lossy(&worker.stderr).contains("chatd migrate"),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );

    // Waiting: both start once the migration has run. Meanwhile the API replica answers
    // its liveness probe (so Kubernetes does not restart it for waiting) and nothing else.
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut waiting = chatd()
        .args([
            "api",
            "--database-url",
            &empty,
            "--addr",
            &address,
            "--wait-for-migrations",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chatd api");
    let mut waiting_worker = chatd()
        .args(["worker", "--database-url", &empty, "--wait-for-migrations"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chatd worker");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let base = format!("http://{address}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "no /healthz while waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "the API replica waits"
    );
    assert!(
        waiting_worker.try_wait().unwrap().is_none(),
        "the worker waits"
    );
    let status = |path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { http.get(url).send().await.map(|r| r.status().as_u16()).ok() }
    };
    assert_eq!(status("/healthz").await, Some(200));
    assert_eq!(status("/readyz").await, Some(503));
    assert_eq!(status("/api/v1/chats").await, Some(503));
    let migrated = chatd()
        .args(["migrate", "--database-url", &empty])
        .output()
        .expect("run chatd migrate");
    assert!(migrated.status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while status("/readyz").await != Some(200) {
        assert!(
            Instant::now() < deadline,
            "not ready 15 s after the migration"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The real routes now (401 without a token, not the stand-in's 503).
    assert_eq!(status("/api/v1/chats").await, Some(401));
    assert!(
        waiting_worker.try_wait().unwrap().is_none(),
        "the worker runs"
    );
    for mut child in [waiting, waiting_worker] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Rolling back: a build runs against a newer schema only while every newer migration says
/// it is compatible with the build (`compatible_from`, recorded by `chatd migrate`).
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_schema_is_run_against_only_when_compatible() {
    let db = test_database().await;
    let sql = db.connect().await.expect("connect");
    let known = chatd_shared::db::migrate::latest_version();
    let recorded: Vec<(i32, Option<i32>, Option<String>)> = sql
        .query(
            "SELECT version, compatible_from, chatd_version FROM schema_migrations ORDER BY 1",
            &[],
        )
        .await
        .expect("read schema_migrations")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let expected: Vec<(i32, Option<i32>, Option<String>)> = chatd_shared::db::migrate::MIGRATIONS
        .iter()
        .map(|migration| {
            (
                migration.version,
                Some(migration.compatible_from),
                Some(chatd_shared::db::migrate::CHATD_VERSION.to_owned()),
            )
        })
        .collect();
    assert_eq!(recorded, expected, "chatd migrate records compatibility");

    // A newer, additive migration (as a newer chatd would record it): this build runs.
    sql.execute(
        "INSERT INTO schema_migrations (version, name, compatible_from, chatd_version) \
         VALUES ($1, 'future_additive', $2, '9.9.9')",
        &[&(known + 1), &known],
    )
    .await
    .expect("record a compatible migration");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut api = chatd()
        .args(["api", "--database-url", &db.url, "--addr", &address])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chatd api");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(response) = http.get(format!("http://{address}/readyz")).send().await {
            if response.status() == 200 {
                break;
            }
        }
        assert!(
            api.try_wait().unwrap().is_none(),
            "it runs against a compatible schema"
        );
        assert!(
            Instant::now() < deadline,
            "not ready against a compatible schema"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = api.kill();
    let _ = api.wait();

    // One that this build cannot run against: refused, naming both versions.
    sql.execute(
        "INSERT INTO schema_migrations (version, name, compatible_from, chatd_version) \
         VALUES ($1, 'future_breaking', $1, '9.9.9')",
        &[&(known + 2)],
    )
    .await
    .expect("record an incompatible migration");
    for role in ["api", "worker"] {
        let mut command = chatd();
        command.args([role, "--database-url", &db.url]);
        if role == "api" {
            command.args(["--addr", "127.0.0.1:0"]);
        }
        let refused = command.output().expect("run chatd");
        assert!(!refused.status.success(), "{role} refuses");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!("schema is at version {}", known + 2))
                && stderr.contains("chatd 9.9.9")
                && stderr.contains(&format!("schema version {} or later", known + 2))
                && stderr.contains(&format!("knows version {known}")),
            "{role}: {stderr}"
        );
    }
}

/// Migration 14 (`chat_stream_frames.events` from `jsonb` to `json`) says builds at version 13
/// keep running: their resume-log insert, which sends `jsonb` frames, still writes, and the
/// frames read back as the JSON they wrote.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_13_worker_still_writes_resume_frames() {
    let db = test_database().await;
    let sql = db.connect().await.expect("connect");
    let worker_id = uuid::Uuid::new_v4();
    let chat_id: uuid::Uuid = sql
        .query_one(
            "WITH u AS (INSERT INTO users (username) VALUES ('v13') RETURNING id) \
             INSERT INTO chats (owner_id, status, worker_id, attempt) \
             SELECT id, 'running', $1, 3 FROM u RETURNING id",
            &[&worker_id],
        )
        .await
        .expect("a leased chat")
        .get(0);
    let events = serde_json::json!([{"seq": 1, "event": "message_part",
                                     "data": {"part": {"type": "text", "text": "hi"}}}]);
    // Version 13's statement, word for word.
    let written = sql
        .query(
            "INSERT INTO chat_stream_frames (chat_id, attempt, seq_from, seq_to, events) \
             SELECT u.chat_id, u.attempt, u.seq_from, u.seq_to, u.events \
             FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::bigint[], $5::jsonb[]) \
                 AS u(chat_id, attempt, seq_from, seq_to, events), \
             LATERAL (SELECT c.attempt, c.worker_id FROM chats c WHERE c.id = u.chat_id \
                 OFFSET 0) c \
             WHERE c.attempt = u.attempt AND c.worker_id = $6 \
             ON CONFLICT (chat_id, attempt, seq_from) DO UPDATE SET seq_to = EXCLUDED.seq_to \
             RETURNING chat_id, attempt, seq_from, \
                 (extract(epoch FROM created_at) * 1000000)::bigint",
            &[
                &vec![chat_id],
                &vec![3_i32],
                &vec![1_i64],
                &vec![1_i64],
                &vec![tokio_postgres::types::Json(&events)],
                &worker_id,
            ],
        )
        .await
        .expect("version 13's frame insert");
    assert_eq!(written.len(), 1, "the frame is written");
    let stored: serde_json::Value = sql
        .query_one(
            "SELECT events FROM chat_stream_frames WHERE chat_id = $1",
            &[&chat_id],
        )
        .await
        .expect("read the frame")
        .get(0);
    assert_eq!(stored, events);
}

/// Migration 15 rewrote the CHECK constraints of `chats` and `chat_messages` (NOT VALID, in a
/// cheaper stored form): they still refuse what they refused before, and accept the rest.
#[tokio::test(flavor = "multi_thread")]
async fn the_turn_tables_checks_still_hold() {
    let db = test_database().await;
    let sql = db.connect().await.expect("connect");
    let owner: uuid::Uuid = sql
        .query_one(
            "INSERT INTO users (username) VALUES ('checks') RETURNING id",
            &[],
        )
        .await
        .expect("a user")
        .get(0);
    let refused = |statement: &'static str, constraint: &'static str| {
        let sql = &sql;
        async move {
            let error = sql
                .execute(statement, &[&owner])
                .await
                .expect_err(statement);
            let name = error
                .as_db_error()
                .and_then(|db| db.constraint())
                .unwrap_or_default()
                .to_string();
            assert_eq!(name, constraint, "{statement}: {error}");
        }
    };
    refused(
        "INSERT INTO chats (owner_id, status) VALUES ($1, 'bogus')",
        "chats_status_check",
    )
    .await;
    refused(
        "INSERT INTO chats (owner_id, status) VALUES ($1, 'running')",
        "chats_check",
    )
    .await;
    refused(
        "INSERT INTO chats (owner_id, status, worker_id) VALUES ($1, 'waiting', $1)",
        "chats_check",
    )
    .await;
    let chat: uuid::Uuid = sql
        .query_one(
            "INSERT INTO chats (owner_id, status, worker_id) VALUES ($1, 'running', $1) \
             RETURNING id",
            &[&owner],
        )
        .await
        .expect("a leased chat passes")
        .get(0);
    for status in [
        "interrupting",
        "awaiting_agents",
        "requires_action",
        "error",
    ] {
        let worker = (status == "interrupting").then_some(owner);
        sql.execute(
            "UPDATE chats SET status = $2, worker_id = $3 WHERE id = $1",
            &[&chat, &status, &worker],
        )
        .await
        .unwrap_or_else(|error| panic!("{status} passes: {error}"));
    }
    refused(
        "INSERT INTO chat_messages (chat_id, role, content) \
         SELECT id, 'robot', '[]' FROM chats WHERE owner_id = $1",
        "chat_messages_role_check",
    )
    .await;
    refused(
        "INSERT INTO chat_messages (chat_id, role, content, visibility) \
         SELECT id, 'user', '[]', 'nobody' FROM chats WHERE owner_id = $1",
        "chat_messages_visibility_check",
    )
    .await;
    sql.execute(
        "INSERT INTO chat_messages (chat_id, role, content, visibility) \
         SELECT id, 'tool', '[]', 'model' FROM chats WHERE owner_id = $1",
        &[&owner],
    )
    .await
    .expect("a valid message passes");
}
