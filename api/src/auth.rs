//! Bearer-token authentication with a short-lived in-memory cache of verified tokens, so a
//! streaming client's requests do not each cost a database read.

use chatd_shared::db::sql::Sql;
use std::time::Instant;

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
}

/// Verified tokens: `sha256(token)` → (user, verified at). Read on every request by every
/// handler thread: a sharded map, so readers of different tokens never wait on one lock.
#[derive(Default)]
pub struct TokenCache {
    entries: DashMap<Vec<u8>, (CurrentUser, Instant)>,
}

/// Entries kept at most; past it the cache starts over (a bound, not an eviction policy: a
/// deployment with more live tokens than this re-verifies some of them).
const MAX_CACHED_TOKENS: usize = 100_000;

impl TokenCache {
    fn get(&self, key: &[u8], ttl: std::time::Duration) -> Option<CurrentUser> {
        let entry = self.entries.get(key)?;
        let (user, at) = *entry;
        (at.elapsed() < ttl).then_some(user)
    }

    fn put(&self, key: Vec<u8>, user: CurrentUser) {
        if self.entries.len() > MAX_CACHED_TOKENS {
            self.entries.clear();
        }
        self.entries.insert(key, (user, Instant::now()));
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
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
                "SELECT t.secret_hash, u.id, u.is_admin FROM api_tokens t \
                 JOIN users u ON u.id = t.user_id \
                 WHERE t.prefix = $1 AND (t.expires_at IS NULL OR t.expires_at > now())",
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
        };
        state.tokens.put(cache_key, user);
        Ok(user)
    }
}
