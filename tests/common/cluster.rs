//! A real cluster for integration tests: the `chatd` binary run as separate processes
//! (`mock-llm`, N × `api`, M × `worker`) against a fresh database on the shared test server.
//! Children are killed when the `Cluster` is dropped; their logs go to
//! `target/test-logs/<database>/<role>.log`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use uuid::Uuid;

use chatd_client::ApiClient;

use super::pg::{test_database, TestDatabase};

/// Fast timings so fault tests finish in seconds.
pub const FAST_WORKER_ARGS: &[&str] = &[
    "--heartbeat-interval-ms",
    "300",
    "--stale-after-ms",
    "2000",
    "--sweep-interval-ms",
    "300",
    "--acquire-interval-ms",
    "200",
    "--shutdown-grace-ms",
    "2000",
    // Automatic titles change chats in the background; tests that want them turn them on.
    "--title-timeout-ms",
    "0",
];

pub struct Process {
    pub child: Child,
    pub url: String,
    pub worker_id: Option<Uuid>,
    /// The command line it was started with (for restarts).
    pub args: Vec<String>,
}

pub struct Cluster {
    pub db: TestDatabase,
    pub mock_url: String,
    pub apis: Vec<Process>,
    pub workers: Vec<Process>,
    /// Token of the test user `alice`.
    pub token: String,
    pub http: reqwest::Client,
    mock: Process,
    log_dir: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("bind a free port")
}

impl Cluster {
    /// Starts `apis` API replicas and `workers` workers (with `FAST_WORKER_ARGS`).
    pub async fn start(apis: usize, workers: usize) -> Cluster {
        match Cluster::try_start(apis, workers).await {
            Ok(cluster) => cluster,
            Err(error) => panic!("start the cluster: {error:#}"),
        }
    }

    /// Like [`Cluster::start`], on a database of the caller's (e.g. on a private server).
    pub async fn start_on(db: TestDatabase, apis: usize, workers: usize) -> Cluster {
        match Cluster::try_start_on(db, apis, workers).await {
            Ok(cluster) => cluster,
            Err(error) => panic!("start the cluster: {error:#}"),
        }
    }

    async fn try_start(apis: usize, workers: usize) -> anyhow::Result<Cluster> {
        Cluster::try_start_on(test_database().await, apis, workers).await
    }

    async fn try_start_on(
        db: TestDatabase,
        apis: usize,
        workers: usize,
    ) -> anyhow::Result<Cluster> {
        let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-logs")
            .join(&db.name);
        std::fs::create_dir_all(&log_dir)?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?;
        let mock_port = free_port();
        let mock = spawn(
            &log_dir,
            "mock-llm",
            &["mock-llm", "--addr", &format!("127.0.0.1:{mock_port}")],
            &[],
        )?;
        let mock = Process {
            child: mock,
            url: format!("http://127.0.0.1:{mock_port}"),
            worker_id: None,
            args: Vec::new(),
        };
        wait_http_ok(&http, &format!("{}/healthz", mock.url)).await?;
        let token = seed(&db, &format!("{}/v1", mock.url)).await?;
        let mut cluster = Cluster {
            db,
            mock_url: mock.url.clone(),
            apis: Vec::new(),
            workers: Vec::new(),
            token,
            http,
            mock,
            log_dir,
        };
        for _ in 0..apis {
            cluster.add_api().await?;
        }
        for _ in 0..workers {
            cluster.add_worker(&[]).await?;
        }
        Ok(cluster)
    }

    pub async fn add_api(&mut self) -> anyhow::Result<()> {
        self.add_api_with(&[]).await
    }

    /// The log file of process `role` (`api-0`, `worker-1`, `mock-llm`).
    pub fn log_path(&self, role: &str) -> PathBuf {
        self.log_dir.join(format!("{role}.log"))
    }

    /// Starts another API replica with `extra` flags.
    pub async fn add_api_with(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let url = self.db.url.clone();
        self.add_api_via(&url, extra).await
    }

    /// Starts an API replica that reaches PostgreSQL through `database_url` (e.g. a pooler).
    pub async fn add_api_via(&mut self, database_url: &str, extra: &[&str]) -> anyhow::Result<()> {
        let port = free_port();
        let index = self.apis.len();
        let address = format!("127.0.0.1:{port}");
        let mut args = vec!["api", "--database-url", database_url, "--addr", &address];
        args.extend_from_slice(extra);
        let child = spawn(&self.log_dir, &format!("api-{index}"), &args, &[])?;
        let url = format!("http://127.0.0.1:{port}");
        wait_http_ok(&self.http, &format!("{url}/readyz")).await?;
        self.apis.push(Process {
            child,
            url,
            worker_id: None,
            args: args.iter().map(|arg| arg.to_string()).collect(),
        });
        Ok(())
    }

