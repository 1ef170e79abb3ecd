//! Worker configuration (built by the `chatd worker` command line / `CHATD_*` environment).

use std::time::Duration;

use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub database_url: String,
    /// A direct URL for the LISTEN connection and the liveness lock
    /// (`--listen-database-url`), when `database_url` goes through a transaction pooler.
    pub listen_database_url: Option<String>,
    /// At startup, wait for the schema to reach this build's version
    /// (`--wait-for-migrations`) instead of failing.
    pub wait_for_migrations: bool,
    /// What sits between the pool and PostgreSQL (`--database-pooler`): behind a
    /// transaction-mode pooler the pool runs unnamed statements and needs
    /// `listen_database_url`.
    pub database_pooler: chatd_shared::db::pool::Pooler,
    /// Identity of this worker in `chats.worker_id`; fresh per process by default.
    pub worker_id: Uuid,
    pub pool_size: usize,
    /// Most turns this worker runs at once.
    pub max_concurrent_turns: usize,
    /// Most running chats per user across the cluster (the claim counts them); 0: no cap.
    pub max_running_chats_per_user: i64,
    /// Root chats idle this many days are archived by the sweep; 0: never.
    pub archive_inactive_after_days: u32,
    /// Most chats claimed by one acquire statement.
    pub acquire_batch: usize,
    /// Poll for pending chats this often even when notifications work.
    pub acquire_interval: Duration,
    /// A chat that became pending less than this long ago is claimed only by the worker that
    /// ran it last (whose prompt cache has it); others take it after. Zero: any worker at once.
    pub affinity_grace: Duration,
    /// Bytes of chats' prompt rows kept between turns (`turn::prompt_cache`); 0: none.
    pub prompt_cache_bytes: usize,
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
    /// Sub-agents nest at most this deep (a root chat is depth 0); `spawn_agent` is not
    /// offered at this depth.
    pub max_agent_depth: i16,
    /// Sub-agents one turn (one user message) may start.
    pub max_agents_per_turn: usize,
    /// Bound on connecting to an MCP server and listing its tools.
    pub mcp_timeout: Duration,
}

/// The defaults, in one place: `WorkerConfig::new` and the `chatd worker` flags both use them.
pub mod defaults {
    pub const POOL_SIZE: usize = 16;
    pub const MAX_CONCURRENT_TURNS: usize = 512;
    pub const MAX_RUNNING_CHATS_PER_USER: i64 = 50;
    pub const ACQUIRE_BATCH: usize = 64;
    pub const ACQUIRE_INTERVAL_MS: u64 = 1_000;
    pub const AFFINITY_GRACE_MS: u64 = 100;
    pub const PROMPT_CACHE_BYTES: usize = 64 << 20;
    pub const HEARTBEAT_INTERVAL_MS: u64 = 5_000;
    pub const STALE_AFTER_MS: u64 = 30_000;
    pub const SWEEP_INTERVAL_MS: u64 = 5_000;
    pub const LIVENESS_INTERVAL_MS: u64 = 500;
    pub const STREAM_FLUSH_INTERVAL_MS: u64 = 20;
    pub const SHUTDOWN_GRACE_MS: u64 = 25_000;
    pub const MAX_STEPS: usize = 100;
    pub const MAX_PROVIDER_ATTEMPTS: u32 = 5;
    pub const STARTUP_TIMEOUT_MS: u64 = 60_000;
    pub const STREAM_IDLE_TIMEOUT_MS: u64 = 120_000;
    pub const STEP_TIMEOUT_MS: u64 = 1_800_000;
    pub const MAX_CRASH_COUNT: i32 = 5;
    pub const TOOL_TIMEOUT_MS: u64 = 600_000;
    pub const ACTION_TIMEOUT_MS: u64 = 3_600_000;
    pub const TITLE_TIMEOUT_MS: u64 = 20_000;
    pub const MAX_AGENT_DEPTH: i16 = 2;
    pub const MAX_AGENTS_PER_TURN: usize = 8;
    pub const MCP_TIMEOUT_MS: u64 = 10_000;
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

impl WorkerConfig {
    /// The URL of connections that need a session (listener, liveness lock): the listen
    /// URL, else the database URL.
    pub fn session_database_url(&self) -> &str {
        self.listen_database_url
            .as_deref()
            .unwrap_or(&self.database_url)
    }

