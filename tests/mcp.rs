//! MCP tools through the cluster, against the reference server nobody here wrote
//! (`@modelcontextprotocol/server-everything` from npm, a real Node process): admin-configured
//! servers (secrets sealed, never returned), which chats get which servers, the tools offered
//! as `<server>__<tool>` (seen through the mock's `"echo": "tools"`), calls of `echo` and
//! `get-sum` over Streamable HTTP and over the older SSE transport, allow and deny lists, and
//! a server that goes away (an error result the model reads; the turn ends normally).

mod common;

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

use chatd_client::ApiClient;
use common::cluster::{assistant_texts, chat_status, messages, wait_until, Cluster};
use common::mcp::Everything;

const TURN: Duration = Duration::from_secs(30);

fn key() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// One API replica and one worker sharing an encryption key (for sealed auth), plus a second
/// API replica without flags.
async fn cluster() -> Cluster {
    let mut cluster = Cluster::start(0, 0).await;
    // The test user administers (before any request, so no cached token says otherwise).
    cluster.make_admin("alice").await;
    let key = key();
    cluster
        .add_api_with(&["--encryption-key", &key])
        .await
        .expect("api");
    cluster.add_api().await.expect("api 2");
    cluster
        .add_worker(&["--encryption-key", &key, "--mcp-timeout-ms", "5000"])
        .await
        .expect("worker");
    cluster
}

async fn add_server(api: &ApiClient, body: Value) -> String {
    let (status, created) = api.post("/mcp-servers", &body).await.expect("create");
    assert_eq!(status, 201, "{created}");
    created["mcp_server"]["id"].as_str().expect("id").to_owned()
}

/// Creates a chat (with `extra` fields) whose message is `text` plus a mock directive, and
/// waits for its turn to end.
async fn chat(api: &ApiClient, text: &str, directive: Value, extra: Value) -> String {
    let mut body = json!({"message": format!("{text}\n@mock {directive}")});
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let (status, created) = api.post("/chats", &body).await.expect("create chat");
    assert_eq!(status, 201, "{created}");
    let id = created["chat"]["id"].as_str().expect("id").to_owned();
    wait_until(TURN, "the turn's end", || async {
        matches!(chat_status(api, &id).await.as_str(), "waiting" | "error").then_some(())
    })
    .await;
    assert_eq!(
        chat_status(api, &id).await,
        "waiting",
        "MCP never fails a turn"
    );
    id
}

/// The names of the tools the chat's model was offered (`"echo": "tools"`).
async fn offered(api: &ApiClient, extra: Value) -> Vec<String> {
    let id = chat(api, "Which tools?", json!({"echo": "tools"}), extra).await;
    let texts = assistant_texts(api, &id).await;
    texts[0].lines().map(str::to_owned).collect()
}

