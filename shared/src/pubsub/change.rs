//! "What changed in a chat": the one type every writer — the API's transitions, the worker's
//! commits, recovery, titles — builds after its transaction committed, and the one place that
//! turns it into notifications.
//!
//! Rules in one place:
//! - a change always goes to the chat's bucket channel (`ChangeNotice`, versioned) and to the
//!   owner's channel (`OwnerNotice`, for chat lists);
//! - a chat that became `pending` also wakes the workers;
//! - an interrupt or cancel also goes to the owning worker's control channel;
//! - new messages are embedded in the notice only when it then needs no database read on the
//!   receiving replica (no queue or other change flagged) and they fit the payload; otherwise
//!   the receiver re-reads, so embedding them would be wasted bytes.

use uuid::Uuid;

use super::notices::{
    chat_channel, owner_channel, to_payload, worker_channel, ChangeNotice, ChatNotice, ControlKind,
    ControlNotice, OwnerEventKind, OwnerNotice, WAKE_CHANNEL,
};
use crate::db::rows::{ChatRow, MessageRow};
use crate::domain::ChatStatus;

/// One committed change of one chat. Build it with [`ChatChange::new`] (or
/// [`ChatChange::of_row`]) and the `with_*` methods, publish [`ChatChange::notices`] after the
/// commit.
#[derive(Debug, Clone)]
pub struct ChatChange {
    pub chat_id: Uuid,
    pub owner_id: Uuid,
    /// `chats.version`, `status` and `attempt` after the change.
    pub version: i64,
    pub status: ChatStatus,
    pub attempt: i32,
    /// The visible history changed (messages inserted).
    pub messages: bool,
    /// The messages inserted, oldest first, when the writer has them.
    pub new_messages: Vec<MessageRow>,
    /// The queue changed.
    pub queue: bool,
    /// Anything else readers show changed (title, labels, `last_error`, archived).
    pub other: bool,
    /// The new title, when it is the only other change ([`ChatChange::with_title`]).
    pub title: Option<String>,
    /// `other` stands for more than the title: receivers must re-read.
    other_than_title: bool,
    /// The last seq the attempt published before this change (worker commits).
    pub last_seq: Option<i64>,
    /// How the owner's chat lists hear of it.
    pub owner_event: OwnerEventKind,
    /// The worker to signal.
    pub control: Option<(Uuid, ControlKind)>,
}

impl ChatChange {
    /// A change of status/version only (the owner's lists see `updated`).
    pub fn new(
        chat_id: Uuid,
        owner_id: Uuid,
        version: i64,
        status: ChatStatus,
        attempt: i32,
    ) -> ChatChange {
        ChatChange {
            chat_id,
            owner_id,
            version,
            status,
            attempt,
            messages: false,
            new_messages: Vec::new(),
            queue: false,
            other: false,
            title: None,
            other_than_title: false,
            last_seq: None,
            owner_event: OwnerEventKind::Updated,
            control: None,
        }
    }

    /// A status-only transition (a claim, a renewed attempt, a released lease): the owner's
    /// lists see `status`, and API replicas relay it without a read.
    pub fn status_only(
        chat_id: Uuid,
        owner_id: Uuid,
        version: i64,
        status: ChatStatus,
        attempt: i32,
    ) -> ChatChange {
        ChatChange::new(chat_id, owner_id, version, status, attempt)
            .with_owner_event(OwnerEventKind::Status)
    }

    /// A change whose result is `chat` (the row as the changing statement returned it).
    pub fn of_row(chat: &ChatRow) -> ChatChange {
        ChatChange::new(
            chat.id,
            chat.owner_id,
            chat.version,
            chat.status,
            chat.attempt,
        )
    }

    /// `rows` were inserted (none: the history changed in a way receivers must re-read).
    pub fn with_messages(mut self, rows: impl IntoIterator<Item = MessageRow>) -> ChatChange {
        self.messages = true;
        self.new_messages.extend(rows);
        self
    }

    pub fn with_queue(mut self) -> ChatChange {
        self.queue = true;
        self
    }

    pub fn with_other(mut self) -> ChatChange {
        self.other = true;
        self.other_than_title = true;
        self
    }

    /// The title changed, and nothing else `other` would stand for: receivers take the
    /// title from the notice instead of re-reading the chat.
    pub fn with_title(mut self, title: impl Into<String>) -> ChatChange {
        self.other = true;
        self.title = Some(title.into());
        self
    }

    pub fn with_last_seq(mut self, last_seq: Option<i64>) -> ChatChange {
        self.last_seq = last_seq;
        self
    }

    pub fn with_owner_event(mut self, kind: OwnerEventKind) -> ChatChange {
        self.owner_event = kind;
        self
    }

    /// Signal `worker` (when there is one) on its control channel.
    pub fn with_control(mut self, worker: Option<Uuid>, kind: ControlKind) -> ChatChange {
        self.control = worker.map(|worker| (worker, kind));
        self
    }

