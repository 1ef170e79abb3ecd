//! A replica started against a database `chatd migrate` has not brought to its schema version
//! says so and exits — or, with `--wait-for-migrations`, waits and starts once it has.

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

    // Waiting: it starts once the migration has run.
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(waiting.try_wait().unwrap().is_none(), "it waits");
    // The port is bound from the start, but nothing is served before the schema is there.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let ready = format!("http://{address}/readyz");
    assert!(http.get(&ready).send().await.is_err(), "not serving yet");
    let migrated = chatd()
        .args(["migrate", "--database-url", &empty])
        .output()
        .expect("run chatd migrate");
    assert!(migrated.status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(response) = http.get(&ready).send().await {
            if response.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not ready 15 s after the migration"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = waiting.kill();
    let _ = waiting.wait();
}
