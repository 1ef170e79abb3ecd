//! A turn's writes: the fenced, idempotent step/turn commit (one statement) and the attempt
//! renewal of a step that restarts.
//!
//! **Invariant:** every write for a chat is conditioned on `worker_id = me AND attempt =
//! my_attempt`, checked under the row lock. Zero rows means the turn lost its lease: the caller
//! stops and writes nothing more.

use chatd_shared::db::sql::Sql;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use chatd_shared::bump_chat_version;
use chatd_shared::db::rows::MessageRow;
use chatd_shared::domain::{ChatError, ChatStatus, Role};
use chatd_shared::pubsub::{ChatChange, OwnerEventKind};

use crate::tool::agents::NewChild;

/// A message row the turn writes (assistant or tool), encoded before the transaction.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub role: Role,
    pub content: Value,
    pub model_config_id: Option<Uuid>,
    pub usage: Option<RowUsage>,
    pub runtime_ms: Option<i64>,
    pub provider_response_id: Option<String>,
    /// A compaction summary: prompts start from the latest such row.
    pub compressed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RowUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_micros: Option<i64>,
}

/// How a commit ends the turn, if it does.
#[derive(Debug, Clone)]
pub enum TurnEnd {
    /// The turn goes on (a step with tool calls).
    Continue,
    /// Normal end: waiting, or pending with the queue head promoted.
    Done,
    /// Interrupted: like `Done` (the queue head placed by an interrupting send runs next).
    Interrupted,
    /// Failed: status error with `last_error`.
    Failed(ChatError),
    /// Shutdown: back to pending for another worker.
    Released,
    /// The step called client-executed tools: `requires_action` until the results arrive or
    /// the deadline (now + the duration, database clock) passes.
    RequiresAction(std::time::Duration),
    /// The step waits for sub-agents (`wait_agent`): `awaiting_agents` until they have ended
    /// or the deadline (now + the duration) passes.
    AwaitAgents(std::time::Duration),
}

impl TurnEnd {
    /// Whether the chat's turn is over with this end (a sub-agent's parent may be waiting
    /// for it).
    pub fn ends_turn(&self) -> bool {
        matches!(
            self,
            TurnEnd::Done | TurnEnd::Interrupted | TurnEnd::Failed(_)
        )
    }
}

