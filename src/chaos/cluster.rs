//! The standard cluster as real processes, for the soak: a PostgreSQL of its own (embedded
//! launcher), `chatd mock-llm`, 2 × `chatd api`, 2 × `chatd worker`, each restartable with
//! the same command line (an API on the same port).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use chatd_shared::pg_embed::{EmbeddedOptions, EmbeddedPostgres};

/// A process of the cluster and how to start it again.
pub struct Proc {
    pub role: String,
    binary: PathBuf,
    args: Vec<String>,
    child: Child,
    /// Stopped by SIGSTOP and not yet continued.
    pub paused: bool,
    /// Restarts so far (each gets its own log file).
    restarts: usize,
}

pub struct ChaosCluster {
    pub postgres: EmbeddedPostgres,
    postgres_options: EmbeddedOptions,
    pub database_url: String,
    pub api_urls: Vec<String>,
    pub token: String,
    pub apis: Vec<Proc>,
    pub workers: Vec<Proc>,
    mock: Proc,
    log_dir: PathBuf,
}

impl ChaosCluster {
    /// Starts everything in `data_dir` (a fresh database per run). `binary` runs the API
    /// replicas and workers (the system under test); the mock model always runs from this
    /// executable.
    pub async fn start(data_dir: &Path, binary: &Path, run: &str) -> anyhow::Result<ChaosCluster> {
        let log_dir = data_dir.join("logs").join(run);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("create {}", log_dir.display()))?;
        // fsync off is safe here (PostgreSQL is crashed, never the OS); synchronous_commit must
        // stay on, or a crash-restart would lose commits the clients were told about.
        let postgres_options = EmbeddedOptions {
            settings: vec![("fsync".to_owned(), "off".to_owned())],
            ..EmbeddedOptions::new(data_dir.join("postgres"))
        };
        let postgres = EmbeddedPostgres::start(postgres_options.clone())
            .await
            .context("start PostgreSQL")?;
        let postgres_options = EmbeddedOptions {
            port: postgres.port(),
            ..postgres_options
        };
        let database = format!("chaos_{run}");
        postgres.create_database(&database, None).await?;
        let database_url = postgres.url(&database);
        chatd_shared::db::migrate::run_url(&database_url).await?;

        let this = std::env::current_exe().context("locate this executable")?;
        let mock_port = free_port()?;
        let mock_url = format!("http://127.0.0.1:{mock_port}");
        let mock = Proc::spawn(
            &log_dir,
            "mock-llm",
            &this,
            vec![
                "mock-llm".into(),
                "--addr".into(),
                format!("127.0.0.1:{mock_port}"),
            ],
        )?;
        let token = seed(&database_url, &format!("{mock_url}/v1")).await?;
        let mut cluster = ChaosCluster {
            postgres,
            postgres_options,
            database_url: database_url.clone(),
            api_urls: Vec::new(),
            token,
            apis: Vec::new(),
            workers: Vec::new(),
            mock,
            log_dir: log_dir.clone(),
        };
        for index in 0..2 {
            let port = free_port()?;
            let address = format!("127.0.0.1:{port}");
            cluster.apis.push(Proc::spawn(
                &log_dir,
                &format!("api-{index}"),
                binary,
                vec![
                    "api".into(),
                    "--database-url".into(),
                    database_url.clone(),
                    "--addr".into(),
                    address,
                ],
            )?);
            cluster.api_urls.push(format!("http://127.0.0.1:{port}"));
        }
        for index in 0..2 {
            cluster.workers.push(Proc::spawn(
                &log_dir,
                &format!("worker-{index}"),
                binary,
                vec![
                    "worker".into(),
                    "--database-url".into(),
                    database_url.clone(),
                    "--tools".into(),
                    "current_time".into(),
                    "--worker-id".into(),
                    uuid::Uuid::new_v4().to_string(),
                ],
            )?);
        }
        let http = reqwest::Client::new();
        for url in cluster.api_urls.iter().chain(std::iter::once(&mock_url)) {
            let path = if *url == mock_url {
                "healthz"
            } else {
                "readyz"
            };
            wait_ok(&http, &format!("{url}/{path}")).await?;
        }
        Ok(cluster)
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The workers, or the API replicas.
    pub fn processes(&mut self, workers: bool) -> &mut Vec<Proc> {
        if workers {
            &mut self.workers
        } else {
            &mut self.apis
        }
    }

