//! Per-replica fan-out of chat notifications.
//!
//! One `ChatHub` per chat that has local subscribers. Chats share `CHAT_BUCKETS` channels; a
//! bucket is LISTENed while any of its chats has a hub here (reference counted), and the
//! dispatcher parses each bucket notification once and routes its parts by chat id. A hub
//! turns notifications into events with **at most one database read per replica per event**
//! (never one per subscriber) and broadcasts them to its subscribers through a bounded
//! `broadcast` channel. A subscriber that lags behind the channel's capacity resyncs from the
//! database instead of seeing a gapped stream.
//!
//! **Invariant:** subscribe first, then snapshot: `Hubs::subscribe_chat` returns only after
//! the channel is LISTENed, so anything committed after the caller's snapshot read arrives
//! live.

pub mod chat_hub;
pub mod owner_hub;

use chatd_shared::db::sql::Sql;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::ConfigEvent;
use chatd_shared::db::pool::PgPool;
use chatd_shared::pubsub::{
    bucket_channel, chat_bucket, owner_channel, parse_chat_channel, parse_owner_channel,
    ChangeNotice, ChatNotice, FrameNotice, Listener, ListenerEvent,
};
use chatd_shared::pubsub::{ConfigNotice, CONFIG_CHANNEL};

pub use chat_hub::{HubEvent, PreparedEvent};
pub use owner_hub::OwnerEvent;

/// Input of a hub task.
#[derive(Debug)]
pub enum HubInput {
    /// A raw owner-channel payload.
    Notification(String),
    Change(ChangeNotice),
    Frame(FrameNotice),
    /// The listener reconnected (or the inbox overflowed): re-read everything.
    Resync,
}

struct HubEntry {
    inbox: mpsc::Sender<HubInput>,
    /// The chat version the hub has relayed (for the audit); 0 for owner hubs.
    version: Arc<AtomicI64>,
    subscribers: usize,
    /// Becomes true once the channel is LISTENed and the hub's initial read is done.
    ready: watch::Receiver<bool>,
    cancel: CancellationToken,
}

/// A hub's control entry and the sender its subscribers subscribe to.
type HubSlot<E> = (HubEntry, broadcast::Sender<Arc<E>>);

/// A LISTENed bucket: how many chat hubs use it, and whether its LISTEN is done.
struct Bucket {
    hubs: usize,
    listening: watch::Receiver<bool>,
}

/// All hubs of this replica. The hub maps are read for every notification (routing by chat
/// or owner) and written on every subscribe and unsubscribe: sharded maps, so routing never
/// waits behind a subscriber arriving for another chat. Per-key work (create a hub, count a
/// subscriber, retire the hub) happens under that key's entry, which orders a retire and a
/// re-subscribe of the same chat. Buckets stay behind one mutex: they change only when a hub
/// is created or retired, and LISTEN/UNLISTEN of one bucket must be queued in order.
pub struct Hubs {
    pool: PgPool,
    listener: Listener,
    buffer: usize,
    buckets: Mutex<HashMap<u32, Bucket>>,
    chats: DashMap<Uuid, HubSlot<HubEvent>>,
    owners: DashMap<Uuid, HubSlot<OwnerEvent>>,
    /// Live chat hubs (`chatd_hubs`); `DashMap::len` would take every shard's lock.
    chat_hubs: std::sync::atomic::AtomicUsize,
    /// Where `chatd_config` notices go (token and spend caches, open streams).
    config_events: broadcast::Sender<ConfigEvent>,
}

/// A live subscription to one chat. Dropping it unsubscribes.
pub struct ChatSubscription {
    pub events: broadcast::Receiver<Arc<HubEvent>>,
    hubs: Arc<Hubs>,
    chat_id: Uuid,
}

/// A live subscription to one user's chat-list events.
pub struct OwnerSubscription {
    pub events: broadcast::Receiver<Arc<OwnerEvent>>,
    hubs: Arc<Hubs>,
    owner_id: Uuid,
}

const INBOX_CAPACITY: usize = 4096;

/// The hub audit's memory between rounds: the chats found behind, with the database version
/// they were behind.
#[derive(Default)]
struct Audit {
    behind: HashMap<Uuid, i64>,
}

