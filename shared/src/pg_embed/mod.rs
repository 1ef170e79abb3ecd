//! Embedded PostgreSQL: the system's `initdb`, `pg_ctl` and `postgres` binaries run on a local
//! data directory, for `chatd dev` and the test harness.
//!
//! The server listens on 127.0.0.1 only and trusts every local connection: it is a development
//! and test database, never a production one. Its unix socket lives inside the data directory,
//! so it never collides with a system-wide PostgreSQL.
//!
//! Starting is idempotent: a server already running from the data directory is reused, which is
//! how every test process of a run shares one server. Callers must serialise concurrent
//! [`EmbeddedPostgres::start`] calls on one data directory (the test harness does so with a
//! file lock); the server itself is never stopped implicitly, only by
//! [`EmbeddedPostgres::stop`] or `pg_ctl stop`.
//!
//! PostgreSQL refuses to run as root. When this process is root (CI, containers), every
//! PostgreSQL binary runs as the `postgres` OS user (or a `chatd-pg` system user created on
//! demand), and the data directory is handed to that user.

mod settings;
mod support;

use support::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long `start` waits for a server to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Server log, inside the data directory.
const LOG_FILE: &str = "postgres.log";
/// Settings file written on every start and included from `postgresql.conf`.
const SETTINGS_FILE: &str = "chatd.conf";
/// Remembers the port picked for `port: 0`, so a restarted server keeps its address.
const PORT_FILE: &str = "chatd.port";
const INCLUDE_LINE: &str = "include_if_exists = 'chatd.conf'";
const INSTALL_HINT: &str = "install PostgreSQL server binaries with: apt-get install -y postgresql";
/// OS users PostgreSQL runs as when this process is root, in order of preference; the last one
/// is created if none exists.
const SERVER_USERS: [&str; 2] = ["postgres", "chatd-pg"];
/// Settings the launcher owns: callers cannot override them.
const MANAGED_SETTINGS: [&str; 3] = ["port", "listen_addresses", "unix_socket_directories"];
/// Longest unix socket directory: `sun_path` holds 107 bytes plus `/.s.PGSQL.NNNNN`.
const MAX_SOCKET_DIR_LEN: usize = 107 - 16;

/// What to start. Build with [`EmbeddedOptions::new`] or a struct literal over `Default`.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The PostgreSQL data directory; created and initialised (`initdb`) if it has no
    /// `PG_VERSION`. A relative path is resolved against the current directory.
    pub data_dir: PathBuf,
    /// TCP port on 127.0.0.1. 0 picks a free port on first start and remembers it in the data
    /// directory (a new one is picked if the remembered one is taken by then).
    pub port: u16,
    /// Extra `postgresql.conf` settings, e.g. `("fsync", "off")`, applied after the defaults
    /// (`max_connections = 400`, `shared_preload_libraries = 'pg_stat_statements'`). Values
    /// are plain, unquoted strings.
    pub settings: Vec<(String, String)>,
    /// The superuser created by `initdb`; every connection uses it.
    pub superuser: String,
}

/// A running (or reused) embedded server.
#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    port: u16,
    superuser: String,
    bindir: PathBuf,
    /// The OS user the PostgreSQL binaries run as; `None` when this process is not root and
    /// runs them as itself.
    server_user: Option<ServerUser>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found (looked in: {searched}); {INSTALL_HINT}")]
    BinariesNotFound { searched: String },
    #[error("invalid PostgreSQL setting {name:?}: {reason}")]
    InvalidSetting { name: String, reason: &'static str },
    #[error("running as root, and no OS user to run PostgreSQL as: {0}")]
    NoServerUser(String),
    #[error("{action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{command} failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("start PostgreSQL from {data_dir}: {reason}\n--- last lines of {log} ---\n{log_tail}")]
    StartFailed {
        data_dir: PathBuf,
        reason: String,
        log: PathBuf,
        log_tail: String,
    },
}

#[derive(Debug, Clone)]
struct ServerUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// The parts of `postmaster.pid` this launcher reads.
struct PostmasterPid {
    pid: u32,
    /// Absent while the postmaster is still writing the file.
    port: Option<u16>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self::new(".chatd-dev/postgres")
    }
}

impl EmbeddedOptions {
    /// Options for `data_dir` with an automatically picked port, no extra settings and the
    /// superuser `chatd`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            port: 0,
            settings: Vec::new(),
            superuser: "chatd".to_owned(),
        }
    }
}

