//! The recovery sweep (runs on every worker; `SKIP LOCKED` keeps sweeps from colliding).
//!
//! - running/interrupting with a heartbeat older than `stale_after` → pending (running) or
//!   waiting (interrupting);
//! - waiting with a non-empty queue for over a second → the head is promoted, pending;
//! - requires_action past its deadline → error with synthetic results; awaiting_agents past
//!   its deadline, or with every sub-agent ended, → its waits answered, pending;
//! - the resume log is trimmed: frames of superseded attempts, and of turns that ended a
//!   minute ago.

use chatd_shared::db::sql::Sql;
use std::time::Duration;

use uuid::Uuid;

use chatd_shared::domain::ChatStatus;
use chatd_shared::pubsub::publish;

use chatd_shared::bump_chat_version;

use chatd_shared::pubsub::ChatChange;

/// Releases the leases of the chats in CTE `$cte` (column `id`): running → pending (another
/// worker runs the turn again), interrupting → waiting (the interrupt wins). Returns `(id,
/// owner_id, version, status, attempt)` for `released_lease_notices`. Shared by the stale-lease
/// sweep and the dead-worker release, so both hand chats back the same way.
macro_rules! release_leases_sql {
    ($cte:literal) => {
        concat!(
            "UPDATE chats c SET \
                 status = CASE WHEN c.status = 'running' THEN 'pending' ELSE 'waiting' END, \
                 worker_id = NULL, heartbeat_at = NULL, ",
            chatd_shared::bump_chat_version!(),
            " FROM ",
            $cte,
            " WHERE c.id = ",
            $cte,
            ".id RETURNING c.id, c.owner_id, c.version, c.status, c.attempt"
        )
    };
}
pub(crate) use release_leases_sql;

/// One sweep. Returns how many chats were recovered.
pub async fn sweep(
    client: &mut deadpool_postgres::Client,
    stale_after: Duration,
    trim_frames: bool,
) -> Result<usize, tokio_postgres::Error> {
    let stale_ms = stale_after.as_millis() as i64;
    let rows = client
        .rows(
            concat!(
                "WITH stale AS ( \
                 SELECT id FROM chats WHERE worker_id IS NOT NULL \
                 AND status IN ('running', 'interrupting') AND heartbeat_at < now() - ($1::bigint * interval '1 millisecond') \
                 ORDER BY heartbeat_at FOR UPDATE SKIP LOCKED LIMIT 100) ",
                release_leases_sql!("stale")
            ),
            &[&stale_ms],
        )
        .await?;
    let mut notices = released_lease_notices(&rows, "recovered a stale lease");
    metrics::counter!("chatd_stale_recoveries_total").increment(rows.len() as u64);
    let promoted = promote_stranded_queues(client, &mut notices).await?;
    let expired = expire_actions(client, &mut notices).await?;
    let resumed = resolve_overdue_waits(client, &mut notices).await?;
    publish(client, &notices).await?;
    if trim_frames {
        client
            .exec(
                "DELETE FROM chat_stream_frames f USING chats c WHERE f.chat_id = c.id AND \
                 (f.attempt < c.attempt OR (c.status NOT IN ('running', 'interrupting') \
                  AND c.updated_at < now() - interval '60 seconds'))",
                &[],
            )
            .await?;
        client
            .exec(
                "DELETE FROM chat_stream_frames f WHERE NOT EXISTS \
                 (SELECT 1 FROM chats c WHERE c.id = f.chat_id)",
                &[],
            )
            .await?;
    }
    let gauge = client
        .row(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 \
             FROM chats WHERE status = 'pending'",
            &[],
        )
        .await?;
    metrics::gauge!("chatd_pending_chats").set(gauge.get::<_, i64>(0) as f64);
    metrics::gauge!("chatd_oldest_pending_age_seconds").set(gauge.get::<_, f64>(1));
    Ok(rows.len() + promoted + expired + resumed)
}

/// Chats waiting for sub-agents past their deadline, or whose sub-agents all ended without
/// the wait being resolved (a crash in between): answered and made pending.
async fn resolve_overdue_waits(
    client: &mut deadpool_postgres::Client,
    notices: &mut Vec<(String, String)>,
) -> Result<usize, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let overdue = chatd_shared::db::agents::overdue(&transaction).await?;
    let mut resolved = 0;
    for chat_id in overdue {
        if let Some(change) = chatd_shared::db::agents::resolve_in(&transaction, chat_id).await? {
            notices.extend(change.notices());
            resolved += 1;
        }
    }
    transaction.commit().await?;
    Ok(resolved)
}

