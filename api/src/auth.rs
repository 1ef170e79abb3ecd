//! Bearer-token authentication with a short-lived in-memory cache of verified tokens, so a
//! streaming client's requests do not each cost a database read, and the per-token request
//! rate limit.
//!
//! Revocation: deleting a token, suspending a user or changing their admin rights publishes
//! `chatd_config` (`ConfigKind::Auth`); every replica evicts that user's cached tokens at once
//! (`TokenCache::evict_user`) and its open streams recheck their token (`still_valid`). The
//! cache's TTL (`--token-cache-ttl`, 30 s) only bounds how long a *lost* notice can delay it.

use chatd_shared::db::sql::Sql;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use dashmap::DashMap;
use uuid::Uuid;

use chatd_shared::auth::{hash_secret, hashes_equal, split_token};

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct CurrentUser {
    pub id: Uuid,
    pub is_admin: bool,
    /// The token the request came with.
    pub token_id: Uuid,
}

/// Verified tokens: `sha256(token)` → (user, verified at). Read on every request by every
/// handler thread: a sharded map, so readers of different tokens never wait on one lock.
#[derive(Default)]
pub struct TokenCache {
    /// (user, verified at, the token's expiry).
    entries: DashMap<Vec<u8>, (CurrentUser, Instant, Option<time::OffsetDateTime>)>,
}

/// Entries kept at most; past it the cache starts over (a bound, not an eviction policy: a
/// deployment with more live tokens than this re-verifies some of them).
const MAX_CACHED_TOKENS: usize = 100_000;

impl TokenCache {
    fn get(&self, key: &[u8], ttl: Duration) -> Option<CurrentUser> {
        let entry = self.entries.get(key)?;
        let (user, at, expires_at) = *entry;
        let expired = expires_at.is_some_and(|at| at <= time::OffsetDateTime::now_utc());
        (at.elapsed() < ttl && !expired).then_some(user)
    }

    fn put(&self, key: Vec<u8>, user: CurrentUser, expires_at: Option<time::OffsetDateTime>) {
        if self.entries.len() > MAX_CACHED_TOKENS {
            self.entries.clear();
        }
        self.entries.insert(key, (user, Instant::now(), expires_at));
    }

    /// Forgets every token of `user_id` (their access changed).
    pub fn evict_user(&self, user_id: Uuid) {
        self.entries.retain(|_, (user, _, _)| user.id != user_id);
    }

    /// Forgets everything (notices may have been lost).
    pub fn clear(&self) {
        self.entries.clear();
    }
}

/// Per-token token buckets (`--rate-limit-per-second`, `--rate-limit-burst`), per replica.
#[derive(Default)]
pub struct RateLimiter {
    buckets: DashMap<Uuid, (f64, Instant)>,
}

impl RateLimiter {
    /// Takes one request from `token_id`'s bucket, or says how many seconds until one is there.
    pub fn take(&self, token_id: Uuid, per_second: f64, burst: f64) -> Result<(), u64> {
        if per_second <= 0.0 {
            return Ok(());
        }
        if self.buckets.len() > MAX_CACHED_TOKENS {
            // Idle buckets are full buckets: forgetting them changes nothing.
            let now = Instant::now();
            self.buckets
                .retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() * per_second < burst);
        }
        let now = Instant::now();
        let mut entry = self.buckets.entry(token_id).or_insert((burst, now));
        let (tokens, at) = &mut *entry;
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = authenticate(parts, state).await?;
        let config = &state.config;
        if let Err(retry_after_s) = state.rate_limits.take(
            user.token_id,
            config.rate_limit_per_second,
            config.rate_limit_burst,
        ) {
            metrics::counter!("chatd_rate_limited_total").increment(1);
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "too many requests with this token: at most {} per second (bursts of {}) on each replica",
                    config.rate_limit_per_second, config.rate_limit_burst
                ),
                retry_after_s,
            });
        }
        Ok(user)
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<CurrentUser, ApiError> {
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    let (prefix, secret) = split_token(token).ok_or(ApiError::Unauthorized)?;
    let cache_key = hash_secret(token);
    if let Some(user) = state.tokens.get(&cache_key, state.config.token_cache_ttl) {
        return Ok(user);
    }
    let client = state.pool.get().await?;
    let row = client
        .row_opt(
            "SELECT t.secret_hash, u.id, u.is_admin, t.id, \
             t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute', \
             t.expires_at \
             FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.prefix = $1 AND (t.expires_at IS NULL OR t.expires_at > now()) \
             AND NOT u.suspended",
            &[&prefix],
        )
        .await?;
    let row = row.ok_or(ApiError::Unauthorized)?;
    let stored: Vec<u8> = row.get(0);
    if !hashes_equal(&stored, &hash_secret(secret)) {
        return Err(ApiError::Unauthorized);
    }
    let user = CurrentUser {
        id: row.get(1),
        is_admin: row.get(2),
        token_id: row.get(3),
    };
    if row.get::<_, bool>(4) {
        // At most once a minute per token (the condition is re-checked by the update).
        client
            .exec(
                "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 \
                 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                &[&user.token_id],
            )
            .await?;
    }
    state.tokens.put(cache_key, user, row.get(5));
    Ok(user)
}

/// Whether `user`'s token still authenticates them with the same rights (an open stream's
/// recheck after its user's access changed).
pub async fn still_valid(state: &AppState, user: &CurrentUser) -> Result<bool, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .row_opt(
            "SELECT u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.id = $1 AND (t.expires_at IS NULL OR t.expires_at > now()) \
             AND NOT u.suspended",
            &[&user.token_id],
        )
        .await?;
    Ok(row.is_some_and(|row| row.get::<_, bool>(0) == user.is_admin))
}

/// For an open stream of `user`: whether `event` (from `AppState::config_events`) took its
/// access away. Only their own access changes (or a listener reconnect, after which notices
/// may be missing) cost a read; a read that fails keeps the stream open.
pub async fn revoked(
    state: &AppState,
    user: &CurrentUser,
    event: Result<crate::state::ConfigEvent, tokio::sync::broadcast::error::RecvError>,
) -> bool {
    use crate::state::ConfigEvent;
    use chatd_shared::pubsub::ConfigKind;
    use tokio::sync::broadcast::error::RecvError;
    let recheck = match event {
        Ok(ConfigEvent::Changed(notice)) => notice.kind == ConfigKind::Auth && notice.id == user.id,
        Ok(ConfigEvent::Reconnected) | Err(RecvError::Lagged(_)) => true,
        Err(RecvError::Closed) => false,
    };
    if !recheck {
        return false;
    }
    matches!(still_valid(state, user).await, Ok(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limiter = RateLimiter::default();
        let token = Uuid::new_v4();
        for _ in 0..10 {
            assert!(limiter.take(token, 5.0, 10.0).is_ok());
        }
        let wait = limiter.take(token, 5.0, 10.0).unwrap_err();
        assert_eq!(wait, 1);
        // Another token has its own bucket; a zero rate is no limit.
        assert!(limiter.take(Uuid::new_v4(), 5.0, 10.0).is_ok());
        for _ in 0..1000 {
            assert!(limiter.take(token, 0.0, 10.0).is_ok());
        }
    }
}
