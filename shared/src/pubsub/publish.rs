//! Publishing notifications.
//!
//! **Invariant:** notifications are published only *after* the transaction that made the
//! change committed, in their own statement. A NOTIFY inside a transaction that also writes
//! durable rows can fail that commit when the notify queue is full, losing the rows.

use crate::db::sql::Sql;

/// Publishes every `(channel, payload)` pair with one statement (one round trip, one commit).
pub async fn publish(
    client: &deadpool_postgres::ClientWrapper,
    notices: &[(String, String)],
) -> Result<(), tokio_postgres::Error> {
    if notices.is_empty() {
        return Ok(());
    }
    let channels: Vec<&str> = notices
        .iter()
        .map(|(channel, _)| channel.as_str())
        .collect();
    let payloads: Vec<&str> = notices
        .iter()
        .map(|(_, payload)| payload.as_str())
        .collect();
    client
        .exec(
            "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)",
            &[&channels, &payloads],
        )
        .await?;
    metrics::counter!("chatd_notify_commits_total").increment(1);
    Ok(())
}

/// How a process publishes many requests' notices: a request publishes on its own
/// connection while fewer than `DIRECT_SLOTS` others do (no added hop when the replica is not
/// busy); past that it hands its notices to one publishing task, which sends what it was
/// handed while its previous statement was in flight together in the next one (group commit),
/// so a busy API replica pays one statement for many transitions.
///
/// The task has a connection of its own (a pool of one): callers wait for it while holding
/// their pooled connection, so taking one from their pool could wait for them forever.
#[derive(Clone)]
pub struct Publisher {
    requests: tokio::sync::mpsc::UnboundedSender<PublishRequest>,
    direct: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct PublishRequest {
    notices: Vec<(String, String)>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// At most this many notices in one statement (each payload is below 8,000 bytes).
const MAX_BATCH_NOTICES: usize = 1_000;
/// Requests publishing on their own connection at once before the rest are batched.
const DIRECT_SLOTS: usize = 2;

/// A direct publisher's slot, given back however its request ends (it may be dropped).
struct DirectSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for DirectSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Publisher {
    pub fn spawn(pool: deadpool_postgres::Pool) -> Publisher {
        let (requests, mut queue) = tokio::sync::mpsc::unbounded_channel::<PublishRequest>();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut notices = first.notices;
                let mut waiting = vec![first.done];
                while notices.len() < MAX_BATCH_NOTICES {
                    let Ok(more) = queue.try_recv() else {
                        break;
                    };
                    notices.extend(more.notices);
                    waiting.push(more.done);
                }
                let outcome = match pool.get().await {
                    Ok(client) => publish(&client, &notices)
                        .await
                        .map_err(anyhow::Error::from),
                    Err(error) => Err(anyhow::Error::from(error)),
                };
                if let Err(error) = outcome {
                    // The changes are durable; re-reads repair a lost hint.
                    tracing::warn!(
                        error = format!("{error:#}"),
                        notices = notices.len(),
                        "publish change hints"
                    );
                }
                metrics::histogram!("chatd_publish_batch_requests").record(waiting.len() as f64);
                for done in waiting {
                    let _ = done.send(());
                }
            }
        });
        Publisher {
            requests,
            direct: std::sync::Arc::default(),
        }
    }

    /// Publishes `notices` (after the commit of the change they describe), on `client` or
    /// with other requests' (see [`Publisher`]), and returns once they are out or failed
    /// (logged: the change is durable, re-reads repair a lost hint).
    pub async fn publish(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        notices: Vec<(String, String)>,
    ) {
        use std::sync::atomic::Ordering;
        if notices.is_empty() {
            return;
        }
        if self.direct.fetch_add(1, Ordering::AcqRel) < DIRECT_SLOTS {
            let _slot = DirectSlot(&self.direct);
            if let Err(error) = publish(client, &notices).await {
                tracing::warn!(error = %error, "publish change hints");
            }
            return;
        }
        drop(DirectSlot(&self.direct));
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.requests.send(PublishRequest { notices, done }).is_ok() {
            let _ = finished.await;
        }
    }
}
