//! A cluster whose pools go through PgBouncer in transaction mode (Debian's `pgbouncer`, 1.18,
//! which keeps no prepared statements across transactions) with `--database-pooler
//! transaction`, and whose LISTEN connections and liveness locks connect directly
//! (`--listen-database-url`). Two API replicas and two workers share two server connections,
//! so every statement of every process lands on a connection other processes used before it:
//! with named statements this fails within a few turns ("prepared statement … does not
//! exist" / "already exists").

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chatd_mock_llm::plan::DEFAULT_TOKENS;
use chatd_mock_llm::reply::reply_text;
use common::cluster::{assistant_texts, create_chat, free_port, wait_until, Cluster};
use serde_json::json;

/// Server connections PgBouncer keeps to PostgreSQL for the test database.
const SERVER_CONNECTIONS: usize = 2;
const CHATS: usize = 8;
const TURNS_PER_CHAT: usize = 3;

/// A PgBouncer process in transaction mode in front of the test server; killed on drop.
struct PgBouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PgBouncer {
    async fn start(database_url: &str, name: &str) -> PgBouncer {
        let config: tokio_postgres::Config = database_url.parse().expect("a database URL");
        let user = config.get_user().expect("a user in the URL").to_owned();
        let postgres_port = config.get_ports()[0];
        let port = free_port();
        // Outside the repository: its parents may not be readable by `nobody`.
        let dir = std::env::temp_dir().join(format!("chatd-pgbouncer-{}", name));
        std::fs::create_dir_all(&dir).expect("create the pgbouncer directory");
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n"))
            .expect("write userlist.txt");
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={postgres_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {dir}/userlist.txt\n\
                 admin_users = {user}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {SERVER_CONNECTIONS}\n\
                 max_client_conn = 1000\n\
                 logfile = {dir}/pgbouncer.log\n",
                dir = dir.display()
            ),
        )
        .expect("write pgbouncer.ini");
        let mut command = Command::new(common::debian_binary("pgbouncer"));
        command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // PgBouncer refuses to run as root: run it as `nobody`, which can read the files.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::process::CommandExt;
            for path in [&dir, &dir.join("userlist.txt"), &dir.join("pgbouncer.ini")] {
                std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown");
            }
            command.uid(65534).gid(65534);
        }
        let child = command.spawn().expect("start pgbouncer");
        let bouncer = PgBouncer { child, port, dir };
        wait_until(Duration::from_secs(10), "pgbouncer to answer", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        bouncer
    }

    /// `database_url` with its host and port replaced by PgBouncer's.
    fn url(&self, database_url: &str) -> String {
        let config: tokio_postgres::Config = database_url.parse().expect("a database URL");
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            config.get_user().expect("a user"),
            self.port,
            config.get_dbname().expect("a database")
        )
    }

    /// `SHOW POOLS`/`SHOW STATS` row for `database` from the admin console, as name → value.
    async fn show(&self, what: &str, user: &str, database: &str) -> Vec<(String, String)> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={user} dbname=pgbouncer",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the pgbouncer console");
        tokio::spawn(connection);
        let messages = client
            .simple_query(&format!("SHOW {what}"))
            .await
            .expect("query the pgbouncer console");
        messages
            .into_iter()
            .find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row)
                    if row.get("database") == Some(database) =>
                {
                    Some(
                        row.columns()
                            .iter()
                            .enumerate()
                            .map(|(index, column)| {
                                (
                                    column.name().to_owned(),
                                    row.get(index).unwrap_or("").to_owned(),
                                )
                            })
                            .collect(),
                    )
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {what} row for {database} in pgbouncer"))
    }
}

fn value(row: &[(String, String)], name: &str) -> u64 {
    row.iter()
        .find(|(column, _)| column == name)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {row:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_runs_through_pgbouncer_in_transaction_mode() {
    let mut cluster = Cluster::start(0, 0).await;
    let bouncer = PgBouncer::start(&cluster.db.url, &cluster.db.name).await;
    let pooled = bouncer.url(&cluster.db.url);
    let direct = cluster.db.url.clone();
    let flags = [
        "--database-pooler",
        "transaction",
        "--listen-database-url",
        direct.as_str(),
    ];
    for _ in 0..2 {
        cluster
            .add_api_via(&pooled, &flags)
            .await
            .expect("start an API replica through pgbouncer");
    }
    for _ in 0..2 {
        cluster
            .add_worker_via(&pooled, &flags)
            .await
            .expect("start a worker through pgbouncer");
    }

    // Chats created and continued on alternating replicas, all at once.
    let chats = futures::future::join_all((0..CHATS).map(|index| {
        let api = cluster.api(index % 2);
        let other = cluster.api((index + 1) % 2);
        async move {
            let mut sent = vec![format!("chat {index} turn 0")];
            let (chat_id, _) = create_chat(&api, &sent[0]).await;
            for turn in 1..TURNS_PER_CHAT {
                wait_until(Duration::from_secs(60), "the previous answer", || {
                        let api = api.clone();
                        let chat_id = chat_id.clone();
                        async move {
                            (assistant_texts(&api, &chat_id).await.len() == turn).then_some(())
                        }
                    })
                    .await;
                let text = format!("chat {index} turn {turn}");
                let (status, body) = other
                    .post(
                        &format!("/chats/{chat_id}/messages"),
                        &json!({ "content": text }),
                    )
                    .await
                    .expect("send a message");
                assert_eq!(status, 201, "send through pgbouncer: {body}");
                sent.push(text);
            }
            (chat_id, sent)
        }
    }))
    .await;

    let api = cluster.api(0);
    for (chat_id, sent) in &chats {
        let texts = wait_until(Duration::from_secs(60), "every answer", || {
            let api = api.clone();
            let chat_id = chat_id.clone();
            async move {
                let texts = assistant_texts(&api, &chat_id).await;
                (texts.len() == TURNS_PER_CHAT).then_some(texts)
            }
        })
        .await;
        let expected: Vec<String> = sent
            .iter()
            .map(|message| reply_text(message, DEFAULT_TOKENS))
            .collect();
        assert_eq!(texts, expected, "chat {chat_id}");
    }
    let (status, body) = api.get("/chats?limit=100").await.expect("list chats");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["items"].as_array().map(Vec::len),
        Some(CHATS),
        "{body}"
    );

    // The pools did go through PgBouncer, which kept to its two server connections.
    let user = cluster.db.url.parse::<tokio_postgres::Config>().unwrap();
    let user = user.get_user().unwrap().to_owned();
    let stats = bouncer.show("STATS", &user, &cluster.db.name).await;
    assert!(
        value(&stats, "total_xact_count") >= (CHATS * TURNS_PER_CHAT * 3) as u64,
        "transactions through pgbouncer: {stats:?}"
    );
    let pools = bouncer.show("POOLS", &user, &cluster.db.name).await;
    let servers = ["sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"]
        .iter()
        .map(|name| value(&pools, name))
        .sum::<u64>();
    assert!(
        servers <= SERVER_CONNECTIONS as u64,
        "server connections: {pools:?}"
    );
    assert!(
        value(&pools, "cl_active") + value(&pools, "cl_waiting") > SERVER_CONNECTIONS as u64,
        "more clients than server connections: {pools:?}"
    );

    // Without the session timeouts the pool cannot set through PgBouncer, each process says
    // how to set them for its role.
    let log = std::fs::read_to_string(cluster.log_path("api-0")).expect("the API log");
    assert!(
        log.contains("ALTER ROLE chatd SET idle_in_transaction_session_timeout"),
        "the API warns about the missing timeouts: {log}"
    );
}
