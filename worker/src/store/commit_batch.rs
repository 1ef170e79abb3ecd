//! Many turns' fenced commits in one statement when they come together (group commit).
//!
//! Most of a commit's cost in PostgreSQL does not depend on how many chats it writes: each
//! data-modifying part of a statement opens its table and every index of it (`chats` has
//! eleven), prepares its constraints and commits once. A [`CommitBatcher`] is one task with a
//! connection of its own (a pool of one, `chatd-worker-committer`); it runs what it was
//! handed while its previous statement was in flight together in the next one, so a worker
//! with one turn to commit pays no wait and a busy one pays one statement for many commits.
//!
//! Only a commit that needs nothing but [`COMMIT_SQL`](super::commit::COMMIT_SQL) is batched:
//! no sub-agents to create with it, not a shutdown release. The batch statement writes a chat
//! only where the single statement would have written it *and* nothing else needs deciding:
//! the lease holds (`worker_id`, `attempt`, under the row lock), the key is new, the row did
//! not change between the statement's snapshot and the lock, a `requires_action` or
//! `awaiting_agents` end does not meet an interrupt, and a normal end finds nothing queued.
//! Its chats are locked `SKIP LOCKED`, so a chat another transaction holds never holds up the
//! others' commits. Every commit it does not write — whatever the reason — is answered
//! [`Batched::Single`] and its turn runs the single statement on its own connection, which
//! waits for the lock and tells a lost lease, a retried key, a change, an interrupt and a
//! queue apart exactly as before. The batch wrote nothing for it, so that is the same as the
//! first try. A batch whose outcome is unknown (the connection failed, or the statement did
//! not answer within 10 s: its connection is then closed, not reused) is answered `Single`
//! too: the commit is idempotent under its key, so the single statement then finds it
//! applied ('already') or applies it.

use std::collections::HashSet;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use chatd_shared::bump_chat_version;
use chatd_shared::db::pool::PgPool;
use chatd_shared::db::sql::Sql;
use chatd_shared::pubsub::ChatChange;

use super::commit::{end_change, written_rows, EndParams, Lease, NewRow, RowUsage, TurnEnd};

/// At most this many commits in one statement.
pub const MAX_BATCH: usize = 64;
/// How long a batch statement may take before its connection is given up (and its commits
/// run the single statement, idempotent under their keys).
const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One turn's commit, as the batch takes it (see [`CommitBatcher::eligible`]).
#[derive(Debug, Clone)]
pub struct BatchedCommit {
    pub lease: Lease,
    pub rows: Vec<NewRow>,
    pub end: TurnEnd,
    pub key: Uuid,
    pub stream_seq: Option<i64>,
}

/// What became of one commit handed to the batch.
#[derive(Debug)]
pub enum Batched {
    /// Written now: what changed (the chat and the rows written).
    Committed(ChatChange),
    /// Not written by the batch: run the single statement.
    Single,
}

struct Request {
    commit: BatchedCommit,
    done: oneshot::Sender<Batched>,
}

#[derive(Clone)]
pub struct CommitBatcher {
    requests: mpsc::UnboundedSender<Request>,
}

