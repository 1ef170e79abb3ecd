//! State transitions performed by the API, one function per transition.
//!
//! Every transition runs in one transaction that first locks the chat row, re-checks the
//! state, writes, bumps `chats.version`, commits — and only then publishes notifications
//! (`Transition::publish`).

pub use chatd_shared::db::models as admin;
pub mod chats;
pub mod content;
pub mod edit;
pub mod files;
pub mod reads;
pub mod send;
pub mod send_batch;
pub mod spend;
pub mod tool_results;
pub mod tree;
pub mod users;

use chatd_shared::db::rows::ChatRow;
use chatd_shared::pubsub::ChatChange;

/// A committed transition: the chat row after it (what the route answers with) and what
/// changed (the hints `publish` sends after the commit).
pub struct Transition {
    pub chat: ChatRow,
    pub change: ChatChange,
    /// Other chats the same transaction changed (a tree archived or deleted, pins shifted).
    pub others: Vec<ChatChange>,
    /// Nothing was written (`chat` is as it was): nothing to publish for it.
    pub unchanged: bool,
}

impl Transition {
    /// A change of `chat`; the chat lists see `updated` unless told otherwise.
    pub fn new(chat: ChatRow) -> Transition {
        let change = ChatChange::of_row(&chat);
        Transition {
            chat,
            change,
            others: Vec::new(),
            unchanged: false,
        }
    }

    /// Publishes the hints for this committed change through the replica's publisher (a
    /// failure is logged: re-reads repair a lost hint).
    pub async fn publish(
        &self,
        publisher: &chatd_shared::pubsub::Publisher,
        client: &deadpool_postgres::ClientWrapper,
    ) {
        let main = (!self.unchanged).then_some(&self.change);
        let notices: Vec<(String, String)> = main
            .into_iter()
            .chain(&self.others)
            .flat_map(ChatChange::notices)
            .collect();
        publisher.publish(client, notices).await;
    }
}

/// `UPDATE chats c SET <assignments>, <bump_chat_version!()> WHERE c.id = $1 RETURNING
/// <ChatRow columns>`.
pub fn update_chat_sql(assignments: &str) -> String {
    format!(
        concat!(
            "UPDATE chats c SET {assignments}, ",
            chatd_shared::bump_chat_version!(),
            " WHERE c.id = $1 RETURNING {columns}"
        ),
        assignments = assignments,
        columns = ChatRow::COLUMNS
    )
}
