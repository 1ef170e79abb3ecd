//! Races at turn boundaries, each forced into one interleaving by a test session that holds the
//! chat's row lock (as a slow transaction would) while the API and the worker queue up behind
//! it in a known order. Plus the idempotency of the worker's fenced commit (I11).

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use chatd_mock_llm::reply_text;
use chatd_shared::domain::Role;
use chatd_worker::store::{commit, CommitOutcome, NewRow, TurnEnd};
use chatd_worker::tool::agents::NewChild;
use common::cluster::{
    assistant_texts, chat_status, create_chat, directive_message, messages, wait_until, Cluster,
};
use common::leases::{leased_chat, stored_rows, RowLock};

const TURN: Duration = Duration::from_secs(40);

/// While the test holds a chat's row lock the worker's heartbeats wait too; a lease timeout
/// longer than the test's lock keeps the lease (and the turn) alive meanwhile.
const HELD_LOCK_LEASES: &[&str] = &["--stale-after-ms", "30000"];

/// Waits until a backend of `application` whose query contains `query_part` waits for a lock.
async fn wait_blocked(cluster: &Cluster, application: &str, query_part: &str) {
    let sql = cluster.sql().await;
    let pattern = format!("%{query_part}%");
    wait_until(
        TURN,
        &format!("{application} to wait on `{query_part}`"),
        || {
            let sql = &sql;
            let pattern = pattern.clone();
            async move {
                let row = sql
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                     AND wait_event_type = 'Lock' AND query LIKE $2",
                        &[&application, &pattern],
                    )
                    .await
                    .ok()?;
                (row.get::<_, i64>(0) > 0).then_some(())
            }
        },
    )
    .await;
}

async fn wait_status(cluster: &Cluster, chat_id: &str, status: &str) {
    let api = cluster.api(0);
    wait_until(TURN, &format!("status {status}"), || async {
        (chat_status(&api, chat_id).await == status).then_some(())
    })
    .await;
}

async fn post(cluster: &Cluster, path: String, body: Value) -> tokio::task::JoinHandle<u16> {
    let api = cluster.api(0);
    tokio::spawn(async move {
        let (status, body) = api.post(&path, &body).await.expect("post");
        assert!(status < 300, "{path}: {status} {body}");
        status
    })
}