impl CommitBatcher {
    /// Starts the batching task on `pool` (its own: turns wait for it, and a turn that then
    /// runs the single statement takes a connection of the worker's pool).
    pub fn spawn(pool: PgPool) -> CommitBatcher {
        let (requests, mut queue) = mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    let Ok(more) = queue.try_recv() else {
                        break;
                    };
                    batch.push(more);
                }
                metrics::histogram!("chatd_commit_batch_requests").record(batch.len() as f64);
                let (commits, waiting): (Vec<BatchedCommit>, Vec<oneshot::Sender<Batched>>) = batch
                    .into_iter()
                    .map(|request| (request.commit, request.done))
                    .unzip();
                let outcomes = match pool.get().await {
                    Ok(client) => {
                        let committed =
                            tokio::time::timeout(BATCH_TIMEOUT, commit_batch(&*client, &commits))
                                .await;
                        committed.unwrap_or_else(|_| {
                            // Still running on the connection (a hung network): it leaves the
                            // pool, closed; each commit's single statement finds out.
                            drop(deadpool_postgres::Client::take(client));
                            tracing::warn!(commits = commits.len(), "commit batch timed out");
                            commits.iter().map(|_| Batched::Single).collect()
                        })
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "commit batch: no connection");
                        commits.iter().map(|_| Batched::Single).collect()
                    }
                };
                for (done, outcome) in waiting.into_iter().zip(outcomes) {
                    let _ = done.send(outcome);
                }
            }
        });
        CommitBatcher { requests }
    }

    /// Whether a commit can go through the batch: no sub-agents to create with it, and not a
    /// shutdown release (which takes the queue's form at once).
    pub fn eligible(children_empty: bool, end: &TurnEnd) -> bool {
        children_empty && !matches!(end, TurnEnd::Released)
    }

    /// Commits `commit` with whatever other commits are waiting (see the module
    /// documentation).
    pub async fn commit(&self, commit: BatchedCommit) -> Batched {
        let (done, outcome) = oneshot::channel();
        if self.requests.send(Request { commit, done }).is_err() {
            return Batched::Single;
        }
        outcome.await.unwrap_or(Batched::Single)
    }
}

