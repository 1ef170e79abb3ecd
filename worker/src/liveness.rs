//! Worker liveness through PostgreSQL sessions: recovery in about a second, not a lease
//! timeout.
//!
//! Each worker holds a session advisory lock keyed by its id (`hashtextextended(worker_id)`)
//! on a dedicated direct connection (never a pooled one, never through a transaction pooler).
//! When the process dies — SIGKILL, OOM, a crashed node whose kernel resets the socket — its
//! PostgreSQL session ends at once and the lock is free. Every worker checks the lease holders
//! twice a second: a holder whose lock it can take (`pg_try_advisory_xact_lock`, released at
//! the end of the statement) on two consecutive checks is dead, and its chats go back to
//! `pending` (`interrupting` ones to `waiting`) for anyone to claim.
//!
//! What a session cannot show — a paused process (SIGSTOP), a network partition that leaves
//! the server's socket open — still waits for `stale_after` (the heartbeat sweep), and fencing
//! (`attempt`) keeps a "dead" worker that comes back harmless: its next write finds the lease
//! gone.

use chatd_shared::db::sql::Sql;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use chatd_shared::db::pool::connection_config;

/// How often the liveness connection is pinged (a dead socket ends the hold).
const PING_INTERVAL: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether this worker currently holds its liveness lock. While it does not, it claims nothing
/// (others would release what it claims).
#[derive(Clone, Default)]
pub struct Liveness {
    held: Arc<AtomicBool>,
}

impl Liveness {
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Holds the lock until `shutdown`, reconnecting with backoff whenever the connection
    /// fails.
    pub fn spawn(
        database_url: &str,
        worker_id: Uuid,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Liveness> {
        let config = connection_config(database_url, "chatd-worker-liveness")?;
        let liveness = Liveness::default();
        let held = liveness.held.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    outcome = hold(&config, worker_id, &held) => outcome,
                };
                held.store(false, Ordering::Relaxed);
                if let Err(error) = outcome {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "liveness lock lost; reconnecting"
                    );
                    metrics::counter!("chatd_liveness_reconnects_total").increment(1);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                // Short: while the lock is not held, other workers may judge this one dead
                // (after a PostgreSQL restart every worker must re-lock quickly).
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        });
        Ok(liveness)
    }
}

/// Connects, takes the lock, and pings until the connection fails.
async fn hold(
    config: &chatd_shared::db::pool::PgConnect,
    worker_id: Uuid,
    held: &AtomicBool,
) -> anyhow::Result<()> {
    let (client, connection) = config.config.connect(config.tls.clone()).await?;
    let mut connection = tokio::spawn(connection);
    // Blocks only if another session holds the key (a previous life of this worker id whose
    // session the server has not noticed ending yet).
    client
        .execute(
            "SELECT pg_advisory_lock(hashtextextended($1::text, 0))",
            &[&worker_id.to_string()],
        )
        .await?;
    held.store(true, Ordering::Relaxed);
    tracing::info!(%worker_id, "liveness lock held");
    loop {
        tokio::select! {
            ended = &mut connection => {
                anyhow::bail!("liveness connection ended: {:?}", ended.map(|result| result.err()));
            }
            _ = tokio::time::sleep(PING_INTERVAL) => {}
        }
        tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1"))
            .await
            .map_err(|_| anyhow::anyhow!("liveness ping timed out"))??;
    }
}

/// Lease holders (other than `me`) whose liveness lock is free right now.
///
/// # Locks
/// Takes each free holder's advisory lock for the statement only (transaction-scoped).
pub async fn free_holders(
    client: &deadpool_postgres::ClientWrapper,
    me: Uuid,
) -> Result<Vec<Uuid>, tokio_postgres::Error> {
    let rows = client
        .rows(
            "SELECT h.worker_id FROM (SELECT DISTINCT worker_id FROM chats \
                     WHERE worker_id IS NOT NULL AND worker_id <> $1) h \
                     WHERE pg_try_advisory_xact_lock(hashtextextended(h.worker_id::text, 0))",
            &[&me],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Releases the leases of `dead` workers whose lock is still free: running → pending,
/// interrupting → waiting. Returns the hints to publish.
///
/// # Locks
/// Row locks (`FOR UPDATE SKIP LOCKED`) on the released chats, and the dead workers' advisory
/// locks, for the statement only.
pub async fn release_dead(
    client: &deadpool_postgres::ClientWrapper,
    dead: &[Uuid],
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client
        .rows(
            concat!(
                "WITH lost AS ( \
                 SELECT id FROM chats WHERE worker_id IS NOT NULL AND worker_id = ANY($1) \
                 AND status IN ('running', 'interrupting') \
                 AND pg_try_advisory_xact_lock(hashtextextended(worker_id::text, 0)) \
                 FOR UPDATE SKIP LOCKED) ",
                crate::recovery::release_leases_sql!("lost")
            ),
            &[&dead],
        )
        .await?;
    let notices =
        crate::recovery::released_lease_notices(&rows, "recovered the lease of a dead worker");
    metrics::counter!("chatd_dead_worker_recoveries_total").increment(rows.len() as u64);
    Ok(notices)
}

/// Which workers were seen dead and when: a worker is released only when it is seen dead on
/// two consecutive checks (a liveness connection that blips and reconnects keeps its chats).
#[derive(Default)]
pub struct Suspects {
    seen: HashMap<Uuid, u64>,
    round: u64,
}

impl Suspects {
    /// Feeds one check's free holders; returns those also free on the previous check.
    pub fn observe(&mut self, free: &[Uuid]) -> Vec<Uuid> {
        self.round += 1;
        let round = self.round;
        let mut confirmed = Vec::new();
        for worker_id in free {
            match self.seen.get(worker_id) {
                Some(previous) if *previous + 1 == round => confirmed.push(*worker_id),
                _ => {}
            }
            self.seen.insert(*worker_id, round);
        }
        self.seen.retain(|_, seen| *seen == round);
        confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_dead_only_when_free_on_two_consecutive_checks() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut suspects = Suspects::default();
        assert!(suspects.observe(&[a]).is_empty());
        assert_eq!(suspects.observe(&[a, b]), vec![a]);
        // b blipped: free once, then held again, then free once more.
        assert!(suspects.observe(&[]).is_empty());
        assert!(suspects.observe(&[b]).is_empty());
        assert_eq!(suspects.observe(&[b]), vec![b]);
    }
}