impl Audit {
    /// One round over `chat_ids`: `read` returns their database versions, `relayed` a hub's
    /// relayed version. Returns the hubs to resync — behind now and still short of the version
    /// they were found behind in the previous round — as (chat, relayed, database version).
    ///
    /// Relayed versions are taken *after* the read: a read that waits for a pooled connection
    /// (seconds when the replica is saturated) would otherwise compare versions of different
    /// moments, and every active chat would look behind in two rounds running — a resync
    /// storm that only adds load (under B3 about a thousand resyncs per run).
    async fn round<Read, Reading>(
        &mut self,
        chat_ids: Vec<Uuid>,
        read: Read,
        relayed: impl Fn(&Uuid) -> Option<i64>,
    ) -> anyhow::Result<Vec<(Uuid, i64, i64)>>
    where
        Read: FnOnce(Vec<Uuid>) -> Reading,
        Reading: std::future::Future<Output = anyhow::Result<Vec<(Uuid, i64)>>>,
    {
        if chat_ids.is_empty() {
            self.behind.clear();
            return Ok(Vec::new());
        }
        let current = read(chat_ids).await?;
        let mut lagging = Vec::new();
        let mut still_behind = HashMap::new();
        for (chat_id, version) in current {
            let Some(relayed_version) = relayed(&chat_id) else {
                continue; // retired meanwhile
            };
            if relayed_version >= version {
                continue;
            }
            match self.behind.get(&chat_id) {
                Some(seen) if relayed_version < *seen => {
                    lagging.push((chat_id, relayed_version, version))
                }
                _ => {
                    still_behind.insert(chat_id, version);
                }
            }
        }
        self.behind = still_behind;
        Ok(lagging)
    }
}

impl Hubs {
    pub fn new(
        pool: PgPool,
        listener: Listener,
        buffer: usize,
        config_events: tokio::sync::broadcast::Sender<crate::state::ConfigEvent>,
    ) -> Arc<Hubs> {
        Arc::new(Hubs {
            pool,
            listener,
            buffer,
            config_events,
            buckets: Mutex::new(HashMap::new()),
            chats: DashMap::new(),
            owners: DashMap::new(),
            chat_hubs: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Routes listener events to hubs until `events` closes.
    pub async fn dispatch(self: Arc<Hubs>, mut events: mpsc::Receiver<ListenerEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                ListenerEvent::Notification { channel, payload } => {
                    if parse_chat_channel(&channel).is_some() {
                        match ChatNotice::from_payload(&payload) {
                            Ok(ChatNotice::Change(change)) => {
                                self.deliver_chat(change.chat_id, HubInput::Change(change))
                            }
                            Ok(ChatNotice::Frames { frames }) => {
                                for frame in frames {
                                    self.deliver_chat(frame.chat_id, HubInput::Frame(frame));
                                }
                            }
                            Err(error) => {
                                tracing::warn!(%channel, %error, "unreadable chat notification")
                            }
                        }
                    } else if let Some(owner_id) = parse_owner_channel(&channel) {
                        self.deliver_owner(owner_id, HubInput::Notification(payload));
                    } else if channel == CONFIG_CHANNEL {
                        if let Ok(notice) = serde_json::from_str::<ConfigNotice>(&payload) {
                            let _ = self.config_events.send(ConfigEvent::Changed(notice));
                        }
                    }
                }
                ListenerEvent::Reconnected => {
                    let _ = self.config_events.send(ConfigEvent::Reconnected);
                    self.resync_all()
                }
                ListenerEvent::Disconnected => {}
            }
        }
    }

    fn deliver_chat(&self, chat_id: Uuid, input: HubInput) {
        if let Some(slot) = self.chats.get(&chat_id) {
            deliver(&slot.0, input);
        }
    }

    fn deliver_owner(&self, owner_id: Uuid, input: HubInput) {
        if let Some(slot) = self.owners.get(&owner_id) {
            deliver(&slot.0, input);
        }
    }

    fn resync_all(&self) {
        for slot in self.chats.iter() {
            deliver(&slot.0, HubInput::Resync);
        }
        for slot in self.owners.iter() {
            deliver(&slot.0, HubInput::Resync);
        }
    }

    /// Repairs lost hints: every `interval`, one statement compares every hub's relayed
    /// version with the database; a hub still behind at the next round (so not merely waiting
    /// for a notification in flight) resyncs.
    pub async fn audit(self: Arc<Hubs>, interval: Duration, shutdown: CancellationToken) {
        let mut audit = Audit::default();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let chat_ids: Vec<Uuid> = self.chats.iter().map(|slot| *slot.key()).collect();
            let pool = &self.pool;
            let read = |chat_ids: Vec<Uuid>| async move {
                let client = pool.get().await?;
                let rows = client
                    .rows(
                        "SELECT id, version FROM chats WHERE id = ANY($1)",
                        &[&chat_ids],
                    )
                    .await?;
                anyhow::Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            };
            let relayed = |chat_id: &Uuid| {
                self.chats
                    .get(chat_id)
                    .map(|slot| slot.0.version.load(Ordering::Relaxed))
            };
            match audit.round(chat_ids, read, relayed).await {
                Ok(lagging) => {
                    for (chat_id, relayed_version, version) in lagging {
                        tracing::warn!(%chat_id, relayed = relayed_version, version, "hub missed a hint; resyncing");
                        metrics::counter!("chatd_hub_audit_resyncs_total").increment(1);
                        self.deliver_chat(chat_id, HubInput::Resync);
                    }
                }
                Err(error) => tracing::warn!(error = format!("{error:#}"), "hub audit"),
            }
        }
    }

