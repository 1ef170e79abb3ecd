//! Sends to idle chats, many requests' in one statement when they come together (group
//! commit).
//!
//! Most of a send's cost in PostgreSQL does not depend on how many chats it writes: each
//! data-modifying part of a statement opens its table and every index of it, prepares its
//! constraints and commits once. Measured with pgbench on chatd's schema (one client): one
//! chat per statement 0.61–0.68 ms, eight chats per statement 1.38 ms (0.17 ms a chat).
//!
//! A [`SendBatcher`] is one task with a connection of its own (a pool of one, like the
//! publisher's: callers wait for it while holding their pooled connection, so taking one of
//! theirs could wait forever). It runs what it was handed while its previous statement was
//! in flight together in the next one, so an idle replica pays no wait and a busy one pays
//! one statement for many sends.
//!
//! The statement locks its chats with `SKIP LOCKED`: a chat another transaction holds is
//! left out rather than waited for, so one busy chat never holds up the others' sends. A
//! request left out — its chat locked, not idle, queued behind, archived, another owner's, or
//! a second send to a chat already in the batch — is answered [`Batched::NotSent`], and its
//! caller takes the full transition (which waits for the lock and queues, refuses or sends
//! as the chat's state says). When PostgreSQL refuses the statement (it rolled back, nothing
//! was written) every request is answered `NotSent` the same way; when the outcome is
//! unknown (the connection failed, or the statement did not answer within 10 s: its
//! connection is then closed, not reused) every request gets the error.

use std::collections::HashSet;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use chatd_shared::db::pool::PgPool;
use chatd_shared::db::rows::{ChatRow, MessageRow};
use chatd_shared::db::sql::Sql;

/// At most this many sends in one statement.
pub const MAX_BATCH: usize = 64;
/// How long a batch statement may take before its connection is given up (as long as a
/// request waits for a pooled connection).
const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What became of one send handed to the batcher.
#[derive(Debug)]
pub enum Batched {
    /// Inserted; the chat is now `pending`.
    Sent(Box<(ChatRow, MessageRow)>),
    /// Nothing written: the caller takes the full transition.
    NotSent,
    /// The statement's outcome is unknown (the connection failed): nothing may be retried.
    Failed(String),
}

/// One send to an idle chat.
#[derive(Debug, Clone)]
pub struct IdleSend {
    pub chat_id: Uuid,
    pub owner_id: Uuid,
    pub content: Value,
}

struct Request {
    send: IdleSend,
    done: oneshot::Sender<Batched>,
}

#[derive(Clone)]
pub struct SendBatcher {
    requests: mpsc::UnboundedSender<Request>,
}

impl SendBatcher {
    /// Starts the batching task on `pool` (its own: see the module documentation).
    pub fn spawn(pool: PgPool) -> SendBatcher {
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
                metrics::histogram!("chatd_send_batch_requests").record(batch.len() as f64);
                let (sends, waiting): (Vec<IdleSend>, Vec<oneshot::Sender<Batched>>) = batch
                    .into_iter()
                    .map(|request| (request.send, request.done))
                    .unzip();
                let outcomes = match pool.get().await {
                    Ok(client) => {
                        let sent =
                            tokio::time::timeout(BATCH_TIMEOUT, send_batch(&*client, &sends)).await;
                        sent.unwrap_or_else(|_| {
                            // Still running on the connection (a hung network): it leaves the
                            // pool, closed, and the outcome is unknown.
                            drop(deadpool_postgres::Client::take(client));
                            tracing::warn!(sends = sends.len(), "send batch timed out");
                            let failed = "the database did not answer the send in time";
                            sends
                                .iter()
                                .map(|_| Batched::Failed(failed.into()))
                                .collect()
                        })
                    }
                    // Nothing was sent: the callers' own connections decide.
                    Err(error) => {
                        tracing::warn!(error = %error, "send batch: no connection");
                        sends.iter().map(|_| Batched::NotSent).collect()
                    }
                };
                for (done, outcome) in waiting.into_iter().zip(outcomes) {
                    let _ = done.send(outcome);
                }
            }
        });
        SendBatcher { requests }
    }

    /// Sends `send` with whatever other sends are waiting (see the module documentation).
    pub async fn send(&self, send: IdleSend) -> Batched {
        let (done, outcome) = oneshot::channel();
        if self.requests.send(Request { send, done }).is_err() {
            return Batched::NotSent;
        }
        outcome.await.unwrap_or(Batched::NotSent)
    }
}

