//! Stream limits and bookkeeping on an API replica: abandoned or foreign subscribes leave no
//! hub behind, snapshots are bounded (`--stream-snapshot-messages`), open streams are capped
//! per user (`--max-streams-per-user`), and `action_required` is read once per replica, not
//! once per subscriber. Real processes and one PostgreSQL.

mod common;

use std::time::Duration;

use serde_json::json;

use common::cluster::{create_chat, directive_message, messages, wait_until, Cluster};
use common::sse::Reader;

const TURN: Duration = Duration::from_secs(30);

/// Abandoned subscribes leak nothing: streams of random ids or of another user's chat are
/// refused before a hub exists, and clients that give up while the database is slow (here: the
/// `chats` table locked) leave no hub, LISTEN or subscriber count behind — `chatd_hubs` and
/// `chatd_stream_subscribers` return to 0.
#[tokio::test(flavor = "multi_thread")]
async fn abandoned_and_foreign_subscribes_leave_no_hub_behind() {
    let cluster = Cluster::start(1, 0).await;
    let api = cluster.api(0);
    let (chat_id, _) = create_chat(&api, "mine").await;
    let mallory = cluster.create_user("mallory").await;
    let stranger = cluster.api_as(0, &mallory);
    for id in [uuid::Uuid::new_v4().to_string(), chat_id.clone()] {
        let error = stranger.stream(&id, None).await.err().expect("refused");
        assert!(format!("{error:#}").contains("404"), "{error:#}");
    }
    assert_eq!(cluster.api_metric(0, "chatd_hubs").await, 0.0);

    // The database stalls; clients give up after 300 ms.
    let locker = cluster.sql().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE chats IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock chats");
    let mut abandoned = Vec::new();
    for _ in 0..5 {
        let api = cluster.api(0);
        let chat_id = chat_id.clone();
        abandoned.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(300), api.stream(&chat_id, None))
                .await
                .is_err()
        }));
    }
    for client in abandoned {
        assert!(
            client.await.expect("client"),
            "the stalled subscribe timed out"
        );
    }
    locker.batch_execute("COMMIT").await.expect("unlock");
    wait_until(TURN, "hubs and subscribers back to 0", || async {
        let hubs = cluster.api_metric(0, "chatd_hubs").await;
        let subscribers = cluster.api_metric(0, "chatd_stream_subscribers").await;
        (hubs == 0.0 && subscribers == 0.0).then_some(())
    })
    .await;
    // A live stream counts one hub while open.
    let mut reader = Reader::open(&api, &chat_id, None).await;
    reader.next(TURN).await;
    assert_eq!(cluster.api_metric(0, "chatd_hubs").await, 1.0);
    drop(reader);
    wait_until(TURN, "the hub to go", || async {
        (cluster.api_metric(0, "chatd_hubs").await == 0.0).then_some(())
    })
    .await;
}

/// The snapshot of a stream is bounded (`--stream-snapshot-messages`): without a cursor, or
/// with one older than that, it sends the newest messages after a `history_truncated`
/// marker naming where `GET /messages` continues; a recent cursor gets no marker.
#[tokio::test(flavor = "multi_thread")]
async fn stream_snapshots_send_the_newest_messages_and_say_when_they_truncated() {
    let mut cluster = Cluster::start(0, 1).await;
    cluster
        .add_api_with(&["--stream-snapshot-messages", "4"])
        .await
        .expect("api");
    let api = cluster.api(0);
    let (chat_id, first_id) = create_chat(&api, "turn 0").await;
    for turn in 1..5 {
        wait_until(TURN, "the previous turn", || async {
            (messages(&api, &chat_id).await.len() == turn * 2).then_some(())
        })
        .await;
        let (status, body) = api
            .post(
                &format!("/chats/{chat_id}/messages"),
                &json!({"content": format!("turn {turn}")}),
            )
            .await
            .expect("send");
        assert_eq!(status, 201, "{body}");
    }
    wait_until(TURN, "ten messages", || async {
        (messages(&api, &chat_id).await.len() == 10).then_some(())
    })
    .await;
    let all = messages(&api, &chat_id).await;
    let newest: Vec<i64> = all[6..].iter().map(|m| m["id"].as_i64().unwrap()).collect();

    for cursor in [None, Some(format!("{first_id}-0-0"))] {
        let mut reader = Reader::open(&api, &chat_id, cursor.as_deref()).await;
        let mut sent = Vec::new();
        let mut marker = None;
        while sent.len() < 4 {
            let event = reader.next(TURN).await;
            match event.event.as_str() {
                "history_truncated" => marker = Some(event.data["before_id"].as_i64()),
                "message" => sent.push(event.data["id"].as_i64().unwrap()),
                _ => {}
            }
        }
        assert_eq!(sent, newest, "the newest four, oldest first ({cursor:?})");
        assert_eq!(
            marker,
            Some(Some(newest[0])),
            "the marker names the oldest sent"
        );
    }
    // A cursor two messages back: nothing truncated.
    let recent = format!("{}-0-0", all[7]["id"]);
    let mut reader = Reader::open(&api, &chat_id, Some(&recent)).await;
    let mut sent = Vec::new();
    while sent.len() < 2 {
        let event = reader.next(TURN).await;
        assert_ne!(event.event, "history_truncated");
        if event.event == "message" {
            sent.push(event.data["id"].as_i64().unwrap());
        }
    }
    assert_eq!(sent, newest[2..]);
}