/// I11: a commit retried with the same key (its first reply was lost) writes nothing twice.
/// Before, a `Continue` commit retried after a lost reply passed the same fence and inserted
/// the assistant and tool rows again.
#[tokio::test(flavor = "multi_thread")]
async fn a_retried_commit_writes_nothing_twice() {
    let cluster = Cluster::start(1, 0).await;
    let (chat_id, chat_uuid, mut client, lease) = leased_chat(&cluster).await;
    let row = || NewRow {
        role: Role::Assistant,
        content: json!([{"type": "text", "text": "a step"}]),
        model_config_id: None,
        usage: None,
        runtime_ms: None,
        provider_response_id: None,
        compressed: false,
    };
    // The step starts a sub-agent: created with the step, and only once.
    let model_config_id: Uuid = client
        .query_one("SELECT id FROM model_configs WHERE is_default", &[])
        .await
        .expect("the default model config")
        .get(0);
    let child = NewChild {
        id: Uuid::new_v4(),
        title: "a child".into(),
        content: json!([{"type": "text", "text": "a sub-task"}]),
        model_config_id,
    };
    let children = std::slice::from_ref(&child);
    let key = Uuid::new_v4();
    let first = commit(
        &mut client,
        lease,
        &[row()],
        children,
        &TurnEnd::Continue,
        key,
        None,
    )
    .await
    .expect("commit");
    assert!(matches!(&first, CommitOutcome::Committed(_, created) if created.len() == 1));
    let again = commit(
        &mut client,
        lease,
        &[row()],
        children,
        &TurnEnd::Continue,
        key,
        None,
    )
    .await
    .expect("commit again");
    assert!(
        matches!(again, CommitOutcome::AlreadyCommitted(_)),
        "the retry is recognised"
    );
    let sub_agents: Vec<Uuid> = client
        .query(
            "SELECT id FROM chats WHERE parent_chat_id = $1",
            &[&chat_uuid],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(sub_agents, [child.id], "one sub-agent, with the step's id");
    // A new key is a new step.
    let next = commit(
        &mut client,
        lease,
        &[row()],
        &[],
        &TurnEnd::Done,
        Uuid::new_v4(),
        None,
    )
    .await
    .expect("commit the end");
    assert!(matches!(next, CommitOutcome::Committed(..)));
    assert_eq!(
        assistant_texts(&cluster.api(0), &chat_id).await,
        ["a step", "a step"]
    );
}

/// A commit returns the rows it wrote as they are stored (the worker builds them from what it
/// sent and the ids and times the statement returns), and a normal end with a queued message
/// promotes it after the step's rows: the statement for an empty queue finds the message
/// (nothing written) and the queue's form writes both.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_returns_its_rows_and_promotes_the_queue_head_after_them() {
    let cluster = Cluster::start(1, 0).await;
    let (chat_id, chat_uuid, mut client, lease) = leased_chat(&cluster).await;
    let sql = cluster.sql().await;
    let step = [
        NewRow {
            role: Role::Assistant,
            content: json!([{"type": "text", "text": "calling"},
                            {"type": "tool_call", "id": "c1", "name": "echo", "arguments": {"n": 2}}]),
            model_config_id: None,
            usage: Some(chatd_worker::store::RowUsage {
                input_tokens: 12,
                output_tokens: 3,
                reasoning_tokens: 1,
                cache_read_tokens: 4,
                cache_write_tokens: 0,
                cost_micros: Some(7),
            }),
            runtime_ms: Some(15),
            provider_response_id: Some("resp-1".into()),
            compressed: false,
        },
        NewRow {
            role: Role::Tool,
            content: json!([{"type": "tool_result", "call_id": "c1", "output": "2"}]),
            model_config_id: None,
            usage: None,
            runtime_ms: Some(1),
            provider_response_id: None,
            compressed: false,
        },
    ];
    let CommitOutcome::Committed(change, _) = commit(
        &mut client,
        lease,
        &step,
        &[],
        &TurnEnd::Continue,
        Uuid::new_v4(),
        Some(9),
    )
    .await
    .expect("commit a step") else {
        panic!("the step is committed");
    };
    let returned: Vec<Value> = change
        .new_messages
        .iter()
        .map(|row| serde_json::to_value(row).expect("encode"))
        .collect();
    assert_eq!(returned.len(), 2, "both rows come back");
    let ids: Vec<i64> = change.new_messages.iter().map(|row| row.id).collect();
    assert_eq!(
        returned,
        stored_rows(&sql, &ids).await,
        "the rows as stored"
    );
    assert!(!change.queue);

    // A message queued while the turn runs (the API's send to a busy chat).
    let (status, _) = cluster
        .api(0)
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({"content": "next"}),
        )
        .await
        .expect("send");
    assert_eq!(status, 202, "queued behind the running turn");
    let answer = [NewRow {
        role: Role::Assistant,
        content: json!([{"type": "text", "text": "done"}]),
        model_config_id: None,
        usage: None,
        runtime_ms: None,
        provider_response_id: None,
        compressed: false,
    }];
    let CommitOutcome::Committed(change, _) = commit(
        &mut client,
        lease,
        &answer,
        &[],
        &TurnEnd::Done,
        Uuid::new_v4(),
        None,
    )
    .await
    .expect("commit the end") else {
        panic!("the end is committed");
    };
    assert!(change.queue, "the queue changed");
    assert_eq!(
        change.status.as_str(),
        "pending",
        "the promoted message runs next"
    );
    let ids: Vec<i64> = change.new_messages.iter().map(|row| row.id).collect();
    assert_eq!(ids.len(), 2, "the answer and the promoted message: {ids:?}");
    assert!(
        ids[0] < ids[1],
        "the promoted message comes after the answer"
    );
    assert_eq!(change.new_messages[1].role, Role::User);
    let returned: Vec<Value> = change
        .new_messages
        .iter()
        .map(|row| serde_json::to_value(row).expect("encode"))
        .collect();
    assert_eq!(
        returned,
        stored_rows(&sql, &ids).await,
        "the rows as stored"
    );
    let queued: i64 = client
        .query_one(
            "SELECT count(*) FROM chat_queued_messages WHERE chat_id = $1",
            &[&chat_uuid],
        )
        .await
        .expect("the queue")
        .get(0);
    assert_eq!(queued, 0, "the head left the queue");
}