/// Sends `sends` in one statement; one outcome per send, in order. A send to a chat that
/// already has one earlier in `sends` is not part of the statement (`NotSent`): it must see
/// the chat the first one leaves.
///
/// # Locks
/// Row locks on the sent chats for the statement, taken with `SKIP LOCKED`.
pub async fn send_batch(client: &impl Sql, sends: &[IdleSend]) -> Vec<Batched> {
    let mut seen = HashSet::with_capacity(sends.len());
    let first: Vec<bool> = sends.iter().map(|send| seen.insert(send.chat_id)).collect();
    let included = || sends.iter().zip(&first).filter(|(_, first)| **first);
    let chat_ids: Vec<Uuid> = included().map(|(send, _)| send.chat_id).collect();
    let owner_ids: Vec<Uuid> = included().map(|(send, _)| send.owner_id).collect();
    let contents: Vec<&Value> = included().map(|(send, _)| &send.content).collect();
    let rows = match client
        .rows(SEND_BATCH_SQL.as_str(), &[&chat_ids, &owner_ids, &contents])
        .await
    {
        Ok(rows) => rows,
        // PostgreSQL refused the statement: it rolled back, nothing was written.
        Err(error) if error.as_db_error().is_some() => {
            tracing::warn!(error = %error, sends = sends.len(), "send batch refused");
            return sends.iter().map(|_| Batched::NotSent).collect();
        }
        Err(error) => {
            let message = format!("send to the database: {error}");
            return sends
                .iter()
                .map(|_| Batched::Failed(message.clone()))
                .collect();
        }
    };
    let mut sent: std::collections::HashMap<Uuid, (ChatRow, MessageRow)> = rows
        .iter()
        .map(|row| {
            let chat = ChatRow::from_row(row);
            let message = MessageRow::from_row_at(row, ChatRow::LEN);
            (chat.id, (chat, message))
        })
        .collect();
    sends
        .iter()
        .zip(first)
        .map(
            |(send, first)| match first.then(|| sent.remove(&send.chat_id)) {
                Some(Some(sent)) => Batched::Sent(Box::new(sent)),
                _ => Batched::NotSent,
            },
        )
        .collect()
}

/// The batch statement: `$1` chat ids (distinct), `$2` their senders, `$3` the contents.
/// The chats are found by primary key (`= ANY`, estimated at a few rows whatever the
/// statistics); a chat whose owner is not the sender is locked for the statement and left
/// alone.
static SEND_BATCH_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        concat!(
            "WITH target AS ( \
                 SELECT c.id, c.owner_id FROM chats c \
                 WHERE c.id = ANY ($1::uuid[]) AND c.status IN ('waiting', 'error') \
                 AND NOT c.archived AND NOT c.deleted \
                 AND NOT EXISTS (SELECT 1 FROM chat_queued_messages q WHERE q.chat_id = c.id) \
                 FOR UPDATE SKIP LOCKED), \
             matched AS ( \
                 SELECT t.id, i.owner_id, i.content, i.n FROM target t \
                 JOIN unnest($1::uuid[], $2::uuid[], $3::jsonb[]) WITH ORDINALITY \
                     AS i(chat_id, owner_id, content, n) \
                 ON i.chat_id = t.id AND i.owner_id = t.owner_id), \
             inserted AS ( \
                 INSERT INTO chat_messages AS m (chat_id, role, content, visibility, created_by) \
                 SELECT id, 'user', content, 'both', owner_id FROM matched ORDER BY n \
                 RETURNING {message_columns}), \
             updated AS ( \
                 UPDATE chats c SET status = 'pending', last_error = NULL, \
                     action_deadline_at = NULL, ",
            chatd_shared::bump_chat_version!(),
            " FROM matched WHERE c.id = matched.id \
                 RETURNING {chat_columns}) \
             SELECT * FROM updated c JOIN inserted m ON m.chat_id = c.id"
        ),
        message_columns = MessageRow::COLUMNS,
        chat_columns = ChatRow::COLUMNS,
    )
});

/// The batch statement's text, for plan tests.
pub fn send_batch_sql() -> &'static str {
    SEND_BATCH_SQL.as_str()
}