/// The commit statement, in two forms that share everything but the queue (see
/// [`COMMIT_SQL`] and [`COMMIT_WITH_QUEUE_SQL`]). `$queue_check` goes into `writable`,
/// `$head` are the queue-head CTEs, `$promoted` the promoted head as a source row of `step`,
/// `$head_status` the status a promoted head sets.
macro_rules! commit_sql {
    ($queue_check:literal, $head:literal, $promoted:literal, $head_status:literal) => {
        concat!(
            "
WITH snap AS (
    SELECT version, status, attempt, last_commit_key, owner_id FROM chats WHERE id = $1),
owned AS (
    SELECT id, status, version FROM chats
    WHERE id = $1 AND worker_id IS NOT DISTINCT FROM $2 AND attempt = $3
        AND status IN ('running', 'interrupting')
        AND last_commit_key IS DISTINCT FROM $21
    FOR UPDATE),
writable AS (
    SELECT owned.id, owned.status FROM owned
    WHERE owned.version = (SELECT version FROM snap)
        AND NOT ($16::text IN ('requires_action', 'awaiting_agents')
                 AND owned.status = 'interrupting')",
            $queue_check,
            "),",
            $head,
            "
step AS (
    INSERT INTO chat_messages (chat_id, role, content, visibility, model_config_id,
        input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens,
        cost_micros, runtime_ms, provider_response_id, attempt, compressed, stream_seq,
        created_by)
    SELECT w.chat_id, w.role, w.content, 'both', w.model_config_id, w.input_tokens,
        w.output_tokens, w.reasoning_tokens, w.cache_read_tokens, w.cache_write_tokens,
        w.cost_micros, w.runtime_ms, w.provider_response_id, w.attempt, w.compressed,
        w.stream_seq, w.created_by
    FROM (
        SELECT writable.id AS chat_id, r.role, r.content, r.model_config_id, r.input_tokens,
            r.output_tokens, r.reasoning_tokens, r.cache_read_tokens, r.cache_write_tokens,
            r.cost_micros, r.runtime_ms, r.provider_response_id, $3 AS attempt, r.compressed,
            $22::bigint AS stream_seq, NULL::uuid AS created_by, r.ordinal
        FROM writable, unnest($4::text[], $5::jsonb[], $6::uuid[], $7::int8[], $8::int8[],
            $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::text[],
            $19::bool[])
            WITH ORDINALITY
            AS r(role, content, model_config_id, input_tokens, output_tokens, reasoning_tokens,
                 cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms,
                 provider_response_id, compressed, ordinal)",
            $promoted,
            "
    ) AS w
    ORDER BY w.ordinal
    RETURNING id, chat_id, role, content, created_at, model_config_id, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms, attempt, stream_seq),
updated AS (
    UPDATE chats c SET
        status = CASE WHEN $16::text IS NULL THEN c.status",
            $head_status,
            "
                      WHEN $18 AND w.status = 'interrupting' THEN 'waiting'
                      ELSE $16::text END,
        worker_id = CASE WHEN $16::text IS NULL THEN c.worker_id END,
        heartbeat_at = CASE WHEN $16::text IS NULL THEN c.heartbeat_at END,
        last_error = CASE WHEN $16::text IS NULL THEN c.last_error ELSE $17::jsonb END,
        crash_count = CASE WHEN $16::text IS NULL THEN c.crash_count
                           WHEN $18 THEN c.crash_count - 1 ELSE 0 END,
        action_deadline_at = CASE WHEN $16::text IN ('requires_action', 'awaiting_agents')
                                  THEN now() + make_interval(secs => $20::float8) END,
        last_reply_id = coalesce((SELECT max(id) FROM step WHERE role = 'assistant'),
                                 c.last_reply_id),
        last_commit_key = $21, ",
            bump_chat_version!(),
            "
    FROM writable w WHERE c.id = w.id
    RETURNING c.version, c.status, c.attempt)
SELECT coalesce(u.version, a.version), coalesce(u.status, a.status),
    coalesce(u.attempt, a.attempt),
    (SELECT array_agg(s.id ORDER BY s.id) FROM step s WHERE s.attempt IS NOT NULL),
    (SELECT array_agg(s.created_at ORDER BY s.id) FROM step s WHERE s.attempt IS NOT NULL),
    (SELECT json_agg(s ORDER BY s.id) FROM step s WHERE s.attempt IS NULL),
    CASE WHEN u.version IS NOT NULL THEN 'committed'
         WHEN a.last_commit_key = $21 THEN 'already'
         WHEN NOT EXISTS (SELECT 1 FROM owned) THEN 'lost'
         WHEN (SELECT version FROM owned) <> a.version THEN 'changed'
         WHEN $16::text IN ('requires_action', 'awaiting_agents')
              AND (SELECT status FROM owned) = 'interrupting' THEN 'interrupting'
         ELSE 'queued' END,
    a.owner_id
FROM (SELECT 1) AS one
LEFT JOIN updated u ON true
LEFT JOIN snap a ON true"
        )
    };
}

/// The single statement behind `commit`, for a chat with nothing queued (almost every
/// commit). Every write hangs off `writable`: the fenced row lock (`owned`), and only when
/// - this commit's key is not already applied (`last_commit_key`): a commit retried after its
///   reply was lost writes nothing twice (I11);
/// - the row did not change between the statement's snapshot (`snap`, which also answers for
///   the chat when nothing is written) and the lock: if the API committed (say, queued a
///   message) while this statement waited for the lock, the queue read of this snapshot would
///   miss it, so nothing is written and the caller runs the statement again at once
///   ('changed');
/// - a turn that wants `requires_action` or `awaiting_agents` was not asked to stop meanwhile
///   ('interrupting': the caller honours the interrupt instead, writing synthetic results for
///   the calls that wait);
/// - an end that promotes the queue head (`$15`) finds no queued message ('queued': nothing
///   is written, and the caller runs [`COMMIT_WITH_QUEUE_SQL`] instead).
///
/// It has no queue-head CTEs because a statement pays for each table it may write whether it
/// writes it or not: the delete of the head and its insert as a message were a sixth of the
/// commit's time with an empty queue (BENCHMARKS.md, "Issue 14, seventh step").
///
/// The written rows come back as their ids and creation times only (the caller has the rest),
/// a promoted head as JSON rows.
///
/// The lease check says `worker_id IS NOT DISTINCT FROM $2` (the same as `=` for a non-null
/// worker) so that no index of the leased chats can serve it: with `=`, a generic plan made
/// while few chats were leased found the chat by scanning all of them (`chats_running_owner`)
/// rather than by its primary key.
pub const COMMIT_SQL: &str = commit_sql!(
    "
        AND NOT ($15 AND EXISTS (SELECT 1 FROM chat_queued_messages q WHERE q.chat_id = $1))",
    "",
    "",
    ""
);

/// [`COMMIT_SQL`] with the queue: `$15` (a normal end) promotes the queue head — it leaves
/// the queue and becomes a user message after the step's rows, and the chat `pending` — as
/// does a `Released` turn (`$18`, shutdown) whose chat is `interrupting`: the queue head
/// placed by an interrupting send runs next, otherwise the chat goes to `waiting` — never
/// back to `pending`, which would re-run a turn the user stopped. The promoted head is
/// inserted with the step's rows, after them (its ordinal is null), so message ids stay in
/// order.
pub const COMMIT_WITH_QUEUE_SQL: &str = commit_sql!(
    "",
    "
head AS (
    DELETE FROM chat_queued_messages
    WHERE ($15 OR ($18 AND EXISTS (SELECT 1 FROM writable WHERE status = 'interrupting')))
        AND EXISTS (SELECT 1 FROM writable) AND id = (
        SELECT q.id FROM chat_queued_messages q WHERE q.chat_id = $1
        ORDER BY q.position, q.id LIMIT 1)
    RETURNING content, model_config_id, created_by),",
    "
        UNION ALL
        SELECT $1, 'user', head.content, head.model_config_id, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, false, NULL, head.created_by, NULL
        FROM head",
    "
                      WHEN EXISTS (SELECT 1 FROM head) THEN 'pending'"
);

/// The lease a worker write is fenced by.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub chat_id: Uuid,
    pub worker_id: Uuid,
    pub attempt: i32,
}

