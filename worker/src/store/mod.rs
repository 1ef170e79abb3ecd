//! The worker's SQL: claims and leases here (acquire, heartbeat), the fenced commits and
//! attempt renewals of a turn in `commit`, what a turn reads (prompt, model) and its title
//! update in `turn`. Recovery's statements live with the sweep (`recovery.rs`, `liveness.rs`).
//!
//! **Invariant:** every write for a chat is conditioned on `worker_id = me AND attempt =
//! my_attempt`, checked under the row lock or in the `WHERE` clause. Zero rows means the turn
//! lost its lease: the caller stops and writes nothing more.

pub mod commit;
pub mod commit_batch;
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
    /// The chat's prompt state and newest prompt rows, as the claim read them.
    pub prompt: turn::ClaimedPrompt,
}

/// How many of a chat's newest prompt rows the claim returns (`ClaimedPrompt`): enough for a
/// plain turn's new rows plus one the worker's cache already has, so a cached chat (or a new
/// one) needs no read of its own.
pub const CLAIM_TAIL_ROWS: i64 = 6;

/// The end of both claim statements: the chats in CTE `picked` (`id`, `pending_since`,
/// `anchor`: their `prompt_anchor_id`) become this worker's, in a new attempt (`$1`: this
/// worker), each returned with its prompt state and its newest `CLAIM_TAIL_ROWS` prompt rows
/// from its anchor on (a row per message; a chat without any gets one row of NULLs there; the
/// last column says whether the chat had an anchor, i.e. whether the tail was bounded); then
/// one more row, whose ninth column says in how many seconds the oldest chat this claim had to
/// leave to its last worker (the affinity grace, `$G`) becomes anyone's — NULL when there is
/// none.
///
/// The anchor is the newest prompt row the previous claim saw: the row a cached prompt of the
/// chat ends at (or after), so the tail reaches the cache whenever six rows do. Each claim
/// moves it to the newest prompt row it sees (found from the old anchor on). The bound keeps
/// the tail's read to the rows since the previous claim whatever plan PostgreSQL picks: its
/// estimate of a chat's rows is the average chat's, and for short averages it reads the
/// chat's rows through a bitmap scan and sorts them, which without the bound read the whole
/// history of a long chat (529 rows per claimed chat of B8's 500-message chats).
///
/// The tail is read with the statement's snapshot, the row lock may have followed a newer
/// version of the chat (a change committed after the snapshot): the tail is only trusted when
/// the snapshot's version of the chat is the one the claim bumped (every transaction that adds
/// a prompt row also updates its chat row, under the row lock).
///
/// The update names the picked chats as an array rather than joining them: a batch's size is
/// a parameter, estimated at a tenth of the pending chats, and joined to that many the update
/// was a hash join over every chat (`tests/plans.rs`). The array is estimated at ten: ten
/// primary-key probes, as long as random pages are priced for cached data (pooled sessions
/// set `random_page_cost`, `db::pool::POOL_SESSION_OPTIONS`; at the default a table of a few
/// hundred chats is scanned instead).
macro_rules! claim_picked {
    ($grace:literal) => {
        concat!(
            ", claimed AS ( \
             UPDATE chats c SET status = 'running', worker_id = $1, last_worker_id = $1, \
             attempt = c.attempt + 1, heartbeat_at = now(), crash_count = c.crash_count + 1, \
             prompt_anchor_id = coalesce((SELECT max(a.id) FROM chat_messages a \
                 WHERE a.chat_id = c.id AND a.id >= coalesce(c.prompt_anchor_id, 0) \
                     AND NOT a.deleted AND a.visibility <> 'user'), c.prompt_anchor_id), ",
            bump_chat_version!(),
            " WHERE c.id = ANY (ARRAY(SELECT id FROM picked)) \
             RETURNING c.id, c.owner_id, c.attempt, c.version, c.crash_count, \
             c.parent_chat_id, c.depth, c.model_config_id, c.dynamic_tools, \
             c.title = '' AS untitled, c.mcp_server_ids, c.history_epoch) \
             SELECT cl.id, cl.owner_id, cl.attempt, cl.version, cl.crash_count, \
                    extract(epoch FROM (clock_timestamp() - p.pending_since))::float8, \
                    cl.parent_chat_id, cl.depth, NULL::float8, cl.model_config_id, \
                    cl.dynamic_tools, cl.untitled, cl.mcp_server_ids, cl.history_epoch, \
                    (SELECT s.version FROM chats s WHERE s.id = cl.id) = cl.version - 1, \
                    t.id, t.role, t.content, t.model_config_id, t.provider_response_id, \
                    t.compressed, pg_column_size(t.content), p.anchor IS NOT NULL \
             FROM claimed cl JOIN picked p ON p.id = cl.id LEFT JOIN LATERAL ( \
                 SELECT m.id, m.role, m.content, m.model_config_id, m.provider_response_id, \
                        m.compressed FROM chat_messages m \
                 WHERE m.chat_id = cl.id AND m.id >= coalesce(p.anchor, 0) \
                     AND NOT m.deleted AND m.visibility <> 'user' \
                 ORDER BY m.id DESC LIMIT 6) t ON true \
             UNION ALL \
             SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                    (SELECT extract(epoch FROM min(d.updated_at) \
                         + make_interval(secs => ", $grace, ") - now())::float8 \
                     FROM chats d WHERE d.status = 'pending' AND NOT d.archived \
                         AND d.updated_at >= now() - make_interval(secs => ", $grace, ") \
                         AND d.last_worker_id <> $1), \
                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
                    NULL"
        )
    };
}

