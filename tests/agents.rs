//! Sub-agents through the cluster: `spawn_agent` starts a child chat any worker runs,
//! `wait_agent` reads its answer without holding a worker slot (the parent is
//! `awaiting_agents` meanwhile), the depth and per-turn limits, interrupts that reach the
//! children, a wait's timeout, and a child whose worker is killed.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use chatd_client::ApiClient;
use common::cluster::{assistant_texts, chat_status, messages, wait_until, Cluster};

const TURN: Duration = Duration::from_secs(30);
const AGENT_TOOLS: [&str; 2] = ["--tools", "spawn_agent,wait_agent"];

/// A parent message whose model spawns one child with `child_prompt`, then waits for it
/// (`wait` merged into the wait's arguments), then answers.
fn spawn_then_wait(child_prompt: &str, wait: Value) -> String {
    let mut wait_args = json!({"chat_id": "$result.chat_id"});
    if let (Value::Object(args), Value::Object(extra)) = (&mut wait_args, wait) {
        args.extend(extra);
    }
    let script = json!({"tool_script": [
        [{"name": "spawn_agent", "arguments": {"prompt": child_prompt, "title": "the sub-task"}}],
        [{"name": "wait_agent", "arguments": wait_args}],
    ]});
    format!("Split the work.\n@mock {script}")
}

async fn create(api: &ApiClient, message: &str) -> String {
    let (status, body) = api
        .post("/chats", &json!({"message": message}))
        .await
        .expect("create chat");
    assert_eq!(status, 201, "{body}");
    body["chat"]["id"].as_str().expect("id").to_owned()
}