/// An interrupt committed while the worker's `requires_action` commit waited for the row lock
/// wins: before, the commit overwrote `interrupting` and the interrupt was lost (the chat sat
/// in `requires_action`). Now the client calls get synthetic results and the chat is idle.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_beats_a_concurrent_requires_action_commit() {
    let mut cluster = Cluster::start(1, 0).await;
    cluster.add_worker(HELD_LOCK_LEASES).await.expect("worker");
    let api = cluster.api(0);
    let message = directive_message(
        "call the client",
        json!({"ttft_ms": 2500, "tool_calls": [{"name": "client_lookup", "arguments": {"q": 1}}]}),
    );
    let (status, body) = api
        .post(
            "/chats",
            &json!({"message": message, "dynamic_tools": [{"name": "client_lookup",
                "description": "looks up", "schema": {"type": "object"}}]}),
        )
        .await
        .expect("create");
    assert_eq!(status, 201, "{body}");
    let chat_id = body["chat"]["id"].as_str().expect("id").to_string();
    let chat_uuid = Uuid::parse_str(&chat_id).expect("uuid");
    wait_status(&cluster, &chat_id, "running").await;
    let lock = RowLock::take(&cluster, chat_uuid).await;
    let interrupt = post(&cluster, format!("/chats/{chat_id}/interrupt"), json!({})).await;
    wait_blocked(&cluster, "chatd-api", "chats").await;
    wait_blocked(&cluster, "chatd-worker", "owned AS (").await;
    lock.release().await;
    interrupt.await.expect("interrupt");

    wait_status(&cluster, &chat_id, "waiting").await;
    let stored = messages(&api, &chat_id).await;
    let tool = stored
        .iter()
        .find(|message| message["role"] == "tool")
        .unwrap_or_else(|| panic!("the client call got a synthetic result: {stored:?}"));
    assert_eq!(tool["content"][0]["is_error"], true, "{tool}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        chat_status(&api, &chat_id).await,
        "waiting",
        "and stays idle"
    );
}

/// A step that must restart (the stream was cut after partial output) while the chat is
/// `interrupting` honours the interrupt. Before, renewing the attempt refused an
/// `interrupting` chat, the turn gave up as if its lease were lost, and the chat sat in
/// `interrupting` until the lease expired (60 s here).
#[tokio::test(flavor = "multi_thread")]
async fn a_step_restart_during_an_interrupt_stops_the_turn_at_once() {
    let mut cluster = Cluster::start(1, 0).await;
    cluster
        .add_worker(&["--stale-after-ms", "60000"])
        .await
        .expect("worker");
    let message = directive_message(
        "cut and stop",
        json!({"tokens": 40, "tokens_per_second": 4, "cut_after": 8, "fail_times": 1}),
    );
    let (chat_id, _) = create_chat(&cluster.api(0), &message).await;
    let chat_uuid = Uuid::parse_str(&chat_id).expect("uuid");
    wait_status(&cluster, &chat_id, "running").await;
    let lock = RowLock::take(&cluster, chat_uuid).await;
    let interrupt = post(&cluster, format!("/chats/{chat_id}/interrupt"), json!({})).await;
    wait_blocked(&cluster, "chatd-api", "chats").await;
    // The cut (after 2 s) makes the step renew its attempt, which queues behind the API.
    wait_blocked(&cluster, "chatd-worker", "WITH current").await;
    lock.release().await;
    interrupt.await.expect("interrupt");

    wait_until(
        Duration::from_secs(15),
        "the interrupted chat to be idle",
        || async { (chat_status(&cluster.api(0), &chat_id).await == "waiting").then_some(()) },
    )
    .await;
    let texts = assistant_texts(&cluster.api(0), &chat_id).await;
    assert_eq!(texts.len(), 1, "the streamed part is kept: {texts:?}");
    assert!(reply_text(&message, 40).starts_with(&texts[0]), "{texts:?}");
}