/// Whether a pending chat (`c`) may be claimed by worker `$1` now: it has no last worker, or
/// it is this one, or it has been pending longer than the affinity grace `$G`.
macro_rules! claimable {
    ($grace:literal) => {
        concat!(
            "(c.last_worker_id IS NULL OR c.last_worker_id = $1 \
             OR c.updated_at < now() - make_interval(secs => ",
            $grace,
            "))"
        )
    };
}

/// The claim with the fair-share cap (`$1` worker, `$2` limit, `$3` cap per owner, `$4`
/// grace in seconds): see [`acquire`].
pub const CLAIM_FAIR_SHARE_SQL: &str = concat!(
    "WITH candidates AS ( \
     SELECT c.id, c.owner_id, c.updated_at AS pending_since, c.prompt_anchor_id AS anchor, \
         r.running \
     FROM chats c CROSS JOIN LATERAL ( \
         SELECT count(*) AS running FROM chats o \
         WHERE o.owner_id = c.owner_id AND o.worker_id IS NOT NULL) r \
     WHERE c.status = 'pending' AND NOT c.archived AND r.running < $3 AND ",
    claimable!("$4"),
    " ORDER BY c.updated_at FOR UPDATE OF c SKIP LOCKED LIMIT $2), \
 picked AS ( \
     SELECT id, pending_since, anchor FROM ( \
         SELECT *, row_number() OVER (PARTITION BY owner_id \
             ORDER BY pending_since, id) AS rank FROM candidates) ranked \
     WHERE running + rank <= $3) ",
    claim_picked!("$4"),
);

/// The claim without a cap (`$1` worker, `$2` limit, `$3` grace in seconds): see [`acquire`].
pub const CLAIM_SQL: &str = concat!(
    "WITH picked AS ( \
     SELECT c.id, c.updated_at AS pending_since, c.prompt_anchor_id AS anchor FROM chats c \
     WHERE c.status = 'pending' AND NOT c.archived AND ",
    claimable!("$3"),
    " ORDER BY c.updated_at FOR UPDATE SKIP LOCKED LIMIT $2) ",
    claim_picked!("$3"),
);

/// What a claim found.
pub struct Claimed {
    pub claims: Vec<Claim>,
    /// Chats left to the worker that ran them last become claimable by this one after this
    /// long (the acquire loop looks again then).
    pub deferred: Option<std::time::Duration>,
}