/// What a fenced commit found.
pub enum CommitOutcome {
    /// Written now; what changed (the rows written: the step's and a promoted queue head),
    /// and the sub-agents the step started.
    Committed(ChatChange, Vec<ChatChange>),
    /// This key was applied by an earlier try whose reply was lost; nothing was written now.
    /// The change describes the chat as it is, flagging messages and queue so that replicas
    /// re-read.
    AlreadyCommitted(ChatChange),
    /// The row changed while the statement waited for its lock; nothing was written. Run the
    /// statement again (it then sees what the other transaction committed).
    Changed,
    /// A `requires_action` or `awaiting_agents` end found the chat `interrupting`; nothing was
    /// written. Honour the interrupt instead.
    Interrupting,
    /// The lease is gone; nothing was written.
    LeaseLost,
}

/// Writes `rows` and applies `end` in one statement (one round trip, atomic; a second when the
/// chat has queued messages, the first having written nothing), fenced by the
/// lease and idempotent under `key` (retry a failed call with the same key). `stream_seq`: the
/// last seq the attempt streamed before this commit, stored with the rows.
///
/// # Locks
/// Row lock on the chat (`FOR UPDATE`) for the statement; the message inserts happen under
/// it, which keeps per-chat message ids in commit order.
pub async fn commit(
    client: &mut deadpool_postgres::Client,
    lease: Lease,
    rows: &[NewRow],
    children: &[NewChild],
    end: &TurnEnd,
    key: Uuid,
    stream_seq: Option<i64>,
) -> Result<CommitOutcome, tokio_postgres::Error> {
    if children.is_empty() {
        return commit_statement(&**client, lease, rows, end, key, stream_seq).await;
    }
    // The step's sub-agents are created with it or not at all.
    let transaction = client.transaction().await?;
    let outcome = commit_statement(&transaction, lease, rows, end, key, stream_seq).await?;
    if let CommitOutcome::Committed(change, _) = outcome {
        let created =
            insert_children(&transaction, lease.chat_id, change.owner_id, children).await?;
        transaction.commit().await?;
        return Ok(CommitOutcome::Committed(change, created));
    }
    Ok(outcome) // nothing was written: the transaction rolls back
}

