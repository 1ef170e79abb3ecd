//! API replica configuration (built by the `chatd api` command line / `CHATD_*` environment).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub database_url: String,
    /// A direct URL for the LISTEN connection (`--listen-database-url`), when `database_url`
    /// goes through a transaction pooler.
    pub listen_database_url: Option<String>,
    /// At startup, wait for the schema to reach this build's version
    /// (`--wait-for-migrations`) instead of failing.
    pub wait_for_migrations: bool,
    /// What sits between the pool and PostgreSQL (`--database-pooler`): behind a
    /// transaction-mode pooler the pool runs unnamed statements and needs
    /// `listen_database_url`.
    pub database_pooler: chatd_shared::db::pool::Pooler,
    /// Connections in this replica's pool.
    pub pool_size: usize,
    /// Request bodies larger than this are refused with 413 before buffering.
    pub max_body_bytes: usize,
    /// Uploaded files larger than this are refused with 413 (`--max-file-bytes`).
    pub max_file_bytes: usize,
    /// Most queued messages per chat (429 beyond).
    pub max_queue_len: i64,
    /// A stream's snapshot sends at most this many (newest) messages; when more follow the
    /// client's cursor it says `history_truncated` and older ones come from
    /// `GET /chats/{id}/messages`.
    pub stream_snapshot_messages: i64,
    /// Most open streams (chat streams and watch streams) per user on this replica.
    pub max_streams_per_user: usize,
    /// Requests per second per token on this replica (a token bucket; 0 = no limit).
    pub rate_limit_per_second: f64,
    /// The bucket's size: requests a token may send at once after being idle.
    pub rate_limit_burst: f64,
    /// How long a verified token stays cached in memory (revocation takes up to this long).
    pub token_cache_ttl: Duration,
    /// SSE comment keep-alive interval.
    pub keep_alive: Duration,
    /// Origins allowed to call from a browser on another origin (`*`: any); empty: none.
    pub cors_origins: Vec<String>,
    /// Serve the web UI at `/` (default on).
    pub web_ui: bool,
    /// Events buffered per chat hub before a slow subscriber is resynced from the database.
    pub hub_buffer: usize,
    /// How often hubs' relayed versions are checked against the database (lost hints).
    pub hub_audit_interval: Duration,
    /// Seals provider API keys written through the admin API (`--encryption-key`). Without
    /// it, requests that set an API key are refused.
    pub encryption_key: Option<EncryptionKey>,
}

/// A 32-byte AES-256-GCM key whose `Debug` never shows the key.
#[derive(Clone)]
pub struct EncryptionKey(pub [u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EncryptionKey(<redacted>)")
    }
}

/// The defaults, in one place: `ApiConfig::new` and the `chatd api` flags both use them.
pub mod defaults {
    pub const POOL_SIZE: usize = 32;
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
    pub const MAX_QUEUE_LEN: i64 = 20;
    pub const STREAM_SNAPSHOT_MESSAGES: i64 = 100;
    pub const MAX_STREAMS_PER_USER: usize = 100;
    pub const RATE_LIMIT_PER_SECOND: f64 = 50.0;
    pub const RATE_LIMIT_BURST: f64 = 100.0;
}

impl ApiConfig {
    pub fn new(database_url: impl Into<String>) -> ApiConfig {
        use defaults::*;
        ApiConfig {
            database_url: database_url.into(),
            listen_database_url: None,
            wait_for_migrations: false,
            database_pooler: chatd_shared::db::pool::Pooler::None,
            pool_size: POOL_SIZE,
            max_body_bytes: MAX_BODY_BYTES,
            max_file_bytes: MAX_FILE_BYTES,
            max_queue_len: MAX_QUEUE_LEN,
            stream_snapshot_messages: STREAM_SNAPSHOT_MESSAGES,
            max_streams_per_user: MAX_STREAMS_PER_USER,
            rate_limit_per_second: RATE_LIMIT_PER_SECOND,
            rate_limit_burst: RATE_LIMIT_BURST,
            token_cache_ttl: Duration::from_secs(30),
            keep_alive: Duration::from_secs(15),
            cors_origins: Vec::new(),
            web_ui: true,
            hub_buffer: 128,
            hub_audit_interval: Duration::from_secs(2),
            encryption_key: None,
        }
    }

    /// The URL of connections that need a session: the listen URL, else the database URL.
    pub fn session_database_url(&self) -> &str {
        self.listen_database_url
            .as_deref()
            .unwrap_or(&self.database_url)
    }

    /// Refuses settings that cannot work, naming the flag. Checked by `chatd_api::run`.
    pub fn validate(&self) -> Result<(), String> {
        chatd_shared::db::pool::check_pooler(
            self.database_pooler,
            self.listen_database_url.as_deref(),
        )?;
        let checks: [(&str, bool); 8] = [
            ("--pool-size", self.pool_size > 0),
            ("--max-body-bytes", self.max_body_bytes > 0),
            ("--max-file-bytes", self.max_file_bytes > 0),
            ("--max-queue-len", self.max_queue_len >= 0),
            (
                "--stream-snapshot-messages",
                self.stream_snapshot_messages > 0,
            ),
            ("--max-streams-per-user", self.max_streams_per_user > 0),
            (
                "--rate-limit-per-second",
                self.rate_limit_per_second.is_finite() && self.rate_limit_per_second >= 0.0,
            ),
            (
                "--rate-limit-burst",
                self.rate_limit_burst.is_finite() && self.rate_limit_burst >= 1.0,
            ),
        ];
        for origin in &self.cors_origins {
            // `scheme://host[:port]`: exactly the two slashes after the scheme.
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && origin.matches('/').count() == 2
                    && axum::http::HeaderValue::from_str(origin).is_ok());
            if !valid {
                return Err(format!(
                    "--cors-origins: `{origin}` is not an origin (scheme://host[:port], no path) or `*`"
                ));
            }
        }
        match checks.iter().find(|(_, ok)| !ok) {
            Some((flag, _)) if *flag == "--max-queue-len" => {
                Err(format!("{flag} must not be negative"))
            }
            Some((flag, _)) if *flag == "--rate-limit-per-second" => {
                Err(format!("{flag} must be a number, 0 (no limit) or more"))
            }
            Some((flag, _)) if *flag == "--rate-limit-burst" => {
                Err(format!("{flag} must be a number, 1 or more"))
            }
            Some((flag, _)) => Err(format!("{flag} must be greater than 0")),
            None => Ok(()),
        }
    }
}