    /// Subscribes to a chat; returns once its channel is LISTENed. The caller must have
    /// checked that the chat exists and is the user's: a hub costs a task and a LISTEN.
    ///
    /// Cancel-safe: the subscription (whose drop undoes the count) exists before the first
    /// await, so a caller that gives up while the database is slow leaves nothing behind.
    pub async fn subscribe_chat(self: &Arc<Hubs>, chat_id: Uuid) -> ChatSubscription {
        let (events, mut ready) = {
            let mut slot = self.chats.entry(chat_id).or_insert_with(|| {
                let (inbox, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
                let (sender, _) = broadcast::channel(self.buffer);
                let (ready_tx, ready) = watch::channel(false);
                let cancel = CancellationToken::new();
                let version = Arc::new(AtomicI64::new(0));
                let task = chat_hub::ChatHubTask::new(
                    chat_id,
                    self.pool.clone(),
                    sender.clone(),
                    version.clone(),
                );
                let mut listening = self.retain_bucket(chat_bucket(chat_id));
                let hubs = self.chat_hubs.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::gauge!("chatd_hubs").set(hubs as f64);
                let task_cancel = cancel.clone();
                tokio::spawn(async move {
                    let _ = listening.wait_for(|listening| *listening).await;
                    task.run(inbox_rx, ready_tx, task_cancel).await;
                });
                (
                    HubEntry {
                        inbox,
                        version,
                        subscribers: 0,
                        ready,
                        cancel,
                    },
                    sender,
                )
            });
            let (entry, sender) = slot.value_mut();
            entry.subscribers += 1;
            (sender.subscribe(), entry.ready.clone())
        };
        metrics::gauge!("chatd_stream_subscribers").increment(1.0);
        let subscription = ChatSubscription {
            events,
            hubs: self.clone(),
            chat_id,
        };
        let _ = ready.wait_for(|ready| *ready).await;
        subscription
    }

    /// Subscribes to a user's chat-list events; returns once the channel is LISTENed.
    /// Cancel-safe like [`Hubs::subscribe_chat`].
    pub async fn subscribe_owner(self: &Arc<Hubs>, owner_id: Uuid) -> OwnerSubscription {
        let (events, mut ready) = {
            let mut slot = self.owners.entry(owner_id).or_insert_with(|| {
                let (inbox, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
                let (sender, _) = broadcast::channel(self.buffer);
                let (ready_tx, ready) = watch::channel(false);
                let cancel = CancellationToken::new();
                let task =
                    owner_hub::OwnerHubTask::new(owner_id, self.pool.clone(), sender.clone());
                let listener = self.listener.clone();
                let task_cancel = cancel.clone();
                tokio::spawn(async move {
                    listener.listen(owner_channel(owner_id)).await;
                    let _ = ready_tx.send(true);
                    task.run(inbox_rx, task_cancel).await;
                });
                (
                    HubEntry {
                        inbox,
                        version: Arc::new(AtomicI64::new(0)),
                        subscribers: 0,
                        ready,
                        cancel,
                    },
                    sender,
                )
            });
            let (entry, sender) = slot.value_mut();
            entry.subscribers += 1;
            (sender.subscribe(), entry.ready.clone())
        };
        let subscription = OwnerSubscription {
            events,
            hubs: self.clone(),
            owner_id,
        };
        let _ = ready.wait_for(|ready| *ready).await;
        subscription
    }

    fn unsubscribe_chat(&self, chat_id: Uuid) {
        metrics::gauge!("chatd_stream_subscribers").decrement(1.0);
        if let Entry::Occupied(mut slot) = self.chats.entry(chat_id) {
            let entry = &mut slot.get_mut().0;
            entry.subscribers -= 1;
            if entry.subscribers == 0 {
                entry.cancel.cancel();
                // While the chat's entry is held (lock order: chat entry, then buckets, as in
                // subscribe), so a re-subscribe of this chat retains the bucket after this.
                self.release_bucket(chat_bucket(chat_id));
                slot.remove();
                let hubs = self.chat_hubs.fetch_sub(1, Ordering::Relaxed) - 1;
                metrics::gauge!("chatd_hubs").set(hubs as f64);
            }
        }
    }

    /// Counts one more hub on `bucket`, LISTENing it when it is the first. The receiver turns
    /// true once the LISTEN is done. LISTEN and UNLISTEN of a bucket are queued under the
    /// buckets lock, so they reach the listener in the order the counts changed.
    fn retain_bucket(&self, bucket: u32) -> watch::Receiver<bool> {
        let mut buckets = lock(&self.buckets);
        if let Some(entry) = buckets.get_mut(&bucket) {
            entry.hubs += 1;
            return entry.listening.clone();
        }
        let (listening_tx, listening) = watch::channel(false);
        buckets.insert(
            bucket,
            Bucket {
                hubs: 1,
                listening: listening.clone(),
            },
        );
        let listener = self.listener.clone();
        // The LISTEN command is queued now (under the lock, so it is ordered after any
        // UNLISTEN of the same bucket); its completion is awaited in the background.
        let pending = listener.listen_queued(bucket_channel(bucket));
        tokio::spawn(async move {
            pending.await;
            let _ = listening_tx.send(true);
        });
        listening
    }

    fn release_bucket(&self, bucket: u32) {
        let mut buckets = lock(&self.buckets);
        if let Some(entry) = buckets.get_mut(&bucket) {
            entry.hubs -= 1;
            if entry.hubs == 0 {
                buckets.remove(&bucket);
                self.listener.unlisten(bucket_channel(bucket));
            }
        }
    }

    fn unsubscribe_owner(&self, owner_id: Uuid) {
        if let Entry::Occupied(mut slot) = self.owners.entry(owner_id) {
            let entry = &mut slot.get_mut().0;
            entry.subscribers -= 1;
            if entry.subscribers == 0 {
                entry.cancel.cancel();
                // UNLISTEN queued while the entry is still held: a re-subscribe of this owner
                // waits for the entry, so its LISTEN is queued after.
                self.listener.unlisten(owner_channel(owner_id));
                slot.remove();
            }
        }
    }
}

/// Hands an input to a hub; an overflowing inbox degrades to a resync, never a silent gap.
fn deliver(entry: &HubEntry, input: HubInput) {
    if let Err(mpsc::error::TrySendError::Full(_)) = entry.inbox.try_send(input) {
        // The hub is far behind; it will drain and then see this resync.
        let inbox = entry.inbox.clone();
        tokio::spawn(async move {
            let _ = inbox.send(HubInput::Resync).await;
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for ChatSubscription {
    fn drop(&mut self) {
        self.hubs.unsubscribe_chat(self.chat_id);
    }
}

impl Drop for OwnerSubscription {
    fn drop(&mut self) {
        self.hubs.unsubscribe_owner(self.owner_id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    /// A round whose read waits while the hub relays on: the read returns the versions of
    /// its own moment, and the hub has relayed them by the time the read answers.
    async fn round_while_relaying(
        audit: &mut Audit,
        chat: Uuid,
        relayed: &AtomicI64,
        database: i64,
    ) -> Vec<(Uuid, i64, i64)> {
        audit
            .round(
                vec![chat],
                |_| async {
                    // The hub relays up to one notice short of the database meanwhile (the
                    // last notice is still in flight when the read answers).
                    relayed.store(database - 1, Ordering::Relaxed);
                    Ok(vec![(chat, database)])
                },
                |_| Some(relayed.load(Ordering::Relaxed)),
            )
            .await
            .expect("a round")
    }

    #[tokio::test]
    async fn a_hub_that_keeps_up_while_the_audit_waits_is_not_resynced() {
        let chat = Uuid::new_v4();
        let relayed = AtomicI64::new(4);
        let mut audit = Audit::default();
        // Every round finds the chat a notice behind (its last notice in flight), but past
        // the version it was behind in the round before: never a resync. Comparing the
        // relayed version taken before the read (4, then 9, …) with the database's of after
        // it (10, 20, …) resynced it in the second round.
        for database in [10, 20, 30, 40] {
            assert!(round_while_relaying(&mut audit, chat, &relayed, database)
                .await
                .is_empty());
        }
    }

    #[tokio::test]
    async fn a_hub_that_stays_behind_is_resynced_in_the_second_round() {
        let chat = Uuid::new_v4();
        let stuck = AtomicI64::new(7);
        let mut audit = Audit::default();
        let read = |version: i64| move |_| async move { Ok(vec![(chat, version)]) };
        let relayed = |_: &Uuid| Some(stuck.load(Ordering::Relaxed));
        assert!(audit
            .round(vec![chat], read(9), relayed)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            audit.round(vec![chat], read(9), relayed).await.unwrap(),
            vec![(chat, 7, 9)]
        );
        // Caught up: nothing, and nothing remembered.
        stuck.store(9, Ordering::Relaxed);
        assert!(audit
            .round(vec![chat], read(9), relayed)
            .await
            .unwrap()
            .is_empty());
        assert!(audit.behind.is_empty());
        // A retired hub is skipped.
        let gone = |_: &Uuid| None;
        assert!(audit
            .round(vec![chat], read(12), gone)
            .await
            .unwrap()
            .is_empty());
    }
}