/// Inserts the sub-agents a step started (`pending`, the prompt as their first message) under
/// `parent_id`, and returns their changes to publish (a `created` event and a wake each).
///
/// # Locks
/// The caller's transaction holds the parent's row lock (the commit took it).
async fn insert_children(
    transaction: &deadpool_postgres::Transaction<'_>,
    parent_id: Uuid,
    owner_id: Uuid,
    children: &[NewChild],
) -> Result<Vec<ChatChange>, tokio_postgres::Error> {
    let ids: Vec<Uuid> = children.iter().map(|child| child.id).collect();
    let titles: Vec<&str> = children.iter().map(|child| child.title.as_str()).collect();
    let models: Vec<Uuid> = children.iter().map(|child| child.model_config_id).collect();
    let contents: Vec<&Value> = children.iter().map(|child| &child.content).collect();
    let chats = transaction
        .rows(
            "INSERT INTO chats AS c (id, owner_id, parent_chat_id, root_chat_id, depth, title, \
                 status, model_config_id) \
             SELECT k.id, p.owner_id, p.id, coalesce(p.root_chat_id, p.id), p.depth + 1, \
                 k.title, 'pending', k.model_config_id \
             FROM chats p, unnest($2::uuid[], $3::text[], $4::uuid[]) WITH ORDINALITY \
                 AS k(id, title, model_config_id, n) \
             WHERE p.id = $1 ORDER BY k.n \
             RETURNING c.id, c.version, c.attempt",
            &[&parent_id, &ids, &titles, &models],
        )
        .await?;
    let messages = transaction
        .rows(
            &format!(
                "INSERT INTO chat_messages AS m (chat_id, role, content, visibility, created_by, \
                     model_config_id) \
                 SELECT k.id, 'user', k.content, 'both', $1, k.model_config_id \
                 FROM unnest($2::uuid[], $3::jsonb[], $4::uuid[]) AS k(id, content, model_config_id) \
                 RETURNING {}",
                MessageRow::COLUMNS
            ),
            &[&owner_id, &ids, &contents, &models],
        )
        .await?;
    let messages: Vec<MessageRow> = messages.iter().map(MessageRow::from_row).collect();
    Ok(chats
        .iter()
        .map(|row| {
            let id: Uuid = row.get(0);
            ChatChange::new(id, owner_id, row.get(1), ChatStatus::Pending, row.get(2))
                .with_owner_event(OwnerEventKind::Created)
                .with_messages(messages.iter().filter(|m| m.chat_id == id).cloned())
        })
        .collect())
}