    /// Starts a worker with `FAST_WORKER_ARGS` plus `extra` flags.
    pub async fn add_worker(&mut self, extra: &[&str]) -> anyhow::Result<Uuid> {
        let url = self.db.url.clone();
        self.add_worker_via(&url, extra).await
    }

    /// Starts a worker that reaches PostgreSQL through `database_url` (e.g. a proxy).
    pub async fn add_worker_via(
        &mut self,
        database_url: &str,
        extra: &[&str],
    ) -> anyhow::Result<Uuid> {
        let worker_id = Uuid::new_v4();
        let index = self.workers.len();
        let id_text = worker_id.to_string();
        let mut args = vec![
            "worker",
            "--database-url",
            database_url,
            "--worker-id",
            &id_text,
        ];
        // `extra` overrides the fast defaults flag by flag.
        for pair in FAST_WORKER_ARGS.chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend_from_slice(pair);
            }
        }
        args.extend_from_slice(extra);
        let child = spawn(&self.log_dir, &format!("worker-{index}"), &args, &[])?;
        self.workers.push(Process {
            child,
            url: String::new(),
            worker_id: Some(worker_id),
            args: args.iter().map(|arg| arg.to_string()).collect(),
        });
        Ok(worker_id)
    }

    /// A client of API replica `index` as the test user.
    pub fn api(&self, index: usize) -> ApiClient {
        ApiClient::new(&self.apis[index].url, &self.token, self.http.clone())
    }

    /// The value of metric `name` on API replica `index`, summed over its label sets (0 when
    /// not yet set).
    pub async fn api_metric(&self, index: usize, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.apis[index].url))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A client of API replica `index` with another token.
    pub fn api_as(&self, index: usize, token: &str) -> ApiClient {
        ApiClient::new(&self.apis[index].url, token, self.http.clone())
    }

    /// Creates another user and returns their token.
    pub async fn create_user(&self, username: &str) -> String {
        let client = self.db.connect().await.expect("connect");
        chatd_shared::db::admin::create_user(&client, username, false)
            .await
            .expect("create user");
        chatd_shared::db::admin::create_token(&client, username, "test")
            .await
            .expect("create token")
    }

    /// Gives `username` admin rights (before their token is first used, or wait for the
    /// token cache: this bypasses the API's revocation notices).
    #[allow(dead_code)]
    pub async fn make_admin(&self, username: &str) {
        self.sql()
            .await
            .execute(
                "UPDATE users SET is_admin = true WHERE username = $1",
                &[&username],
            )
            .await
            .expect("make an admin");
    }

    /// Opens the admin's watch stream (`GET /chats/watch`) on replica `index`.
    pub async fn watch(
        &self,
        index: usize,
    ) -> std::pin::Pin<
        Box<dyn futures::Stream<Item = anyhow::Result<chatd_client::StreamEvent>> + Send>,
    > {
        let watch = self
            .http
            .get(format!("{}/api/v1/chats/watch", self.apis[index].url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("open the watch stream");
        assert_eq!(watch.status(), 200);
        Box::pin(chatd_client::sse_events(watch.bytes_stream()))
    }

    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db
            .connect()
            .await
            .expect("connect to the test database")
    }

    /// Index of the worker process that owns `chat_id` now, if any.
    pub async fn owner_worker(&self, chat_id: &str) -> Option<usize> {
        let client = self.sql().await;
        let chat_id = Uuid::parse_str(chat_id).ok()?;
        let row = client
            .query_opt("SELECT worker_id FROM chats WHERE id = $1", &[&chat_id])
            .await
            .ok()??;
        let worker_id: Option<Uuid> = row.get(0);
        self.workers
            .iter()
            .position(|worker| worker.worker_id.is_some() && worker.worker_id == worker_id)
    }

    /// Restarts API replica `index` as a rolling update does: SIGTERM, wait for it to exit
    /// (it drains), start a new one with the same command line (same port), wait until ready.
    pub async fn restart_api(&mut self, index: usize, generation: usize) -> anyhow::Result<()> {
        stop_gracefully(&mut self.apis[index].child).await?;
        let args: Vec<&str> = self.apis[index].args.iter().map(String::as_str).collect();
        let child = spawn(
            &self.log_dir,
            &format!("api-{index}.{generation}"),
            &args,
            &[],
        )?;
        self.apis[index].child = child;
        wait_http_ok(&self.http, &format!("{}/readyz", self.apis[index].url)).await
    }

    /// Restarts worker `index` as a rolling update does: SIGTERM, wait for it to exit (it
    /// finishes or releases its turns), start a new one with a new identity.
    pub async fn restart_worker(&mut self, index: usize, generation: usize) -> anyhow::Result<()> {
        stop_gracefully(&mut self.workers[index].child).await?;
        let worker_id = Uuid::new_v4();
        let mut args = self.workers[index].args.clone();
        if let Some(position) = args.iter().position(|arg| arg == "--worker-id") {
            args[position + 1] = worker_id.to_string();
        }
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = spawn(
            &self.log_dir,
            &format!("worker-{index}.{generation}"),
            &arg_refs,
            &[],
        )?;
        self.workers[index] = Process {
            child,
            url: String::new(),
            worker_id: Some(worker_id),
            args,
        };
        Ok(())
    }

    pub fn signal_worker(&self, index: usize, signal: i32) {
        let pid = self.workers[index].child.id() as i32;
        // SAFETY: sending a signal to a child process we spawned and still own.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self
            .apis
            .iter_mut()
            .chain(self.workers.iter_mut())
            .chain(std::iter::once(&mut self.mock))
        {
            let pid = process.child.id() as i32;
            // A stopped (SIGSTOP) child must be continued to die promptly.
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        if std::thread::panicking() {
            print_log_tails(&self.log_dir);
        }
    }
}

/// A failing test shows the end of each process's log (CI keeps only the test's output).
fn print_log_tails(log_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
    paths.sort();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        eprintln!("---- last {} lines of {} ----", tail.len(), path.display());
        for line in tail {
            eprintln!("{line}");
        }
    }
}