/// Hints for leases released to `pending`/`waiting`, from rows `(id, owner_id, version,
/// status, attempt)`; logs each with `why`.
pub fn released_lease_notices(rows: &[tokio_postgres::Row], why: &str) -> Vec<(String, String)> {
    let mut notices = Vec::new();
    for row in rows {
        let status = ChatStatus::parse(row.get(3)).unwrap_or(ChatStatus::Pending);
        tracing::warn!(chat_id = %row.get::<_, Uuid>(0), status = status.as_str(), "{why}");
        notices.extend(
            ChatChange::status_only(row.get(0), row.get(1), row.get(2), status, row.get(4))
                .notices(),
        );
    }
    notices
}

/// The result unanswered client tool calls get when their deadline passes.
pub const ACTION_TIMEOUT_RESULT: &str =
    "the client did not return this tool call's result before the deadline";

/// Chats in `requires_action` past `action_deadline_at` → `error` (kind `action_timeout`) with
/// synthetic results for the unanswered calls, so the history stays valid for a next message.
async fn expire_actions(
    client: &mut deadpool_postgres::Client,
    notices: &mut Vec<(String, String)>,
) -> Result<usize, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let expired = transaction
        .rows(
            "SELECT id, owner_id FROM chats WHERE status = 'requires_action' \
             AND action_deadline_at < now() ORDER BY action_deadline_at \
             FOR UPDATE SKIP LOCKED LIMIT 50",
            &[],
        )
        .await?;
    for chat in &expired {
        let chat_id: Uuid = chat.get(0);
        let closed = chatd_shared::db::tool_calls::close_pending(
            &transaction,
            chat_id,
            ACTION_TIMEOUT_RESULT,
        )
        .await?;
        let error = chatd_shared::domain::ChatError::new(
            "action_timeout",
            "the client did not return tool results before the deadline",
        )
        .to_value();
        let row = transaction
            .row(
                concat!(
                    "UPDATE chats c SET status = 'error', last_error = $2, \
                     action_deadline_at = NULL, ",
                    bump_chat_version!(),
                    " WHERE c.id = $1 RETURNING c.version, c.attempt"
                ),
                &[&chat_id, &error],
            )
            .await?;
        tracing::info!(%chat_id, "client tool results timed out");
        let mut change = ChatChange::status_only(
            chat_id,
            chat.get(1),
            row.get(0),
            ChatStatus::Error,
            row.get(1),
        )
        .with_other();
        if let Some(closed) = closed {
            change = change.with_messages([closed]);
        }
        notices.extend(change.notices());
    }
    transaction.commit().await?;
    Ok(expired.len())
}

/// Waiting chats with a queue (left so by a crash between steps): promote the head.
async fn promote_stranded_queues(
    client: &mut deadpool_postgres::Client,
    notices: &mut Vec<(String, String)>,
) -> Result<usize, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let stranded = transaction
        .rows(
            "SELECT c.id, c.owner_id FROM chats c WHERE c.status = 'waiting' AND NOT c.archived \
             AND NOT c.deleted \
             AND c.updated_at < now() - interval '1 second' \
             AND EXISTS (SELECT 1 FROM chat_queued_messages q WHERE q.chat_id = c.id) \
             FOR UPDATE SKIP LOCKED LIMIT 50",
            &[],
        )
        .await?;
    for chat in &stranded {
        let chat_id: Uuid = chat.get(0);
        chatd_shared::db::queue::promote_head(&transaction, chat_id).await?;
        let row = transaction
            .row(
                concat!(
                    "UPDATE chats c SET status = 'pending', ",
                    bump_chat_version!(),
                    " WHERE c.id = $1 RETURNING c.version, c.attempt"
                ),
                &[&chat_id],
            )
            .await?;
        notices.extend(
            ChatChange::status_only(
                chat_id,
                chat.get(1),
                row.get(0),
                ChatStatus::Pending,
                row.get(1),
            )
            .with_messages([])
            .with_queue()
            .notices(),
        );
    }
    transaction.commit().await?;
    Ok(stranded.len())
}