/// The commit statement alone (see [`commit`]).
async fn commit_statement<C: Sql>(
    client: &C,
    lease: Lease,
    rows: &[NewRow],
    end: &TurnEnd,
    key: Uuid,
    stream_seq: Option<i64>,
) -> Result<CommitOutcome, tokio_postgres::Error> {
    let Lease {
        chat_id,
        worker_id,
        attempt,
    } = lease;
    let roles: Vec<&str> = rows.iter().map(|row| row.role.as_str()).collect();
    let contents: Vec<&Value> = rows.iter().map(|row| &row.content).collect();
    let models: Vec<Option<Uuid>> = rows.iter().map(|row| row.model_config_id).collect();
    let usage = |pick: fn(&RowUsage) -> Option<i64>| -> Vec<Option<i64>> {
        rows.iter()
            .map(|row| row.usage.as_ref().and_then(pick))
            .collect()
    };
    let input = usage(|u| Some(u.input_tokens));
    let output = usage(|u| Some(u.output_tokens));
    let reasoning = usage(|u| Some(u.reasoning_tokens));
    let cache_read = usage(|u| Some(u.cache_read_tokens));
    let cache_write = usage(|u| Some(u.cache_write_tokens));
    let cost = usage(|u| u.cost_micros);
    let runtime: Vec<Option<i64>> = rows.iter().map(|row| row.runtime_ms).collect();
    let response_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|row| row.provider_response_id.as_deref())
        .collect();
    let compressed: Vec<bool> = rows.iter().map(|row| row.compressed).collect();
    let EndParams {
        pop_queue,
        status,
        last_error,
        released,
        action_seconds,
    } = EndParams::of(end);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 22] = [
        &chat_id,
        &worker_id,
        &attempt,
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
        &pop_queue,
        &status,
        &last_error,
        &released,
        &compressed,
        &action_seconds,
        &key,
        &stream_seq,
    ];
    // A shutdown may promote the queue head of an interrupted chat, so it takes the queue's
    // form at once; every other end takes it only when the chat has something queued.
    let mut row = None;
    if !released {
        row = client.row_opt(COMMIT_SQL, &params).await?;
    }
    let queued = row
        .as_ref()
        .is_some_and(|row| row.get::<_, &str>(6) == "queued");
    if released || queued {
        row = client.row_opt(COMMIT_WITH_QUEUE_SQL, &params).await?;
    }
    let Some(row) = row else {
        return Ok(CommitOutcome::LeaseLost);
    };
    let outcome: &str = row.get(6);
    let Some(owner_id) = row.get::<_, Option<Uuid>>(7) else {
        return Ok(CommitOutcome::LeaseLost); // the chat is gone
    };
    let mut change = end_change(
        chat_id,
        owner_id,
        row.get::<_, Option<i64>>(0).unwrap_or(0),
        row.get::<_, Option<&str>>(1),
        row.get::<_, Option<i32>>(2).unwrap_or(attempt),
        last_error.is_some(),
    );
    Ok(match outcome {
        "committed" => {
            let ids: Vec<i64> = row.get::<_, Option<Vec<i64>>>(3).unwrap_or_default();
            let created: Vec<OffsetDateTime> = row
                .get::<_, Option<Vec<OffsetDateTime>>>(4)
                .unwrap_or_default();
            // The promoted head, whole (decoding our own rows cannot fail; if it did,
            // receivers would re-read).
            let promoted: Vec<MessageRow> = row
                .get::<_, Option<Value>>(5)
                .and_then(|rows| serde_json::from_value(rows).ok())
                .unwrap_or_default();
            if !ids.is_empty() || !promoted.is_empty() {
                change.queue = !promoted.is_empty();
                let written = written_rows(lease, rows, &ids, &created, stream_seq);
                change = change.with_messages(written.into_iter().chain(promoted));
            }
            CommitOutcome::Committed(change, Vec::new())
        }
        // Whatever that try wrote: replicas re-read (messages and queue flagged as changed).
        "already" => CommitOutcome::AlreadyCommitted(change.with_messages([]).with_queue()),
        // 'queued' from the queue's form cannot happen; looking again is the safe answer.
        "changed" | "queued" => CommitOutcome::Changed,
        "interrupting" => CommitOutcome::Interrupting,
        _ => CommitOutcome::LeaseLost,
    })
}

/// The parameters a turn end gives the commit statements.
pub(crate) struct EndParams {
    /// A normal end: the queue head, if any, runs next.
    pub pop_queue: bool,
    /// The chat's new status; none while the turn goes on.
    pub status: Option<&'static str>,
    pub last_error: Option<Value>,
    /// A shutdown release.
    pub released: bool,
    /// How long a `requires_action` or `awaiting_agents` wait lasts.
    pub action_seconds: f64,
}

impl EndParams {
    pub(crate) fn of(end: &TurnEnd) -> EndParams {
        let mut action_seconds = 0.0_f64;
        let (pop_queue, status, last_error, released) = match end {
            TurnEnd::Continue => (false, None, None, false),
            TurnEnd::RequiresAction(timeout) => {
                action_seconds = timeout.as_secs_f64();
                (false, Some(ChatStatus::RequiresAction), None, false)
            }
            TurnEnd::AwaitAgents(timeout) => {
                action_seconds = timeout.as_secs_f64();
                (false, Some(ChatStatus::AwaitingAgents), None, false)
            }
            TurnEnd::Done | TurnEnd::Interrupted => (true, Some(ChatStatus::Waiting), None, false),
            TurnEnd::Failed(error) => (
                false,
                Some(ChatStatus::Error),
                Some(error.to_value()),
                false,
            ),
            TurnEnd::Released => (false, Some(ChatStatus::Pending), None, true),
        };
        EndParams {
            pop_queue,
            status: status.map(ChatStatus::as_str),
            last_error,
            released,
            action_seconds,
        }
    }
}

