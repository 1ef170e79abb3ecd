//! Interrupts and the queue (I2, I8): partial output is kept on interrupt, queued messages
//! run in FIFO order exactly once, `busy_behavior=interrupt` jumps the queue, queue caps.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use chatd_client::{content_text, ApiClient};
use chatd_mock_llm::reply_text;
use common::cluster::{
    assistant_texts, chat_status, create_chat, directive_message, messages, wait_until, Cluster,
};
use common::sse::{assert_contiguous, Reader};

const TURN: Duration = Duration::from_secs(30);

async fn send(api: &ApiClient, chat_id: &str, body: Value) -> (u16, Value) {
    api.post(&format!("/chats/{chat_id}/messages"), &body)
        .await
        .expect("send a message")
}

async fn wait_idle(api: &ApiClient, chat_id: &str) {
    wait_until(
        TURN,
        "the chat to become idle with an empty queue",
        || async {
            let (_, body) = api
                .get(&format!("/chats/{chat_id}/messages?limit=1"))
                .await
                .ok()?;
            let queue_empty = body["queued"]
                .as_array()
                .is_some_and(|queue| queue.is_empty());
            (queue_empty && chat_status(api, chat_id).await == "waiting").then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupt_mid_stream_keeps_partial_text_and_stops_the_worker() {
    let cluster = Cluster::start(2, 1).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let message = directive_message(
        "long answer",
        json!({"tokens": 400, "tokens_per_second": 50}),
    );
    let (chat_id, message_id) = create_chat(&api_a, &message).await;
    let mut reader = Reader::open(&api_b, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader
        .until(TURN, |event| {
            event.event == "message_part" && event.data["seq"].as_i64() >= Some(5)
        })
        .await;

    let (status, body) = api_a
        .post(&format!("/chats/{chat_id}/interrupt"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    reader
        .until(TURN, |event| {
            event.event == "status" && event.data["status"] == "waiting"
        })
        .await;

    let stored = messages(&api_a, &chat_id).await;
    let assistant: Vec<_> = stored.iter().filter(|m| m["role"] == "assistant").collect();
    assert_eq!(assistant.len(), 1, "{stored:?}");
    let partial = content_text(&assistant[0]["content"]);
    let full = reply_text(&message, 400);
    assert!(!partial.is_empty(), "the partial text was persisted");
    assert!(
        full.starts_with(&partial) && partial.len() < full.len(),
        "partial: {partial:?}"
    );
    // The streamed deltas match what was kept, and nothing streams after the turn ended.
    assert_eq!(assert_contiguous(&reader.seen), partial);
    let after = tokio::time::timeout(Duration::from_millis(800), reader.next(TURN)).await;
    assert!(after.is_err(), "the worker kept streaming: {after:?}");
    assert_eq!(chat_status(&api_a, &chat_id).await, "waiting");
    // Interrupt is idempotent.
    let (status, _) = api_a
        .post(&format!("/chats/{chat_id}/interrupt"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_busy_run_in_fifo_order_exactly_once() {
    let cluster = Cluster::start(2, 2).await;
    let api = cluster.api(0);
    let first = directive_message("m0", json!({"tokens": 30, "tokens_per_second": 60}));
    let (chat_id, _) = create_chat(&api, &first).await;
    let mut sent = vec![first];
    for index in 1..=3 {
        let text = directive_message(&format!("m{index}"), json!({"tokens": 8}));
        let (status, body) =
            send(&cluster.api(index % 2), &chat_id, json!({"content": text})).await;
        assert_eq!(status, 202, "queued while busy: {body}");
        assert!(body["queued_message"]["id"].as_i64().is_some());
        sent.push(text);
    }
    wait_idle(&api, &chat_id).await;

    let stored = messages(&api, &chat_id).await;
    let roles: Vec<&str> = stored.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant"].repeat(4), "{stored:?}");
    for (index, text) in sent.iter().enumerate() {
        assert_eq!(
            content_text(&stored[index * 2]["content"]),
            *text,
            "user message {index}"
        );
        let tokens = if index == 0 { 30 } else { 8 };
        assert_eq!(
            content_text(&stored[index * 2 + 1]["content"]),
            reply_text(text, tokens),
            "answer {index}"
        );
    }
}

/// Sends that arrive together share one statement (the API's send batcher); two at once to
/// the same chat must still give one send and one queued message, and every message runs
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_sends_to_many_chats_each_run_exactly_once() {
    let cluster = Cluster::start(1, 2).await;
    let api = cluster.api(0);
    let mut chats = Vec::new();
    for index in 0..12 {
        let first = directive_message(&format!("chat {index} first"), json!({"tokens": 3}));
        chats.push(create_chat(&api, &first).await.0);
    }
    for chat_id in &chats {
        wait_idle(&api, chat_id).await;
    }
    let text = |chat: usize, copy: usize| {
        directive_message(&format!("chat {chat} copy {copy}"), json!({"tokens": 3}))
    };
    let sends = chats.iter().enumerate().flat_map(|(index, chat_id)| {
        let api = &api;
        (0..2).map(move |copy| async move {
            let (status, body) = send(api, chat_id, json!({"content": text(index, copy)})).await;
            (index, status, body)
        })
    });
    let outcomes = futures::future::join_all(sends).await;
    for index in 0..chats.len() {
        let mut statuses: Vec<u16> = outcomes
            .iter()
            .filter(|(chat, _, _)| *chat == index)
            .map(|(_, status, _)| *status)
            .collect();
        statuses.sort_unstable();
        // Both sent happens only when the first turn ended before the second send.
        assert!(
            statuses == [201, 202] || statuses == [201, 201],
            "chat {index}: {statuses:?} {outcomes:?}"
        );
    }
    for (index, chat_id) in chats.iter().enumerate() {
        wait_idle(&api, chat_id).await;
        let stored = messages(&api, chat_id).await;
        let users: Vec<String> = stored
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| content_text(&m["content"]))
            .collect();
        assert_eq!(users.len(), 3, "chat {index}: {stored:?}");
        let mut later = users[1..].to_vec();
        later.sort();
        assert_eq!(later, [text(index, 0), text(index, 1)], "chat {index}");
        let answers: Vec<String> = stored
            .iter()
            .filter(|m| m["role"] == "assistant")
            .map(|m| content_text(&m["content"]))
            .collect();
        assert_eq!(answers.len(), 3, "chat {index}: one answer per message");
        for (user, answer) in users.iter().zip(&answers) {
            assert_eq!(*answer, reply_text(user, 3), "chat {index}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_behavior_interrupt_jumps_the_queue() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let first = directive_message("slow", json!({"tokens": 400, "tokens_per_second": 50}));
    let (chat_id, message_id) = create_chat(&api, &first).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader
        .until(TURN, |event| event.event == "message_part")
        .await;

    let queued = directive_message("queued", json!({"tokens": 3}));
    let (status, _) = send(&api, &chat_id, json!({"content": queued})).await;
    assert_eq!(status, 202);
    let urgent = directive_message("urgent", json!({"tokens": 3}));
    let (status, body) = send(
        &api,
        &chat_id,
        json!({"content": urgent, "busy_behavior": "interrupt"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_idle(&api, &chat_id).await;

    let stored = messages(&api, &chat_id).await;
    let users: Vec<String> = stored
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .collect();
    assert_eq!(users, vec![first.clone(), urgent.clone(), queued.clone()]);
    let answers: Vec<String> = stored
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| content_text(&m["content"]))
        .collect();
    assert_eq!(answers.len(), 3, "{stored:?}");
    assert!(
        reply_text(&first, 400).starts_with(&answers[0])
            && answers[0].len() < reply_text(&first, 400).len()
    );
    assert_eq!(answers[1], reply_text(&urgent, 3));
    assert_eq!(answers[2], reply_text(&queued, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_is_capped_and_can_be_managed() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let first = directive_message("slow", json!({"tokens": 400, "tokens_per_second": 20}));
    let (chat_id, _) = create_chat(&api, &first).await;
    let mut queued_ids = Vec::new();
    // Slow replies, so the queue stays put while the test inspects it.
    let queued_text = |index: usize| {
        directive_message(
            &format!("q{index}"),
            json!({"tokens": 400, "tokens_per_second": 20}),
        )
    };
    for index in 0..20 {
        let (status, body) = send(&api, &chat_id, json!({"content": queued_text(index)})).await;
        assert_eq!(status, 202, "{body}");
        queued_ids.push(body["queued_message"]["id"].as_i64().unwrap());
    }
    let response = cluster
        .http
        .post(format!(
            "{}/api/v1/chats/{chat_id}/messages",
            cluster.apis[0].url
        ))
        .bearer_auth(&cluster.token)
        .json(&json!({"content": "one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(
        response.headers().get("retry-after").is_some(),
        "429 carries Retry-After"
    );

    // Delete one queued message; an unknown id is a 404.
    let delete = |id: i64| {
        cluster
            .http
            .delete(format!(
                "{}/api/v1/chats/{chat_id}/queue/{id}",
                cluster.apis[0].url
            ))
            .bearer_auth(&cluster.token)
            .send()
    };
    assert_eq!(delete(queued_ids[5]).await.unwrap().status(), 200);
    assert_eq!(delete(queued_ids[5]).await.unwrap().status(), 404);
    // Promote the last one to the head (the chat is running, so it also interrupts).
    let last = *queued_ids.last().unwrap();
    let (status, body) = api
        .post(
            &format!("/chats/{chat_id}/queue/{last}/promote"),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    // The interrupted turn ends and the promoted message runs next.
    let queue: Vec<i64> = wait_until(TURN, "the promoted message to start", || async {
        let (_, listing) = api.get(&format!("/chats/{chat_id}/messages")).await.ok()?;
        let queue: Vec<i64> = listing["queued"]
            .as_array()?
            .iter()
            .filter_map(|q| q["id"].as_i64())
            .collect();
        (!queue.contains(&last)).then_some(queue)
    })
    .await;
    assert_eq!(
        queue.len(),
        18,
        "20 queued, one deleted, one promoted: {queue:?}"
    );
    assert!(!queue.contains(&queued_ids[5]));
    let users: Vec<String> = messages(&api, &chat_id)
        .await
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .collect();
    assert_eq!(
        users,
        vec![first, queued_text(19)],
        "the promoted message ran next"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_are_woken_by_notify_not_only_by_their_poll() {
    let mut cluster = Cluster::start(1, 0).await;
    // With a one-minute poll, only the `chatd_wake` notification can start the turn in time.
    cluster
        .add_worker(&["--acquire-interval-ms", "60000"])
        .await
        .expect("start a worker");
    let api = cluster.api(0);
    // Let the worker's startup poll pass, so the next acquire must come from a wake.
    wait_until(
        Duration::from_secs(10),
        "the worker's listener to connect",
        || async {
            let sql = cluster.sql().await;
            let rows = sql
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'chatd-worker-listener' \
                 AND datname = current_database()",
                &[],
            )
            .await
            .ok()?;
            (!rows.is_empty()).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        let message = directive_message(&format!("wake {round}"), json!({"tokens": 3}));
        let (chat_id, message_id) = create_chat(&api, &message).await;
        let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
        reader.until_turn_done(Duration::from_secs(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_promotion_wakes_a_worker_without_waiting_for_its_poll() {
    let mut cluster = Cluster::start(1, 0).await;
    cluster
        .add_worker(&["--acquire-interval-ms", "60000"])
        .await
        .expect("start a worker");
    let api = cluster.api(0);
    let first = directive_message("first", json!({"tokens": 30, "tokens_per_second": 30}));
    let (chat_id, _) = create_chat(&api, &first).await;
    // The worker's startup poll or the create's wake runs the first turn.
    wait_until(TURN, "the first turn to start", || async {
        (chat_status(&api, &chat_id).await == "running").then_some(())
    })
    .await;
    let queued = directive_message("queued", json!({"tokens": 3}));
    let (status, _) = send(&api, &chat_id, json!({"content": queued})).await;
    assert_eq!(status, 202);
    // The finishing turn promotes the queued message to pending; only the wake published
    // after that commit can start it before the one-minute poll.
    wait_idle(&api, &chat_id).await;
    let answers: Vec<String> = assistant_texts(&api, &chat_id).await;
    assert_eq!(
        answers,
        vec![reply_text(&first, 30), reply_text(&queued, 3)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_interrupt_for_an_earlier_turn_does_not_stop_the_next_one() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let first = directive_message("first", json!({"tokens": 3}));
    let (chat_id, message_id) = create_chat(&api, &first).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader.until_turn_done(TURN).await;
    let sql = cluster.sql().await;
    let chat_uuid = uuid::Uuid::parse_str(&chat_id).unwrap();
    let old_version: i64 = sql
        .query_one("SELECT version FROM chats WHERE id = $1", &[&chat_uuid])
        .await
        .unwrap()
        .get(0);

    let second = directive_message("second", json!({"tokens": 60, "tokens_per_second": 30}));
    let (status, _) = send(&api, &chat_id, json!({"content": second})).await;
    assert_eq!(status, 201);
    let worker_id: uuid::Uuid = wait_until(TURN, "the second turn to start", || async {
        let row = sql
            .query_one("SELECT worker_id FROM chats WHERE id = $1", &[&chat_uuid])
            .await
            .ok()?;
        row.get::<_, Option<uuid::Uuid>>(0)
    })
    .await;
    // An interrupt notice from before this turn was claimed arrives late.
    let payload =
        json!({"chat_id": chat_id, "version": old_version, "kind": "interrupt"}).to_string();
    sql.execute(
        "SELECT pg_notify($1, $2)",
        &[&format!("chatd_worker_{worker_id}"), &payload],
    )
    .await
    .unwrap();
    reader.until_turn_done(TURN).await;
    let answers: Vec<String> = assistant_texts(&api, &chat_id).await;
    assert_eq!(
        answers,
        vec![reply_text(&first, 3), reply_text(&second, 60)],
        "the second answer is complete, not interrupted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_stream_reports_the_caller_s_chats_only() {
    let cluster = Cluster::start(2, 1).await;
    let bob = cluster.create_user("bob").await;
    let response = cluster
        .http
        .get(format!("{}/api/v1/chats/watch", cluster.apis[1].url))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = Box::pin(chatd_client::sse_events(response.bytes_stream()));
    // Bob's chat must not show up on Alice's watch stream.
    create_chat(&cluster.api_as(0, &bob), "bob's chat").await;
    let (chat_id, _) = create_chat(
        &cluster.api(0),
        &directive_message("watched", json!({"tokens": 3})),
    )
    .await;
    let mut kinds = Vec::new();
    while !(kinds.contains(&"created".to_string()) && kinds.contains(&"status".to_string())) {
        let event = tokio::time::timeout(TURN, futures::StreamExt::next(&mut events))
            .await
            .expect("a watch event")
            .expect("the stream is open")
            .expect("read the stream");
        assert_eq!(event.event, "chat");
        let data: Value = event.data;
        assert_eq!(
            data["chat"]["id"],
            chat_id.as_str(),
            "only the caller's chats: {data}"
        );
        kinds.push(data["kind"].as_str().unwrap().to_string());
    }
}
