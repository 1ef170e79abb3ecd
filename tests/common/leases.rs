//! A chat leased by a worker the test plays, and what store-level commit tests share: a
//! session holding a chat's row lock, the rows as stored.

use serde_json::Value;
use uuid::Uuid;

use chatd_worker::store::{acquire, Lease};

use super::cluster::{create_chat, Cluster};

/// A test session holding a chat's row lock until `release`.
pub struct RowLock {
    client: tokio_postgres::Client,
}

impl RowLock {
    pub async fn take(cluster: &Cluster, chat_id: Uuid) -> RowLock {
        let client = cluster.sql().await;
        client.batch_execute("BEGIN").await.expect("begin");
        client
            .query_one("SELECT 1 FROM chats WHERE id = $1 FOR UPDATE", &[&chat_id])
            .await
            .expect("lock the chat row");
        RowLock { client }
    }

    pub async fn release(self) {
        self.client.batch_execute("COMMIT").await.expect("commit");
    }
}

/// A chat (first message "hello") claimed by a worker this test plays: a pooled connection
/// set up as the worker's are, and the lease its commits are fenced by.
pub async fn leased_chat(
    cluster: &Cluster,
) -> (String, Uuid, chatd_shared::db::pool::PgClient, Lease) {
    let (chat_id, _) = create_chat(&cluster.api(0), "hello").await;
    let chat_uuid = Uuid::parse_str(&chat_id).expect("uuid");
    let pool = chatd_shared::db::pool::build_pool(
        &cluster.db.url,
        "test-worker",
        1,
        Default::default(),
        &cluster.db.url,
    )
    .expect("pool");
    let client = pool.get().await.expect("connection");
    let worker_id = Uuid::new_v4();
    let claims = acquire(&client, worker_id, 10, 50, std::time::Duration::ZERO)
        .await
        .expect("acquire")
        .claims;
    assert_eq!(claims.len(), 1);
    let lease = Lease {
        chat_id: chat_uuid,
        worker_id,
        attempt: claims[0].attempt,
    };
    (chat_id, chat_uuid, client, lease)
}

/// The rows `ids` as stored, encoded as the change hints carry them.
pub async fn stored_rows(sql: &tokio_postgres::Client, ids: &[i64]) -> Vec<Value> {
    use chatd_shared::db::rows::MessageRow;
    let rows = sql
        .query(
            &format!(
                "SELECT {} FROM chat_messages m WHERE m.id = ANY($1) ORDER BY m.id",
                MessageRow::COLUMNS
            ),
            &[&ids],
        )
        .await
        .expect("read the rows");
    rows.iter()
        .map(|row| serde_json::to_value(MessageRow::from_row(row)).expect("encode"))
        .collect()
}
