//! State transitions performed by the API (DESIGN.md section 2), one function per transition.
//!
//! Every transition runs in one transaction that first locks the chat row, re-checks the
//! state, writes, bumps `chats.version`, commits — and only then publishes notifications
//! (`Transition::publish`).

pub mod admin;
pub mod chats;
pub mod content;
pub mod send;
pub mod spend;
pub mod tool_results;

use chatd_shared::db::rows::{ChatRow, MessageRow};
use chatd_shared::domain::ChatStatus;
use chatd_shared::pubsub::{
    chat_channel, owner_channel, publish, to_payload, worker_channel, ChangeNotice, ChatNotice,
    ControlKind, ControlNotice, OwnerEventKind, OwnerNotice, WAKE_CHANNEL,
};
use uuid::Uuid;

/// What a committed transition changed, so the right hints go out after the commit.
pub struct Transition {
    /// The chat row after the change.
    pub chat: ChatRow,
    pub messages: bool,
    /// Visible messages this change inserted, carried in the hint when they fit.
    pub new_messages: Vec<MessageRow>,
    pub queue: bool,
    pub other: bool,
    pub owner_event: Option<OwnerEventKind>,
    /// The worker to signal (running → interrupting).
    pub control: Option<(Uuid, ControlKind)>,
}

impl Transition {
    pub fn new(chat: ChatRow) -> Transition {
        Transition {
            chat,
            messages: false,
            new_messages: Vec::new(),
            queue: false,
            other: false,
            owner_event: None,
            control: None,
        }
    }

    fn notices(&self) -> Vec<(String, String)> {
        let chat = &self.chat;
        let mut change = ChangeNotice {
            chat_id: chat.id,
            version: chat.version,
            status: chat.status,
            attempt: chat.attempt,
            messages: self.messages,
            queue: self.queue,
            other: self.other,
            new_messages: None,
            last_seq: None,
        };
        if self.messages && !self.new_messages.is_empty() {
            change = change.embed_messages(self.new_messages.clone());
        }
        let mut notices = vec![(
            chat_channel(chat.id),
            to_payload(&ChatNotice::Change(change)),
        )];
        let owner_kind = self.owner_event.unwrap_or(OwnerEventKind::Updated);
        notices.push((
            owner_channel(chat.owner_id),
            to_payload(&OwnerNotice {
                kind: owner_kind,
                chat_id: chat.id,
                version: chat.version,
            }),
        ));
        if chat.status == ChatStatus::Pending {
            notices.push((WAKE_CHANNEL.to_string(), chat.id.to_string()));
        }
        if let Some((worker_id, kind)) = self.control {
            notices.push((
                worker_channel(worker_id),
                to_payload(&ControlNotice {
                    chat_id: chat.id,
                    version: chat.version,
                    kind,
                }),
            ));
        }
        notices
    }

    /// Publishes the hints for this committed change. Failure is logged, not returned: the
    /// change is durable, and pollers/re-reads repair a lost hint.
    pub async fn publish(&self, client: &deadpool_postgres::Client) {
        if let Err(error) = publish(client, &self.notices()).await {
            tracing::warn!(chat_id = %self.chat.id, error = %error, "publish change hints");
        }
    }
}

/// `UPDATE chats c SET <assignments>, version = version + 1, updated_at = now() WHERE c.id = $1
/// RETURNING <ChatRow columns>`.
pub fn update_chat_sql(assignments: &str) -> String {
    format!(
        "UPDATE chats c SET {assignments}, version = c.version + 1, updated_at = now() \
         WHERE c.id = $1 RETURNING {}",
        ChatRow::COLUMNS
    )
}
