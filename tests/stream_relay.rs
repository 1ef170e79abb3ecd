//! Streaming across replicas (I1, I3): a chat created on API A streams live on API B, a
//! client resumes on the other replica with `Last-Event-ID`, and a killed LISTEN connection
//! loses nothing. Real processes: mock LLM, 2 × api, 2 × worker, one PostgreSQL.

mod common;

use std::time::Duration;

use serde_json::json;

use chatd_api::client::content_text;
use chatd_worker::mock_llm::reply_text;
use common::cluster::{create_chat, directive_message, messages, wait_until, Cluster};
use common::sse::{assert_contiguous, Reader};

const TURN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn created_on_one_replica_streams_live_on_the_other() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let message = directive_message(
        "tell me a story",
        json!({"tokens": 40, "tokens_per_second": 200}),
    );
    let (chat_id, message_id) = create_chat(&api_a, &message).await;

    let mut reader = Reader::open(&api_b, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader.until_turn_done(TURN).await;

    let streamed = assert_contiguous(&reader.seen);
    let stored = messages(&api_a, &chat_id).await;
    let assistant: Vec<_> = stored.iter().filter(|m| m["role"] == "assistant").collect();
    assert_eq!(assistant.len(), 1, "exactly one answer: {stored:?}");
    let stored_text = content_text(&assistant[0]["content"]);
    assert_eq!(
        streamed, stored_text,
        "streamed text equals the stored message (I3)"
    );
    assert_eq!(stored_text, reply_text(&message, 40));
    assert!(
        reader
            .seen
            .iter()
            .filter(|e| e.event == "message_part")
            .count()
            >= 40,
        "every token was relayed live"
    );
    // Every event carries an id that parses as a cursor.
    assert!(reader
        .seen
        .iter()
        .all(|event| event.id.split('-').count() == 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_on_the_other_replica_has_no_gap_and_no_duplicate() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let message = directive_message("resume me", json!({"tokens": 60, "tokens_per_second": 40}));
    let (chat_id, message_id) = create_chat(&api_a, &message).await;

    let mut first = Reader::open(&api_a, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    first
        .until(TURN, |event| {
            event.event == "message_part" && event.data["seq"].as_i64() >= Some(10)
        })
        .await;
    let cursor = first.last_id();
    let before = first.seen.clone();
    drop(first); // disconnect mid-turn

    let mut second = Reader::open(&api_b, &chat_id, Some(&cursor)).await;
    second.until_turn_done(TURN).await;

    let mut all = before;
    all.extend(second.seen.iter().cloned());
    let streamed = assert_contiguous(&all);
    assert_eq!(
        streamed,
        reply_text(&message, 60),
        "no gap, no duplicate across the resume"
    );
    let resumed_first = second
        .seen
        .iter()
        .find(|event| event.event == "message_part")
        .expect("the resumed stream relayed parts");
    let cursor_seq: i64 = cursor.rsplit('-').next().unwrap().parse().unwrap();
    assert_eq!(resumed_first.data["seq"].as_i64(), Some(cursor_seq + 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_listen_connection_loses_nothing() {
    let cluster = Cluster::start(2, 1).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let message = directive_message("survive", json!({"tokens": 60, "tokens_per_second": 30}));
    let (chat_id, message_id) = create_chat(&api_a, &message).await;
    let mut reader = Reader::open(&api_b, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader
        .until(TURN, |event| event.event == "message_part")
        .await;

    // Terminate every API replica's LISTEN connection mid-stream.
    let sql = cluster.sql().await;
    let killed = sql
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'chatd-api-listener' AND datname = current_database()",
            &[],
        )
        .await
        .expect("terminate listeners");
    assert_eq!(
        killed.len(),
        2,
        "both API replicas had a listener connection"
    );

    reader.until_turn_done(TURN).await;
    let streamed = assert_contiguous(&reader.seen);
    assert_eq!(streamed, reply_text(&message, 60));
    // The replicas re-LISTENed.
    wait_until(
        Duration::from_secs(10),
        "both listeners to reconnect",
        || async {
            let listeners = sql
                .query(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'chatd-api-listener' \
                 AND datname = current_database()",
                    &[],
                )
                .await
                .ok()?;
            (listeners.len() == 2).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn late_and_duplicate_notifications_change_nothing() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let message = directive_message("first", json!({"tokens": 5}));
    let (chat_id, message_id) = create_chat(&api, &message).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader.until_turn_done(TURN).await;
    let sql = cluster.sql().await;
    let chat_uuid = uuid::Uuid::parse_str(&chat_id).unwrap();
    let before = sql
        .query_one(
            "SELECT version, attempt, status FROM chats WHERE id = $1",
            &[&chat_uuid],
        )
        .await
        .unwrap();
    let version: i64 = before.get(0);
    let attempt: i32 = before.get(1);

    // Replay stale hints: an old "pending" change, an old frame, a wake, an old interrupt.
    let channel = format!("chatd_chat_{chat_id}");
    let stale_change =
        json!({"t": "c", "v": version - 2, "s": "pending", "a": attempt - 1}).to_string();
    let stale_frame = json!({"t": "f", "a": attempt, "s": 1, "e": 1, "ts": 0,
        "ev": [{"seq": 1, "event": "message_part", "data": {"attempt": attempt, "seq": 1, "role": "assistant", "part": {"type": "text", "text": "DUPLICATE"}}}]}).to_string();
    for (channel, payload) in [
        (channel.as_str(), stale_change.as_str()),
        (channel.as_str(), stale_frame.as_str()),
        ("chatd_wake", chat_id.as_str()),
    ] {
        sql.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .unwrap();
    }
    // Nothing new arrives on the stream (keep-alives are comments, not events).
    let quiet = tokio::time::timeout(
        Duration::from_millis(1500),
        reader.next(Duration::from_secs(2)),
    )
    .await;
    assert!(
        quiet.is_err(),
        "a stale notification produced an event: {quiet:?}"
    );
    let after = sql
        .query_one(
            "SELECT version, attempt, status FROM chats WHERE id = $1",
            &[&chat_uuid],
        )
        .await
        .unwrap();
    assert_eq!(after.get::<_, i64>(0), version);
    assert_eq!(after.get::<_, i32>(1), attempt);
    assert_eq!(after.get::<_, String>(2), "waiting");

    // A second turn still works and is not disturbed by the replayed hints.
    let second = directive_message("second", json!({"tokens": 5}));
    let (status, body) = api
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": second}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    reader.until_turn_done(TURN).await;
    let stored = messages(&api, &chat_id).await;
    let answers: Vec<String> = stored
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| content_text(&m["content"]))
        .collect();
    assert_eq!(
        answers,
        vec![reply_text(&message, 5), reply_text(&second, 5)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_never_overtakes_its_previews_when_the_resume_log_is_slow() {
    let cluster = Cluster::start(2, 1).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    // Block every frame insert (readers still work) for longer than any flush timeout.
    let mut blocker = cluster.sql().await;
    let lock = blocker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE chat_stream_frames IN EXCLUSIVE MODE")
        .await
        .expect("lock the resume log");
    let message = directive_message("slow log", json!({"tokens": 30}));
    let (chat_id, message_id) = create_chat(&api_a, &message).await;
    let mut reader = Reader::open(&api_b, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let early = messages(&api_a, &chat_id).await;
    assert!(
        early.iter().all(|m| m["role"] != "assistant"),
        "the answer was committed before its previews were written: {early:?}"
    );
    lock.commit().await.expect("release the lock");

    reader.until_turn_done(TURN).await;
    let streamed = assert_contiguous(&reader.seen);
    assert_eq!(
        streamed,
        reply_text(&message, 30),
        "all previews, then the message (I3)"
    );
    let first_message = reader
        .seen
        .iter()
        .position(|e| e.event == "message" && e.data["role"] == "assistant")
        .unwrap();
    let last_part = reader
        .seen
        .iter()
        .rposition(|e| e.event == "message_part")
        .unwrap();
    assert!(
        last_part < first_message,
        "a preview arrived after its durable message"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_whose_hint_was_lost_still_reaches_the_stream() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let message = directive_message("quiet", json!({"tokens": 3}));
    let (chat_id, message_id) = create_chat(&api, &message).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader.until_turn_done(TURN).await;
    // A durable change committed without any notification (as if its NOTIFY were lost).
    let sql = cluster.sql().await;
    let chat_uuid = uuid::Uuid::parse_str(&chat_id).unwrap();
    sql.execute(
        "UPDATE chats SET title = 'renamed quietly', version = version + 1 WHERE id = $1",
        &[&chat_uuid],
    )
    .await
    .unwrap();
    let title = reader
        .until(Duration::from_secs(15), |event| event.event == "title")
        .await;
    assert_eq!(title.data["title"], "renamed quietly");
}

/// The value of gauge `name` on API replica `index` (0 when not yet set).
async fn api_gauge(cluster: &Cluster, index: usize, name: &str) -> f64 {
    let text = cluster
        .http
        .get(format!("{}/metrics", cluster.apis[index].url))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

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
    assert_eq!(api_gauge(&cluster, 0, "chatd_hubs").await, 0.0);

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
        let hubs = api_gauge(&cluster, 0, "chatd_hubs").await;
        let subscribers = api_gauge(&cluster, 0, "chatd_stream_subscribers").await;
        (hubs == 0.0 && subscribers == 0.0).then_some(())
    })
    .await;
    // A live stream counts one hub while open.
    let mut reader = Reader::open(&api, &chat_id, None).await;
    reader.next(TURN).await;
    assert_eq!(api_gauge(&cluster, 0, "chatd_hubs").await, 1.0);
    drop(reader);
    wait_until(TURN, "the hub to go", || async {
        (api_gauge(&cluster, 0, "chatd_hubs").await == 0.0).then_some(())
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

/// A client that resumes (or falls behind) across a turn boundary gets the stream in stream
/// order: the rest of the old turn's previews, its answer, the next (queued) message, then the
/// new turn's previews. Before, the new attempt's previews came first and its deltas were
/// added up against the old answer (I3 broken for the resumed client).
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_across_a_turn_boundary_keeps_stream_order() {
    let cluster = Cluster::start(2, 1).await;
    let api = cluster.api(0);
    let first = directive_message("first", json!({"tokens": 40, "tokens_per_second": 20}));
    let second = directive_message("second", json!({"tokens": 60, "tokens_per_second": 20}));
    let (chat_id, message_id) = create_chat(&api, &first).await;
    let (status, body) = api
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": second}),
        )
        .await
        .expect("queue");
    assert_eq!(status, 202, "{body}");
    let mut reader = Reader::open(
        &cluster.api(1),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    reader
        .until(TURN, |event| {
            event.event == "message_part" && event.data["seq"].as_i64() >= Some(5)
        })
        .await;
    let first_attempt = reader.seen.last().expect("a part").data["attempt"].as_i64();
    let cursor = reader.last_id();
    let before = reader.seen.clone();
    drop(reader);
    // The second turn is streaming now.
    let sql = cluster.sql().await;
    let chat_uuid = uuid::Uuid::parse_str(&chat_id).expect("uuid");
    wait_until(TURN, "the queued turn to stream", || async {
        let row = sql
            .query_one(
                "SELECT coalesce(max(f.seq_to), 0) FROM chats c JOIN chat_stream_frames f \
                 ON f.chat_id = c.id AND f.attempt = c.attempt WHERE c.id = $1 AND c.attempt > $2",
                &[&chat_uuid, &(first_attempt.unwrap_or(0) as i32)],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(0) >= 5).then_some(())
    })
    .await;
    let mut resumed = Reader::open(&api, &chat_id, Some(&cursor)).await;
    resumed
        .until(TURN, |event| {
            event.event == "message"
                && event.data["role"] == "assistant"
                && event.data["content"]
                    .to_string()
                    .contains(&reply_text(&second, 60))
        })
        .await;
    let first_answer = resumed
        .seen
        .iter()
        .position(|event| event.event == "message" && event.data["role"] == "assistant")
        .expect("the first answer");
    let first_new_part = resumed
        .seen
        .iter()
        .position(|event| {
            event.event == "message_part" && event.data["attempt"].as_i64() != first_attempt
        })
        .expect("the second turn's previews");
    assert!(
        first_answer < first_new_part,
        "the old answer precedes the new turn's previews: {:?}",
        resumed.seen
    );
    let mut checker = chatd_api::client::scaletest::integrity::StreamChecker::default();
    for event in &before {
        checker.observe(&event.event, &event.data);
    }
    checker.note_reconnect();
    for event in &resumed.seen {
        checker.observe(&event.event, &event.data);
    }
    let counts = checker.take_counts();
    assert!(counts.is_zero(), "{counts:?}: {:?}", resumed.seen);
}