/// `--max-streams-per-user`: a user's streams beyond the cap on one replica get 429 with
/// `Retry-After`; other users are unaffected, and a closed stream frees its slot.
#[tokio::test(flavor = "multi_thread")]
async fn open_streams_are_capped_per_user_per_replica() {
    let mut cluster = Cluster::start(0, 0).await;
    cluster
        .add_api_with(&["--max-streams-per-user", "2"])
        .await
        .expect("api");
    let api = cluster.api(0);
    let (chat_id, _) = create_chat(&api, "hello").await;
    let first = Reader::open(&api, &chat_id, None).await;
    let _second = Reader::open(&api, &chat_id, None).await;
    for path in [
        format!("/chats/{chat_id}/stream"),
        "/chats/watch".to_string(),
    ] {
        let response = cluster
            .http
            .get(format!("{}/api/v1{path}", cluster.apis[0].url))
            .bearer_auth(&cluster.token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 429, "{path}");
        assert!(response.headers().get("retry-after").is_some(), "{path}");
    }
    let bob = cluster.create_user("bob").await;
    let (bob_chat, _) = create_chat(&cluster.api_as(0, &bob), "bob's").await;
    let _bob_stream = Reader::open(&cluster.api_as(0, &bob), &bob_chat, None).await;
    drop(first);
    wait_until(TURN, "the slot to be freed", || async {
        api.stream(&chat_id, None).await.ok().map(|_| ())
    })
    .await;
}

/// `action_required` is derived once per replica, not once per subscriber: five subscribers
/// each get it once, with the pending call, and the pending calls are read once.
#[tokio::test(flavor = "multi_thread")]
async fn action_required_is_read_once_per_replica() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let sql = cluster.sql().await;
    sql.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .expect("pg_stat_statements");
    let message = directive_message(
        "ask the client",
        json!({"ttft_ms": 1500, "tool_calls": [{"name": "lookup", "arguments": {"q": 1}}]}),
    );
    let (status, body) = api
        .post(
            "/chats",
            &json!({"message": message, "dynamic_tools": [{"name": "lookup"}]}),
        )
        .await
        .expect("create");
    assert_eq!(status, 201, "{body}");
    let chat_id = body["chat"]["id"].as_str().expect("id").to_string();
    let message_id = body["message"]["id"].as_i64().expect("id");
    let mut readers = Vec::new();
    for _ in 0..5 {
        readers.push(Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await);
    }
    let before = pending_reads(&sql).await;
    for reader in &mut readers {
        let event = reader
            .until(TURN, |event| event.event == "action_required")
            .await;
        assert_eq!(
            event.data["tool_calls"][0]["tool_name"], "lookup",
            "{event:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for reader in &readers {
        let count = reader
            .seen
            .iter()
            .filter(|event| event.event == "action_required")
            .count();
        assert_eq!(count, 1, "once per subscriber");
    }
    assert_eq!(
        pending_reads(&sql).await - before,
        1,
        "read once for the replica"
    );
}

/// Calls of the pending-tool-calls read in this database so far.
async fn pending_reads(sql: &tokio_postgres::Client) -> i64 {
    sql.query_one(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database() \
         WHERE s.query LIKE 'SELECT role, content FROM chat_messages%'",
        &[],
    )
    .await
    .expect("pg_stat_statements")
    .get(0)
}
