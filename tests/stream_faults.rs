//! Faults between the provider, the worker's stream flusher and the readers, through the
//! public API with real processes (R12, I9, I10): a provider that goes silent mid-stream, a
//! step that runs too long, a provider error larger than a notification, NOTIFY statements that
//! fail after their frames were written, and a resume log that lost frames.

mod common;

use std::time::Duration;

use serde_json::json;

use chatd_mock_llm::reply_text;
use common::cluster::{
    assistant_texts, chat_status, create_chat, directive_message, wait_until, Cluster,
};
use common::sse::{assert_contiguous, Reader};

const TURN: Duration = Duration::from_secs(60);

/// A cluster of `apis` API replicas and one worker started with `worker_flags`.
async fn cluster_with_worker(apis: usize, worker_flags: &[&str]) -> Cluster {
    let mut cluster = Cluster::start(apis, 0).await;
    cluster
        .add_worker(worker_flags)
        .await
        .expect("start the worker");
    cluster
}

/// I10: a provider that goes silent mid-stream (after partial output) is a retryable `timeout`
/// after `--stream-idle-timeout-ms`; the step starts over in a new attempt (`attempt_reset`),
/// and the turn completes with the second request's answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_silent_mid_stream_is_retried_after_the_idle_timeout() {
    let cluster = cluster_with_worker(1, &["--stream-idle-timeout-ms", "1000"]).await;
    let api = cluster.api(0);
    let message = directive_message(
        "go quiet",
        json!({"tokens": 40, "tokens_per_second": 200, "stall_ms": 600000, "fail_times": 1}),
    );
    let (chat_id, message_id) = create_chat(&api, &message).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    reader.until_turn_done(TURN).await;

    let retry = reader
        .seen
        .iter()
        .find(|event| event.event == "retry")
        .expect("a retry event");
    assert_eq!(retry.data["kind"], "timeout", "{retry:?}");
    assert!(
        reader
            .seen
            .iter()
            .any(|event| event.event == "attempt_reset"),
        "partial output was dropped: {:?}",
        reader.seen
    );
    let streamed = assert_contiguous(&reader.seen);
    let expected = reply_text(&message, 40);
    assert_eq!(streamed, expected, "the final attempt's deltas (I3)");
    assert_eq!(assistant_texts(&api, &chat_id).await, [expected]);
}

/// `--step-timeout-ms` bounds a step's wall clock even while the provider keeps the
/// connection open: the turn ends in `error` with kind `timeout`, not retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_step_past_the_step_timeout_ends_the_turn_in_error() {
    let cluster = cluster_with_worker(1, &["--step-timeout-ms", "1500"]).await;
    let api = cluster.api(0);
    let message = directive_message(
        "take forever",
        json!({"tokens": 40, "tokens_per_second": 200, "stall_ms": 600000}),
    );
    let (chat_id, message_id) = create_chat(&api, &message).await;
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    let error = reader.until(TURN, |event| event.event == "error").await;
    assert_eq!(error.data["kind"], "timeout", "{error:?}");
    assert_eq!(error.data["retryable"], false, "{error:?}");
    assert!(
        !reader.seen.iter().any(|event| event.event == "retry"),
        "a step timeout is not retried: {:?}",
        reader.seen
    );
    wait_until(TURN, "the chat to be in error", || async {
        (chat_status(&api, &chat_id).await == "error").then_some(())
    })
    .await;
    let (_, chat) = api.get(&format!("/chats/{chat_id}")).await.expect("get");
    assert_eq!(chat["chat"]["last_error"]["kind"], "timeout", "{chat}");
    assert!(assistant_texts(&api, &chat_id).await.is_empty());
}

