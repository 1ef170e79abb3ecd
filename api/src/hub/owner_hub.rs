//! The task behind one user's chat-list hub (`GET /chats/watch`).

use chatd_shared::db::sql::Sql;
use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::reads;
use chatd_shared::db::pool::PgPool;
use chatd_shared::db::rows::ChatRow;
use chatd_shared::pubsub::{OwnerEventKind, OwnerNotice};

use super::HubInput;

/// A chat-list event: `{kind, chat}`.
#[derive(Debug)]
pub struct OwnerEvent {
    pub kind: OwnerEventKind,
    pub chat: ChatRow,
}

pub struct OwnerHubTask {
    owner_id: Uuid,
    pool: PgPool,
    sender: broadcast::Sender<Arc<OwnerEvent>>,
    /// Newest version relayed per chat (drops late and duplicate notices).
    versions: HashMap<Uuid, i64>,
    /// Database time of the newest change relayed (a resync reads from there).
    high_water: Option<OffsetDateTime>,
}

impl OwnerHubTask {
    pub fn new(owner_id: Uuid, pool: PgPool, sender: broadcast::Sender<Arc<OwnerEvent>>) -> Self {
        OwnerHubTask {
            owner_id,
            pool,
            sender,
            versions: HashMap::new(),
            high_water: Some(OffsetDateTime::now_utc()),
        }
    }

    pub async fn run(mut self, mut inbox: mpsc::Receiver<HubInput>, cancel: CancellationToken) {
        loop {
            let input = tokio::select! {
                _ = cancel.cancelled() => return,
                input = inbox.recv() => match input { Some(input) => input, None => return },
            };
            let result = match input {
                HubInput::Notification(payload) => {
                    match serde_json::from_str::<OwnerNotice>(&payload) {
                        Ok(notice) => self.on_notice(notice).await,
                        Err(_) => Ok(()),
                    }
                }
                HubInput::Resync => self.resync().await,
                // Chat-channel inputs never reach an owner hub.
                HubInput::Change(_) | HubInput::Frame(_) => Ok(()),
            };
            if let Err(error) = result {
                tracing::warn!(owner_id = %self.owner_id, error = format!("{error:#}"), "watch hub update");
            }
        }
    }

    fn is_new(&mut self, chat: &ChatRow) -> bool {
        let known = self.versions.get(&chat.id).copied().unwrap_or(0);
        if chat.version <= known {
            return false;
        }
        if self.versions.len() > 10_000 {
            self.versions.clear();
        }
        self.versions.insert(chat.id, chat.version);
        if self.high_water.is_none_or(|mark| chat.updated_at > mark) {
            self.high_water = Some(chat.updated_at);
        }
        true
    }

    async fn on_notice(&mut self, notice: OwnerNotice) -> anyhow::Result<()> {
        if self.versions.get(&notice.chat_id).copied().unwrap_or(0) >= notice.version {
            return Ok(());
        }
        let client = self.pool.get().await?;
        let chat = reads::listed_chat_by_id(&client, notice.chat_id).await?;
        drop(client);
        if let Some(chat) = chat.filter(|chat| chat.owner_id == self.owner_id) {
            if self.is_new(&chat) {
                let _ = self.sender.send(Arc::new(OwnerEvent {
                    kind: notice.kind,
                    chat,
                }));
            }
        }
        Ok(())
    }

    /// After a listener reconnect: relay every chat changed since the last relayed change.
    async fn resync(&mut self) -> anyhow::Result<()> {
        let since = self
            .high_water
            .map(|mark| mark - time::Duration::seconds(5))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {} FROM chats c WHERE c.owner_id = $1 AND c.updated_at >= $2 AND NOT c.hidden \
             ORDER BY c.updated_at LIMIT 1000",
            ChatRow::COLUMNS
        );
        let rows = client.rows(&sql, &[&self.owner_id, &since]).await?;
        drop(client);
        for row in rows {
            let chat = ChatRow::from_row(&row);
            if self.is_new(&chat) {
                let _ = self.sender.send(Arc::new(OwnerEvent {
                    kind: OwnerEventKind::Updated,
                    chat,
                }));
            }
        }
        Ok(())
    }
}