/// The change a commit publishes, before its rows: the chat's state after it, an owner
/// `status` event, and `other` when the end stored an error.
pub(crate) fn end_change(
    chat_id: Uuid,
    owner_id: Uuid,
    version: i64,
    status: Option<&str>,
    attempt: i32,
    stored_error: bool,
) -> ChatChange {
    let mut change = ChatChange::new(
        chat_id,
        owner_id,
        version,
        status
            .and_then(ChatStatus::parse)
            .unwrap_or(ChatStatus::Error),
        attempt,
    )
    .with_owner_event(OwnerEventKind::Status);
    change.other = stored_error;
    change
}

/// The step's rows as written: the caller's values with the ids and creation times the
/// statement returned (in insertion order, which is the rows' order). A count that does not
/// match returns none: receivers then re-read the chat's messages.
pub(crate) fn written_rows(
    lease: Lease,
    rows: &[NewRow],
    ids: &[i64],
    created: &[OffsetDateTime],
    stream_seq: Option<i64>,
) -> Vec<MessageRow> {
    if ids.len() != rows.len() || created.len() != rows.len() {
        return Vec::new();
    }
    rows.iter()
        .zip(ids.iter().zip(created))
        .map(|(row, (&id, &created_at))| {
            let usage = row.usage.as_ref();
            MessageRow {
                id,
                chat_id: lease.chat_id,
                role: row.role,
                content: row.content.clone(),
                created_at,
                model_config_id: row.model_config_id,
                input_tokens: usage.map(|u| u.input_tokens),
                output_tokens: usage.map(|u| u.output_tokens),
                reasoning_tokens: usage.map(|u| u.reasoning_tokens),
                cache_read_tokens: usage.map(|u| u.cache_read_tokens),
                cache_write_tokens: usage.map(|u| u.cache_write_tokens),
                cost_micros: usage.and_then(|u| u.cost_micros),
                runtime_ms: row.runtime_ms,
                attempt: Some(lease.attempt),
                stream_seq,
            }
        })
        .collect()
}

/// What renewing the lease epoch found.
pub enum Renewal {
    /// The new attempt and chat version.
    Renewed(i32, i64),
    /// The chat is `interrupting`: stop instead of retrying.
    Interrupting,
    LeaseLost,
}

/// Starts a new lease epoch for this worker's turn (a step restarting after partial output):
/// clients see the attempt change and drop previews. Idempotent under `key` (a retry after a
/// lost reply returns the attempt the first try made).
///
/// # Locks
/// Row lock on the chat for the statement, taken first, so the outcome is judged on the row
/// as it is after any concurrent change.
pub async fn renew_attempt(
    client: &deadpool_postgres::ClientWrapper,
    chat_id: Uuid,
    worker_id: Uuid,
    attempt: i32,
    key: Uuid,
) -> Result<Renewal, tokio_postgres::Error> {
    let row = client
        .row_opt(
            concat!(
                "WITH current AS ( \
                 SELECT id, worker_id, status, attempt, version, last_commit_key FROM chats \
                 WHERE id = $1 FOR UPDATE), \
             renewed AS ( \
                 UPDATE chats c SET attempt = c.attempt + 1, heartbeat_at = now(), \
                     last_commit_key = $4, ",
                bump_chat_version!(),
                " FROM current k WHERE c.id = k.id AND k.worker_id = $2 AND k.attempt = $3 \
                     AND k.status = 'running' AND k.last_commit_key IS DISTINCT FROM $4 \
                 RETURNING c.attempt, c.version) \
             SELECT coalesce(r.attempt, k.attempt), coalesce(r.version, k.version), \
                 CASE WHEN r.attempt IS NOT NULL THEN 'renewed' \
                      WHEN k.worker_id = $2 AND k.last_commit_key = $4 THEN 'renewed' \
                      WHEN k.worker_id = $2 AND k.attempt = $3 AND k.status = 'interrupting' \
                          THEN 'interrupting' \
                      ELSE 'lost' END \
             FROM current k LEFT JOIN renewed r ON true",
            ),
            &[&chat_id, &worker_id, &attempt, &key],
        )
        .await?;
    Ok(match row {
        Some(row) => match row.get::<_, &str>(2) {
            "renewed" => Renewal::Renewed(row.get(0), row.get(1)),
            "interrupting" => Renewal::Interrupting,
            _ => Renewal::LeaseLost,
        },
        None => Renewal::LeaseLost,
    })
}
