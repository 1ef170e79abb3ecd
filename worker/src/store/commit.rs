//! A turn's writes: the fenced, idempotent step/turn commit (one statement) and the attempt
//! renewal of a step that restarts.
//!
//! **Invariant:** every write for a chat is conditioned on `worker_id = me AND attempt =
//! my_attempt`, checked under the row lock. Zero rows means the turn lost its lease: the caller
//! stops and writes nothing more.

use chatd_shared::db::sql::Sql;
use serde_json::Value;
use uuid::Uuid;

use chatd_shared::bump_chat_version;
use chatd_shared::db::rows::MessageRow;
use chatd_shared::domain::{ChatError, ChatStatus, Role};
use chatd_shared::pubsub::{ChatChange, OwnerEventKind};

use crate::tool::agents::NewChild;

/// A message row the turn writes (assistant or tool), encoded before the transaction.
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

/// The single statement behind `commit`. Every write hangs off `writable`: the fenced row
/// lock (`owned`), and only when
/// - this commit's key is not already applied (`last_commit_key`): a commit retried after its
///   reply was lost writes nothing twice (I11);
/// - the row did not change between the statement's snapshot and the lock: if the API
///   committed (say, queued a message) while this statement waited for the lock, the queue
///   read of this snapshot would miss it, so nothing is written and the caller runs the
///   statement again at once ('changed');
/// - a turn that wants `requires_action` or `awaiting_agents` was not asked to stop meanwhile
///   ('interrupting': the caller honours the interrupt instead, writing synthetic results for
///   the calls that wait).
///
/// A `Released` turn (shutdown) whose chat is `interrupting` honours the interrupt: the queue
/// head placed by an interrupting send runs next, otherwise the chat goes to `waiting` — never
/// back to `pending`, which would re-run a turn the user stopped. The promoted queue head is
/// inserted after the step's rows (it reads their count), so message ids stay in order.
///
/// The lease check says `worker_id IS NOT DISTINCT FROM $2` (the same as `=` for a non-null
/// worker) so that no index of the leased chats can serve it: with `=`, a generic plan made
/// while few chats were leased found the chat by scanning all of them (`chats_running_owner`)
/// rather than by its primary key.
pub const COMMIT_SQL: &str = concat!(
    "
WITH owned AS (
    SELECT id, status, version FROM chats
    WHERE id = $1 AND worker_id IS NOT DISTINCT FROM $2 AND attempt = $3
        AND status IN ('running', 'interrupting')
        AND last_commit_key IS DISTINCT FROM $21
    FOR UPDATE),
writable AS (
    SELECT owned.id, owned.status FROM owned
    WHERE owned.version = (SELECT s.version FROM chats s WHERE s.id = $1)
        AND NOT ($16::text IN ('requires_action', 'awaiting_agents')
                 AND owned.status = 'interrupting')),
step AS (
    INSERT INTO chat_messages (chat_id, role, content, visibility, model_config_id,
        input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens,
        cost_micros, runtime_ms, provider_response_id, attempt, compressed, stream_seq)
    SELECT writable.id, r.role, r.content, 'both', r.model_config_id, r.input_tokens,
        r.output_tokens, r.reasoning_tokens, r.cache_read_tokens, r.cache_write_tokens,
        r.cost_micros, r.runtime_ms, r.provider_response_id, $3, r.compressed, $22::bigint
    FROM writable, unnest($4::text[], $5::jsonb[], $6::uuid[], $7::int8[], $8::int8[], $9::int8[],
        $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::text[], $19::bool[])
        WITH ORDINALITY
        AS r(role, content, model_config_id, input_tokens, output_tokens, reasoning_tokens,
             cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms,
             provider_response_id, compressed, ordinal)
    ORDER BY r.ordinal
    RETURNING id, chat_id, role, content, created_at, model_config_id, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms, attempt, stream_seq),
head AS (
    DELETE FROM chat_queued_messages
    WHERE ($15 OR ($18 AND EXISTS (SELECT 1 FROM writable WHERE status = 'interrupting')))
        AND EXISTS (SELECT 1 FROM writable) AND id = (
        SELECT q.id FROM chat_queued_messages q WHERE q.chat_id = $1
        ORDER BY q.position, q.id LIMIT 1)
    RETURNING content, model_config_id, created_by),
promoted AS (
    INSERT INTO chat_messages (chat_id, role, content, visibility, created_by, model_config_id)
    SELECT $1, 'user', head.content, 'both', head.created_by, head.model_config_id
    FROM head, (SELECT count(*) FROM step) AS written
    RETURNING id, chat_id, role, content, created_at, model_config_id, input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens, cost_micros, runtime_ms, attempt, stream_seq),
updated AS (
    UPDATE chats c SET
        status = CASE WHEN $16::text IS NULL THEN c.status
                      WHEN EXISTS (SELECT 1 FROM head) THEN 'pending'
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
    (SELECT count(*) FROM step), (SELECT count(*) FROM promoted),
    (SELECT coalesce(json_agg(x ORDER BY x.id), '[]'::json)
     FROM (SELECT * FROM step UNION ALL SELECT * FROM promoted) x),
    CASE WHEN u.version IS NOT NULL THEN 'committed'
         WHEN a.last_commit_key = $21 THEN 'already'
         WHEN NOT EXISTS (SELECT 1 FROM owned) THEN 'lost'
         WHEN (SELECT version FROM owned) <> a.version THEN 'changed'
         ELSE 'interrupting' END,
    a.owner_id
FROM (SELECT 1) AS one
LEFT JOIN updated u ON true
LEFT JOIN chats a ON a.id = $1"
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

/// Writes `rows` and applies `end` in one statement (one round trip, atomic), fenced by the
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
    let status = status.map(ChatStatus::as_str);
    let row = client
        .row_opt(
            COMMIT_SQL,
            &[
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
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(CommitOutcome::LeaseLost);
    };
    let outcome: &str = row.get(6);
    let Some(owner_id) = row.get::<_, Option<Uuid>>(7) else {
        return Ok(CommitOutcome::LeaseLost); // the chat is gone
    };
    let mut change = ChatChange::new(
        chat_id,
        owner_id,
        row.get::<_, Option<i64>>(0).unwrap_or(0),
        row.get::<_, Option<&str>>(1)
            .and_then(ChatStatus::parse)
            .unwrap_or(ChatStatus::Error),
        row.get::<_, Option<i32>>(2).unwrap_or(attempt),
    )
    .with_owner_event(OwnerEventKind::Status);
    change.other = last_error.is_some();
    Ok(match outcome {
        "committed" => {
            let written: i64 = row.get(3);
            let promoted: i64 = row.get(4);
            if written > 0 || promoted > 0 {
                // Decoding our own rows cannot fail; if it did, receivers would re-read.
                let rows: Vec<MessageRow> = serde_json::from_value(row.get(5)).unwrap_or_default();
                change = change.with_messages(rows);
            }
            change.queue = promoted > 0;
            CommitOutcome::Committed(change, Vec::new())
        }
        // Whatever that try wrote: replicas re-read (messages and queue flagged as changed).
        "already" => CommitOutcome::AlreadyCommitted(change.with_messages([]).with_queue()),
        "changed" => CommitOutcome::Changed,
        "interrupting" => CommitOutcome::Interrupting,
        _ => CommitOutcome::LeaseLost,
    })
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
