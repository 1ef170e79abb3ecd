//! The API's batched send (`api/src/store/send_batch.rs`): one statement sends to many idle
//! chats, and leaves every other send — a busy, queued, archived, locked or other owner's
//! chat, a second send to a chat already in the batch — to the full transition, writing
//! nothing for it.

mod common;

use std::collections::HashMap;

use chatd_api::store::send_batch::{send_batch, Batched, IdleSend};
use chatd_shared::db::pool::{build_pool, Pooler};
use chatd_shared::domain::{ChatStatus, Role};
use common::pg::test_database;
use serde_json::{json, Value};
use uuid::Uuid;

fn text(words: &str) -> Value {
    json!([{"type": "text", "text": words}])
}

/// Inserts a chat of `owner` with `status` and the given flags; returns its id.
async fn chat(
    client: &tokio_postgres::Client,
    owner: Uuid,
    status: &str,
    archived: bool,
) -> anyhow::Result<Uuid> {
    Ok(client
        .query_one(
            // A running chat is leased (`chats_check`).
            "INSERT INTO chats (owner_id, status, archived, worker_id) \
             VALUES ($1, $2, $3, CASE WHEN $2 = 'running' THEN gen_random_uuid() END) \
             RETURNING id",
            &[&owner, &status, &archived],
        )
        .await?
        .get(0))
}

async fn user(client: &tokio_postgres::Client, name: &str) -> anyhow::Result<Uuid> {
    Ok(client
        .query_one(
            "INSERT INTO users (username) VALUES ($1) RETURNING id",
            &[&name],
        )
        .await?
        .get(0))
}

/// Each chat's status and its messages' (role, content, created_by), oldest first.
async fn state_of(
    client: &tokio_postgres::Client,
    chat_id: Uuid,
) -> anyhow::Result<(String, Vec<(String, Value, Option<Uuid>)>)> {
    let status: String = client
        .query_one("SELECT status FROM chats WHERE id = $1", &[&chat_id])
        .await?
        .get(0);
    let messages = client
        .query(
            "SELECT role, content, created_by FROM chat_messages WHERE chat_id = $1 ORDER BY id",
            &[&chat_id],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    Ok((status, messages))
}

#[tokio::test]
async fn one_statement_sends_to_every_idle_chat_and_leaves_the_rest_untouched() -> anyhow::Result<()>
{
    let database = test_database().await;
    let admin = database.connect().await?;
    let ann = user(&admin, "ann").await?;
    let bob = user(&admin, "bob").await?;
    let idle = [
        chat(&admin, ann, "waiting", false).await?,
        chat(&admin, ann, "error", false).await?,
        chat(&admin, ann, "waiting", false).await?,
    ];
    let running = chat(&admin, ann, "running", false).await?;
    let bobs = chat(&admin, bob, "waiting", false).await?;
    let archived = chat(&admin, ann, "waiting", true).await?;
    let queued = chat(&admin, ann, "waiting", false).await?;
    admin
        .execute(
            "INSERT INTO chat_queued_messages (chat_id, content, position) VALUES ($1, $2, 1)",
            &[&queued, &text("waiting in the queue")],
        )
        .await?;
    let locked = chat(&admin, ann, "waiting", false).await?;
    // Another transaction holds `locked`: the batch must neither wait for it nor write it.
    let mut holder = database.connect().await?;
    let holding = holder.transaction().await?;
    holding
        .execute("SELECT 1 FROM chats WHERE id = $1 FOR UPDATE", &[&locked])
        .await?;

    let send = |chat_id: Uuid, owner_id: Uuid, words: &str| IdleSend {
        chat_id,
        owner_id,
        content: text(words),
    };
    let sends = vec![
        send(idle[0], ann, "first to idle 0"),
        send(idle[1], ann, "to idle 1 (error)"),
        send(idle[0], ann, "second to idle 0"),
        send(running, ann, "to a running chat"),
        send(bobs, ann, "to bob's chat, as ann"),
        send(archived, ann, "to an archived chat"),
        send(queued, ann, "behind a queue"),
        send(locked, ann, "to a locked chat"),
        send(idle[2], ann, "to idle 2"),
    ];
    let pool = build_pool(&database.url, "chatd-test", 1, Pooler::None, &database.url)?;
    let client = pool.get().await?;
    let versions: HashMap<Uuid, i64> = admin
        .query("SELECT id, version FROM chats", &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let outcomes = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        send_batch(&*client, &sends),
    )
    .await
    .expect("the batch waited for a locked chat");
    holding.rollback().await?;

    assert_eq!(outcomes.len(), sends.len());
    let sent_to = [0, 1, 8];
    for (index, (send, outcome)) in sends.iter().zip(&outcomes).enumerate() {
        match outcome {
            Batched::Sent(sent) if sent_to.contains(&index) => {
                let (chat, message) = &**sent;
                assert_eq!(chat.id, send.chat_id);
                assert_eq!(chat.status, ChatStatus::Pending);
                assert_eq!(
                    chat.version,
                    versions[&send.chat_id] + 1,
                    "the version moves"
                );
                assert_eq!(message.chat_id, send.chat_id);
                assert_eq!(message.role, Role::User);
                assert_eq!(message.content, send.content);
            }
            Batched::NotSent if !sent_to.contains(&index) => {}
            other => panic!("send {index} ({}): {other:?}", send.content),
        }
    }
    // What the statement returned is what it stored; every other chat is as it was.
    for (index, chat_id) in [(0, idle[0]), (1, idle[1]), (8, idle[2])] {
        let (status, messages) = state_of(&admin, chat_id).await?;
        assert_eq!(status, "pending");
        assert_eq!(
            messages,
            vec![("user".into(), sends[index].content.clone(), Some(ann))],
            "exactly the first send to the chat"
        );
    }
    for (chat_id, status) in [
        (running, "running"),
        (bobs, "waiting"),
        (archived, "waiting"),
        (queued, "waiting"),
        (locked, "waiting"),
    ] {
        assert_eq!(state_of(&admin, chat_id).await?, (status.into(), vec![]));
    }
    Ok(())
}

#[tokio::test]
async fn a_batch_postgresql_refuses_writes_nothing_and_leaves_every_send_to_the_transition(
) -> anyhow::Result<()> {
    let database = test_database().await;
    let admin = database.connect().await?;
    let ann = user(&admin, "ann").await?;
    let good = chat(&admin, ann, "waiting", false).await?;
    let other = chat(&admin, ann, "waiting", false).await?;
    let pool = build_pool(&database.url, "chatd-test", 1, Pooler::None, &database.url)?;
    let client = pool.get().await?;
    // `jsonb` cannot hold U+0000 in a string: PostgreSQL refuses the whole statement.
    let sends = vec![
        IdleSend {
            chat_id: good,
            owner_id: ann,
            content: text("fine"),
        },
        IdleSend {
            chat_id: other,
            owner_id: ann,
            content: text("nul \u{0}"),
        },
    ];
    let outcomes = send_batch(&*client, &sends).await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, Batched::NotSent)),
        "{outcomes:?}"
    );
    for chat_id in [good, other] {
        assert_eq!(state_of(&admin, chat_id).await?, ("waiting".into(), vec![]));
    }
    Ok(())
}
