//! Shared state of one API replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use chatd_shared::db::pool::PgPool;
use chatd_shared::pubsub::Listener;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::{RateLimiter, TokenCache};
use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::hub::Hubs;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ApiConfig>,
    pub pool: PgPool,
    /// Publishes committed changes' hints, many requests' in one statement when busy.
    pub publisher: chatd_shared::pubsub::Publisher,
    /// Sends to idle chats, many requests' in one statement when busy.
    pub sender: crate::store::send_batch::SendBatcher,
    pub listener: Listener,
    pub hubs: Arc<Hubs>,
    pub tokens: Arc<TokenCache>,
    /// Per-token request buckets (`--rate-limit-per-second`).
    pub rate_limits: Arc<RateLimiter>,
    /// Each user's spend status while limits are on (cleared by `chatd_config`).
    pub spend: Arc<chatd_shared::db::limits::SpendCache>,
    /// `chatd_config` notices (and listener reconnects), for caches and open streams.
    pub config_events: tokio::sync::broadcast::Sender<ConfigEvent>,
    pub metrics: PrometheusHandle,
    /// Open streams per user on this replica (`--max-streams-per-user`).
    pub streams: Arc<StreamSlots>,
    /// Cancelled when the replica starts shutting down (SIGTERM): `/readyz` fails, new streams
    /// are refused (503), open streams get a `retry:` hint and end, so their clients reconnect
    /// to another replica with their `Last-Event-ID`.
    pub draining: tokio_util::sync::CancellationToken,
}

/// What the API's listener heard on `chatd_config`.
#[derive(Debug, Clone, Copy)]
pub enum ConfigEvent {
    Changed(chatd_shared::pubsub::ConfigNotice),
    /// Notices may have been lost: drop every cache.
    Reconnected,
}

impl AppState {
    /// 503 for a new stream while the replica drains.
    pub fn refuse_if_draining(&self) -> Result<(), ApiError> {
        if self.draining.is_cancelled() {
            return Err(ApiError::Unavailable(
                "this replica is shutting down; reconnect to another".into(),
            ));
        }
        Ok(())
    }
}

/// Counts each user's open streams (chat and watch) on this replica.
#[derive(Default)]
pub struct StreamSlots {
    open: Mutex<HashMap<Uuid, usize>>,
}

/// One open stream of a user; dropping it frees the slot.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    user_id: Uuid,
}

impl StreamSlots {
    /// Takes a slot for `user_id`, or refuses with 429 and `Retry-After` when the user already
    /// has `max` streams open here.
    pub fn acquire(self: &Arc<Self>, user_id: Uuid, max: usize) -> Result<StreamSlot, ApiError> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(user_id).or_insert(0);
        if *count >= max {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "too many open streams: at most {max} per user on one replica; close one first"
                ),
                retry_after_s: 5,
            });
        }
        *count += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            user_id,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}