/// The stored results of the chat's tool calls: (tool name, result, is_error).
async fn results(api: &ApiClient, chat_id: &str) -> Vec<(String, Value, bool)> {
    messages(api, chat_id)
        .await
        .iter()
        .filter(|message| message["role"] == "tool")
        .flat_map(|message| message["content"].as_array().cloned().unwrap_or_default())
        .map(|part| {
            (
                part["tool_name"].as_str().unwrap_or_default().to_owned(),
                part["result"].clone(),
                part["is_error"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn calls(calls: Value) -> Value {
    json!({"tool_script": [calls]})
}

/// The admin routes: create (auth sealed, never returned), validation, conflicts, patch,
/// delete; ordinary users get 403; a chat naming a missing server is 422.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_servers_are_configured_by_admins_and_keep_their_secrets() {
    let cluster = cluster().await;
    let api = cluster.api(0);
    let token = "s3cret-token-value";
    let id = add_server(
        &api,
        json!({"name": "docs", "url": "https://mcp.example.com/mcp",
               "auth": {"type": "bearer", "token": token}, "availability": "default_off"}),
    )
    .await;
    let (status, body) = cluster
        .api(1)
        .get(&format!("/mcp-servers/{id}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mcp_server"]["has_auth"], true);
    assert_eq!(body["mcp_server"]["auth_type"], "bearer");
    assert_eq!(body["mcp_server"]["transport"], "streamable-http");
    assert!(
        !body.to_string().contains(token),
        "the token is never returned"
    );
    let sql = cluster.sql().await;
    let sealed: Vec<u8> = sql
        .query_one(
            "SELECT auth_encrypted FROM mcp_servers WHERE id = $1",
            &[&Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !sealed
            .windows(token.len())
            .any(|window| window == token.as_bytes()),
        "sealed at rest"
    );

    for (bad, field) in [
        (
            json!({"name": "Docs!", "url": "https://x.example/mcp"}),
            "name",
        ),
        (json!({"name": "x", "url": "ftp://x.example/mcp"}), "url"),
        (
            json!({"name": "x", "url": "https://x.example/mcp", "auth": {"type": "headers", "headers": {"Content-Type": "x"}}}),
            "auth.headers",
        ),
        (
            json!({"name": "x", "url": "https://x.example/mcp", "tool_allowlist": [""]}),
            "tool_allowlist",
        ),
    ] {
        let (status, body) = api.post("/mcp-servers", &bad).await.unwrap();
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(field),
            "{body}"
        );
    }
    let (status, body) = api
        .post(
            "/mcp-servers",
            &json!({"name": "docs", "url": "https://y.example/mcp"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "the name is taken: {body}");
    let (status, body) = cluster
        .api(1)
        .post(
            "/mcp-servers",
            &json!({"name": "y", "url": "https://y.example/mcp", "auth": {"type": "bearer", "token": "t"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "a replica without a key cannot seal: {body}");

    let (status, body) = api
        .patch(
            &format!("/mcp-servers/{id}"),
            &json!({"tool_denylist": ["drop_tables"], "enabled": false}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mcp_server"]["tool_denylist"], json!(["drop_tables"]));
    assert_eq!(
        body["mcp_server"]["has_auth"], true,
        "a patch without auth keeps it"
    );

    let (status, body) = api
        .post("/chats", &json!({"mcp_server_ids": [id]}))
        .await
        .unwrap();
    assert_eq!(status, 422, "a disabled server cannot be picked: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mcp_server_ids[0]"),
        "{body}"
    );

    let bob = cluster.create_user("bob").await;
    let (status, _) = cluster.api_as(0, &bob).get("/mcp-servers").await.unwrap();
    assert_eq!(status, 403);

    let (status, _) = api.delete(&format!("/mcp-servers/{id}")).await.unwrap();
    assert_eq!(status, 204);
    let (status, _) = api.get(&format!("/mcp-servers/{id}")).await.unwrap();
    assert_eq!(status, 404);
}

/// The reference server over Streamable HTTP: its tools are offered as `everything__<tool>`
/// in a stable order, `echo` and `get-sum` are called through a chat, allow and deny lists
/// apply from the next turn (the change is published to workers), and availability decides
/// which chats see a server.
#[tokio::test(flavor = "multi_thread")]
async fn a_chat_calls_the_reference_server_over_streamable_http() {
    let cluster = cluster().await;
    let server = Everything::start("streamableHttp").await;
    let api = cluster.api(0);
    let id = add_server(
        &api,
        json!({"name": "everything", "url": server.url("streamableHttp")}),
    )
    .await;

    let tools = offered(&api, json!({})).await;
    for name in ["everything__echo", "everything__get-sum"] {
        assert!(tools.iter().any(|tool| tool == name), "{name} in {tools:?}");
    }
    assert!(
        tools.iter().all(|tool| tool.starts_with("everything__")),
        "{tools:?}"
    );
    assert_eq!(offered(&api, json!({})).await, tools, "a stable order");

    let chat_id = chat(
        &api,
        "Echo and add.",
        calls(json!([
            {"name": "everything__echo", "arguments": {"message": "hello from chatd"}},
            {"name": "everything__get-sum", "arguments": {"a": 2, "b": 40}},
        ])),
        json!({}),
    )
    .await;
    let got = results(&api, &chat_id).await;
    assert_eq!(
        got,
        [
            (
                "everything__echo".to_owned(),
                json!("Echo: hello from chatd"),
                false
            ),
            (
                "everything__get-sum".to_owned(),
                json!("The sum of 2 and 40 is 42."),
                false
            ),
        ]
    );
    let answer = assistant_texts(&api, &chat_id).await;
    assert!(
        answer
            .last()
            .unwrap()
            .contains("The sum of 2 and 40 is 42."),
        "{answer:?}"
    );

    // A tool error is an error result.
    let chat_id = chat(
        &api,
        "Bad sum.",
        calls(json!([{"name": "everything__get-sum", "arguments": {"a": "two"}}])),
        json!({}),
    )
    .await;
    let got = results(&api, &chat_id).await;
    assert!(got[0].2, "{got:?}");

    // Allow list, then deny list: the next turn's tools change.
    let (status, body) = api
        .patch(
            &format!("/mcp-servers/{id}"),
            &json!({"tool_allowlist": ["echo", "get-sum"]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_until(TURN, "the allow list applied", || async {
        (offered(&api, json!({})).await == ["everything__echo", "everything__get-sum"])
            .then_some(())
    })
    .await;
    api.patch(
        &format!("/mcp-servers/{id}"),
        &json!({"tool_denylist": ["echo"]}),
    )
    .await
    .unwrap();
    wait_until(TURN, "the deny list applied", || async {
        (offered(&api, json!({})).await == ["everything__get-sum"]).then_some(())
    })
    .await;

    // default_off: only chats that name it; force_on: every chat, even one naming none.
    api.patch(
        &format!("/mcp-servers/{id}"),
        &json!({"availability": "default_off"}),
    )
    .await
    .unwrap();
    assert_eq!(offered(&api, json!({})).await, ["(no tools)"]);
    assert_eq!(
        offered(&api, json!({"mcp_server_ids": [id]})).await,
        ["everything__get-sum"]
    );
    api.patch(
        &format!("/mcp-servers/{id}"),
        &json!({"availability": "force_on"}),
    )
    .await
    .unwrap();
    wait_until(TURN, "force_on applied", || async {
        (offered(&api, json!({"mcp_server_ids": []})).await == ["everything__get-sum"])
            .then_some(())
    })
    .await;
}

/// The older HTTP+SSE transport, and a server that goes away: its tools are still offered
/// (as last listed), a call gets an error result naming the server, and the turn ends
/// normally.
#[tokio::test(flavor = "multi_thread")]
async fn the_sse_transport_works_and_a_vanished_server_is_an_error_result() {
    let cluster = cluster().await;
    let mut server = Everything::start("sse").await;
    let api = cluster.api(0);
    add_server(
        &api,
        json!({"name": "legacy", "url": server.url("sse"), "transport": "sse"}),
    )
    .await;
    let chat_id = chat(
        &api,
        "Add over SSE.",
        calls(json!([{"name": "legacy__get-sum", "arguments": {"a": 1, "b": 2}}])),
        json!({}),
    )
    .await;
    assert_eq!(
        results(&api, &chat_id).await,
        [(
            "legacy__get-sum".to_owned(),
            json!("The sum of 1 and 2 is 3."),
            false
        )]
    );

    server.kill();
    let chat_id = chat(
        &api,
        "Add again.",
        calls(json!([{"name": "legacy__get-sum", "arguments": {"a": 1, "b": 2}}])),
        json!({}),
    )
    .await;
    let got = results(&api, &chat_id).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].2, "an error result: {got:?}");
    let message = got[0].1.as_str().unwrap_or_default();
    assert!(message.contains("legacy"), "names the server: {message}");
}

/// A server that accepts connections and never answers: turns must not each wait for it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_not_tried_again_at_every_turn() {
    let cluster = cluster().await;
    let api = cluster.api(0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket); // open, silent
        }
    });
    let server = add_server(
        &api,
        json!({"name": "silent", "url": format!("http://127.0.0.1:{port}/mcp"),
            "transport": "streamable-http", "availability": "force_on"}),
    )
    .await;
    // The first turn tries it (and waits out --mcp-timeout-ms); the tool is not offered.
    let tools = offered(&api, json!({})).await;
    assert!(
        !tools.iter().any(|tool| tool.starts_with("silent__")),
        "{tools:?}"
    );
    let tried = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(tried >= 1, "the first turn tried the server");
    // The next turns do not try it again (within RETRY_UNREACHABLE)…
    offered(&api, json!({})).await;
    offered(&api, json!({})).await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        tried,
        "later turns waited for the unreachable server again"
    );
    // …unless its configuration changes.
    let (status, body) = api
        .patch(
            &format!("/mcp-servers/{server}"),
            &json!({"tool_denylist": ["x"]}),
        )
        .await
        .expect("patch");
    assert_eq!(status, 200, "{body}");
    wait_until(TURN, "the changed server tried again", || async {
        offered(&api, json!({})).await;
        (connections.load(std::sync::atomic::Ordering::SeqCst) > tried).then_some(())
    })
    .await;
}