    /// The notice on the chat's bucket channel.
    pub fn change_notice(&self) -> ChangeNotice {
        let notice = ChangeNotice {
            chat_id: self.chat_id,
            version: self.version,
            status: self.status,
            attempt: self.attempt,
            messages: self.messages,
            queue: self.queue,
            other: self.other,
            title: self.title.clone().filter(|_| !self.other_than_title),
            new_messages: None,
            last_seq: self.last_seq,
        };
        if self.messages && !self.new_messages.is_empty() && !self.queue && !self.other {
            notice.embed_messages(self.new_messages.clone())
        } else {
            notice
        }
    }

    /// Every `(channel, payload)` this change is announced with.
    pub fn notices(&self) -> Vec<(String, String)> {
        let mut notices = vec![
            (
                chat_channel(self.chat_id),
                to_payload(&ChatNotice::Change(self.change_notice())),
            ),
            (
                owner_channel(self.owner_id),
                to_payload(&OwnerNotice {
                    kind: self.owner_event,
                    chat_id: self.chat_id,
                    version: self.version,
                }),
            ),
        ];
        if self.status == ChatStatus::Pending {
            notices.push((WAKE_CHANNEL.to_string(), self.chat_id.to_string()));
        }
        if let Some((worker_id, kind)) = self.control {
            notices.push((
                worker_channel(worker_id),
                to_payload(&ControlNotice {
                    chat_id: self.chat_id,
                    version: self.version,
                    kind,
                }),
            ));
        }
        notices
    }

    /// Publishes [`ChatChange::notices`]. Failure is logged, not returned: the change is
    /// durable, and re-reads repair a lost hint.
    pub async fn publish(&self, client: &deadpool_postgres::ClientWrapper) {
        if let Err(error) = super::publish(client, &self.notices()).await {
            tracing::warn!(chat_id = %self.chat_id, error = %error, "publish change hints");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(id: i64) -> MessageRow {
        serde_json::from_value(json!({
            "id": id, "chat_id": Uuid::nil(), "role": "user",
            "content": [{"type": "text", "text": "hi"}],
            "created_at": "2026-11-30T10:00:00Z", "attempt": 0
        }))
        .expect("a message row")
    }

    fn decode(notices: &[(String, String)]) -> ChangeNotice {
        match serde_json::from_str(&notices[0].1).expect("a chat notice") {
            ChatNotice::Change(change) => change,
            ChatNotice::Frames { .. } => panic!("not a change"),
        }
    }

    #[test]
    fn messages_are_embedded_only_when_the_receiver_needs_no_read() {
        let owner = Uuid::new_v4();
        let base = ChatChange::new(Uuid::nil(), owner, 3, ChatStatus::Pending, 1);
        let plain = decode(&base.clone().with_messages([message(1)]).notices());
        assert!(plain.messages);
        assert_eq!(plain.new_messages.map(|rows| rows.len()), Some(1));
        // A queue change makes the receiver re-read: no embedding.
        let queued = decode(
            &base
                .clone()
                .with_messages([message(1)])
                .with_queue()
                .notices(),
        );
        assert!(queued.messages && queued.queue && queued.new_messages.is_none());
        let other = decode(
            &base
                .clone()
                .with_messages([message(1)])
                .with_other()
                .notices(),
        );
        assert!(other.new_messages.is_none());
        // Messages flagged without rows: a re-read.
        let reread = decode(&base.clone().with_messages([]).notices());
        assert!(reread.messages && reread.new_messages.is_none());
    }

    #[test]
    fn a_title_travels_in_the_notice_unless_something_else_changed_too() {
        let base = ChatChange::new(Uuid::nil(), Uuid::nil(), 5, ChatStatus::Running, 1);
        let titled = decode(&base.clone().with_title("Paris trip").notices());
        // `other` stays set: a build that does not know `title` re-reads, as before.
        assert!(titled.other);
        assert_eq!(titled.title.as_deref(), Some("Paris trip"));
        assert!(titled.is_complete());
        for more in [
            base.clone().with_title("Paris trip").with_other(),
            base.clone().with_other().with_title("Paris trip"),
        ] {
            let notice = decode(&more.notices());
            assert!(notice.other && notice.title.is_none() && !notice.is_complete());
        }
        assert!(!decode(&base.clone().with_queue().notices()).is_complete());
        assert!(decode(&base.clone().with_messages([message(1)]).notices()).is_complete());
        assert!(!decode(&base.with_messages([]).notices()).is_complete());
    }

    #[test]
    fn pending_wakes_workers_and_control_reaches_the_worker() {
        let worker = Uuid::new_v4();
        let change = ChatChange::new(Uuid::nil(), Uuid::nil(), 4, ChatStatus::Pending, 1)
            .with_control(Some(worker), ControlKind::Interrupt)
            .with_owner_event(OwnerEventKind::Created);
        let channels: Vec<String> = change.notices().into_iter().map(|(c, _)| c).collect();
        assert_eq!(
            channels,
            [
                chat_channel(Uuid::nil()),
                owner_channel(Uuid::nil()),
                WAKE_CHANNEL.to_string(),
                worker_channel(worker)
            ]
        );
        let waiting = ChatChange::new(Uuid::nil(), Uuid::nil(), 5, ChatStatus::Waiting, 1)
            .with_control(None, ControlKind::Interrupt);
        assert_eq!(waiting.notices().len(), 2);
    }
}
