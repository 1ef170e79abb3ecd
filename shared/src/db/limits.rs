//! Spend limits: the deployment's settings (`usage_limits`), each user's effective limit (their
//! own, else the lowest of their groups', else the default) and what they spent in the current
//! period — one statement — and a per-process cache of it, so enforcement costs nothing while
//! limits are off and at most one read per user per [`USER_TTL`] while they are on.
//!
//! Periods are calendar periods in UTC (weeks start on Monday), computed by PostgreSQL's
//! `date_trunc` on the database clock. Spend counts every billed row of the user's chats —
//! steps and compaction summaries (rows with usage, edited-away ones included), sub-agent chats
//! (they are the user's chats) — and `usage_records` (titles).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::sql::Sql;

/// How long "limits are off" is believed (a `chatd_config` notice clears it sooner).
pub const SETTINGS_TTL: Duration = Duration::from_secs(5);
/// How long a user's spend status is reused while limits are on. The worker adds what its
/// own steps cost meanwhile, so a turn stops at the first step boundary past the limit.
pub const USER_TTL: Duration = Duration::from_secs(2);

/// The deployment's limit settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitSettings {
    pub enabled: bool,
    /// `day`, `week` (from Monday) or `month`, in UTC.
    pub period: String,
    /// The limit of users without their own or a group's; `null`: no limit for them.
    pub default_limit_micros: Option<i64>,
}

pub const PERIODS: &[&str] = &["day", "week", "month"];

/// A user's limit and spend in the current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendStatus {
    /// `None`: no limit applies to this user.
    pub limit_micros: Option<i64>,
    pub spent_micros: i64,
    pub period: String,
    pub period_start: OffsetDateTime,
    pub resets_at: OffsetDateTime,
}

impl SpendStatus {
    pub fn exceeded(&self) -> bool {
        self.limit_micros
            .is_some_and(|limit| self.spent_micros >= limit)
    }
}

pub async fn settings(client: &impl Sql) -> Result<LimitSettings, tokio_postgres::Error> {
    let row = client
        .row(
            "SELECT enabled, period, default_limit_micros FROM usage_limits WHERE singleton",
            &[],
        )
        .await?;
    Ok(LimitSettings {
        enabled: row.get(0),
        period: row.get(1),
        default_limit_micros: row.get(2),
    })
}

pub async fn set_settings(
    client: &impl Sql,
    settings: &LimitSettings,
) -> Result<(), tokio_postgres::Error> {
    client
        .exec(
            "UPDATE usage_limits SET enabled = $1, period = $2, default_limit_micros = $3 \
             WHERE singleton",
            &[
                &settings.enabled,
                &settings.period,
                &settings.default_limit_micros,
            ],
        )
        .await?;
    Ok(())
}

/// The user's status, `None` when limits are off (or the user does not exist). The spend of
/// the period is summed only when limits are on.
pub async fn status(
    client: &impl Sql,
    user_id: Uuid,
) -> Result<(bool, Option<SpendStatus>), tokio_postgres::Error> {
    let row = client
        .row_opt(
            "WITH s AS (SELECT enabled, period, default_limit_micros FROM usage_limits \
                        WHERE singleton), \
             w AS (SELECT s.*, date_trunc(s.period, now() AT TIME ZONE 'UTC') \
                          AT TIME ZONE 'UTC' AS start FROM s) \
             SELECT w.enabled, w.period, w.start, \
                 w.start + CASE w.period WHEN 'day' THEN interval '1 day' \
                                         WHEN 'week' THEN interval '7 days' \
                                         ELSE interval '1 month' END, \
                 coalesce(u.chat_spend_limit_micros, \
                     (SELECT min(g.spend_limit_micros) FROM group_members gm \
                      JOIN groups g ON g.id = gm.group_id WHERE gm.user_id = u.id), \
                     w.default_limit_micros) \
             FROM w, users u WHERE u.id = $1",
            &[&user_id],
        )
        .await?;
    let Some(row) = row else {
        return Ok((true, None));
    };
    let enabled: bool = row.get(0);
    if !enabled {
        return Ok((false, None));
    }
    let period_start: OffsetDateTime = row.get(2);
    let resets_at: OffsetDateTime = row.get(3);
    let spent = client
        .row(
            "SELECT (coalesce((SELECT sum(m.cost_micros) FROM chats c \
                 JOIN chat_messages m ON m.chat_id = c.id \
                 WHERE c.owner_id = $1 AND c.created_at < $3 \
                 AND (m.role = 'assistant' OR m.input_tokens IS NOT NULL) \
                 AND m.created_at >= $2 AND m.created_at < $3), 0) \
              + coalesce((SELECT sum(r.cost_micros) FROM usage_records r \
                 WHERE r.owner_id = $1 AND r.created_at >= $2 AND r.created_at < $3), 0) \
             )::bigint",
            &[&user_id, &period_start, &resets_at],
        )
        .await?;
    Ok((
        true,
        Some(SpendStatus {
            limit_micros: row.get(4),
            spent_micros: spent.get(0),
            period: row.get(1),
            period_start,
            resets_at,
        }),
    ))
}

/// Per-process cache of [`status`].
#[derive(Default)]
pub struct SpendCache {
    /// Limits were off when last read, at this instant.
    off_since: std::sync::Mutex<Option<Instant>>,
    users: dashmap::DashMap<Uuid, (SpendStatus, Instant)>,
}

impl SpendCache {
    /// What the cache knows without a read: `Some(None)` while limits are known to be off,
    /// `Some(Some(status))` for a fresh status of the user, `None` when a read is needed
    /// (callers can then skip taking a connection at all).
    pub fn cached(&self, user_id: Uuid) -> Option<Option<SpendStatus>> {
        let off = self
            .off_since
            .lock()
            .map(|since| since.is_some_and(|at| at.elapsed() < SETTINGS_TTL))
            .unwrap_or(false);
        if off {
            return Some(None);
        }
        let entry = self.users.get(&user_id)?;
        let (status, at) = &*entry;
        (at.elapsed() < USER_TTL).then(|| Some(status.clone()))
    }

    /// The user's status (`None`: limits are off), from the cache when fresh.
    pub async fn status(
        &self,
        client: &impl Sql,
        user_id: Uuid,
    ) -> Result<Option<SpendStatus>, tokio_postgres::Error> {
        if let Some(known) = self.cached(user_id) {
            return Ok(known);
        }
        let (enabled, status) = status(client, user_id).await?;
        if let Ok(mut off_since) = self.off_since.lock() {
            *off_since = (!enabled).then(Instant::now);
        }
        match &status {
            Some(status) => {
                if self.users.len() > 100_000 {
                    self.users.clear();
                }
                self.users.insert(user_id, (status.clone(), Instant::now()));
            }
            None => {
                self.users.remove(&user_id);
            }
        }
        Ok(status)
    }

    /// Adds spend this process just committed for `user_id` to its cached status.
    pub fn add_spend(&self, user_id: Uuid, micros: i64) {
        if let Some(mut entry) = self.users.get_mut(&user_id) {
            entry.0.spent_micros = entry.0.spent_micros.saturating_add(micros);
        }
    }

    /// Forgets everything (a `chatd_config` notice or a listener reconnect).
    pub fn clear(&self) {
        if let Ok(mut off_since) = self.off_since.lock() {
            *off_since = None;
        }
        self.users.clear();
    }
}
