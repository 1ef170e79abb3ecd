//! A turn's lease and the one path by which a turn writes: every commit and attempt renewal
//! is fenced by the lease, idempotent under a key, and retried on database errors with the
//! same key (so a retry after a lost reply writes nothing twice), and its hints are handed to
//! the flusher after the commit.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use uuid::Uuid;

use super::control::{StopReason, TurnControl};
use crate::config::WorkerConfig;
use crate::flusher::StreamFlusher;
use crate::store::commit_batch::{Batched, BatchedCommit, CommitBatcher};
use crate::store::{self, NewRow, TurnEnd};
use crate::tool::agents::NewChild;

/// What a turn holds from its claim: the chat, the lease epoch, and what it writes with.
pub struct TurnLease {
    pub config: Arc<WorkerConfig>,
    pub pool: Pool,
    pub committer: CommitBatcher,
    pub control: Arc<TurnControl>,
    /// Publishes this turn's post-commit hints (batched with other turns' under load).
    pub flusher: Arc<StreamFlusher>,
    pub chat_id: Uuid,
    pub owner_id: Uuid,
    /// The parent of a sub-agent: when this turn ends, the parent's wait may be over.
    pub parent_chat_id: Option<Uuid>,
    /// Depth in the chat's tree (a root is 0).
    pub depth: i16,
    /// The lease epoch; changes when a step restarts after partial output.
    attempt: AtomicI32,
}

impl TurnLease {
    pub fn new(
        deps: &super::TurnDeps,
        claim: &store::Claim,
        control: Arc<TurnControl>,
    ) -> TurnLease {
        TurnLease {
            config: deps.config.clone(),
            pool: deps.pool.clone(),
            committer: deps.committer.clone(),
            control,
            flusher: deps.flusher.clone(),
            chat_id: claim.chat_id,
            owner_id: claim.owner_id,
            parent_chat_id: claim.parent_chat_id,
            depth: claim.depth,
            attempt: AtomicI32::new(claim.attempt),
        }
    }
}

impl TurnLease {
    pub fn attempt(&self) -> i32 {
        self.attempt.load(Ordering::Relaxed)
    }