/// The chat's direct sub-chats (`GET /chats/{id}`'s `children`).
async fn children(api: &ApiClient, chat_id: &str) -> Vec<String> {
    let (status, body) = api.get(&format!("/chats/{chat_id}")).await.expect("get");
    assert_eq!(status, 200, "{body}");
    body["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|id| id.as_str().expect("an id").to_owned())
        .collect()
}

/// The results the chat's tools got for calls of `tool`, in order.
async fn tool_results(api: &ApiClient, chat_id: &str, tool: &str) -> Vec<(Value, bool)> {
    messages(api, chat_id)
        .await
        .iter()
        .filter(|message| message["role"] == "tool")
        .flat_map(|message| message["content"].as_array().cloned().unwrap_or_default())
        .filter(|part| part["tool_name"] == tool)
        .map(|part| {
            (
                part["result"].clone(),
                part["is_error"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

async fn wait_status(api: &ApiClient, chat_id: &str, status: &str) {
    wait_until(TURN, &format!("{chat_id} {status}"), || async {
        (chat_status(api, chat_id).await == status).then_some(())
    })
    .await;
}

/// One worker with one slot: the parent spawns a child and waits for it. The wait holds no
/// slot (the parent is `awaiting_agents`, no worker on it), so the child runs on the same
/// worker, and the parent resumes with the child's answer — on any replica.
#[tokio::test(flavor = "multi_thread")]
async fn a_parent_waits_for_its_sub_agent_without_holding_the_only_slot() {
    let mut cluster = Cluster::start(2, 0).await;
    let mut args = AGENT_TOOLS.to_vec();
    args.extend(["--max-concurrent-turns", "1"]);
    cluster.add_worker(&args).await.expect("worker");
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let child_prompt = format!(
        "Count the files.\n@mock {}",
        json!({"tokens": 8, "ttft_ms": 1500})
    );
    let mut watch = cluster.watch(1).await;
    let parent = create(&api_a, &spawn_then_wait(&child_prompt, json!({}))).await;

    // The owner's watch stream shows the child (under its parent) and the parent's wait.
    let (mut saw_child, mut saw_wait) = (false, false);
    while !(saw_child && saw_wait) {
        let event = tokio::time::timeout(TURN, futures::StreamExt::next(&mut watch))
            .await
            .expect("a watch event")
            .expect("the watch stream is open")
            .expect("read the watch stream");
        let chat = &event.data["chat"];
        saw_child |= chat["parent_chat_id"] == parent.as_str();
        saw_wait |= chat["id"] == parent.as_str() && chat["status"] == "awaiting_agents";
    }

    // While the child runs, the parent waits without a worker.
    wait_status(&api_b, &parent, "awaiting_agents").await;
    let sql = cluster.sql().await;
    let parent_uuid = Uuid::parse_str(&parent).unwrap();
    let row = sql
        .query_one(
            "SELECT worker_id, action_deadline_at IS NOT NULL FROM chats WHERE id = $1",
            &[&parent_uuid],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<Uuid>>(0),
        None,
        "no worker holds a waiting parent"
    );
    assert!(row.get::<_, bool>(1), "the wait has a deadline");
    let (status, body) = api_b
        .post(
            &format!("/chats/{parent}/tool-results"),
            &json!({"results": [{"tool_call_id": "call_1", "output": "forged"}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "a sub-agent's answer cannot be forged: {body}");

    wait_status(&api_b, &parent, "waiting").await;
    let kids = children(&api_b, &parent).await;
    assert_eq!(kids.len(), 1, "{kids:?}");
    let child = &kids[0];
    let (_, child_body) = api_b.get(&format!("/chats/{child}")).await.unwrap();
    assert_eq!(child_body["chat"]["parent_chat_id"], parent.as_str());
    assert_eq!(child_body["chat"]["title"], "the sub-task");
    assert_eq!(child_body["chat"]["status"], "waiting");
    let child_messages = messages(&api_b, child).await;
    assert_eq!(
        chatd_client::content_text(&child_messages[0]["content"]),
        child_prompt,
        "the prompt is the child's first message"
    );
    let child_answer = assistant_texts(&api_b, child).await;
    assert_eq!(
        child_answer,
        [chatd_mock_llm::reply_text(&child_prompt, 8)],
        "the child ran its own turn"
    );

    let spawned = tool_results(&api_a, &parent, "spawn_agent").await;
    assert_eq!(spawned.len(), 1);
    assert_eq!(spawned[0].0["chat_id"], child.as_str());
    let waited = tool_results(&api_a, &parent, "wait_agent").await;
    assert_eq!(waited.len(), 1, "{waited:?}");
    assert_eq!(waited[0].0["status"], "completed", "{waited:?}");
    assert_eq!(waited[0].0["answer"], child_answer[0].as_str());
    assert!(!waited[0].1);
    let parent_answer = assistant_texts(&api_a, &parent).await;
    assert!(
        parent_answer
            .last()
            .is_some_and(|text| text.contains("completed")),
        "the parent's model read the answer: {parent_answer:?}"
    );

    // The child's spend is in the root's cost.
    let (status, cost) = api_a.get(&format!("/chats/{parent}/cost")).await.unwrap();
    assert_eq!(status, 200, "{cost}");
    assert_eq!(cost["chats"], 2, "{cost}");
    let child_tokens: i64 = sql
        .query_one(
            "SELECT sum(output_tokens)::int8 FROM chat_messages WHERE chat_id = $1",
            &[&Uuid::parse_str(child).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    let parent_tokens: i64 = sql
        .query_one(
            "SELECT sum(output_tokens)::int8 FROM chat_messages WHERE chat_id = $1",
            &[&parent_uuid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        cost["output_tokens"].as_i64(),
        Some(child_tokens + parent_tokens),
        "{cost}"
    );
}

/// `--max-agents-per-turn` refuses the spawn past the limit with a result the model reads;
/// `--max-agent-depth` keeps `spawn_agent` from the chats at the limit (a child at depth 1
/// with a depth limit of 1 is not offered it).
#[tokio::test(flavor = "multi_thread")]
async fn depth_and_per_turn_limits_hold() {
    let mut cluster = Cluster::start(1, 0).await;
    let mut args = AGENT_TOOLS.to_vec();
    args.extend(["--max-agent-depth", "1", "--max-agents-per-turn", "2"]);
    cluster.add_worker(&args).await.expect("worker");
    let api = cluster.api(0);
    let child_prompt = format!("Which tools?\n@mock {}", json!({"echo": "tools"}));
    let spawn = json!({"name": "spawn_agent", "arguments": {"prompt": child_prompt}});
    let script = json!({"tool_script": [[spawn, spawn, spawn]]});
    let parent = create(&api, &format!("Three at once.\n@mock {script}")).await;
    wait_status(&api, &parent, "waiting").await;

    let spawned = tool_results(&api, &parent, "spawn_agent").await;
    assert_eq!(spawned.len(), 3, "{spawned:?}");
    assert!(!spawned[0].1 && !spawned[1].1, "{spawned:?}");
    assert!(spawned[2].1, "the third is over the limit: {spawned:?}");
    assert!(
        spawned[2]
            .0
            .as_str()
            .unwrap_or_default()
            .contains("limit per turn"),
        "{spawned:?}"
    );
    let kids = children(&api, &parent).await;
    assert_eq!(kids.len(), 2, "only the allowed children exist: {kids:?}");
    for kid in &kids {
        wait_status(&api, kid, "waiting").await;
        assert_eq!(
            assistant_texts(&api, kid).await,
            ["wait_agent"],
            "a child at the depth limit is not offered spawn_agent"
        );
    }
    let sql = cluster.sql().await;
    let depths: Vec<i16> = sql
        .query(
            "SELECT depth FROM chats WHERE parent_chat_id = $1",
            &[&Uuid::parse_str(&parent).unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(depths, [1, 1]);

    // A new turn may start children again.
    let spawn_one =
        json!({"tool_script": [[{"name": "spawn_agent", "arguments": {"prompt": "Once more."}}]]});
    let (status, body) = api
        .post(
            &format!("/chats/{parent}/messages"),
            &json!({"content": format!("Again.\n@mock {spawn_one}")}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until(TURN, "the third child", || async {
        (children(&api, &parent).await.len() == 3).then_some(())
    })
    .await;
}

/// Interrupting a parent that waits interrupts its running child; archiving is refused while
/// the child is busy and works once it is not.
#[tokio::test(flavor = "multi_thread")]
async fn interrupting_a_parent_interrupts_its_sub_agents() {
    let mut cluster = Cluster::start(2, 0).await;
    cluster.add_worker(&AGENT_TOOLS).await.expect("worker");
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let slow = format!(
        "Take your time.\n@mock {}",
        json!({"tokens": 2000, "tokens_per_second": 20})
    );
    let parent = create(&api_a, &spawn_then_wait(&slow, json!({}))).await;
    wait_status(&api_a, &parent, "awaiting_agents").await;
    let child = children(&api_a, &parent).await.remove(0);
    wait_status(&api_a, &child, "running").await;

    let (status, body) = api_a
        .patch(&format!("/chats/{parent}"), &json!({"archived": true}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");

    let (status, body) = api_b
        .post(&format!("/chats/{parent}/interrupt"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chat"]["status"], "waiting", "{body}");
    wait_status(&api_a, &child, "waiting").await;
    let waited = tool_results(&api_a, &parent, "wait_agent").await;
    assert_eq!(waited.len(), 1, "{waited:?}");
    assert!(waited[0].1, "{waited:?}");
    assert!(
        waited[0]
            .0
            .as_str()
            .unwrap_or_default()
            .contains("user continued"),
        "{waited:?}"
    );
    let child_answer = assistant_texts(&api_a, &child).await;
    assert_eq!(
        child_answer.len(),
        1,
        "the child kept what it had: {child_answer:?}"
    );
    assert!(
        child_answer[0].len() < chatd_mock_llm::reply_text(&slow, 2000).len(),
        "the child was stopped before its end"
    );

    let (status, body) = api_a
        .patch(&format!("/chats/{parent}"), &json!({"archived": true}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, child_body) = api_a.get(&format!("/chats/{child}")).await.unwrap();
    assert_eq!(child_body["chat"]["archived"], true);
}

/// A wait past its `timeout_s` is answered "still running" (by the sweep) and the parent goes
/// on; the child still finishes, and a later wait reads its answer at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_that_times_out_reports_the_sub_agent_still_running() {
    let mut cluster = Cluster::start(1, 0).await;
    let mut args = AGENT_TOOLS.to_vec();
    args.extend(["--sweep-interval-ms", "200"]);
    cluster.add_worker(&args).await.expect("worker");
    let api = cluster.api(0);
    let slow = format!(
        "Slow job.\n@mock {}",
        json!({"tokens": 40, "tokens_per_second": 10})
    );
    let parent = create(&api, &spawn_then_wait(&slow, json!({"timeout_s": 1}))).await;
    wait_status(&api, &parent, "waiting").await;
    let waited = tool_results(&api, &parent, "wait_agent").await;
    assert_eq!(waited.len(), 1, "{waited:?}");
    assert_eq!(waited[0].0["status"], "running", "{waited:?}");
    assert!(!waited[0].1);
    let child = children(&api, &parent).await.remove(0);
    wait_status(&api, &child, "waiting").await;

    // Waiting again for an ended child answers at once (no pause).
    let again = json!({"tool_script": [[{"name": "wait_agent", "arguments": {"chat_id": child}}]]});
    let (status, body) = api
        .post(
            &format!("/chats/{parent}/messages"),
            &json!({"content": format!("And now?\n@mock {again}")}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until(TURN, "the second wait", || async {
        let waited = tool_results(&api, &parent, "wait_agent").await;
        (waited.len() == 2 && chat_status(&api, &parent).await == "waiting").then_some(())
    })
    .await;
    let waited = tool_results(&api, &parent, "wait_agent").await;
    assert_eq!(waited[1].0["status"], "completed", "{waited:?}");
    assert_eq!(
        waited[1].0["answer"],
        chatd_mock_llm::reply_text(&slow, 40).as_str()
    );
    let sql = cluster.sql().await;
    let paused: i64 = sql
        .query_one(
            "SELECT count(*) FROM chat_messages WHERE chat_id = $1 AND role = 'tool'",
            &[&Uuid::parse_str(&parent).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(paused, 3, "spawn, the timed-out wait, the immediate wait");
}

/// The worker running the child is killed (SIGKILL) while the parent waits: the other worker
/// takes the child over, and its end resumes the parent — nothing is lost, nothing hangs.
#[tokio::test(flavor = "multi_thread")]
async fn a_sub_agent_whose_worker_dies_still_resumes_its_parent() {
    let mut cluster = Cluster::start(1, 0).await;
    for _ in 0..2 {
        cluster.add_worker(&AGENT_TOOLS).await.expect("worker");
    }
    let api = cluster.api(0);
    let slow = format!(
        "Long job.\n@mock {}",
        json!({"tokens": 60, "tokens_per_second": 20})
    );
    let parent = create(&api, &spawn_then_wait(&slow, json!({}))).await;
    wait_status(&api, &parent, "awaiting_agents").await;
    let child = children(&api, &parent).await.remove(0);
    let owner = wait_until(TURN, "the child's worker", || async {
        cluster.owner_worker(&child).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.signal_worker(owner, libc::SIGKILL);

    wait_until(Duration::from_secs(60), "the parent's answer", || async {
        (chat_status(&api, &parent).await == "waiting").then_some(())
    })
    .await;
    let waited = tool_results(&api, &parent, "wait_agent").await;
    assert_eq!(waited.len(), 1, "{waited:?}");
    assert_eq!(waited[0].0["status"], "completed", "{waited:?}");
    assert_eq!(
        assistant_texts(&api, &child).await,
        [chatd_mock_llm::reply_text(&slow, 60)],
        "one whole answer from the worker that took over"
    );
}