/// A worker shutting down releases its turns, but a turn the user interrupted meanwhile must
/// not run again: before, the release turned `interrupting` back into `pending`.
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_release_keeps_an_interrupt() {
    let mut cluster = Cluster::start(1, 0).await;
    cluster
        .add_worker(&["--shutdown-grace-ms", "300", "--stale-after-ms", "30000"])
        .await
        .expect("worker");
    let message = directive_message("long", json!({"tokens": 200, "tokens_per_second": 10}));
    let (chat_id, _) = create_chat(&cluster.api(0), &message).await;
    let chat_uuid = Uuid::parse_str(&chat_id).expect("uuid");
    wait_status(&cluster, &chat_id, "running").await;
    let lock = RowLock::take(&cluster, chat_uuid).await;
    let interrupt = post(&cluster, format!("/chats/{chat_id}/interrupt"), json!({})).await;
    wait_blocked(&cluster, "chatd-api", "chats").await;
    cluster.signal_worker(0, libc::SIGTERM);
    wait_blocked(&cluster, "chatd-worker", "owned AS (").await;
    lock.release().await;
    interrupt.await.expect("interrupt");

    let deadline = std::time::Instant::now() + TURN;
    while cluster.workers[0]
        .child
        .try_wait()
        .expect("poll the worker")
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        chat_status(&cluster.api(0), &chat_id).await,
        "waiting",
        "the interrupted turn is not released to run again"
    );
}

