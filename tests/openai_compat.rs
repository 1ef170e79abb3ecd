//! The OpenAI-compatible front door (`/v1`) and the native API's vendor conventions, where
//! the official SDKs (tests/openai_sdk.rs) cannot see: hidden and purged ephemeral chats,
//! the tool declaration shapes of the native API, a response streamed across a worker's
//! crash, CORS for browser callers, and how a request's `model` names a model config.

mod common;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use common::cluster::{wait_until, Cluster};

async fn post_v1(cluster: &Cluster, index: usize, path: &str, body: Value) -> (u16, Value) {
    let response = cluster
        .http
        .post(format!("{}/v1{path}", cluster.apis[index].url))
        .bearer_auth(&cluster.token)
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get_v1(cluster: &Cluster, index: usize, path: &str) -> (u16, Value) {
    let response = cluster
        .http
        .get(format!("{}/v1{path}", cluster.apis[index].url))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("get");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_false_responses_are_hidden_and_purged_after_the_retention() {
    let cluster = Cluster::start(1, 1).await;
    let (status, response) = post_v1(
        &cluster,
        0,
        "/responses",
        json!({"model": "mock", "input": "forget me", "store": false}),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["store"], false);
    let id = response["id"].as_str().expect("id").to_owned();
    // Retrievable (and resumable) during the retention window, never listed.
    let (status, _) = get_v1(&cluster, 0, &format!("/responses/{id}")).await;
    assert_eq!(status, 200);
    let (_, list) = cluster.api(0).get("/chats").await.expect("list");
    assert_eq!(list["items"].as_array().expect("chats").len(), 0, "{list}");
    let sql = cluster.sql().await;
    let uuid = uuid::Uuid::parse_str(id.trim_start_matches("resp_")).expect("uuid");
    let row = sql
        .query_one("SELECT chat_id, (SELECT purge_after_s FROM chats WHERE id = chat_id) FROM responses WHERE id = $1", &[&uuid])
        .await
        .expect("response row");
    let chat_id: uuid::Uuid = row.get(0);
    assert_eq!(
        row.get::<_, Option<i32>>(1),
        Some(600),
        "ten minutes by default"
    );
    let title: String = sql
        .query_one("SELECT title FROM chats WHERE id = $1", &[&chat_id])
        .await
        .expect("title")
        .get(0);
    assert_eq!(
        title, "forget me",
        "titled from its message, not by a billed model call"
    );
    // Past the retention: the sweep purges it.
    sql.execute("UPDATE chats SET purge_after_s = 1, updated_at = now() - interval '5 seconds' WHERE id = $1", &[&chat_id])
        .await
        .expect("age");
    wait_until(Duration::from_secs(30), "the purge", || async {
        let (status, _) = get_v1(&cluster, 0, &format!("/responses/{id}")).await;
        (status == 404).then_some(())
    })
    .await;
    let left: i64 = sql
        .query_one(
            "SELECT count(*) FROM chat_messages WHERE chat_id = $1 AND content <> '[]'::jsonb",
            &[&chat_id],
        )
        .await
        .expect("contents")
        .get(0);
    assert_eq!(left, 0, "the purged chat's contents are emptied");
    let billed: i64 = sql
        .query_one(
            "SELECT count(*) FROM chat_messages WHERE chat_id = $1 AND output_tokens > 0",
            &[&chat_id],
        )
        .await
        .expect("usage")
        .get(0);
    assert_eq!(billed, 1, "its usage still counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_declarations_in_the_vendors_shapes() {
    let cluster = Cluster::start(1, 1).await;
    let api = cluster.api(0);
    let shapes = [
        (
            "chatd_shape",
            json!({"name": "chatd_shape", "description": "d", "schema": {"type": "object"}}),
        ),
        (
            "openai_nested",
            json!({"type": "function", "function": {"name": "openai_nested", "description": "d", "parameters": {"type": "object"}, "strict": true}}),
        ),
        (
            "openai_flat",
            json!({"type": "function", "name": "openai_flat", "parameters": {"type": "object"}}),
        ),
        (
            "anthropic_shape",
            json!({"name": "anthropic_shape", "description": "d", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}),
        ),
    ];
    let tools: Vec<Value> = shapes.iter().map(|(_, shape)| shape.clone()).collect();
    let (status, created) = api
        .post(
            "/chats",
            &json!({"message": "x\n@mock {\"echo\": \"tools\"}", "dynamic_tools": tools}),
        )
        .await
        .expect("create");
    assert_eq!(status, 201, "{created}");
    let chat_id = created["chat"]["id"].as_str().expect("id").to_owned();
    let texts = wait_until(Duration::from_secs(30), "the reply", || async {
        let texts = common::cluster::assistant_texts(&api, &chat_id).await;
        (!texts.is_empty()).then_some(texts)
    })
    .await;
    for (name, _) in &shapes {
        assert!(
            texts[0].lines().any(|line| line == *name),
            "{name} offered: {texts:?}"
        );
    }
    // Stored in chatd's one shape.
    let stored: Value = cluster
        .sql()
        .await
        .query_one(
            "SELECT dynamic_tools FROM chats WHERE id = $1::text::uuid",
            &[&chat_id],
        )
        .await
        .expect("stored")
        .get(0);
    for tool in stored.as_array().expect("tools") {
        let mut keys: Vec<&str> = tool
            .as_object()
            .expect("tool")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["description", "exclusive", "name", "schema"],
            "{tool}"
        );
    }
    // A typo is named, not dropped.
    let (status, body) = api
        .post(
            "/chats",
            &json!({"dynamic_tools": [{"name": "t", "paramaters": {}}]}),
        )
        .await
        .expect("typo");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("paramaters"),
        "{body}"
    );
}

/// Reads a `/v1` event stream until its final event.
async fn read_events(
    response: reqwest::Response,
    kill_after: Option<(usize, Box<dyn FnOnce() + Send>)>,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    let mut kill = kill_after;
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|line| line.strip_prefix("data: ")) {
                let event: Value = serde_json::from_str(data).expect("event json");
                events.push(event);
            }
        }
        let deltas = events
            .iter()
            .filter(|event| event["type"] == "response.output_text.delta")
            .count();
        if kill.as_ref().is_some_and(|(after, _)| deltas >= *after) {
            (kill.take().expect("kill").1)();
        }
        if events.last().is_some_and(|event| {
            matches!(
                event["type"].as_str(),
                Some("response.completed" | "response.failed" | "response.incomplete")
            )
        }) {
            break;
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_streams_across_a_worker_crash_and_what_completes_is_what_is_stored() {
    let cluster = Cluster::start(2, 2).await;
    let response = cluster
        .http
        .post(format!("{}/v1/responses", cluster.apis[0].url))
        .bearer_auth(&cluster.token)
        .json(&json!({"model": "mock", "stream": true,
            "input": "crash me\n@mock {\"tokens\": 80, \"tokens_per_second\": 40}"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    // Kill the worker running the turn mid-answer (SIGKILL: no goodbye); the other takes over.
    let sql = cluster.sql().await;
    let workers: Vec<(uuid::Uuid, u32)> = cluster
        .workers
        .iter()
        .map(|worker| (worker.worker_id.expect("id"), worker.child.id()))
        .collect();
    let kill = move || {
        let runtime = tokio::runtime::Handle::current();
        let owner: Option<uuid::Uuid> = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    runtime.block_on(async {
                        sql.query_opt(
                            "SELECT worker_id FROM chats WHERE status = 'running' LIMIT 1",
                            &[],
                        )
                        .await
                        .expect("owner")
                        .and_then(|row| row.get(0))
                    })
                })
                .join()
                .expect("join")
        });
        let pid = workers
            .iter()
            .find(|(id, _)| Some(*id) == owner)
            .map(|(_, pid)| *pid)
            .expect("the running turn's worker");
        // SAFETY: a signal to a child process this test spawned and still owns.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    };
    let events = tokio::time::timeout(
        Duration::from_secs(90),
        read_events(response, Some((10, Box::new(kill)))),
    )
    .await
    .expect("the response ended");
    let numbers: Vec<i64> = events
        .iter()
        .map(|event| event["sequence_number"].as_i64().expect("number"))
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "{numbers:?}"
    );
    let last = events.last().expect("events");
    assert_eq!(last["type"], "response.completed", "{last}");
    // Every item the stream completed is exactly what is stored; items of the voided attempt
    // (if the crash cut one) were closed `incomplete`.
    let stored = &last["response"]["output"];
    let completed: Vec<&Value> = events
        .iter()
        .filter(|event| {
            event["type"] == "response.output_item.done" && event["item"]["status"] == "completed"
        })
        .map(|event| &event["item"])
        .collect();
    assert_eq!(
        completed.len(),
        stored.as_array().expect("output").len(),
        "{completed:?} vs {stored}"
    );
    for item in &completed {
        let deltas: String = events
            .iter()
            .filter(|event| {
                event["type"] == "response.output_text.delta" && event["item_id"] == item["id"]
            })
            .map(|event| event["delta"].as_str().expect("delta"))
            .collect();
        assert_eq!(
            deltas,
            item["content"][0]["text"].as_str().expect("text"),
            "streamed == stored for {}",
            item["id"]
        );
        let stored_item = stored
            .as_array()
            .expect("output")
            .iter()
            .find(|other| other["content"] == item["content"]);
        assert!(stored_item.is_some(), "{item} stored");
    }
    let id = last["response"]["id"].as_str().expect("id");
    // The crash happened mid-turn: another attempt finished it.
    let uuid = uuid::Uuid::parse_str(id.trim_start_matches("resp_")).expect("uuid");
    let row = cluster
        .sql()
        .await
        .query_one(
            "SELECT c.attempt - r.start_attempt FROM responses r JOIN chats c ON c.id = r.chat_id WHERE r.id = $1",
            &[&uuid],
        )
        .await
        .expect("attempts");
    assert!(row.get::<_, i32>(0) >= 2, "a second attempt ran the turn");
    let (_, fetched) = get_v1(&cluster, 1, &format!("/responses/{id}")).await;
    assert_eq!(&fetched["output"], stored);
    assert_eq!(fetched["usage"]["output_tokens"], 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_lets_the_configured_origins_call_from_a_browser() {
    let mut cluster = Cluster::start(0, 0).await;
    cluster
        .add_api_with(&[
            "--cors-origins",
            "https://app.example,http://localhost:3000",
        ])
        .await
        .expect("api");
    cluster.add_api().await.expect("api without CORS");
    let url = |index: usize| format!("{}/api/v1/chats/ui-stream", cluster.apis[index].url);
    let preflight = |index: usize, origin: &'static str| {
        cluster
            .http
            .request(reqwest::Method::OPTIONS, url(index))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight(0, "https://app.example")
        .await
        .expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    let other = preflight(0, "https://evil.example")
        .await
        .expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let off = preflight(1, "https://app.example")
        .await
        .expect("preflight");
    assert!(
        off.headers().get("access-control-allow-origin").is_none(),
        "CORS is off by default"
    );
    // A real request from the allowed origin can read the headers the AI SDK needs.
    let response = cluster
        .http
        .get(format!("{}/api/v1/chats", cluster.apis[0].url))
        .header("Origin", "http://localhost:3000")
        .bearer_auth(&cluster.token)
        .send()
        .await
        .expect("get");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-chatd-chat-id"), "{exposed}");
    // A path is not an origin: refused at startup, naming the flag.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args([
            "api",
            "--database-url",
            &cluster.db.url,
            "--cors-origins",
            "https://app.example/chat",
            "--addr",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run chatd api");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--cors-origins"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_is_named_by_its_id_model_or_display_name_and_ambiguity_lists_the_candidates() {
    let cluster = Cluster::start(1, 1).await;
    let sql = cluster.sql().await;
    let provider: uuid::Uuid = sql
        .query_one(
            "SELECT provider_id FROM model_configs WHERE is_default",
            &[],
        )
        .await
        .expect("default")
        .get(0);
    let mut twins = Vec::new();
    for display in ["Twin A", "Twin B"] {
        let id: uuid::Uuid = sql
            .query_one(
                "INSERT INTO model_configs (provider_id, model, display_name) VALUES ($1, 'twin', $2) RETURNING id",
                &[&provider, &display],
            )
            .await
            .expect("twin")
            .get(0);
        twins.push(id);
    }
    let (status, models) = get_v1(&cluster, 0, "/models").await;
    assert_eq!(status, 200, "{models}");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|model| model["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["mock", "Twin A", "Twin B"],
        "a shared model name is listed by display name"
    );

    let (status, error) = post_v1(
        &cluster,
        0,
        "/responses",
        json!({"model": "twin", "input": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "model");
    let message = error["error"]["message"].as_str().expect("message");
    for id in &twins {
        assert!(
            message.contains(&id.to_string()),
            "the candidates are listed: {message}"
        );
    }
    for (name, config) in [
        ("Twin B", twins[1]),
        (twins[0].to_string().as_str(), twins[0]),
    ] {
        let (status, response) = post_v1(
            &cluster,
            0,
            "/responses",
            json!({"model": name, "input": "x"}),
        )
        .await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["model"], name);
        let uuid = uuid::Uuid::parse_str(
            response["id"]
                .as_str()
                .expect("id")
                .trim_start_matches("resp_"),
        )
        .expect("uuid");
        let used: uuid::Uuid = sql
            .query_one(
                "SELECT m.model_config_id FROM responses r JOIN chat_messages m ON m.chat_id = r.chat_id \
                 AND m.role = 'assistant' WHERE r.id = $1",
                &[&uuid],
            )
            .await
            .expect("reply")
            .get(0);
        assert_eq!(used, config, "{name} ran on its config");
    }
    let (status, model) = get_v1(&cluster, 0, "/models/Twin%20A").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["id"], "Twin A");
}
