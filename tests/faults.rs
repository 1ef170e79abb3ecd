//! Worker faults with real processes (R1, R2, R13, I2, I4, I6): a SIGKILLed worker's chat
//! completes elsewhere with `attempt_reset`; a paused worker comes back fenced out; SIGTERM
//! releases unfinished turns; a stale lease holder cannot write.

mod common;

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use chatd_client::content_text;
use chatd_mock_llm::reply_text;
use chatd_shared::domain::Role;
use chatd_worker::store::{commit, CommitOutcome, Lease, NewRow, TurnEnd};
use common::cluster::{
    assistant_texts, create_chat, directive_message, messages, wait_until, Cluster,
};
use common::sse::{assert_contiguous, Reader};

const TURN: Duration = Duration::from_secs(40);

async fn owner_after_first_parts(cluster: &Cluster, reader: &mut Reader, chat_id: &str) -> usize {
    reader
        .until(TURN, |event| {
            event.event == "message_part" && event.data["seq"].as_i64() >= Some(5)
        })
        .await;
    cluster
        .owner_worker(chat_id)
        .await
        .expect("a worker owns the running chat")
}

async fn single_answer(cluster: &Cluster, chat_id: &str) -> String {
    let stored = messages(&cluster.api(0), chat_id).await;
    let answers: Vec<_> = stored.iter().filter(|m| m["role"] == "assistant").collect();
    assert_eq!(
        answers.len(),
        1,
        "exactly one final answer (I2): {stored:?}"
    );
    content_text(&answers[0]["content"])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_chat_completes_on_the_other_worker() {
    let cluster = Cluster::start(2, 2).await;
    let message = directive_message("crash me", json!({"tokens": 150, "tokens_per_second": 50}));
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    let mut reader = Reader::open(
        &cluster.api(1),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    let owner = owner_after_first_parts(&cluster, &mut reader, &chat_id).await;

    cluster.signal_worker(owner, libc::SIGKILL);
    reader.until_turn_done(TURN).await;

    assert!(
        reader
            .seen
            .iter()
            .any(|event| event.event == "attempt_reset"),
        "clients were told to drop the dead attempt's previews"
    );
    let final_text = assert_contiguous(&reader.seen);
    let stored = single_answer(&cluster, &chat_id).await;
    assert_eq!(stored, reply_text(&message, 150));
    assert_eq!(
        final_text, stored,
        "the final attempt's deltas equal the stored text (I3)"
    );
    let survivor = cluster.owner_worker(&chat_id).await;
    assert!(survivor.is_none(), "the chat was released after the turn");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_worker_is_fenced_out_when_it_resumes() {
    let cluster = Cluster::start(1, 2).await;
    let message = directive_message("pause me", json!({"tokens": 120, "tokens_per_second": 40}));
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    let mut reader = Reader::open(
        &cluster.api(0),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    let owner = owner_after_first_parts(&cluster, &mut reader, &chat_id).await;
    let sql = cluster.sql().await;
    let chat_uuid = Uuid::parse_str(&chat_id).unwrap();
    let first_attempt: i32 = sql
        .query_one("SELECT attempt FROM chats WHERE id = $1", &[&chat_uuid])
        .await
        .unwrap()
        .get(0);

    cluster.signal_worker(owner, libc::SIGSTOP);
    // Past stale_after, the other worker takes the chat over.
    wait_until(TURN, "another worker to take the chat over", || async {
        let row = sql
            .query_one("SELECT attempt FROM chats WHERE id = $1", &[&chat_uuid])
            .await
            .ok()?;
        (row.get::<_, i32>(0) > first_attempt).then_some(())
    })
    .await;
    cluster.signal_worker(owner, libc::SIGCONT);
    reader.until_turn_done(TURN).await;
    // Give the resumed worker time to try its late writes.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(
        single_answer(&cluster, &chat_id).await,
        reply_text(&message, 120)
    );
    let stale_rows: i64 = sql
        .query_one(
            "SELECT count(*) FROM chat_messages WHERE chat_id = $1 AND attempt = $2",
            &[&chat_uuid, &first_attempt],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stale_rows, 0,
        "the fenced-out attempt wrote no message (I6)"
    );
    assert_contiguous(&reader.seen);
    assert_eq!(
        sql.query_one("SELECT status FROM chats WHERE id = $1", &[&chat_uuid])
            .await
            .unwrap()
            .get::<_, String>(0),
        "waiting"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_unfinished_turns_to_another_worker() {
    let cluster = Cluster::start(1, 2).await;
    let message = directive_message("long", json!({"tokens": 300, "tokens_per_second": 50}));
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    let mut reader = Reader::open(
        &cluster.api(0),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    let owner = owner_after_first_parts(&cluster, &mut reader, &chat_id).await;

    // The grace period (2 s) is shorter than the turn (6 s): the turn is released.
    cluster.signal_worker(owner, libc::SIGTERM);
    reader.until_turn_done(TURN).await;
    assert_eq!(
        single_answer(&cluster, &chat_id).await,
        reply_text(&message, 300)
    );
    assert!(reader
        .seen
        .iter()
        .any(|event| event.event == "attempt_reset"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_lease_holder_cannot_write() {
    let cluster = Cluster::start(1, 1).await;
    let message = directive_message("fenced", json!({"tokens": 200, "tokens_per_second": 40}));
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    let mut reader = Reader::open(
        &cluster.api(0),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    reader
        .until(TURN, |event| event.event == "message_part")
        .await;
    let chat_uuid = Uuid::parse_str(&chat_id).unwrap();
    let pool = chatd_shared::db::pool::build_pool(
        &cluster.db.url,
        "stale-writer",
        1,
        Default::default(),
        &cluster.db.url,
    )
    .unwrap();
    let mut sql = pool.get().await.expect("a pooled connection");
    let row = sql
        .query_one(
            "SELECT worker_id, attempt FROM chats WHERE id = $1",
            &[&chat_uuid],
        )
        .await
        .unwrap();
    let (worker_id, attempt): (Uuid, i32) = (row.get(0), row.get(1));
    let row = NewRow {
        role: Role::Assistant,
        content: json!([{"type": "text", "text": "stale"}]),
        model_config_id: None,
        usage: None,
        runtime_ms: None,
        provider_response_id: None,
        compressed: false,
    };
    // An older epoch of the real owner, and a stranger with the right epoch: both fenced.
    for (who, epoch) in [(worker_id, attempt - 1), (Uuid::new_v4(), attempt)] {
        // A sub-agent the stale step started is not created either.
        let child = chatd_worker::tool::agents::NewChild {
            id: Uuid::new_v4(),
            title: "stale child".into(),
            content: json!([{"type": "text", "text": "never"}]),
            model_config_id: Uuid::new_v4(),
        };
        let result = commit(
            &mut sql,
            Lease {
                chat_id: chat_uuid,
                worker_id: who,
                attempt: epoch,
            },
            std::slice::from_ref(&row),
            std::slice::from_ref(&child),
            &TurnEnd::Done,
            Uuid::new_v4(),
            None,
        )
        .await
        .expect("the fenced commit runs");
        assert!(
            matches!(result, CommitOutcome::LeaseLost),
            "a stale writer was let through"
        );
        let children: i64 = sql
            .query_one(
                "SELECT count(*) FROM chats WHERE parent_chat_id = $1",
                &[&chat_uuid],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(children, 0, "a fenced step created a sub-agent");
    }
    reader.until_turn_done(TURN).await;
    let texts: Vec<String> = assistant_texts(&cluster.api(0), &chat_id).await;
    assert_eq!(texts, vec![reply_text(&message, 200)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_that_keeps_killing_its_worker_ends_in_error() {
    let mut cluster = Cluster::start(1, 0).await;
    let message = directive_message("doomed", json!({"tokens": 3}));
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    // As if five workers had already died running this turn (each acquire counts one).
    let sql = cluster.sql().await;
    let chat_uuid = Uuid::parse_str(&chat_id).unwrap();
    sql.execute(
        "UPDATE chats SET crash_count = 5 WHERE id = $1",
        &[&chat_uuid],
    )
    .await
    .unwrap();
    let mut reader = Reader::open(
        &cluster.api(0),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    cluster.add_worker(&[]).await.expect("start a worker");
    let failed = reader
        .until(TURN, |event| {
            event.event == "status" && event.data["status"] == "error"
        })
        .await;
    assert_eq!(
        failed.data["last_error"]["kind"], "crash_loop",
        "{:?}",
        failed.data
    );
    assert!(assistant_texts(&cluster.api(0), &chat_id).await.is_empty());
    // The chat is usable again: the next message runs normally.
    let next = directive_message("again", json!({"tokens": 3}));
    let (status, _) = cluster
        .api(0)
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": next}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    reader.until_turn_done(TURN).await;
    assert_eq!(
        assistant_texts(&cluster.api(0), &chat_id).await,
        vec![reply_text(&next, 3)]
    );
}

/// R1 with a 10-minute `stale_after`: a SIGKILLed worker's PostgreSQL session ends at once,
/// its liveness lock is free, and the other worker claims the chat within a second or so —
/// long before the lease could expire. Exactly one answer, and the final attempt's deltas
/// equal it.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_is_seen_dead_through_its_session_not_its_lease() {
    let mut cluster = Cluster::start(1, 0).await;
    let slow_leases = [
        "--stale-after-ms",
        "600000",
        "--heartbeat-interval-ms",
        "5000",
        "--sweep-interval-ms",
        "5000",
    ];
    for _ in 0..2 {
        cluster.add_worker(&slow_leases).await.expect("worker");
    }
    let message = directive_message("crash me", json!({"tokens": 150, "tokens_per_second": 50}));
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    let mut reader = Reader::open(
        &cluster.api(0),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    let owner = owner_after_first_parts(&cluster, &mut reader, &chat_id).await;

    cluster.signal_worker(owner, libc::SIGKILL);
    reader.until_turn_done(TURN).await;

    let final_text = assert_contiguous(&reader.seen);
    let stored = single_answer(&cluster, &chat_id).await;
    assert_eq!(stored, reply_text(&message, 150));
    assert_eq!(final_text, stored, "I3");
    let sql = cluster.sql().await;
    let chat_uuid = Uuid::parse_str(&chat_id).unwrap();
    let writers: Vec<Option<i32>> = sql
        .query(
            "SELECT DISTINCT attempt FROM chat_messages WHERE chat_id = $1 AND role = 'assistant'",
            &[&chat_uuid],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        writers.len(),
        1,
        "one attempt wrote the answer: {writers:?}"
    );
}
