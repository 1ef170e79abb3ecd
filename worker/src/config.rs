//! Worker configuration (built by the `chatd worker` command line / `CHATD_*` environment).

use std::time::Duration;

use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub database_url: String,
    /// Identity of this worker in `chats.worker_id`; fresh per process by default.
    pub worker_id: Uuid,
    pub pool_size: usize,
    /// Most turns this worker runs at once.
    pub max_concurrent_turns: usize,
    /// Most chats claimed by one acquire statement.
    pub acquire_batch: usize,
    /// Poll for pending chats this often even when notifications work.
    pub acquire_interval: Duration,
    pub heartbeat_interval: Duration,
    /// A lease whose heartbeat is older than this is recovered by the sweep.
    pub stale_after: Duration,
    pub sweep_interval: Duration,
    /// How often this worker checks whether other lease holders' PostgreSQL sessions are
    /// alive (see `liveness`); a dead one's chats are released after two checks.
    pub liveness_interval: Duration,
    /// The stream flusher writes and publishes every this often.
    pub stream_flush_interval: Duration,
    /// On SIGTERM, running turns get this long to finish before they are released.
    pub shutdown_grace: Duration,
    pub max_steps: usize,
    /// Provider requests per step before the turn fails (retryable errors only).
    pub max_provider_attempts: u32,
    /// A provider stream that produced nothing for this long counts as a retryable failure.
    pub startup_timeout: Duration,
    /// A provider stream that sends no bytes at all for this long (keep-alive comments and
    /// `ping` events count) is a retryable `timeout` failure (I10).
    pub stream_idle_timeout: Duration,
    /// Wall-clock bound of one step (streaming and tools together); past it the turn ends in
    /// `error` with kind `timeout`, not retried.
    pub step_timeout: Duration,
    /// Acquisitions of one chat without a finished turn before it is failed (crash loop).
    pub max_crash_count: i32,
    /// 32-byte key for provider API keys at rest (None: keys cannot be used).
    pub encryption_key: Option<[u8; 32]>,
    /// Names of the built-in tools offered to models (see `tool::builtin`).
    pub builtin_tools: Vec<String>,
    /// A tool call running longer than this gets an error result.
    pub tool_timeout: Duration,
    /// How long a chat waits in `requires_action` for client tool results before it fails.
    pub action_timeout: Duration,
    /// Bound on generating a chat's title; zero disables automatic titles.
    pub title_timeout: Duration,
}

impl WorkerConfig {
    pub fn new(database_url: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            database_url: database_url.into(),
            worker_id: Uuid::new_v4(),
            pool_size: 16,
            max_concurrent_turns: 512,
            acquire_batch: 64,
            acquire_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            stale_after: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(5),
            liveness_interval: Duration::from_millis(500),
            stream_flush_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(25),
            max_steps: 100,
            max_provider_attempts: 5,
            startup_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(120),
            step_timeout: Duration::from_secs(1800),
            max_crash_count: 5,
            encryption_key: None,
            builtin_tools: Vec::new(),
            tool_timeout: Duration::from_secs(600),
            action_timeout: Duration::from_secs(3600),
            title_timeout: Duration::from_secs(20),
        }
    }
}