/// Commits `commits` in one statement; one outcome per commit, in order. A commit for a chat
/// that already has one earlier in `commits` is not part of the statement (`Single`).
///
/// # Locks
/// Row locks on the written chats for the statement, taken with `SKIP LOCKED`; the message
/// inserts happen under them.
pub async fn commit_batch(client: &impl Sql, commits: &[BatchedCommit]) -> Vec<Batched> {
    let mut seen = HashSet::with_capacity(commits.len());
    let first: Vec<bool> = commits
        .iter()
        .map(|commit| seen.insert(commit.lease.chat_id))
        .collect();
    let included: Vec<&BatchedCommit> = commits
        .iter()
        .zip(&first)
        .filter(|(_, first)| **first)
        .map(|(commit, _)| commit)
        .collect();
    let ends: Vec<EndParams> = included
        .iter()
        .map(|commit| EndParams::of(&commit.end))
        .collect();
    let chat_ids: Vec<Uuid> = included.iter().map(|c| c.lease.chat_id).collect();
    let worker_ids: Vec<Uuid> = included.iter().map(|c| c.lease.worker_id).collect();
    let attempts: Vec<i32> = included.iter().map(|c| c.lease.attempt).collect();
    let pop_queue: Vec<bool> = ends.iter().map(|end| end.pop_queue).collect();
    let statuses: Vec<Option<&str>> = ends.iter().map(|end| end.status).collect();
    let errors: Vec<Option<&Value>> = ends.iter().map(|end| end.last_error.as_ref()).collect();
    let action_seconds: Vec<f64> = ends.iter().map(|end| end.action_seconds).collect();
    let keys: Vec<Uuid> = included.iter().map(|c| c.key).collect();
    let stream_seqs: Vec<Option<i64>> = included.iter().map(|c| c.stream_seq).collect();
    // The rows of every commit, flattened, each with its commit's position (1-based).
    let rows: Vec<(i64, &NewRow)> = included
        .iter()
        .enumerate()
        .flat_map(|(index, commit)| commit.rows.iter().map(move |row| (index as i64 + 1, row)))
        .collect();
    let row_commits: Vec<i64> = rows.iter().map(|(index, _)| *index).collect();
    let roles: Vec<&str> = rows.iter().map(|(_, row)| row.role.as_str()).collect();
    let contents: Vec<&Value> = rows.iter().map(|(_, row)| &row.content).collect();
    let models: Vec<Option<Uuid>> = rows.iter().map(|(_, row)| row.model_config_id).collect();
    let usage = |pick: fn(&RowUsage) -> Option<i64>| -> Vec<Option<i64>> {
        rows.iter()
            .map(|(_, row)| row.usage.as_ref().and_then(pick))
            .collect()
    };
    let input = usage(|u| Some(u.input_tokens));
    let output = usage(|u| Some(u.output_tokens));
    let reasoning = usage(|u| Some(u.reasoning_tokens));
    let cache_read = usage(|u| Some(u.cache_read_tokens));
    let cache_write = usage(|u| Some(u.cache_write_tokens));
    let cost = usage(|u| u.cost_micros);
    let runtime: Vec<Option<i64>> = rows.iter().map(|(_, row)| row.runtime_ms).collect();
    let response_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|(_, row)| row.provider_response_id.as_deref())
        .collect();
    let compressed: Vec<bool> = rows.iter().map(|(_, row)| row.compressed).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 22] = [
        &chat_ids,
        &worker_ids,
        &attempts,
        &pop_queue,
        &statuses,
        &errors,
        &action_seconds,
        &keys,
        &stream_seqs,
        &row_commits,
        &roles,
        &contents,
        &models,
        &input,
        &output,
        &reasoning,
        &cache_read,
        &cache_write,
        &cost,
        &runtime,
        &response_ids,
        &compressed,
    ];
    let result = client.rows(COMMIT_BATCH_SQL.as_str(), &params).await;
    let written = match result {
        Ok(written) => written,
        Err(error) => {
            // Refused (rolled back) or unknown: the single statement decides each commit,
            // idempotent under its key.
            tracing::warn!(error = %error, commits = commits.len(), "commit batch failed");
            return commits.iter().map(|_| Batched::Single).collect();
        }
    };
    let mut committed: std::collections::HashMap<Uuid, &tokio_postgres::Row> =
        written.iter().map(|row| (row.get(0), row)).collect();
    commits
        .iter()
        .zip(first)
        .map(|(commit, first)| {
            let row = match first.then(|| committed.remove(&commit.lease.chat_id)) {
                Some(Some(row)) => row,
                _ => return Batched::Single,
            };
            let ids: Vec<i64> = row.get::<_, Option<Vec<i64>>>(5).unwrap_or_default();
            let created: Vec<OffsetDateTime> = row
                .get::<_, Option<Vec<OffsetDateTime>>>(6)
                .unwrap_or_default();
            let end = EndParams::of(&commit.end);
            let mut change = end_change(
                commit.lease.chat_id,
                row.get(4),
                row.get(1),
                Some(row.get::<_, &str>(2)),
                row.get(3),
                end.last_error.is_some(),
            );
            if !ids.is_empty() {
                let rows = written_rows(
                    commit.lease,
                    &commit.rows,
                    &ids,
                    &created,
                    commit.stream_seq,
                );
                change = change.with_messages(rows);
            }
            Batched::Committed(change)
        })
        .collect()
}

/// The batch statement. Per commit (arrays in the commits' order): `$1` chat, `$2` worker,
/// `$3` attempt, `$4` a normal end (nothing may be queued), `$5` the new status (null: the
/// turn goes on), `$6` the error an `error` end stores, `$7` seconds of a `requires_action` or
/// `awaiting_agents` wait, `$8` the idempotency key, `$9` the last seq streamed. Per row,
/// flattened: `$10` its commit's position (1-based), `$11`–`$22` the row's values as
/// [`COMMIT_SQL`](super::commit::COMMIT_SQL) takes them.
///
/// Returns, per written chat: id, version, status, attempt, owner, the rows' ids and creation
/// times (in insertion order, which is each commit's row order).
static COMMIT_BATCH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    concat!(
        "
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::bool[], $5::text[],
        $6::jsonb[], $7::float8[], $8::uuid[], $9::int8[])
        WITH ORDINALITY AS i(chat_id, worker_id, attempt, pop_queue, new_status, last_error,
            action_seconds, commit_key, stream_seq, k)),
