//! Retention: root chats idle for `--archive-inactive-after-days` are archived with their whole
//! tree, a few per recovery sweep; ephemeral chats (`/v1` `store: false` responses and Chat
//! Completions requests) are purged once idle for their `purge_after_s`.
//!
//! Locks in the API's order (`chatd_api::store::tree`): the owner's `users` row first
//! (`SKIP LOCKED`: an owner busy with a tree change is passed over until the next sweep), then
//! the tree's chat rows in id order; the tree is rechecked under those locks, so a chat that
//! became busy meanwhile keeps its whole tree unarchived.

use chatd_shared::db::sql::Sql;
use uuid::Uuid;

use chatd_shared::bump_chat_version;
use chatd_shared::domain::ChatStatus;
use chatd_shared::pubsub::{ChatChange, OwnerEventKind};

/// Roots looked at per sweep.
const BATCH: i64 = 20;

/// Archives up to [`BATCH`] idle trees; returns the hints to publish.
pub async fn archive_inactive(
    client: &mut deadpool_postgres::Client,
    days: u32,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let days = days.min(i32::MAX as u32) as i32;
    let candidates = client
        .rows(
            "SELECT id, owner_id FROM chats WHERE parent_chat_id IS NULL AND NOT archived \
             AND NOT deleted AND status IN ('waiting', 'error') \
             AND updated_at < now() - make_interval(days => $1) ORDER BY updated_at LIMIT $2",
            &[&days, &BATCH],
        )
        .await?;
    let mut notices = Vec::new();
    for candidate in &candidates {
        let (root, owner): (Uuid, Uuid) = (candidate.get(0), candidate.get(1));
        let transaction = client.transaction().await?;
        let owner_locked = transaction
            .row_opt(
                "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED",
                &[&owner],
            )
            .await?;
        if owner_locked.is_none() {
            continue; // a tree change of this owner is under way: next sweep
        }
        let tree = transaction
            .rows(
                "SELECT id, status, updated_at < now() - make_interval(days => $2) \
                 FROM chats WHERE (id = $1 OR root_chat_id = $1) AND NOT deleted \
                 ORDER BY id FOR UPDATE",
                &[&root, &days],
            )
            .await?;
        let root_still_idle = tree
            .iter()
            .any(|row| row.get::<_, Uuid>(0) == root && row.get::<_, bool>(2));
        let busy = tree
            .iter()
            .any(|row| ChatStatus::parse(row.get(1)).is_none_or(|status| status.is_busy()));
        if !root_still_idle || busy {
            continue;
        }
        let archived = transaction
            .rows(
                concat!(
                    "UPDATE chats c SET archived = true, pin_order = 0, ",
                    bump_chat_version!(),
                    " WHERE (c.id = $1 OR c.root_chat_id = $1) AND NOT c.archived \
                     AND NOT c.deleted \
                     RETURNING c.id, c.owner_id, c.version, c.status, c.attempt, \
                     (SELECT o.pin_order FROM chats o WHERE o.id = c.id)"
                ),
                &[&root],
            )
            .await?;
        let mut changes: Vec<ChatChange> = archived.iter().map(change_of).collect();
        for change in &mut changes {
            change.owner_event = OwnerEventKind::Archived;
        }
        if archived.iter().any(|row| row.get::<_, i32>(5) > 0) {
            // It was pinned: the owner's other pins close the gap.
            let moved = transaction
                .rows(
                    "UPDATE chats c SET pin_order = r.n, version = c.version + 1 FROM ( \
                         SELECT id, row_number() OVER (ORDER BY pin_order, id)::int AS n \
                         FROM chats WHERE owner_id = $1 AND pin_order > 0) r \
                     WHERE c.id = r.id AND c.pin_order <> r.n \
                     RETURNING c.id, c.owner_id, c.version, c.status, c.attempt",
                    &[&owner],
                )
                .await?;
            changes.extend(moved.iter().map(change_of));
        }
        transaction.commit().await?;
        tracing::info!(chat_id = %root, chats = archived.len(), days, "archived an inactive chat");
        metrics::counter!("chatd_chats_auto_archived_total").increment(archived.len() as u64);
        notices.extend(changes.iter().flat_map(ChatChange::notices));
    }
    Ok(notices)
}

/// The change of a row `(id, owner_id, version, status, attempt, …)`.
fn change_of(row: &tokio_postgres::Row) -> ChatChange {
    let status = ChatStatus::parse(row.get(3)).unwrap_or(ChatStatus::Waiting);
    ChatChange::new(row.get(0), row.get(1), row.get(2), status, row.get(4)).with_other()
}

/// Ephemeral chats idle for their `purge_after_s`: deleted (hidden from every route, as
/// `DELETE /chats/{id}`) with their contents emptied and their queue and file links dropped;
/// usage and cost stay on the rows, so spend still counts them. Up to 100 per sweep; returns
/// the hints to publish (open streams end).
pub async fn purge_ephemeral(
    client: &deadpool_postgres::Client,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client
        .rows(
            concat!(
                "WITH purged AS ( \
                     UPDATE chats c SET deleted = true, pin_order = 0, title = '', ",
                bump_chat_version!(),
                " WHERE c.id IN (SELECT id FROM chats WHERE purge_after_s IS NOT NULL \
                     AND NOT deleted AND status IN ('waiting', 'error', 'requires_action') \
                     AND updated_at < now() - make_interval(secs => purge_after_s) \
                     ORDER BY updated_at LIMIT 100 FOR UPDATE SKIP LOCKED) \
                     AND c.status IN ('waiting', 'error', 'requires_action') \
                     RETURNING c.id, c.owner_id, c.version, c.status, c.attempt), \
                 emptied AS (UPDATE chat_messages m SET content = '[]' FROM purged \
                     WHERE m.chat_id = purged.id RETURNING 1), \
                 unqueued AS (DELETE FROM chat_queued_messages q USING purged \
                     WHERE q.chat_id = purged.id RETURNING 1), \
                 unlinked AS (DELETE FROM chat_files f USING purged \
                     WHERE f.chat_id = purged.id RETURNING 1) \
                 SELECT * FROM purged"
            ),
            &[],
        )
        .await?;
    if !rows.is_empty() {
        tracing::info!(chats = rows.len(), "purged ephemeral chats");
        metrics::counter!("chatd_chats_purged_total").increment(rows.len() as u64);
    }
    let mut changes: Vec<ChatChange> = rows.iter().map(change_of).collect();
    for change in &mut changes {
        change.owner_event = OwnerEventKind::Deleted;
    }
    Ok(changes.iter().flat_map(ChatChange::notices).collect())
}
