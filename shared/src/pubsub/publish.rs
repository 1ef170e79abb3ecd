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