snap AS (
    SELECT c.id, c.version FROM chats c WHERE c.id = ANY ($1::uuid[])),
owned AS (
    SELECT c.id, c.status, c.version, c.worker_id, c.attempt, c.last_commit_key FROM chats c
    WHERE c.id = ANY ($1::uuid[]) AND c.status IN ('running', 'interrupting')
    FOR UPDATE SKIP LOCKED),
writable AS (
    SELECT o.id, o.status, i.attempt, i.new_status, i.last_error, i.action_seconds,
        i.commit_key, i.stream_seq, i.k
    FROM owned o
    JOIN input i ON i.chat_id = o.id
    JOIN snap s ON s.id = o.id AND s.version = o.version
    WHERE o.worker_id IS NOT DISTINCT FROM i.worker_id AND o.attempt = i.attempt
        AND o.last_commit_key IS DISTINCT FROM i.commit_key
        AND NOT (i.new_status IN ('requires_action', 'awaiting_agents')
                 AND o.status = 'interrupting')
        AND NOT (i.pop_queue
                 AND EXISTS (SELECT 1 FROM chat_queued_messages q WHERE q.chat_id = o.id))),
step AS (
    INSERT INTO chat_messages (chat_id, role, content, visibility, model_config_id,
        input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens,
        cost_micros, runtime_ms, provider_response_id, attempt, compressed, stream_seq)
    SELECT w.id, r.role, r.content, 'both', r.model_config_id, r.input_tokens,
        r.output_tokens, r.reasoning_tokens, r.cache_read_tokens, r.cache_write_tokens,
        r.cost_micros, r.runtime_ms, r.provider_response_id, w.attempt, r.compressed,
        w.stream_seq
    FROM writable w
    JOIN unnest($10::int8[], $11::text[], $12::jsonb[], $13::uuid[], $14::int8[], $15::int8[],
            $16::int8[], $17::int8[], $18::int8[], $19::int8[], $20::int8[], $21::text[],
            $22::bool[])
        WITH ORDINALITY
        AS r(k, role, content, model_config_id, input_tokens, output_tokens, reasoning_tokens,
             cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms,
             provider_response_id, compressed, ordinal)
        ON r.k = w.k
    ORDER BY r.ordinal
    RETURNING id, chat_id, role, created_at),
updated AS (
    UPDATE chats c SET
        status = coalesce(w.new_status, c.status),
        worker_id = CASE WHEN w.new_status IS NULL THEN c.worker_id END,
        heartbeat_at = CASE WHEN w.new_status IS NULL THEN c.heartbeat_at END,
        last_error = CASE WHEN w.new_status IS NULL THEN c.last_error ELSE w.last_error END,
        crash_count = CASE WHEN w.new_status IS NULL THEN c.crash_count ELSE 0 END,
        action_deadline_at = CASE WHEN w.new_status IN ('requires_action', 'awaiting_agents')
                                  THEN now() + make_interval(secs => w.action_seconds) END,
        last_reply_id = coalesce(
            (SELECT max(s.id) FROM step s WHERE s.chat_id = c.id AND s.role = 'assistant'),
            c.last_reply_id),
        last_commit_key = w.commit_key, ",
        bump_chat_version!(),
        "
    FROM writable w WHERE c.id = w.id
    RETURNING c.id, c.version, c.status, c.attempt, c.owner_id)
SELECT u.id, u.version, u.status, u.attempt, u.owner_id,
    (SELECT array_agg(s.id ORDER BY s.id) FROM step s WHERE s.chat_id = u.id),
    (SELECT array_agg(s.created_at ORDER BY s.id) FROM step s WHERE s.chat_id = u.id)
FROM updated u"
    )
    .to_string()
});

/// The batch statement's text, for plan tests.
pub fn commit_batch_sql() -> &'static str {
    COMMIT_BATCH_SQL.as_str()
}