impl EmbeddedPostgres {
    /// Finds the directory holding `initdb`, `pg_ctl` and `postgres`: `pg_config --bindir`,
    /// then the newest `/usr/lib/postgresql/<version>/bin` (Debian keeps them off `PATH`), then
    /// `PATH`.
    pub fn find_bindir() -> Result<PathBuf, EmbeddedError> {
        let mut searched = Vec::new();
        match std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
        {
            Ok(output) if output.status.success() => {
                let bindir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
                if has_server_binaries(&bindir) {
                    return Ok(bindir);
                }
                searched.push(format!("{} (pg_config --bindir)", bindir.display()));
            }
            _ => searched.push("pg_config --bindir (no pg_config)".to_owned()),
        }
        let mut versioned: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry
                    .file_name()
                    .to_str()?
                    .split('.')
                    .map(|part| part.parse().ok())
                    .collect::<Option<Vec<u32>>>()?;
                Some((version, entry.path().join("bin")))
            })
            .collect();
        versioned.sort();
        if let Some((_, bindir)) = versioned
            .into_iter()
            .rev()
            .find(|(_, bindir)| has_server_binaries(bindir))
        {
            return Ok(bindir);
        }
        searched.push("/usr/lib/postgresql/*/bin".to_owned());
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(bindir) = std::env::split_paths(&path).find(|dir| has_server_binaries(dir)) {
            return Ok(bindir);
        }
        searched.push("PATH".to_owned());
        Err(EmbeddedError::BinariesNotFound {
            searched: searched.join(", "),
        })
    }

    /// Starts a server on `options.data_dir`, initialising it first if needed, or reuses the
    /// server already running from it; returns once it accepts TCP connections.
    pub async fn start(options: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        validate_settings(&options)?;
        let bindir = Self::find_bindir()?;
        let data_dir = std::path::absolute(&options.data_dir)
            .map_err(io_error("resolve data directory", &options.data_dir))?;
        let server_user = server_user().await?;
        let mut server = EmbeddedPostgres {
            data_dir,
            port: options.port,
            superuser: options.superuser.clone(),
            bindir,
            server_user,
        };
        let deadline = Instant::now() + START_DEADLINE;
        if let Some(port) = server.running_port(deadline).await? {
            if options.port != 0 && options.port != port {
                tracing::warn!(
                    requested = options.port,
                    port,
                    "reusing the running PostgreSQL on another port than requested"
                );
            }
            server.port = port;
            tracing::info!(data_dir = %server.data_dir.display(), port, "reusing running PostgreSQL");
            return Ok(server);
        }
        server.prepare_data_dir()?;
        if !server.data_dir.join("PG_VERSION").exists() {
            server.initdb(&options).await?;
        }
        let mut retries_left = 3;
        let mut avoid_remembered_port = false;
        loop {
            server.port = server.choose_port(options.port, avoid_remembered_port)?;
            server.write_settings(&options.settings)?;
            match server.pg_ctl_start().await {
                Ok(()) => break,
                // An automatically picked port can be taken between picking and binding.
                Err(EmbeddedError::StartFailed { ref log_tail, .. })
                    if options.port == 0
                        && retries_left > 0
                        && log_tail.contains("could not bind") =>
                {
                    retries_left -= 1;
                    avoid_remembered_port = true;
                    tracing::info!(port = server.port, "port taken, picking another");
                }
                Err(error) => return Err(error),
            }
        }
        server.wait_until_answering(deadline).await?;
        tracing::info!(data_dir = %server.data_dir.display(), port = server.port, "PostgreSQL is running");
        Ok(server)
    }

    /// `postgres://superuser@127.0.0.1:port/database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            self.superuser, self.port, database
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Creates database `name`, copied from `template` if given.
    pub async fn create_database(&self, name: &str, template: Option<&str>) -> anyhow::Result<()> {
        let client = self
            .connect("postgres")
            .await
            .context("connect to the postgres database")?;
        let statement = match template {
            Some(template) => format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_identifier(name),
                quote_identifier(template)
            ),
            None => format!("CREATE DATABASE {}", quote_identifier(name)),
        };
        client
            .batch_execute(&statement)
            .await
            .with_context(|| format!("create database {name}"))?;
        Ok(())
    }

    /// Stops the server (`pg_ctl stop -m fast`), disconnecting every client. Stopping a server
    /// that is not running succeeds.
    pub async fn stop(&self) -> anyhow::Result<()> {
        if !self.data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        tracing::info!(data_dir = %self.data_dir.display(), "stopping PostgreSQL");
        self.run("pg_ctl", |command| {
            command
                .arg("stop")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "fast", "-w", "-s"]);
        })
        .await
        .context("stop PostgreSQL")?;
        Ok(())
    }

    /// Stops the server like a crash (`pg_ctl stop -m immediate`): no checkpoint, so the next
    /// start runs crash recovery (and empties UNLOGGED tables). For fault tests.
    pub async fn stop_immediately(&self) -> anyhow::Result<()> {
        if !self.data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        tracing::info!(data_dir = %self.data_dir.display(), "stopping PostgreSQL immediately");
        self.run("pg_ctl", |command| {
            command
                .arg("stop")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "-s"]);
        })
        .await
        .context("stop PostgreSQL immediately")?;
        Ok(())
    }

    /// Asks the postmaster to shut down at once (SIGQUIT) without waiting; for cleanup paths
    /// that cannot await (e.g. `Drop` of a test's private server).
    pub fn signal_immediate_shutdown(&self) {
        let pid_path = self.data_dir.join("postmaster.pid");
        if let Some(postmaster) = std::fs::read_to_string(&pid_path)
            .ok()
            .as_deref()
            .and_then(parse_postmaster_pid)
        {
            let _ = std::process::Command::new("kill")
                .args(["-QUIT", &postmaster.pid.to_string()])
                .status();
        }
    }

    /// Port of the server running from the data directory, once it answers; `None` if none
    /// runs. A `postmaster.pid` left by a crash is removed.
    async fn running_port(&self, deadline: Instant) -> Result<Option<u16>, EmbeddedError> {
        let pid_path = self.data_dir.join("postmaster.pid");
        loop {
            let contents = match std::fs::read_to_string(&pid_path) {
                Ok(contents) => contents,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(io_error("read", &pid_path)(error)),
            };
            // An unparsable file is being written right now; look again shortly.
            if let Some(postmaster) = parse_postmaster_pid(&contents) {
                if !is_postmaster_of(postmaster.pid, &self.data_dir) {
                    tracing::info!(
                        pid = postmaster.pid,
                        "removing the lock files of a crashed PostgreSQL"
                    );
                    self.remove_stale_lock_files()?;
                    return Ok(None);
                }
                if let Some(port) = postmaster.port {
                    if self.connect_to(port, "postgres").await.is_ok() {
                        return Ok(Some(port));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(self.start_failed(format!(
                    "a server is running from this data directory (see {}) but does not accept connections",
                    pid_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes `postmaster.pid` and the unix socket with its lock file after a crash. PostgreSQL
    /// removes them itself unless their pid is still alive, and a crashed postmaster's pid can
    /// stay "alive": reused by another process, or a zombie where nobody reaps (containers).
    fn remove_stale_lock_files(&self) -> Result<(), EmbeddedError> {
        let pid_path = self.data_dir.join("postmaster.pid");
        std::fs::remove_file(&pid_path).map_err(io_error("remove stale", &pid_path))?;
        // The socket directory is the data directory, so its sockets are this server's.
        let entries =
            std::fs::read_dir(&self.data_dir).map_err(io_error("read", &self.data_dir))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_error("remove stale", &path))?;
            }
        }
        Ok(())
    }

    /// Creates the data directory with mode 0700 and, when root, hands it to the server user
    /// and makes sure that user can reach it.
    fn prepare_data_dir(&self) -> Result<(), EmbeddedError> {
        let data_dir = &self.data_dir;
        std::fs::create_dir_all(data_dir).map_err(io_error("create data directory", data_dir))?;
        if let Some(user) = &self.server_user {
            let metadata = std::fs::metadata(data_dir)
                .map_err(io_error("inspect data directory", data_dir))?;
            if metadata.uid() != user.uid || metadata.gid() != user.gid {
                chown_recursive(data_dir, user)?;
            }
            for ancestor in data_dir.ancestors().skip(1) {
                let metadata =
                    std::fs::metadata(ancestor).map_err(io_error("inspect", ancestor))?;
                let mode = metadata.mode();
                let traversable = mode & 0o001 != 0
                    || (metadata.uid() == user.uid && mode & 0o100 != 0)
                    || (metadata.gid() == user.gid && mode & 0o010 != 0);
                if !traversable {
                    tracing::warn!(
                        directory = %ancestor.display(),
                        user = user.name,
                        "letting others traverse the directory so PostgreSQL can reach its data"
                    );
                    let permissions = std::fs::Permissions::from_mode((mode | 0o001) & 0o7777);
                    std::fs::set_permissions(ancestor, permissions)
                        .map_err(io_error("make traversable", ancestor))?;
                }
            }
        }
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("set the mode of", data_dir))
    }

    async fn initdb(&self, options: &EmbeddedOptions) -> Result<(), EmbeddedError> {
        let data_dir = &self.data_dir;
        let is_empty = std::fs::read_dir(data_dir)
            .map_err(io_error("read", data_dir))?
            .next()
            .is_none();
        if !is_empty {
            return Err(EmbeddedError::Io {
                action: "initialise data directory",
                path: data_dir.clone(),
                error: std::io::Error::other(
                    "it is not empty and has no PG_VERSION, so it is no PostgreSQL data directory",
                ),
            });
        }
        tracing::info!(data_dir = %data_dir.display(), "initialising PostgreSQL data directory");
        // Skipping fsync makes initdb much faster; do so when the server won't fsync either.
        let no_sync = options
            .settings
            .iter()
            .any(|(name, value)| name == "fsync" && value == "off");
        self.run("initdb", |command| {
            command
                .arg("-D")
                .arg(data_dir)
                .arg("-U")
                .arg(&self.superuser)
                .args(["--auth=trust", "--encoding=UTF8", "--locale=C"]);
            if no_sync {
                command.arg("--no-sync");
            }
        })
        .await?;
        Ok(())
    }

    async fn pg_ctl_start(&self) -> Result<(), EmbeddedError> {
        tracing::info!(data_dir = %self.data_dir.display(), port = self.port, "starting PostgreSQL");
        let timeout = START_DEADLINE.as_secs().to_string();
        let result = self
            .run("pg_ctl", |command| {
                command
                    .arg("start")
                    .arg("-D")
                    .arg(&self.data_dir)
                    .arg("-l")
                    .arg(self.data_dir.join(LOG_FILE))
                    .args(["-w", "-s", "-t", &timeout]);
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(EmbeddedError::Command { output, .. }) => {
                Err(self.start_failed(format!("pg_ctl start failed: {output}")))
            }
            Err(error) => Err(error),
        }
    }

    async fn wait_until_answering(&self, deadline: Instant) -> Result<(), EmbeddedError> {
        loop {
            match self.connect_to(self.port, "postgres").await {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    return Err(self.start_failed(format!(
                        "no connection to 127.0.0.1:{} within {START_DEADLINE:?}: {error}",
                        self.port
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn connect(
        &self,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_to(self.port, database).await
    }

    async fn connect_to(
        &self,
        port: u16,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user(&self.superuser)
            .dbname(database)
            .connect_timeout(Duration::from_secs(5))
            // `prefer`, as every chatd connection by default: TLS when the server has it on.
            .connect(prefer_tls())
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "embedded PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// Runs a PostgreSQL binary (as the server user when root) and returns its stdout.
    async fn run(
        &self,
        program: &str,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> Result<String, EmbeddedError> {
        let path = self.bindir.join(program);
        let mut command = tokio::process::Command::new(&path);
        configure(&mut command);
        command
            .current_dir(&self.data_dir)
            .env_remove("PGDATA")
            .stdin(std::process::Stdio::null());
        if let Some(user) = &self.server_user {
            command.uid(user.uid).gid(user.gid);
        }
        let output = command.output().await.map_err(io_error("run", &path))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            return Err(EmbeddedError::Command {
                command: program.to_owned(),
                status: output.status.to_string(),
                output: tail(format!("{stderr}{stdout}").trim(), 20),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Writes a file in the data directory, owned by the server user.
    fn write_owned_file(&self, path: &Path, contents: &str) -> Result<(), EmbeddedError> {
        std::fs::write(path, contents).map_err(io_error("write", path))?;
        if let Some(user) = &self.server_user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .map_err(io_error("change the owner of", path))?;
        }
        Ok(())
    }

    fn start_failed(&self, reason: String) -> EmbeddedError {
        let log = self.data_dir.join(LOG_FILE);
        let log_tail = match std::fs::read_to_string(&log) {
            Ok(contents) => tail(&contents, 30),
            Err(error) => format!("(cannot read the log: {error})"),
        };
        EmbeddedError::StartFailed {
            data_dir: self.data_dir.clone(),
            reason,
            log,
            log_tail,
        }
    }
}

/// The connector for `sslmode=prefer` (unverified TLS when the server offers it).
fn prefer_tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    crate::db::tls::connector(&crate::db::tls::TlsOptions::default())
        .expect("the default TLS settings need no files")
}