fn spawn(
    log_dir: &std::path::Path,
    role: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_dir.join(format!("{role}.log")))?;
    // CHATD_TEST_BIN runs the cluster on another build (e.g. one with a fix taken out, to see
    // a regression test fail).
    let binary =
        std::env::var("CHATD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_chatd").to_owned());
    let mut command = Command::new(binary);
    command.env_remove("CHATD_TEST_BIN");
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("RUST_LOG", "info");
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .spawn()
        .with_context(|| format!("spawn chatd {role}"))
}

/// SIGTERM, then waits (up to 60 s) for the process to exit.
async fn stop_gracefully(child: &mut Child) -> anyhow::Result<()> {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "still running 60 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_http_ok(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url} did not become ready in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Provider + default model pointing at the mock, and user `alice` with a token.
async fn seed(db: &TestDatabase, mock_base_url: &str) -> anyhow::Result<String> {
    let mut client = chatd_shared::db::pool::one_client(&db.url, "chatd-test-seed").await?;
    chatd_shared::db::models::seed_default_model(&mut client, mock_base_url).await?;
    chatd_shared::db::admin::create_user(&client, "alice", false).await?;
    chatd_shared::db::admin::create_token(&client, "alice", "test").await
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A user message with a mock directive.
pub fn directive_message(text: &str, directive: Value) -> String {
    format!("{text}\n@mock {directive}")
}

/// Creates a chat with `message` on `api`; returns (chat id, user message id).
pub async fn create_chat(api: &ApiClient, message: &str) -> (String, i64) {
    let (status, body) = api
        .post("/chats", &json!({ "message": message }))
        .await
        .expect("create chat");
    assert_eq!(status, 201, "create chat: {body}");
    (
        body["chat"]["id"].as_str().expect("chat id").to_string(),
        body["message"]["id"].as_i64().expect("message id"),
    )
}

/// The chat's messages, oldest first.
pub async fn messages(api: &ApiClient, chat_id: &str) -> Vec<Value> {
    let (status, body) = api
        .get(&format!("/chats/{chat_id}/messages?limit=200"))
        .await
        .expect("list messages");
    assert_eq!(status, 200, "list messages: {body}");
    let mut items = body["items"].as_array().cloned().unwrap_or_default();
    items.reverse();
    items
}

pub async fn chat_status(api: &ApiClient, chat_id: &str) -> String {
    let (_, body) = api
        .get(&format!("/chats/{chat_id}"))
        .await
        .expect("get chat");
    body["chat"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The texts of the chat's assistant messages, oldest first.
pub async fn assistant_texts(api: &ApiClient, chat_id: &str) -> Vec<String> {
    messages(api, chat_id)
        .await
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| chatd_client::content_text(&m["content"]))
        .collect()
}