/// Claims up to `limit` pending chats in one statement and commits at once, oldest pending
/// first. With `max_per_owner > 0` (fair share), a chat whose owner already has that many
/// running chats across the cluster is skipped (it stays pending for a later claim), and one
/// claim takes no more of an owner's chats than the cap leaves. Concurrent claims on other
/// workers count from their own snapshots, so the cap can be passed by what they claim in
/// the same instant.
///
/// Affinity: for `grace` after a chat becomes pending, only the worker that claimed it last
/// may claim it (its prompt is in that worker's cache); the answer says when such a chat
/// becomes claimable here, so a dead or busy last worker delays it by `grace` at most.
///
/// # Locks
/// `FOR UPDATE SKIP LOCKED` on the candidate rows for the statement's duration only.
pub async fn acquire(
    client: &deadpool_postgres::ClientWrapper,
    worker_id: Uuid,
    limit: i64,
    max_per_owner: i64,
    grace: std::time::Duration,
) -> Result<Claimed, tokio_postgres::Error> {
    let grace = grace.as_secs_f64();
    let rows = if max_per_owner > 0 {
        client
            .rows(
                CLAIM_FAIR_SHARE_SQL,
                &[&worker_id, &limit, &max_per_owner, &grace],
            )
            .await?
    } else {
        client
            .rows(CLAIM_SQL, &[&worker_id, &limit, &grace])
            .await?
    };
    let mut claimed = Claimed {
        claims: Vec::with_capacity(rows.len()),
        deferred: None,
    };
    for row in &rows {
        let Some(chat_id) = row.get::<_, Option<Uuid>>(0) else {
            claimed.deferred = row
                .get::<_, Option<f64>>(8)
                .map(|seconds| std::time::Duration::from_secs_f64(seconds.max(0.0)));
            continue;
        };
        // A chat's rows come together, newest message first.
        let index = match claimed
            .claims
            .iter()
            .position(|claim| claim.chat_id == chat_id)
        {
            Some(index) => index,
            None => {
                claimed.claims.push(Claim {
                    chat_id,
                    owner_id: row.get(1),
                    attempt: row.get(2),
                    version: row.get(3),
                    crash_count: row.get(4),
                    pending_seconds: row.get(5),
                    parent_chat_id: row.get(6),
                    depth: row.get(7),
                    prompt: turn::ClaimedPrompt::from_claim_row(row),
                });
                claimed.claims.len() - 1
            }
        };
        claimed.claims[index].prompt.push_tail_row(row);
    }
    for claim in &mut claimed.claims {
        claim.prompt.finish_tail();
    }
    Ok(claimed)
}

/// A lease as the heartbeat saw it.
pub struct LeaseState {
    pub chat_id: Uuid,
    pub status: ChatStatus,
    pub attempt: i32,
}

/// One statement for all of this worker's turns. Chats missing from the result lost their
/// lease. Lease time is the database clock. `IS NOT DISTINCT FROM` (the same as `=` for a
/// non-null worker) keeps the chats found by their primary keys, not by a scan of every
/// leased chat (see `commit::COMMIT_SQL`).
pub async fn heartbeat(
    client: &deadpool_postgres::ClientWrapper,
    worker_id: Uuid,
    chat_ids: &[Uuid],
) -> Result<Vec<LeaseState>, tokio_postgres::Error> {
    let rows = client
        .rows(
            "UPDATE chats SET heartbeat_at = now() WHERE id = ANY($1) \
             AND worker_id IS NOT DISTINCT FROM $2 \
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

#[cfg(test)]
mod tests {
    use chatd_shared::bump_chat_version;

    #[test]
    fn the_claim_returns_as_many_tail_rows_as_the_turn_expects() {
        let statement = claim_picked!("$3");
        assert!(statement.contains(&format!("LIMIT {})", super::CLAIM_TAIL_ROWS)));
    }
}
