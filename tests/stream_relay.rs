//! Streaming across replicas (I1, I3): a chat created on API A streams live on API B, a
//! client resumes on the other replica with `Last-Event-ID`, and a killed LISTEN connection
//! loses nothing. Real processes: mock LLM, 2 × api, 2 × worker, one PostgreSQL.

mod common;

use std::time::Duration;

use serde_json::json;

use chatd_client::content_text;
use chatd_mock_llm::reply_text;
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
    let channel = chatd_shared::pubsub::chat_channel(chat_uuid);
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
    let mut checker = chatd_client::scaletest::integrity::StreamChecker::default();
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

/// A client that resumes after the turn it was watching ended gets the answer, then
/// `waiting` — the order of the live stream. The snapshot used to send the status first, so a
/// client (and `chatd scaletest`, under a rolling restart behind nginx) saw the chat idle
/// before its reply arrived.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_after_the_turn_ended_sends_the_answer_before_waiting() {
    let cluster = Cluster::start(2, 1).await;
    let api = cluster.api(0);
    let message = directive_message("watch me", json!({"tokens": 40, "tokens_per_second": 40}));
    let (chat_id, message_id) = create_chat(&api, &message).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader
        .until(TURN, |event| event.event == "message_part")
        .await;
    let cursor = reader.last_id();
    let mut stream = reader.seen.clone();
    drop(reader);
    wait_until(TURN, "the turn to end", || async {
        (common::cluster::chat_status(&api, &chat_id).await == "waiting").then_some(())
    })
    .await;

    let mut resumed = Reader::open(&cluster.api(1), &chat_id, Some(&cursor)).await;
    resumed
        .until(TURN, |event| {
            event.event == "status" && event.data["status"] == "waiting"
        })
        .await;
    let answer = resumed
        .seen
        .iter()
        .position(|event| event.event == "message" && event.data["role"] == "assistant");
    let waiting = resumed.seen.len() - 1;
    assert!(
        answer.is_some_and(|answer| answer < waiting),
        "the answer precedes `waiting`: {:?}",
        resumed
            .seen
            .iter()
            .map(|event| format!("{} {}", event.event, event.id))
            .collect::<Vec<_>>()
    );
    stream.extend(resumed.seen.iter().cloned());
    assert_eq!(assert_contiguous(&stream), reply_text(&message, 40));
}

/// Change notices of one chat come from different publishers (the API's send, the worker's
/// claim and commit), so a listener can get them out of version order. A complete notice
/// ahead of the relayed version waits for the one before it: both are relayed in version
/// order, without reading the database. Before, the early one made the hub re-read the chat
/// and the late one was dropped (one read for about one turn in ten under load). A
/// predecessor that never comes costs a read after a short wait, not a lost change.
#[tokio::test(flavor = "multi_thread")]
async fn change_notices_out_of_order_are_relayed_in_version_order_without_a_read() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let message = directive_message("order", json!({"tokens": 3}));
    let (chat_id, message_id) = create_chat(&api, &message).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader.until_turn_done(TURN).await;
    let sql = cluster.sql().await;
    let chat_uuid = uuid::Uuid::parse_str(&chat_id).unwrap();
    let channel = chatd_shared::pubsub::chat_channel(chat_uuid);
    let reads_before = cluster.api_metric(0, "chatd_hub_resyncs_total").await;

    // Two title changes committed, announced newest first.
    let row = sql
        .query_one(
            "UPDATE chats SET title = 'second', version = version + 2 WHERE id = $1 \
             RETURNING version, attempt",
            &[&chat_uuid],
        )
        .await
        .unwrap();
    let (version, attempt): (i64, i32) = (row.get(0), row.get(1));
    let notice = |version: i64, title: &str| {
        json!({"t": "c", "id": chat_id, "v": version, "s": "waiting", "a": attempt,
               "o": true, "ti": title})
        .to_string()
    };
    for payload in [notice(version, "second"), notice(version - 1, "first")] {
        sql.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .unwrap();
    }
    let mut titles = Vec::new();
    while titles.len() < 2 {
        let event = reader.until(TURN, |event| event.event == "title").await;
        titles.push(event.data["title"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(titles, ["first", "second"], "titles in version order");
    assert_eq!(
        cluster.api_metric(0, "chatd_hub_resyncs_total").await,
        reads_before,
        "the hub read the database for notices that carried everything"
    );

    // A notice whose predecessor never comes: after a short wait, one read relays the change.
    let row = sql
        .query_one(
            "UPDATE chats SET title = 'fourth', version = version + 2 WHERE id = $1 \
             RETURNING version",
            &[&chat_uuid],
        )
        .await
        .unwrap();
    let payload = notice(row.get(0), "fourth");
    sql.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .await
        .unwrap();
    let title = reader.until(TURN, |event| event.event == "title").await;
    assert_eq!(title.data["title"], "fourth");
    assert_eq!(
        cluster.api_metric(0, "chatd_hub_resyncs_total").await,
        reads_before + 1.0,
        "one read when the predecessor did not come"
    );
}