/// A message queued while the worker's final commit waited for the row lock runs next at
/// once. Before, the commit's snapshot predated the queue insert: the chat went `waiting`
/// with a stranded queue until the sweep (60 s here) promoted it.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_queued_during_the_final_commit_runs_next() {
    let mut cluster = Cluster::start(1, 0).await;
    cluster
        .add_worker(&["--sweep-interval-ms", "60000", "--stale-after-ms", "60000"])
        .await
        .expect("worker");
    let first = directive_message("first", json!({"tokens": 20, "tokens_per_second": 10}));
    let (chat_id, _) = create_chat(&cluster.api(0), &first).await;
    let chat_uuid = Uuid::parse_str(&chat_id).expect("uuid");
    wait_status(&cluster, &chat_id, "running").await;
    let lock = RowLock::take(&cluster, chat_uuid).await;
    let second = "second";
    let send = post(
        &cluster,
        format!("/chats/{chat_id}/messages"),
        json!({"content": second}),
    )
    .await;
    wait_blocked(&cluster, "chatd-api", "chats").await;
    wait_blocked(&cluster, "chatd-worker", "owned AS (").await;
    lock.release().await;
    assert_eq!(
        send.await.expect("send"),
        202,
        "queued behind the running turn"
    );

    wait_until(Duration::from_secs(20), "both answers", || async {
        (assistant_texts(&cluster.api(0), &chat_id).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        assistant_texts(&cluster.api(0), &chat_id).await,
        [reply_text(&first, 20), reply_text(second, 12)]
    );
}

/// A worker that re-claims a chat it lost (its lease was recovered while it still ran the
/// turn) stops the old turn: before, the old turn ran on, streaming from the provider, until
/// its next fenced write.
#[tokio::test(flavor = "multi_thread")]
async fn a_reclaimed_chat_stops_its_old_turn() {
    let mut cluster = Cluster::start(1, 0).await;
    // Rare heartbeats: the worker re-claims the chat before a heartbeat could notice the loss.
    cluster
        .add_worker(&[
            "--heartbeat-interval-ms",
            "10000",
            "--stale-after-ms",
            "30000",
        ])
        .await
        .expect("worker");
    let message = directive_message("slow", json!({"tokens": 100, "tokens_per_second": 10}));
    let (chat_id, _) = create_chat(&cluster.api(0), &message).await;
    let chat_uuid = Uuid::parse_str(&chat_id).expect("uuid");
    wait_status(&cluster, &chat_id, "running").await;
    let sql = cluster.sql().await;
    let attempt: i32 = sql
        .query_one("SELECT attempt FROM chats WHERE id = $1", &[&chat_uuid])
        .await
        .expect("attempt")
        .get(0);
    // What a recovery sweep does to a lease it judged stale; the worker (still running the
    // turn) is woken and claims the chat again.
    sql.batch_execute(&format!(
        "UPDATE chats SET status = 'pending', worker_id = NULL, heartbeat_at = NULL, \
         version = version + 1, updated_at = now() WHERE id = '{chat_uuid}'; NOTIFY chatd_wake"
    ))
    .await
    .expect("recover the lease");
    wait_until(TURN, "the chat to be re-claimed", || async {
        let row = sql
            .query_one(
                "SELECT attempt, status FROM chats WHERE id = $1",
                &[&chat_uuid],
            )
            .await
            .ok()?;
        (row.get::<_, i32>(0) > attempt && row.get::<_, &str>(1) == "running").then_some(())
    })
    .await;
    let http = reqwest::Client::new();
    let stats_url = format!("{}/mock/stats", cluster.mock_url);
    wait_until(TURN, "the second provider request", || async {
        let stats: Value = http.get(&stats_url).send().await.ok()?.json().await.ok()?;
        (stats["requests"]["chat"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    // The old stream had ~9 s to go: only its turn's cancellation closes it sooner.
    wait_until(
        Duration::from_secs(5),
        "one open provider stream",
        || async {
            let stats: Value = http.get(&stats_url).send().await.ok()?.json().await.ok()?;
            (stats["open_streams"] == 1).then_some(())
        },
    )
    .await;
    wait_status(&cluster, &chat_id, "waiting").await;
    assert_eq!(
        assistant_texts(&cluster.api(0), &chat_id).await,
        [reply_text(&message, 100)]
    );
}

/// A chat whose row another transaction holds for longer than a heartbeat interval does not
/// stop the worker's other turns. Before, each heartbeat that timed out waiting for the row
/// lock gave its connection back to the pool with the statement still running; every later
/// statement on that connection (another chat's claim, flush or commit) queued behind it
/// until the lock was released.
#[tokio::test(flavor = "multi_thread")]
async fn a_chat_locked_for_seconds_does_not_stop_the_workers_other_turns() {
    let mut cluster = Cluster::start(1, 0).await;
    cluster
        .add_worker(&["--pool-size", "2", "--stale-after-ms", "60000"])
        .await
        .expect("worker");
    let api = cluster.api(0);
    let slow = directive_message("slow", json!({"tokens": 30, "tokens_per_second": 10}));
    let (slow_chat, _) = create_chat(&api, &slow).await;
    wait_status(&cluster, &slow_chat, "running").await;
    let lock = RowLock::take(&cluster, Uuid::parse_str(&slow_chat).expect("uuid")).await;
    // Several heartbeats time out on the held row.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let quick = directive_message("quick", json!({"tokens": 3}));
    let (quick_chat, _) = create_chat(&api, &quick).await;
    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if assistant_texts(&api, &quick_chat).await.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    lock.release().await;
    assert!(
        answered.is_ok(),
        "the other chat's turn waited for the held row"
    );
    assert_eq!(
        assistant_texts(&api, &quick_chat).await,
        [reply_text(&quick, 3)]
    );
    wait_status(&cluster, &slow_chat, "waiting").await;
    assert_eq!(
        assistant_texts(&api, &slow_chat).await,
        [reply_text(&slow, 30)]
    );
}
