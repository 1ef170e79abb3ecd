//! The command-line contract (README.md, "Configuration"). Every flag also reads a `CHATD_*`
//! environment variable; unknown `CHATD_*` variables are refused so a typo never silently
//! falls back to a default.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use chatd_api::config::defaults as ad;
use chatd_shared::telemetry::{init_logging, LogFormat};
use chatd_worker::config::defaults as wd;

#[derive(Parser, Debug)]
#[command(
    name = "chatd",
    version,
    about = "Horizontally scalable backend for AI agent chats"
)]
pub struct Cli {
    /// Log format: json (production) or pretty.
    #[arg(long, global = true, env = "CHATD_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Json)]
    pub log_format: LogFormatArg,
    #[command(subcommand)]
    pub command: Command,
}

/// `--database-pooler`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PoolerArg {
    /// PostgreSQL itself, or a pooler in session mode.
    None,
    /// A pooler in transaction mode.
    Transaction,
}

impl From<PoolerArg> for chatd_shared::db::pool::Pooler {
    fn from(value: PoolerArg) -> Self {
        match value {
            PoolerArg::None => chatd_shared::db::pool::Pooler::None,
            PoolerArg::Transaction => chatd_shared::db::pool::Pooler::Transaction,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Json,
    Pretty,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a stateless HTTP API replica.
    Api(ApiArgs),
    /// Run a worker that acquires and runs chat turns.
    Worker(WorkerArgs),
    /// Run everything on one machine (embedded PostgreSQL, mock LLM, API, worker).
    Dev(crate::dev::DevArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Run the deterministic, scriptable mock LLM server.
    MockLlm(MockLlmArgs),
    /// Create or continue a chat and print the streamed answer.
    Chat(chatd_client::chat::ChatArgs),
    /// Users, API tokens, providers and model configs.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Load-test a running cluster through the public API.
    Scaletest(chatd_client::scaletest::ScaletestArgs),
    /// Soak the standard cluster under random faults and check the invariants.
    Chaos(crate::chaos::ChaosArgs),
    /// Print the OpenAPI document of the public API (with the default limits; a running
    /// replica serves its own at /api/v1/openapi.json).
    Openapi,
}

#[derive(Args, Debug)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "CHATD_DATABASE_URL")]
    pub database_url: String,
}

#[derive(Args, Debug)]
pub struct ApiArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A direct (session-mode) PostgreSQL URL for the connections that need a session of
    /// their own — the LISTEN connection (and, for workers, the liveness lock) — when
    /// `--database-url` goes through a transaction pooler such as PgBouncer. Default: the
    /// database URL.
    #[arg(long, env = "CHATD_LISTEN_DATABASE_URL")]
    pub listen_database_url: Option<String>,
    /// Wait for `chatd migrate` to bring the schema to this build's version instead of
    /// exiting with an error (e.g. when the migration Job runs alongside the rollout).
    #[arg(long, env = "CHATD_WAIT_FOR_MIGRATIONS")]
    pub wait_for_migrations: bool,
    /// What sits between `--database-url` and PostgreSQL: `transaction` for a pooler in
    /// transaction mode (PgBouncer, RDS Proxy, …): the pool then runs unnamed statements and
    /// sends no startup options; needs `--listen-database-url`.
    #[arg(long, env = "CHATD_DATABASE_POOLER", value_enum, default_value_t = PoolerArg::None)]
    pub database_pooler: PoolerArg,
    /// Address to listen on.
    #[arg(long, env = "CHATD_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Database connections in this replica's pool.
    #[arg(long, env = "CHATD_POOL_SIZE", default_value_t = ad::POOL_SIZE, value_parser = at_least(1))]
    pub pool_size: usize,
    /// Request body limit in bytes (413 beyond).
    #[arg(long, env = "CHATD_MAX_BODY_BYTES", default_value_t = ad::MAX_BODY_BYTES, value_parser = at_least(1))]
    pub max_body_bytes: usize,
    /// Largest uploaded file in bytes (`POST /files`; 413 beyond).
    #[arg(long, env = "CHATD_MAX_FILE_BYTES", default_value_t = ad::MAX_FILE_BYTES, value_parser = at_least(1))]
    pub max_file_bytes: usize,
    /// Most queued messages per chat (429 beyond).
    #[arg(long, env = "CHATD_MAX_QUEUE_LEN", default_value_t = ad::MAX_QUEUE_LEN, value_parser = clap::value_parser!(i64).range(0..))]
    pub max_queue_len: i64,
    /// Most messages a stream's snapshot sends (the newest); older ones through
    /// `GET /chats/{id}/messages`.
    #[arg(long, env = "CHATD_STREAM_SNAPSHOT_MESSAGES", default_value_t = ad::STREAM_SNAPSHOT_MESSAGES, value_parser = clap::value_parser!(i64).range(1..))]
    pub stream_snapshot_messages: i64,
    /// Most open streams (chat and watch) per user on this replica (429 beyond).
    #[arg(long, env = "CHATD_MAX_STREAMS_PER_USER", default_value_t = ad::MAX_STREAMS_PER_USER, value_parser = at_least(1))]
    pub max_streams_per_user: usize,
    /// Requests per second per API token on this replica (a token bucket; 429 with
    /// `Retry-After` beyond; 0 = no limit).
    #[arg(long, env = "CHATD_RATE_LIMIT_PER_SECOND", default_value_t = ad::RATE_LIMIT_PER_SECOND)]
    pub rate_limit_per_second: f64,
    /// Requests a token may send at once after being idle (the bucket's size, at least 1).
    #[arg(long, env = "CHATD_RATE_LIMIT_BURST", default_value_t = ad::RATE_LIMIT_BURST)]
    pub rate_limit_burst: f64,
    /// Base64 32-byte key that encrypts provider API keys set through the admin API (the
    /// workers' key). Without it, requests that set an API key are refused.
    #[arg(long, env = "CHATD_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,
    /// Browser origins allowed to call the API from another origin (CORS), comma-separated
    /// (`https://app.example.com`), or `*` for any; none by default.
    #[arg(long, env = "CHATD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Serve the web UI at `/` (`false`: an API-only replica; `/` is then a 404).
    #[arg(long, env = "CHATD_WEB_UI", default_value_t = true, action = clap::ArgAction::Set)]
    pub web_ui: bool,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A direct (session-mode) PostgreSQL URL for the connections that need a session of
    /// their own — the LISTEN connection (and, for workers, the liveness lock) — when
    /// `--database-url` goes through a transaction pooler such as PgBouncer. Default: the
    /// database URL.
    #[arg(long, env = "CHATD_LISTEN_DATABASE_URL")]
    pub listen_database_url: Option<String>,
    /// Wait for `chatd migrate` to bring the schema to this build's version instead of
    /// exiting with an error (e.g. when the migration Job runs alongside the rollout).
    #[arg(long, env = "CHATD_WAIT_FOR_MIGRATIONS")]
    pub wait_for_migrations: bool,
    /// What sits between `--database-url` and PostgreSQL: `transaction` for a pooler in
    /// transaction mode (PgBouncer, RDS Proxy, …): the pool then runs unnamed statements and
    /// sends no startup options; needs `--listen-database-url`.
    #[arg(long, env = "CHATD_DATABASE_POOLER", value_enum, default_value_t = PoolerArg::None)]
    pub database_pooler: PoolerArg,
    /// Worker identity (default: a fresh UUID per process).
    #[arg(long, env = "CHATD_WORKER_ID")]
    pub worker_id: Option<Uuid>,
    /// Database connections in this worker's pool.
    #[arg(long, env = "CHATD_POOL_SIZE", default_value_t = wd::POOL_SIZE, value_parser = at_least(2))]
    pub pool_size: usize,
    /// Most turns this worker runs at once.
    #[arg(long, env = "CHATD_MAX_CONCURRENT_TURNS", default_value_t = wd::MAX_CONCURRENT_TURNS, value_parser = at_least(1))]
    pub max_concurrent_turns: usize,
    /// Most running chats per user across the cluster (fair share: a user's other pending
    /// chats wait while others' run); 0: no cap.
    #[arg(long, env = "CHATD_MAX_RUNNING_CHATS_PER_USER", default_value_t = wd::MAX_RUNNING_CHATS_PER_USER, value_parser = clap::value_parser!(i64).range(0..))]
    pub max_running_chats_per_user: i64,
    /// Archive root chats (with their sub-chats) idle this many days, from the recovery
    /// sweep, a few at a time; 0: never.
    #[arg(long, env = "CHATD_ARCHIVE_INACTIVE_AFTER_DAYS", default_value_t = 0)]
    pub archive_inactive_after_days: u32,
    /// Most chats claimed per acquire statement.
    #[arg(long, env = "CHATD_ACQUIRE_BATCH", default_value_t = wd::ACQUIRE_BATCH, value_parser = at_least(1))]
    pub acquire_batch: usize,
    /// Poll for pending chats this often (ms), even when notifications work.
    #[arg(long, env = "CHATD_ACQUIRE_INTERVAL_MS", default_value_t = wd::ACQUIRE_INTERVAL_MS, value_parser = positive_ms())]
    pub acquire_interval_ms: u64,
    /// For this long (ms) after a chat becomes pending, only the worker that ran its last turn
    /// (and holds its prompt in memory) may claim it; then any worker. 0: any worker at once.
    #[arg(long, env = "CHATD_AFFINITY_GRACE_MS", default_value_t = wd::AFFINITY_GRACE_MS)]
    pub affinity_grace_ms: u64,
    /// Bytes of chats' prompts kept in memory between turns, so a turn reads only what is new
    /// (least recently used evicted first); 0: read the whole prompt every turn.
    #[arg(long, env = "CHATD_PROMPT_CACHE_BYTES", default_value_t = wd::PROMPT_CACHE_BYTES)]
    pub prompt_cache_bytes: usize,
    /// Heartbeat interval (ms).
    #[arg(long, env = "CHATD_HEARTBEAT_INTERVAL_MS", default_value_t = wd::HEARTBEAT_INTERVAL_MS, value_parser = positive_ms())]
    pub heartbeat_interval_ms: u64,
    /// A lease with an older heartbeat is recovered (ms).
    #[arg(long, env = "CHATD_STALE_AFTER_MS", default_value_t = wd::STALE_AFTER_MS, value_parser = positive_ms())]
    pub stale_after_ms: u64,
    /// Recovery sweep interval (ms).
    #[arg(long, env = "CHATD_SWEEP_INTERVAL_MS", default_value_t = wd::SWEEP_INTERVAL_MS, value_parser = positive_ms())]
    pub sweep_interval_ms: u64,
    /// How often other workers' liveness (their PostgreSQL session) is checked (ms); a dead
    /// worker's chats are released after two checks.
    #[arg(long, env = "CHATD_LIVENESS_INTERVAL_MS", default_value_t = wd::LIVENESS_INTERVAL_MS, value_parser = clap::value_parser!(u64).range(10..))]
    pub liveness_interval_ms: u64,
    /// Stream flush interval (ms).
    #[arg(long, env = "CHATD_STREAM_FLUSH_INTERVAL_MS", default_value_t = wd::STREAM_FLUSH_INTERVAL_MS, value_parser = positive_ms())]
    pub stream_flush_interval_ms: u64,
    /// On SIGTERM, running turns get this long to finish (ms).
    #[arg(long, env = "CHATD_SHUTDOWN_GRACE_MS", default_value_t = wd::SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,
    /// Most model steps per turn.
    #[arg(long, env = "CHATD_MAX_STEPS", default_value_t = wd::MAX_STEPS, value_parser = at_least(1))]
    pub max_steps: usize,
    /// Provider requests per step before the turn fails (retryable errors only).
    #[arg(long, env = "CHATD_MAX_PROVIDER_ATTEMPTS", default_value_t = wd::MAX_PROVIDER_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_provider_attempts: u32,
    /// A provider that sends nothing for this long is retried (ms).
    #[arg(long, env = "CHATD_STARTUP_TIMEOUT_MS", default_value_t = wd::STARTUP_TIMEOUT_MS, value_parser = positive_ms())]
    pub startup_timeout_ms: u64,
    /// A provider stream that sends no bytes at all for this long (keep-alives count) is a
    /// retryable timeout (ms).
    #[arg(long, env = "CHATD_STREAM_IDLE_TIMEOUT_MS", default_value_t = wd::STREAM_IDLE_TIMEOUT_MS, value_parser = positive_ms())]
    pub stream_idle_timeout_ms: u64,
    /// Wall-clock bound of one model step, streaming and tools together; past it the turn
    /// ends in error `timeout`, not retried (ms).
    #[arg(long, env = "CHATD_STEP_TIMEOUT_MS", default_value_t = wd::STEP_TIMEOUT_MS, value_parser = positive_ms())]
    pub step_timeout_ms: u64,
    /// Base64 32-byte key that encrypts provider API keys at rest.
    #[arg(long, env = "CHATD_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<String>,
    /// Built-in tools offered to models, comma-separated (current_time, sleep, spawn_agent,
    /// wait_agent).
    #[arg(long, env = "CHATD_TOOLS", value_delimiter = ',', default_value = "")]
    pub tools: Vec<String>,
    /// A tool call running longer than this gets an error result (ms).
    #[arg(long, env = "CHATD_TOOL_TIMEOUT_MS", default_value_t = wd::TOOL_TIMEOUT_MS, value_parser = positive_ms())]
    pub tool_timeout_ms: u64,
    /// How long a chat waits in requires_action for client tool results (ms).
    #[arg(long, env = "CHATD_ACTION_TIMEOUT_MS", default_value_t = wd::ACTION_TIMEOUT_MS, value_parser = positive_ms())]
    pub action_timeout_ms: u64,
    /// Bound on generating a chat title; 0 disables automatic titles (ms).
    #[arg(long, env = "CHATD_TITLE_TIMEOUT_MS", default_value_t = wd::TITLE_TIMEOUT_MS)]
    pub title_timeout_ms: u64,
    /// Sub-agents (spawn_agent) nest at most this deep; a root chat is depth 0.
    #[arg(long, env = "CHATD_MAX_AGENT_DEPTH", default_value_t = wd::MAX_AGENT_DEPTH, value_parser = clap::value_parser!(i16).range(0..=16))]
    pub max_agent_depth: i16,
    /// Sub-agents one turn (one user message) may start.
    #[arg(long, env = "CHATD_MAX_AGENTS_PER_TURN", default_value_t = wd::MAX_AGENTS_PER_TURN, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100))]
    pub max_agents_per_turn: usize,
    /// Bound on connecting to an MCP server and listing its tools (ms).
    #[arg(long, env = "CHATD_MCP_TIMEOUT_MS", default_value_t = wd::MCP_TIMEOUT_MS, value_parser = positive_ms())]
    pub mcp_timeout_ms: u64,
    /// Serve /metrics and /healthz on this address (optional).
    #[arg(long, env = "CHATD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Args, Debug)]
pub struct MockLlmArgs {
    /// Address to listen on.
    #[arg(long, env = "CHATD_ADDR", default_value = "127.0.0.1:9090")]
    pub addr: SocketAddr,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)] // the names are the subcommands of the contract
pub enum AdminCommand {
    /// Create a user; prints the user id.
    CreateUser {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        username: String,
        #[arg(long)]
        admin: bool,
    },
    /// Create an API token; prints only the token.
    CreateToken {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        username: String,
        /// A label for the token.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Create a provider; prints the id.
    CreateProvider {
        #[command(flatten)]
        database: DatabaseArgs,
        /// openai | openai-responses | anthropic | openai-compatible | mock
        #[arg(long)]
        kind: String,
        #[arg(long)]
        base_url: String,
        #[arg(long)]
        api_key: Option<String>,
        /// Base64 32-byte key that encrypts the API key at rest.
        #[arg(long, env = "CHATD_ENCRYPTION_KEY", hide_env_values = true)]
        encryption_key: Option<String>,
    },
    /// Create a model config; prints the id.
    CreateModel {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        provider: Uuid,
        #[arg(long)]
        model: String,
        #[arg(long)]
        context_limit: Option<i32>,
        /// Make this the default model.
        #[arg(long)]
        default: bool,
    },
}

/// Every `CHATD_*` variable some flag reads.
pub fn known_env_names() -> Vec<String> {
    fn collect(command: &clap::Command, names: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.push(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            collect(sub, names);
        }
    }
    let mut names = Vec::new();
    collect(&Cli::command(), &mut names);
    // Read by the test harness and `RUST_LOG`-style tooling, not by flags.
    names.push("CHATD_TEST_DATABASE_URL".into());
    names.sort();
    names.dedup();
    names
}

/// Fails on a `CHATD_*` variable no flag reads.
pub fn reject_unknown_env(vars: impl Iterator<Item = (String, String)>) -> anyhow::Result<()> {
    let known = known_env_names();
    for (name, _) in vars {
        if name.starts_with("CHATD_") && !known.contains(&name) {
            anyhow::bail!(
                "unknown environment variable {name} (known: {})",
                known.join(", ")
            );
        }
    }
    Ok(())
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

/// A count flag that must be at least `min` (clap names the flag and the range on error).
fn at_least(
    min: u64,
) -> clap::builder::MapValueParser<clap::builder::RangedU64ValueParser<u64>, fn(u64) -> usize> {
    use clap::builder::TypedValueParser;
    fn to_usize(value: u64) -> usize {
        usize::try_from(value).unwrap_or(usize::MAX)
    }
    clap::value_parser!(u64)
        .range(min..)
        .map(to_usize as fn(u64) -> usize)
}

/// A duration flag in milliseconds that must not be 0.
fn positive_ms() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let log_format = match (&cli.command, cli.log_format) {
        (Command::Dev(_), _) | (_, LogFormatArg::Pretty) => LogFormat::Pretty,
        _ => LogFormat::Json,
    };
    let quiet = matches!(
        cli.command,
        Command::Chat(_) | Command::Admin(_) | Command::Scaletest(_)
    );
    if !quiet {
        init_logging(log_format);
    }
    match cli.command {
        Command::Api(args) => {
            let mut config = chatd_api::ApiConfig::new(args.database.database_url);
            config.listen_database_url = args.listen_database_url;
            config.wait_for_migrations = args.wait_for_migrations;
            config.database_pooler = args.database_pooler.into();
            config.pool_size = args.pool_size;
            config.max_body_bytes = args.max_body_bytes;
            config.max_file_bytes = args.max_file_bytes;
            config.max_queue_len = args.max_queue_len;
            config.stream_snapshot_messages = args.stream_snapshot_messages;
            config.max_streams_per_user = args.max_streams_per_user;
            config.rate_limit_per_second = args.rate_limit_per_second;
            config.rate_limit_burst = args.rate_limit_burst;
            config.cors_origins = args.cors_origins.clone();
            config.web_ui = args.web_ui;
            config.encryption_key = args
                .encryption_key
                .as_deref()
                .map(chatd_shared::crypto::parse_key)
                .transpose()
                .context("--encryption-key")?
                .map(chatd_api::config::EncryptionKey);
            // Bad flags are named before the port is taken (and whatever holds it).
            config.validate().map_err(anyhow::Error::msg)?;
            let listener = tokio::net::TcpListener::bind(args.addr)
                .await
                .with_context(|| format!("listen on {}", args.addr))?;
            chatd_api::run(listener, config, shutdown_on_signal()).await
        }
        Command::Worker(args) => {
            let shutdown = shutdown_on_signal();
            if let Some(addr) = args.metrics_addr {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listen on {addr}"))?;
                tokio::spawn(chatd_worker::metrics_server::serve(
                    listener,
                    shutdown.clone(),
                ));
            }
            chatd_worker::run(worker_config(args)?, shutdown).await
        }
        Command::Dev(args) => crate::dev::run(args, shutdown_on_signal()).await,
        Command::Openapi => {
            let config = chatd_api::ApiConfig::new(String::new());
            println!("{}", chatd_api::openapi::document(&config));
            Ok(())
        }
        Command::Migrate(args) => {
            let applied = chatd_shared::db::migrate::run_url(&args.database_url).await?;
            println!("applied {applied} migration(s)");
            Ok(())
        }
        Command::MockLlm(args) => {
            let listener = tokio::net::TcpListener::bind(args.addr)
                .await
                .with_context(|| format!("listen on {}", args.addr))?;
            tracing::info!(address = %args.addr, "mock llm listening");
            chatd_mock_llm::run(listener, shutdown_on_signal()).await
        }
        Command::Chat(args) => chatd_client::chat::run(args).await,
        Command::Scaletest(args) => chatd_client::scaletest::run(args).await,
        Command::Chaos(args) => crate::chaos::run(args).await,
        Command::Admin(command) => crate::admin::run(command).await,
    }
}

pub fn worker_config(args: WorkerArgs) -> anyhow::Result<chatd_worker::WorkerConfig> {
    let mut config = chatd_worker::WorkerConfig::new(args.database.database_url);
    config.listen_database_url = args.listen_database_url;
    config.wait_for_migrations = args.wait_for_migrations;
    config.database_pooler = args.database_pooler.into();
    if let Some(worker_id) = args.worker_id {
        config.worker_id = worker_id;
    }
    config.pool_size = args.pool_size;
    config.max_concurrent_turns = args.max_concurrent_turns;
    config.max_running_chats_per_user = args.max_running_chats_per_user;
    config.archive_inactive_after_days = args.archive_inactive_after_days;
    config.acquire_batch = args.acquire_batch;
    config.acquire_interval = ms(args.acquire_interval_ms);
    config.affinity_grace = ms(args.affinity_grace_ms);
    config.prompt_cache_bytes = args.prompt_cache_bytes;
    config.heartbeat_interval = ms(args.heartbeat_interval_ms);
    config.stale_after = ms(args.stale_after_ms);
    config.sweep_interval = ms(args.sweep_interval_ms);
    config.liveness_interval = ms(args.liveness_interval_ms);
    config.stream_flush_interval = ms(args.stream_flush_interval_ms);
    config.shutdown_grace = ms(args.shutdown_grace_ms);
    config.max_steps = args.max_steps;
    config.max_provider_attempts = args.max_provider_attempts;
    config.startup_timeout = ms(args.startup_timeout_ms);
    config.stream_idle_timeout = ms(args.stream_idle_timeout_ms);
    config.step_timeout = ms(args.step_timeout_ms);
    config.builtin_tools = args
        .tools
        .iter()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect();
    chatd_worker::tool::builtin_tools(&config.builtin_tools).map_err(anyhow::Error::msg)?;
    config.tool_timeout = ms(args.tool_timeout_ms);
    config.action_timeout = ms(args.action_timeout_ms);
    config.title_timeout = ms(args.title_timeout_ms);
    config.max_agent_depth = args.max_agent_depth;
    config.max_agents_per_turn = args.max_agents_per_turn;
    config.mcp_timeout = ms(args.mcp_timeout_ms);
    config.encryption_key = args
        .encryption_key
        .as_deref()
        .map(chatd_shared::crypto::parse_key)
        .transpose()?;
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent_and_unknown_env_is_refused() {
        Cli::command().debug_assert();
        assert!(reject_unknown_env(
            vec![("CHATD_DATABASE_URL".to_string(), String::new())].into_iter()
        )
        .is_ok());
        assert!(reject_unknown_env(
            vec![("CHATD_DATABSE_URL".to_string(), String::new())].into_iter()
        )
        .is_err());
    }

    #[test]
    fn readme_documents_every_option() {
        let readme = include_str!("../README.md");
        for name in known_env_names() {
            if name.starts_with("CHATD_SCALETEST_") || name.starts_with("CHATD_CHAOS_") {
                continue; // documented by `--help`, referenced as CHATD_SCALETEST_* / CHATD_CHAOS_*
            }
            assert!(readme.contains(&name), "README.md does not document {name}");
        }
        fn flags(command: &clap::Command, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if let Some(long) = arg.get_long() {
                    out.push(format!("--{long}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "scaletest" && sub.get_name() != "chaos" {
                    flags(sub, out);
                }
            }
        }
        let mut all = Vec::new();
        flags(&Cli::command(), &mut all);
        for flag in all {
            if flag == "--help" || flag == "--version" {
                continue;
            }
            assert!(readme.contains(&flag), "README.md does not document {flag}");
        }
    }
}
