//! The worker's SQL: claims and leases here (acquire, heartbeat), the fenced commits and
//! attempt renewals of a turn in `commit`, what a turn reads (prompt, model) and its title
//! update in `turn`. Recovery's statements live with the sweep (`recovery.rs`, `liveness.rs`).
//!
//! **Invariant:** every write for a chat is conditioned on `worker_id = me AND attempt =
//! my_attempt`, checked under the row lock or in the `WHERE` clause. Zero rows means the turn
//! lost its lease: the caller stops and writes nothing more.

pub mod commit;
pub mod turn;

pub use commit::{commit, renew_attempt, CommitOutcome, Lease, NewRow, Renewal, RowUsage, TurnEnd};

use chatd_shared::db::sql::Sql;
use uuid::Uuid;

use chatd_shared::bump_chat_version;
use chatd_shared::domain::ChatStatus;

/// A chat this worker just claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    pub chat_id: Uuid,
    pub owner_id: Uuid,
    pub attempt: i32,
    pub version: i64,
    pub crash_count: i32,
    /// Database-clock time from the chat becoming pending to this claim, in seconds.
    pub pending_seconds: f64,
    /// The parent of a sub-agent (it may wait for this chat's answer).
    pub parent_chat_id: Option<Uuid>,
    /// Depth in the chat's tree (a root is 0).
    pub depth: i16,
}

/// The end of both claim statements: the chats in CTE `picked` (`id`, `pending_since`) become
/// this worker's, in a new attempt.
macro_rules! claim_picked {
    () => {
        concat!(
            "UPDATE chats c SET status = 'running', worker_id = $1, attempt = c.attempt + 1, \
             heartbeat_at = now(), crash_count = c.crash_count + 1, ",
            bump_chat_version!(),
            " FROM picked WHERE c.id = picked.id \
             RETURNING c.id, c.owner_id, c.attempt, c.version, c.crash_count, \
             extract(epoch FROM (clock_timestamp() - picked.pending_since))::float8, \
             c.parent_chat_id, c.depth"
        )
    };
}

/// Claims up to `limit` pending chats in one statement and commits at once, oldest pending
/// first. With `max_per_owner > 0` (fair share), a chat whose owner already has that many
/// running chats across the cluster is skipped (it stays pending for a later claim), and one
/// claim takes no more of an owner's chats than the cap leaves. Concurrent claims on other
/// workers count from their own snapshots, so the cap can be passed by what they claim in
/// the same instant.
///
/// # Locks
/// `FOR UPDATE SKIP LOCKED` on the candidate rows for the statement's duration only.
pub async fn acquire(
    client: &deadpool_postgres::ClientWrapper,
    worker_id: Uuid,
    limit: i64,
    max_per_owner: i64,
) -> Result<Vec<Claim>, tokio_postgres::Error> {
    let rows = if max_per_owner > 0 {
        client
            .rows(
                concat!(
                    "WITH candidates AS ( \
                     SELECT c.id, c.owner_id, c.updated_at AS pending_since, r.running \
                     FROM chats c CROSS JOIN LATERAL ( \
                         SELECT count(*) AS running FROM chats o \
                         WHERE o.owner_id = c.owner_id AND o.worker_id IS NOT NULL) r \
                     WHERE c.status = 'pending' AND NOT c.archived AND r.running < $3 \
                     ORDER BY c.updated_at FOR UPDATE OF c SKIP LOCKED LIMIT $2), \
                 picked AS ( \
                     SELECT id, pending_since FROM ( \
                         SELECT *, row_number() OVER (PARTITION BY owner_id \
                             ORDER BY pending_since, id) AS rank FROM candidates) ranked \
                     WHERE running + rank <= $3) \
                 ",
                    claim_picked!(),
                ),
                &[&worker_id, &limit, &max_per_owner],
            )
            .await?
    } else {
        client
            .rows(
                concat!(
                    "WITH picked AS ( \
                     SELECT id, updated_at AS pending_since FROM chats \
                     WHERE status = 'pending' AND NOT archived \
                     ORDER BY updated_at FOR UPDATE SKIP LOCKED LIMIT $2) \
                 ",
                    claim_picked!(),
                ),
                &[&worker_id, &limit],
            )
            .await?
    };
    Ok(rows
        .iter()
        .map(|row| Claim {
            chat_id: row.get(0),
            owner_id: row.get(1),
            attempt: row.get(2),
            version: row.get(3),
            crash_count: row.get(4),
            pending_seconds: row.get(5),
            parent_chat_id: row.get(6),
            depth: row.get(7),
        })
        .collect())
}

/// A lease as the heartbeat saw it.
pub struct LeaseState {
    pub chat_id: Uuid,
    pub status: ChatStatus,
    pub attempt: i32,
}

/// One statement for all of this worker's turns. Chats missing from the result lost their
/// lease. Lease time is the database clock.
pub async fn heartbeat(
    client: &deadpool_postgres::ClientWrapper,
    worker_id: Uuid,
    chat_ids: &[Uuid],
) -> Result<Vec<LeaseState>, tokio_postgres::Error> {
    let rows = client
        .rows(
            "UPDATE chats SET heartbeat_at = now() WHERE id = ANY($1) AND worker_id = $2 \
             AND status IN ('running', 'interrupting') RETURNING id, status, attempt",
            &[&chat_ids, &worker_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| LeaseState {
            chat_id: row.get(0),
            status: ChatStatus::parse(row.get(1)).unwrap_or(ChatStatus::Running),
            attempt: row.get(2),
        })
        .collect())
}