/// I9: a provider error far larger than a notification (HTTP 503 with a 20 KB message), then
/// a normal answer. The `retry` event carries the message cut to 2 KB and says so, and the
/// client's stream is exact from seq 1 (the oversized event used to miss the resume log and
/// tear the stream).
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_provider_error_is_truncated_and_the_stream_stays_exact() {
    let cluster = Cluster::start(2, 1).await;
    let message = directive_message(
        "error first",
        json!({"error_status": 503, "fail_times": 1, "error_message_bytes": 20000,
               "tokens": 30, "tokens_per_second": 100}),
    );
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    let mut reader = Reader::open(
        &cluster.api(1),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    reader.until_turn_done(TURN).await;

    let retry = reader
        .seen
        .iter()
        .find(|event| event.event == "retry")
        .expect("a retry event");
    assert_eq!(retry.data["seq"], 1, "{retry:?}");
    let text = retry.data["message"].as_str().expect("message");
    assert!(text.len() <= 2048, "{} bytes", text.len());
    assert!(text.contains("(truncated, "), "{text}");
    let streamed = assert_contiguous(&reader.seen);
    let expected = reply_text(&message, 30);
    assert_eq!(streamed, expected);
    assert_eq!(assistant_texts(&cluster.api(0), &chat_id).await, [expected]);
}

/// Makes every fourth NOTIFY statement that carries frames fail *after* the frames were
/// written: a `public.pg_notify` shadowing the built-in (the database's `search_path` puts
/// `public` before `pg_catalog`). Only connections opened afterwards see it.
async fn inject_notify_failures(cluster: &Cluster) {
    let client = cluster.sql().await;
    client
        .batch_execute(&format!(
            "CREATE SEQUENCE notify_calls; \
             CREATE FUNCTION public.pg_notify(channel text, payload text) RETURNS void \
             LANGUAGE plpgsql AS $$ BEGIN \
                 IF payload LIKE '{{\"t\":\"f\"%' AND nextval('notify_calls') % 4 = 0 THEN \
                     RAISE EXCEPTION 'injected notify failure'; \
                 END IF; \
                 PERFORM pg_catalog.pg_notify(channel, payload); \
             END $$; \
             ALTER DATABASE \"{}\" SET search_path = public, pg_catalog;",
            cluster.db.name
        ))
        .await
        .expect("install the failing pg_notify");
}

/// A frame whose NOTIFY failed after it was written is re-published, never re-cut: the old
/// flusher put such events back in front of newer ones, the merged frame had the key of the
/// written one, `ON CONFLICT DO NOTHING` dropped it, and readers froze at the hole. Readers on
/// both replicas must see every seq exactly once, and the deltas must add up to the answer.
#[tokio::test(flavor = "multi_thread")]
async fn frames_whose_notify_failed_are_republished_without_a_hole() {
    let mut cluster = Cluster::start(2, 0).await;
    inject_notify_failures(&cluster).await;
    cluster.add_worker(&[]).await.expect("start the worker");
    let message = directive_message(
        "notify trouble",
        json!({"tokens": 300, "tokens_per_second": 150}),
    );
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    let cursor = format!("{message_id}-0-0");
    let mut near = Reader::open(&cluster.api(0), &chat_id, Some(&cursor)).await;
    let mut far = Reader::open(&cluster.api(1), &chat_id, Some(&cursor)).await;
    near.until_turn_done(TURN).await;
    far.until_turn_done(TURN).await;

    let failures: i64 = cluster
        .sql()
        .await
        .query_one("SELECT last_value FROM notify_calls", &[])
        .await
        .expect("read the call count")
        .get(0);
    assert!(
        failures >= 8,
        "the fault was injected ({failures} frame notifies)"
    );
    let expected = reply_text(&message, 300);
    for reader in [&near, &far] {
        let streamed = assert_contiguous(&reader.seen);
        assert_eq!(streamed, expected, "I3 on every replica");
    }
    assert_eq!(assistant_texts(&cluster.api(0), &chat_id).await, [expected]);
}

/// I9: a reader that meets a hole the resume log cannot fill (frames lost, as the UNLOGGED log
/// is truncated by a PostgreSQL crash) sends `attempt_reset` for the same attempt and goes on
/// streaming, instead of freezing until the final message.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_meeting_an_unfillable_hole_resets_the_attempt_and_goes_on() {
    let cluster = Cluster::start(2, 1).await;
    let message = directive_message(
        "lose frames",
        json!({"tokens": 200, "tokens_per_second": 40}),
    );
    let (chat_id, message_id) = create_chat(&cluster.api(0), &message).await;
    let mut first = Reader::open(
        &cluster.api(0),
        &chat_id,
        Some(&format!("{message_id}-0-0")),
    )
    .await;
    let part = first
        .until(TURN, |event| {
            event.event == "message_part" && event.data["seq"].as_i64() >= Some(3)
        })
        .await;
    let attempt = part.data["attempt"].as_i64().expect("attempt");
    // The log loses everything written so far.
    let chat_uuid = uuid::Uuid::parse_str(&chat_id).expect("uuid");
    cluster
        .sql()
        .await
        .execute(
            "DELETE FROM chat_stream_frames WHERE chat_id = $1",
            &[&chat_uuid],
        )
        .await
        .expect("drop the frames");
    // A client resuming from seq 1 on the other replica cannot be served seq 2 and 3 (they
    // were written before the loss) from the log.
    let cursor = format!("{message_id}-{attempt}-1");
    let mut resumed = Reader::open(&cluster.api(1), &chat_id, Some(&cursor)).await;
    let reset = resumed
        .until(TURN, |event| event.event == "attempt_reset")
        .await;
    assert_eq!(reset.data["attempt"].as_i64(), Some(attempt), "{reset:?}");
    let after = resumed
        .until(TURN, |event| {
            event.event == "message_part" || event.event == "message"
        })
        .await;
    assert_eq!(
        after.event, "message_part",
        "the stream goes on live after the hole instead of freezing: {:?}",
        resumed.seen
    );
    resumed.until_turn_done(TURN).await;
    first.until_turn_done(TURN).await;
    assert_eq!(
        assert_contiguous(&first.seen),
        reply_text(&message, 200),
        "the reader that was live all along saw no hole"
    );
}

/// A tool call whose name contains NUL cannot be stored nor sent back unchanged: the step ends
/// in a non-retryable `invalid_response` error, once (before, the failing commit made the turn
/// re-run until the crash guard stopped it).
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_tool_call_with_nul_in_its_name_fails_the_turn_once() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let message = directive_message(
        "call a broken tool",
        json!({"tool_calls": [{"name": "bad\u{0}name", "arguments": {}}]}),
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
    let message_id = body["message"]["id"].as_i64().expect("message id");
    let mut reader = Reader::open(&api, &chat_id, Some(&format!("{message_id}-0-0"))).await;
    let error = reader.until(TURN, |event| event.event == "error").await;
    assert_eq!(error.data["kind"], "invalid_response", "{error:?}");
    assert_eq!(error.data["retryable"], false);
    wait_until(TURN, "the chat to be in error", || async {
        (chat_status(&api, &chat_id).await == "error").then_some(())
    })
    .await;
    let stats: serde_json::Value = reqwest::get(format!("{}/mock/stats", cluster.mock_url))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    assert_eq!(
        stats["requests"]["chat"], 1,
        "asked once, not re-run: {stats}"
    );
}