    /// The index of the worker process running as `worker_id`.
    pub fn worker_index_of(&self, worker_id: uuid::Uuid) -> Option<usize> {
        let id = worker_id.to_string();
        self.workers
            .iter()
            .position(|worker| worker.args.contains(&id))
    }

    pub fn restart_worker(&mut self, index: usize) -> anyhow::Result<()> {
        let log_dir = self.log_dir.clone();
        self.workers[index].restart(&log_dir)
    }

    /// `pg_ctl stop -m immediate` and start again on the same port (crash recovery).
    pub async fn restart_postgres(&mut self) -> anyhow::Result<()> {
        self.postgres.stop_immediately().await?;
        self.postgres = EmbeddedPostgres::start(self.postgres_options.clone()).await?;
        Ok(())
    }

    /// Stops every process and PostgreSQL.
    pub async fn stop(mut self) {
        for process in self
            .apis
            .iter_mut()
            .chain(self.workers.iter_mut())
            .chain(std::iter::once(&mut self.mock))
        {
            process.kill();
        }
        if let Err(error) = self.postgres.stop().await {
            eprintln!("chaos: warning: stop PostgreSQL: {error:#}");
        }
    }
}

impl Proc {
    fn spawn(log_dir: &Path, role: &str, binary: &Path, args: Vec<String>) -> anyhow::Result<Proc> {
        let child = start_child(log_dir, role, 0, binary, &args)?;
        Ok(Proc {
            role: role.to_owned(),
            binary: binary.to_owned(),
            args,
            child,
            paused: false,
            restarts: 0,
        })
    }

    pub fn signal(&mut self, signal: i32) {
        // SAFETY: signalling a child process this program spawned and still owns.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
        match signal {
            libc::SIGSTOP => self.paused = true,
            libc::SIGCONT => self.paused = false,
            _ => {}
        }
    }

    /// SIGKILL, reaped.
    pub fn kill(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again with the same command line — but a worker as a new worker
    /// (a fresh `--worker-id`), as a restarted pod would be.
    pub fn restart(&mut self, log_dir: &Path) -> anyhow::Result<()> {
        self.kill();
        self.restarts += 1;
        if let Some(position) = self.args.iter().position(|arg| arg == "--worker-id") {
            if let Some(id) = self.args.get_mut(position + 1) {
                *id = uuid::Uuid::new_v4().to_string();
            }
        }
        self.child = start_child(log_dir, &self.role, self.restarts, &self.binary, &self.args)?;
        self.paused = false;
        Ok(())
    }
}

fn start_child(
    log_dir: &Path,
    role: &str,
    generation: usize,
    binary: &Path,
    args: &[String],
) -> anyhow::Result<Child> {
    let log_path = log_dir.join(format!("{role}.{generation}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("create {}", log_path.display()))?;
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("RUST_LOG", "info")
        .spawn()
        .with_context(|| format!("start {} {role}", binary.display()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ok(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} did not answer in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The mock as the default model, and user `chaos` with a token.
async fn seed(database_url: &str, mock_base_url: &str) -> anyhow::Result<String> {
    let mut client = chatd_shared::db::pool::one_client(database_url, "chatd-chaos").await?;
    chatd_shared::db::models::seed_default_model(&mut client, mock_base_url).await?;
    chatd_shared::db::admin::create_user(&client, "chaos", false).await?;
    chatd_shared::db::admin::create_token(&client, "chaos", "chaos").await
}