    pub fn new(database_url: impl Into<String>) -> WorkerConfig {
        use defaults::*;
        WorkerConfig {
            database_url: database_url.into(),
            listen_database_url: None,
            wait_for_migrations: false,
            database_pooler: chatd_shared::db::pool::Pooler::None,
            worker_id: Uuid::new_v4(),
            pool_size: POOL_SIZE,
            max_concurrent_turns: MAX_CONCURRENT_TURNS,
            max_running_chats_per_user: MAX_RUNNING_CHATS_PER_USER,
            archive_inactive_after_days: 0,
            acquire_batch: ACQUIRE_BATCH,
            acquire_interval: ms(ACQUIRE_INTERVAL_MS),
            affinity_grace: ms(AFFINITY_GRACE_MS),
            prompt_cache_bytes: PROMPT_CACHE_BYTES,
            heartbeat_interval: ms(HEARTBEAT_INTERVAL_MS),
            stale_after: ms(STALE_AFTER_MS),
            sweep_interval: ms(SWEEP_INTERVAL_MS),
            liveness_interval: ms(LIVENESS_INTERVAL_MS),
            stream_flush_interval: ms(STREAM_FLUSH_INTERVAL_MS),
            shutdown_grace: ms(SHUTDOWN_GRACE_MS),
            max_steps: MAX_STEPS,
            max_provider_attempts: MAX_PROVIDER_ATTEMPTS,
            startup_timeout: ms(STARTUP_TIMEOUT_MS),
            stream_idle_timeout: ms(STREAM_IDLE_TIMEOUT_MS),
            step_timeout: ms(STEP_TIMEOUT_MS),
            max_crash_count: MAX_CRASH_COUNT,
            encryption_key: None,
            builtin_tools: Vec::new(),
            tool_timeout: ms(TOOL_TIMEOUT_MS),
            action_timeout: ms(ACTION_TIMEOUT_MS),
            title_timeout: ms(TITLE_TIMEOUT_MS),
            max_agent_depth: MAX_AGENT_DEPTH,
            max_agents_per_turn: MAX_AGENTS_PER_TURN,
            mcp_timeout: ms(MCP_TIMEOUT_MS),
        }
    }

    /// Refuses settings that cannot work, naming the setting (the flag) and why. Checked by
    /// `chatd_worker::run` before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        chatd_shared::db::pool::check_pooler(
            self.database_pooler,
            self.listen_database_url.as_deref(),
        )?;
        let positive: [(&str, bool); 13] = [
            ("--pool-size", self.pool_size > 0),
            ("--max-concurrent-turns", self.max_concurrent_turns > 0),
            ("--acquire-batch", self.acquire_batch > 0),
            ("--acquire-interval-ms", !self.acquire_interval.is_zero()),
            (
                "--heartbeat-interval-ms",
                !self.heartbeat_interval.is_zero(),
            ),
            ("--sweep-interval-ms", !self.sweep_interval.is_zero()),
            ("--liveness-interval-ms", !self.liveness_interval.is_zero()),
            (
                "--stream-flush-interval-ms",
                !self.stream_flush_interval.is_zero(),
            ),
            ("--max-steps", self.max_steps > 0),
            ("--max-provider-attempts", self.max_provider_attempts > 0),
            (
                "--stream-idle-timeout-ms",
                !self.stream_idle_timeout.is_zero(),
            ),
            ("--step-timeout-ms", !self.step_timeout.is_zero()),
            ("--tool-timeout-ms", !self.tool_timeout.is_zero()),
        ];
        if let Some((flag, _)) = positive.iter().find(|(_, ok)| !ok) {
            return Err(format!("{flag} must be greater than 0"));
        }
        if self.action_timeout.is_zero() {
            return Err("--action-timeout-ms must be greater than 0".into());
        }
        if self.stale_after <= self.heartbeat_interval * 2 {
            return Err(format!(
                "--stale-after-ms ({} ms) must be more than twice --heartbeat-interval-ms ({} ms): \
                 a lease would expire between two heartbeats",
                self.stale_after.as_millis(),
                self.heartbeat_interval.as_millis()
            ));
        }
        if self.pool_size < 2 {
            return Err(format!(
                "--pool-size ({}) must be at least 2: the heartbeat and the turns need their \
                 own connections",
                self.pool_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused_by_name() {
        assert_eq!(WorkerConfig::new("postgres://x").validate(), Ok(()));
        let mut config = WorkerConfig::new("postgres://x");
        config.heartbeat_interval = config.stale_after;
        let error = config.validate().unwrap_err();
        assert!(error.contains("--stale-after-ms"), "{error}");
        let mut config = WorkerConfig::new("postgres://x");
        config.pool_size = 0;
        assert_eq!(
            config.validate().unwrap_err(),
            "--pool-size must be greater than 0"
        );
        let mut config = WorkerConfig::new("postgres://x");
        config.stream_flush_interval = Duration::ZERO;
        assert!(config
            .validate()
            .unwrap_err()
            .contains("--stream-flush-interval-ms"));
    }
}