    /// Bumps the lease epoch (fenced, idempotent), retrying transient database errors.
    pub async fn renew_attempt(&self) -> store::Renewal {
        let key = Uuid::new_v4();
        let mut delay = Duration::from_millis(100);
        for _ in 0..COMMIT_TRIES {
            let result = async {
                let client = self.pool.get().await?;
                anyhow::Ok(
                    store::renew_attempt(
                        &client,
                        self.chat_id,
                        self.config.worker_id,
                        self.attempt(),
                        key,
                    )
                    .await?,
                )
            }
            .await;
            match result {
                Ok(store::Renewal::Renewed(attempt, version)) => {
                    self.attempt.store(attempt, Ordering::Relaxed);
                    let notices = chatd_shared::pubsub::ChatChange::status_only(
                        self.chat_id,
                        self.owner_id,
                        version,
                        chatd_shared::domain::ChatStatus::Running,
                        attempt,
                    )
                    .notices();
                    self.flusher.publish_soon(notices);
                    return store::Renewal::Renewed(attempt, version);
                }
                Ok(other) => return other,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "renew the attempt; retrying");
                    if self.sleep_unless_lost(delay).await {
                        return store::Renewal::LeaseLost;
                    }
                    delay = (delay * 2).min(MAX_COMMIT_DELAY);
                }
            }
        }
        store::Renewal::LeaseLost
    }

    /// Sleeps `delay`; true when the lease was lost meanwhile (stop retrying).
    async fn sleep_unless_lost(&self, delay: Duration) -> bool {
        tokio::time::sleep(delay).await;
        self.control.reason() == Some(StopReason::LeaseLost)
    }

    /// Commits `rows` and `end` fenced by the lease, retrying transient database errors with
    /// the same idempotency key (a retry after a lost reply writes nothing twice). Returns
    /// `Lost` when the lease was lost (or the database stayed unreachable: then the lease
    /// expires and another worker takes the chat).
    /// `last_seq`: the last seq this attempt published (carried in the hint so API replicas can
    /// tell whether they missed a frame notification).
    pub async fn commit_outcome(
        &self,
        rows: &[NewRow],
        end: TurnEnd,
        last_seq: Option<i64>,
    ) -> Commit {
        self.commit_step(rows, &[], end, last_seq).await
    }

    /// [`TurnLease::commit_outcome`] that also creates the sub-agents the step started (in
    /// the same transaction). After a commit that ends a sub-agent's turn its parent's wait
    /// is checked, and after one that waits for sub-agents this chat's own (they may have
    /// ended before the wait was stored).
    pub async fn commit_step(
        &self,
        rows: &[NewRow],
        children: &[NewChild],
        end: TurnEnd,
        last_seq: Option<i64>,
    ) -> Commit {
        let key = Uuid::new_v4();
        if CommitBatcher::eligible(children.is_empty(), &end) {
            let batched = self
                .committer
                .commit(BatchedCommit {
                    lease: store::Lease {
                        chat_id: self.chat_id,
                        worker_id: self.config.worker_id,
                        attempt: self.attempt(),
                    },
                    rows: rows.to_vec(),
                    end: end.clone(),
                    key,
                    stream_seq: last_seq,
                })
                .await;
            if let Batched::Committed(change) = batched {
                self.flusher
                    .publish_soon(change.with_last_seq(last_seq).notices());
                self.after_commit(&end).await;
                return Commit::Owned;
            }
            // Not written by the batch: the single statement decides, with the same key.
        }
        let mut delay = Duration::from_millis(100);
        let mut changed = 0;
        let mut tries = 0;
        while tries < COMMIT_TRIES {
            let result = async {
                let mut client = self.pool.get().await?;
                anyhow::Ok(
                    store::commit(
                        &mut client,
                        store::Lease {
                            chat_id: self.chat_id,
                            worker_id: self.config.worker_id,
                            attempt: self.attempt(),
                        },
                        rows,
                        children,
                        &end,
                        key,
                        last_seq,
                    )
                    .await?,
                )
            }
            .await;
            match result {
                Ok(store::CommitOutcome::Committed(change, created)) => {
                    let mut notices = change.with_last_seq(last_seq).notices();
                    for child in created {
                        notices.extend(child.notices());
                    }
                    self.flusher.publish_soon(notices);
                    self.after_commit(&end).await;
                    return Commit::Owned;
                }
                Ok(store::CommitOutcome::AlreadyCommitted(change)) => {
                    let notices = change.with_last_seq(last_seq).notices();
                    self.flusher.publish_soon(notices);
                    self.after_commit(&end).await;
                    return Commit::Owned;
                }
                Ok(store::CommitOutcome::Changed) if changed < MAX_CHANGED_RETRIES => {
                    // Someone committed while we waited for the row lock: look again at once.
                    changed += 1;
                }
                Ok(store::CommitOutcome::Changed) => {
                    tracing::warn!("the chat kept changing under the commit; giving up");
                    return Commit::Lost;
                }
                Ok(store::CommitOutcome::Interrupting) => return Commit::Interrupting,
                Ok(store::CommitOutcome::LeaseLost) => {
                    tracing::info!("lease lost; the step was not written");
                    return Commit::Lost;
                }
                Err(error) => {
                    tries += 1;
                    tracing::warn!(error = format!("{error:#}"), "commit the step; retrying");
                    if self.sleep_unless_lost(delay).await {
                        return Commit::Lost;
                    }
                    delay = (delay * 2).min(MAX_COMMIT_DELAY);
                }
            }
        }
        Commit::Lost
    }

    /// Resolves the wait this commit may have ended (see [`TurnLease::commit_step`]). A
    /// failure is logged: the recovery sweep resolves what is missed here.
    async fn after_commit(&self, end: &TurnEnd) {
        let waiting = match end {
            TurnEnd::AwaitAgents(_) => Some(self.chat_id),
            end if end.ends_turn() => self.parent_chat_id,
            _ => None,
        };
        let Some(waiting) = waiting else {
            return;
        };
        let resolved = async {
            let mut client = self.pool.get().await?;
            anyhow::Ok(chatd_shared::db::agents::resolve(&mut client, waiting).await?)
        }
        .await;
        match resolved {
            Ok(Some(change)) => self.flusher.publish_soon(change.notices()),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), chat_id = %waiting, "resolve a wait for sub-agents; the sweep will");
            }
        }
    }

    /// [`TurnContext::commit_outcome`] for ends that cannot meet `Interrupting` (only
    /// `RequiresAction` and `AwaitAgents` can): true while the lease is held.
    pub async fn commit(&self, rows: &[NewRow], end: TurnEnd, last_seq: Option<i64>) -> bool {
        matches!(
            self.commit_outcome(rows, end, last_seq).await,
            Commit::Owned | Commit::Interrupting
        )
    }
}

/// Tries of a commit or renewal on database errors (with backoff up to
/// [`MAX_COMMIT_DELAY`]); together about a minute, past `stale_after`'s default of 30 s, so
/// a turn gives up only once its lease is surely gone.
const COMMIT_TRIES: usize = 12;
const MAX_COMMIT_DELAY: Duration = Duration::from_secs(8);
/// Immediate re-runs of a commit whose row changed under it (each sees the newer row).
const MAX_CHANGED_RETRIES: usize = 20;

/// How a commit ended for the turn.
pub enum Commit {
    Owned,
    /// Nothing was written: a `requires_action` or `awaiting_agents` end found the chat
    /// `interrupting`.
    Interrupting,
    Lost,
}
