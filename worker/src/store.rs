//! The worker's SQL: acquire, heartbeat, fenced step commits, release and recovery.
//!
//! **Invariant:** every write for a chat is conditioned on `worker_id = me AND attempt =
//! my_attempt`, checked under the row lock or in the `WHERE` clause. Zero rows means the turn
//! lost its lease: the caller stops and writes nothing more.

use serde_json::Value;
use uuid::Uuid;

use chatd_shared::domain::{ChatStatus, Role};
use chatd_shared::pubsub::{
    chat_channel, owner_channel, to_payload, ChangeNotice, ChatNotice, OwnerEventKind, OwnerNotice,
    WAKE_CHANNEL,
};

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
}

/// Claims up to `limit` pending chats in one statement and commits at once.
///
/// # Locks
/// `FOR UPDATE SKIP LOCKED` on the picked rows for the statement's duration only.
pub async fn acquire(
    client: &tokio_postgres::Client,
    worker_id: Uuid,
    limit: i64,
) -> Result<Vec<Claim>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH picked AS ( \
                 SELECT id, updated_at AS pending_since FROM chats \
                 WHERE status = 'pending' AND NOT archived \
                 ORDER BY updated_at FOR UPDATE SKIP LOCKED LIMIT $2) \
             UPDATE chats c SET status = 'running', worker_id = $1, attempt = c.attempt + 1, \
                 heartbeat_at = now(), version = c.version + 1, updated_at = now(), \
                 crash_count = c.crash_count + 1 \
             FROM picked WHERE c.id = picked.id \
             RETURNING c.id, c.owner_id, c.attempt, c.version, c.crash_count, \
                 extract(epoch FROM (clock_timestamp() - picked.pending_since))::float8",
            &[&worker_id, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Claim {
            chat_id: row.get(0),
            owner_id: row.get(1),
            attempt: row.get(2),
            version: row.get(3),
            crash_count: row.get(4),
            pending_seconds: row.get(5),
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
    client: &tokio_postgres::Client,
    worker_id: Uuid,
    chat_ids: &[Uuid],
) -> Result<Vec<LeaseState>, tokio_postgres::Error> {
    let rows = client
        .query(
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

/// A message row the turn writes (assistant or tool), encoded before the transaction.
pub struct NewRow {
    pub role: Role,
    pub content: Value,
    pub model_config_id: Option<Uuid>,
    pub usage: Option<RowUsage>,
    pub runtime_ms: Option<i64>,
    pub provider_response_id: Option<String>,
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
pub enum TurnEnd {
    /// The turn goes on (a step with tool calls).
    Continue,
    /// Normal end: waiting, or pending with the queue head promoted.
    Done,
    /// Interrupted: like `Done` (the queue head placed by an interrupting send runs next).
    Interrupted,
    /// Failed: status error with `last_error`.
    Failed(Value),
    /// Shutdown: back to pending for another worker.
    Released,
}

/// What a fenced commit changed (for the post-commit hints).
pub struct Committed {
    pub version: i64,
    pub status: ChatStatus,
    pub attempt: i32,
    pub messages: bool,
    pub queue: bool,
    pub error: bool,
}

/// Writes `rows` and applies `end` in one transaction, fenced by the lease. `Ok(None)` means
/// the lease was lost and nothing was written.
///
/// # Locks
/// Row lock on the chat (`FOR UPDATE`) for the transaction; message inserts happen under it,
/// which keeps per-chat message ids in commit order.
pub async fn commit(
    client: &mut tokio_postgres::Client,
    chat_id: Uuid,
    worker_id: Uuid,
    attempt: i32,
    rows: &[NewRow],
    end: TurnEnd,
) -> Result<Option<Committed>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let owned = transaction
        .query_opt(
            "SELECT status FROM chats WHERE id = $1 AND worker_id = $2 AND attempt = $3 \
             AND status IN ('running', 'interrupting') FOR UPDATE",
            &[&chat_id, &worker_id, &attempt],
        )
        .await?;
    if owned.is_none() {
        return Ok(None);
    }
    for row in rows {
        let usage = row.usage;
        transaction
            .execute(
                "INSERT INTO chat_messages (chat_id, role, content, visibility, model_config_id, \
                 input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, \
                 cache_write_tokens, cost_micros, runtime_ms, provider_response_id, attempt) \
                 VALUES ($1, $2, $3, 'both', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &chat_id,
                    &row.role.as_str(),
                    &row.content,
                    &row.model_config_id,
                    &usage.map(|u| u.input_tokens),
                    &usage.map(|u| u.output_tokens),
                    &usage.map(|u| u.reasoning_tokens),
                    &usage.map(|u| u.cache_read_tokens),
                    &usage.map(|u| u.cache_write_tokens),
                    &usage.and_then(|u| u.cost_micros),
                    &row.runtime_ms,
                    &row.provider_response_id,
                    &attempt,
                ],
            )
            .await?;
    }
    let mut popped = false;
    let (status, last_error) = match &end {
        TurnEnd::Continue => (None, None),
        TurnEnd::Done | TurnEnd::Interrupted => {
            let head = transaction
                .query_opt(
                    "DELETE FROM chat_queued_messages WHERE id = \
                     (SELECT id FROM chat_queued_messages WHERE chat_id = $1 \
                      ORDER BY position, id LIMIT 1) \
                     RETURNING content, model_config_id, created_by",
                    &[&chat_id],
                )
                .await?;
            if let Some(head) = head {
                popped = true;
                transaction
                    .execute(
                        "INSERT INTO chat_messages (chat_id, role, content, visibility, \
                         created_by, model_config_id) VALUES ($1, 'user', $2, 'both', $4, $3)",
                        &[
                            &chat_id,
                            &head.get::<_, Value>(0),
                            &head.get::<_, Option<Uuid>>(1),
                            &head.get::<_, Option<Uuid>>(2),
                        ],
                    )
                    .await?;
                (Some(ChatStatus::Pending), None)
            } else {
                (Some(ChatStatus::Waiting), None)
            }
        }
        TurnEnd::Failed(error) => (Some(ChatStatus::Error), Some(error.clone())),
        TurnEnd::Released => (Some(ChatStatus::Pending), None),
    };
    let row = match status {
        None => {
            transaction
                .query_one(
                    "UPDATE chats SET version = version + 1, updated_at = now() WHERE id = $1 \
                     RETURNING version, status, attempt",
                    &[&chat_id],
                )
                .await?
        }
        Some(status) => {
            // A released turn did not finish: keep its crash count; any other end resets it.
            let keep_crash_count = matches!(end, TurnEnd::Released);
            transaction
                .query_one(
                    "UPDATE chats SET status = $2, worker_id = NULL, heartbeat_at = NULL, \
                     last_error = $3, version = version + 1, updated_at = now(), \
                     crash_count = CASE WHEN $4 THEN crash_count - 1 ELSE 0 END \
                     WHERE id = $1 RETURNING version, status, attempt",
                    &[&chat_id, &status.as_str(), &last_error, &keep_crash_count],
                )
                .await?
        }
    };
    transaction.commit().await?;
    Ok(Some(Committed {
        version: row.get(0),
        status: ChatStatus::parse(row.get(1)).unwrap_or(ChatStatus::Error),
        attempt: row.get(2),
        messages: !rows.is_empty() || popped,
        queue: popped,
        error: last_error.is_some(),
    }))
}

/// Starts a new lease epoch for this worker's turn (a step restarting after partial output):
/// clients see the attempt change and drop previews. `None` when the lease was lost.
pub async fn renew_attempt(
    client: &tokio_postgres::Client,
    chat_id: Uuid,
    worker_id: Uuid,
    attempt: i32,
) -> Result<Option<(i32, i64)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "UPDATE chats SET attempt = attempt + 1, version = version + 1, updated_at = now(), \
             heartbeat_at = now() \
             WHERE id = $1 AND worker_id = $2 AND attempt = $3 AND status = 'running' \
             RETURNING attempt, version",
            &[&chat_id, &worker_id, &attempt],
        )
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// Hints to publish after a commit that changed a chat.
pub fn change_notices(
    chat_id: Uuid,
    owner_id: Uuid,
    committed: &Committed,
) -> Vec<(String, String)> {
    let mut notices = vec![
        (
            chat_channel(chat_id),
            to_payload(&ChatNotice::Change(ChangeNotice {
                version: committed.version,
                status: committed.status,
                attempt: committed.attempt,
                messages: committed.messages,
                queue: committed.queue,
                other: committed.error,
            })),
        ),
        (
            owner_channel(owner_id),
            to_payload(&OwnerNotice {
                kind: OwnerEventKind::Status,
                chat_id,
                version: committed.version,
            }),
        ),
    ];
    if committed.status == ChatStatus::Pending {
        notices.push((WAKE_CHANNEL.to_string(), chat_id.to_string()));
    }
    notices
}

/// Status-only hints (acquire, renewed attempt): API replicas relay them without a read.
pub fn status_notices(
    chat_id: Uuid,
    owner_id: Uuid,
    version: i64,
    status: ChatStatus,
    attempt: i32,
) -> Vec<(String, String)> {
    change_notices(
        chat_id,
        owner_id,
        &Committed {
            version,
            status,
            attempt,
            messages: false,
            queue: false,
            error: false,
        },
    )
}
