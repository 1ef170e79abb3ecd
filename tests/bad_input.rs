//! Bad input and isolation (S1, S2, S3, S6): clear 4xx errors naming the problem, and another
//! user's chat answers exactly like a nonexistent one on every route.

mod common;

use reqwest::Method;
use serde_json::{json, Value};

use common::cluster::{create_chat, Cluster};

struct Raw {
    status: u16,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn raw(
    cluster: &Cluster,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Raw {
    let mut request = cluster
        .http
        .request(method, format!("{}/api/v1{path}", cluster.apis[0].url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send");
    Raw {
        status: response.status().as_u16(),
        body: response.text().await.unwrap_or_default(),
    }
}

fn assert_field_error(response: &Raw, field: &str) {
    assert_eq!(response.status, 400, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error"]["code"], "validation", "{}", response.body);
    assert_eq!(
        body["error"]["details"]["field"], field,
        "{}",
        response.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_400s_that_name_the_field() {
    let cluster = Cluster::start(1, 1).await;
    let token = cluster.token.clone();
    let post_chat = |body: &'static str| {
        raw(
            &cluster,
            Method::POST,
            "/chats",
            Some(&token),
            Some(body),
            &[],
        )
    };

    let malformed = post_chat("{\"message\": ").await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    assert_field_error(
        &post_chat(r#"{"message": "hi", "owner_id": "x"}"#).await,
        "owner_id",
    );
    assert_field_error(
        &post_chat(r#"{"message": "hi", "status": "running"}"#).await,
        "status",
    );
    assert_field_error(&post_chat(r#"{"message": 5}"#).await, "message");
    assert_field_error(&post_chat(r#"{"message": "   "}"#).await, "message");
    assert_field_error(&post_chat(r#"{"labels": {"a": 1}}"#).await, "labels.a");
    assert_field_error(
        &post_chat(r#"{"message": [{"type": "text", "text": "x", "role": "system"}]}"#).await,
        "message",
    );
    let deep = format!(
        "{{\"message\": {}\"x\"{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let response = raw(
        &cluster,
        Method::POST,
        "/chats",
        Some(&token),
        Some(&deep),
        &[],
    )
    .await;
    assert_eq!(response.status, 400, "deeply nested JSON is refused");

    let (chat_id, _) = create_chat(&cluster.api(0), "hello").await;
    let send = raw(
        &cluster,
        Method::POST,
        &format!("/chats/{chat_id}/messages"),
        Some(&token),
        Some(r#"{"content": "x", "busy_behavior": "sometimes"}"#),
        &[],
    )
    .await;
    assert_field_error(&send, "busy_behavior");
    let system_role = raw(
        &cluster,
        Method::POST,
        &format!("/chats/{chat_id}/messages"),
        Some(&token),
        Some(r#"{"content": "x", "role": "system"}"#),
        &[],
    )
    .await;
    assert_field_error(&system_role, "role");
    // Nothing the client sent above reached the database as a system message.
    let sql = cluster.sql().await;
    let system_rows: i64 = sql
        .query_one(
            "SELECT count(*) FROM chat_messages WHERE role = 'system'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(system_rows, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_413_before_buffering() {
    let cluster = Cluster::start(1, 1).await;
    let big = format!("{{\"message\": \"{}\"}}", "x".repeat(11 * 1024 * 1024));
    // The server answers 413 from the Content-Length alone; it may close the connection
    // while the client is still writing, which the client sees as a broken pipe.
    let response = cluster
        .http
        .post(format!("{}/api/v1/chats", cluster.apis[0].url))
        .bearer_auth(&cluster.token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await;
    match response {
        Ok(response) => {
            assert_eq!(response.status(), 413);
            let body: Value = response.json().await.expect("json error");
            assert_eq!(body["error"]["code"], "payload_too_large");
        }
        Err(error) => assert!(
            error.is_request() || error.is_body(),
            "unexpected: {error:?}"
        ),
    }

    // Chunked (no Content-Length): refused once it passes the limit. The server may answer
    // 413 and close while the client is still writing, which the client can only see as a
    // broken pipe; either way the body was refused before it was buffered.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..2048).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = cluster
        .http
        .post(format!("{}/api/v1/chats", cluster.apis[0].url))
        .bearer_auth(&cluster.token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    match response {
        Ok(response) => assert_eq!(response.status(), 413),
        Err(error) => assert!(
            error.is_request() || error.is_body(),
            "unexpected: {error:?}"
        ),
    }
    // A fresh client: the pooled connection was the one the server closed.
    let health = reqwest::Client::new()
        .get(format!("{}/healthz", cluster.apis[0].url))
        .send()
        .await
        .expect("the replica still answers");
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_cursors_and_ids_are_400() {
    let cluster = Cluster::start(1, 1).await;
    let token = cluster.token.clone();
    let (chat_id, _) = create_chat(&cluster.api(0), "hello").await;
    let cases = [
        (
            format!("/chats/{chat_id}/stream"),
            vec![("last-event-id", "abc")],
            "Last-Event-ID",
        ),
        (
            format!("/chats/{chat_id}/stream?cursor=1-2"),
            vec![],
            "cursor",
        ),
        (
            format!("/chats/{chat_id}/messages?before_id=abc"),
            vec![],
            "before_id",
        ),
        (
            format!("/chats/{chat_id}/messages?limit=100000"),
            vec![],
            "limit",
        ),
        ("/chats?after=%%%".to_string(), vec![], "after"),
        ("/chats?after=bm9wZQ".to_string(), vec![], "after"),
        ("/chats/not-a-uuid".to_string(), vec![], "chat_id"),
        ("/chats?label=nocolon".to_string(), vec![], "label"),
    ];
    for (path, headers, field) in cases {
        let response = raw(&cluster, Method::GET, &path, Some(&token), None, &headers).await;
        assert_field_error(&response, field);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_invalid_tokens_are_401() {
    let cluster = Cluster::start(1, 1).await;
    for token in [
        None,
        Some("garbage"),
        Some("chatd_000000000000_000000000000000000000000000000000000000000000000"),
    ] {
        let response = raw(&cluster, Method::GET, "/chats", token, None, &[]).await;
        assert_eq!(response.status, 401, "{token:?}: {}", response.body);
        assert_eq!(response.json()["error"]["code"], "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_user_s_chat_is_404_identical_to_a_missing_one_on_every_route() {
    let cluster = Cluster::start(1, 1).await;
    let (alice_chat, _) = create_chat(&cluster.api(0), "alice's secret").await;
    let bob = cluster.create_user("bob").await;
    let missing = uuid::Uuid::new_v4().to_string();
    let routes: Vec<(Method, &str, Option<&str>)> = vec![
        (Method::GET, "/chats/{id}", None),
        (
            Method::PATCH,
            "/chats/{id}",
            Some(r#"{"title": "mine now"}"#),
        ),
        (Method::GET, "/chats/{id}/messages", None),
        (
            Method::POST,
            "/chats/{id}/messages",
            Some(r#"{"content": "hi"}"#),
        ),
        (Method::POST, "/chats/{id}/interrupt", None),
        (Method::DELETE, "/chats/{id}/queue/1", None),
        (Method::POST, "/chats/{id}/queue/1/promote", None),
        (Method::GET, "/chats/{id}/stream", None),
        (
            Method::POST,
            "/chats/{id}/tool-results",
            Some(r#"{"results": [{"tool_call_id": "call_0", "output": "x"}]}"#),
        ),
        (Method::GET, "/chats/{id}/cost", None),
    ];
    for (method, template, body) in routes {
        let foreign = raw(
            &cluster,
            method.clone(),
            &template.replace("{id}", &alice_chat),
            Some(&bob),
            body,
            &[],
        )
        .await;
        let absent = raw(
            &cluster,
            method.clone(),
            &template.replace("{id}", &missing),
            Some(&bob),
            body,
            &[],
        )
        .await;
        assert_eq!(foreign.status, 404, "{method} {template}: {}", foreign.body);
        assert_eq!(
            foreign.body, absent.body,
            "{method} {template} leaks existence"
        );
    }
    // Bob's list is empty; Alice's chat is untouched.
    let list = raw(&cluster, Method::GET, "/chats", Some(&bob), None, &[]).await;
    assert_eq!(list.json()["items"], json!([]));
    let (_, alice_view) = cluster
        .api(0)
        .get(&format!("/chats/{alice_chat}"))
        .await
        .unwrap();
    // (The worker may have given it an automatic title; Bob's PATCH must not have.)
    assert_ne!(alice_view["chat"]["title"], "mine now");
}

/// A NUL in any structured field is a 400 naming the field, never a 500 from PostgreSQL:
/// query parameters (labels, cursors, limits, flags) and the structured strings of file and
/// source parts.
#[tokio::test(flavor = "multi_thread")]
async fn nul_in_structured_fields_is_a_400_naming_the_field() {
    let cluster = Cluster::start(1, 0).await;
    let token = cluster.token.clone();
    let (chat_id, _) = create_chat(&cluster.api(0), "hello").await;
    for (path, field) in [
        ("/chats?label=k:%00v".to_string(), "label"),
        ("/chats?archived=%00".to_string(), "archived"),
        ("/chats?lim%00it=1".to_string(), "lim\\0it"),
        (
            format!("/chats/{chat_id}/messages?before_id=1%00"),
            "before_id",
        ),
        (format!("/chats/{chat_id}/stream?cursor=1-1-1%00"), "cursor"),
        ("/users/me/usage?from=%00".to_string(), "from"),
    ] {
        let response = raw(&cluster, Method::GET, &path, Some(&token), None, &[]).await;
        assert_field_error(&response, field);
        assert!(
            response.body.contains("NUL"),
            "{path}: the message names the problem: {}",
            response.body
        );
    }
    for (part, field) in [
        (
            json!({"type": "file", "media_type": "text/plain", "file_id": "f\u{0}1"}),
            "content[0].file_id",
        ),
        (
            json!({"type": "file", "media_type": "text/plain", "data": "d\u{0}"}),
            "content[0].data",
        ),
        (
            json!({"type": "source", "url": "https://example.com", "title": "t\u{0}"}),
            "content[0].title",
        ),
    ] {
        let body = json!({"content": [part]}).to_string();
        let response = raw(
            &cluster,
            Method::POST,
            &format!("/chats/{chat_id}/messages"),
            Some(&token),
            Some(&body),
            &[],
        )
        .await;
        assert_field_error(&response, field);
    }
}

/// Nonsense settings are refused at startup with one line naming the flag, instead of being
/// clamped silently (`--pool-size 0` used to become 1, `--stream-flush-interval-ms 0` 1 ms).
#[test]
fn nonsense_settings_are_refused_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["worker", "--pool-size", "0"], "--pool-size"),
        (
            &["worker", "--stream-flush-interval-ms", "0"],
            "--stream-flush-interval-ms",
        ),
        (&["worker", "--max-steps", "0"], "--max-steps"),
        (
            &[
                "worker",
                "--heartbeat-interval-ms",
                "20000",
                "--stale-after-ms",
                "30000",
            ],
            "--stale-after-ms",
        ),
        (
            &["api", "--stream-snapshot-messages", "0"],
            "--stream-snapshot-messages",
        ),
        (
            &["api", "--max-streams-per-user", "0"],
            "--max-streams-per-user",
        ),
        (
            &["api", "--database-pooler", "transaction"],
            "needs --listen-database-url",
        ),
        (
            &["worker", "--database-pooler", "transaction"],
            "needs --listen-database-url",
        ),
    ];
    for (args, flag) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(*args)
            // Unreachable on purpose: the settings must be refused before any connection.
            .args(["--database-url", "postgres://nobody@127.0.0.1:1/none"])
            .env_remove("CHATD_TEST_DATABASE_URL")
            .output()
            .expect("run chatd");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("connect"),
            "{args:?} got as far as connecting: {stderr}"
        );
    }
}

/// Rules the OpenAPI document states, at their edges: lengths count characters, integral
/// numbers are integers, blank text parts are refused, a body field naming something missing
/// is a 422 naming it, an empty Last-Event-ID is no cursor; the document itself is public.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_rules_hold_at_their_edges() {
    let cluster = Cluster::start(1, 1).await;
    let token = cluster.token.clone();
    let post_chat = |body: String| {
        let cluster = &cluster;
        let token = token.clone();
        async move {
            raw(
                cluster,
                Method::POST,
                "/chats",
                Some(&token),
                Some(&body),
                &[],
            )
            .await
        }
    };
    let blank_part =
        json!({"message": [{"type": "text", "text": "hi"}, {"type": "text", "text": " \n"}]});
    assert_field_error(&post_chat(blank_part.to_string()).await, "message[1].text");
    assert_field_error(
        &post_chat(json!({"message": []}).to_string()).await,
        "message",
    );
    let unknown_parent =
        post_chat(json!({"parent_chat_id": uuid::Uuid::new_v4()}).to_string()).await;
    assert_eq!(unknown_parent.status, 422, "{}", unknown_parent.body);
    assert_eq!(
        unknown_parent.json()["error"]["details"]["field"],
        "parent_chat_id"
    );
    // 200 characters of four bytes each: within `maxLength: 200`.
    let long_title = "𝄞".repeat(200);
    let created = post_chat(json!({"title": long_title}).to_string()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let too_long = post_chat(json!({"title": "𝄞".repeat(201)}).to_string()).await;
    assert_field_error(&too_long, "title");

    let chat_id = created.json()["chat"]["id"].as_str().unwrap().to_string();
    let chat_path = format!("/chats/{chat_id}");
    let patch = |body: &'static str| {
        raw(
            &cluster,
            Method::PATCH,
            &chat_path,
            Some(&token),
            Some(body),
            &[],
        )
    };
    // 2.0 is the integer 2; with no other pins, position 2 is past the end: last, 1.
    let pinned = patch(r#"{"pin_order": 2.0}"#).await;
    assert_eq!(pinned.status, 200, "{}", pinned.body);
    assert_eq!(pinned.json()["chat"]["pin_order"], 1);
    assert_field_error(&patch(r#"{"pin_order": 2.5}"#).await, "pin_order");

    let stream = cluster
        .http
        .get(format!(
            "{}/api/v1/chats/{chat_id}/stream",
            cluster.apis[0].url
        ))
        .bearer_auth(&token)
        .header("last-event-id", "")
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    drop(stream);

    let document = raw(&cluster, Method::GET, "/openapi.json", None, None, &[]).await;
    assert_eq!(document.status, 200, "{}", document.body);
    let document = document.json();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["paths"].as_object().unwrap().len(), 41);
    assert!(document["info"]["description"]
        .as_str()
        .unwrap()
        .contains("bytes (413)"));
}

/// A bad flag is named even when the replica's port is taken: `chatd api` checks its flags
/// before it binds (it used to report "address already in use" and hide the flag).
#[test]
fn a_bad_flag_is_named_before_the_port_is_bound() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let addr = busy.local_addr().expect("address").to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args([
            "api",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
            "--addr",
            &addr,
            "--cors-origins",
            "https://app.example/chat",
        ])
        .output()
        .expect("run chatd api");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--cors-origins"), "{stderr}");
    assert!(!stderr.contains("in use"), "{stderr}");
}
