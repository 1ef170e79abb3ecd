//! Keeping a shared deployment fair and paid for, through HTTP on two API replicas and two
//! workers: spend limits (own, group, default; day and week periods; 429 before a turn starts,
//! `spend_limit_exceeded` at the next step boundary of a running one, queued messages kept),
//! fair share of running chats per user, the per-token request rate limit, and the retention
//! sweep that archives idle chat trees.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use time::{OffsetDateTime, Weekday};

use chatd_client::ApiClient;
use common::cluster::{
    assistant_texts, chat_status, create_chat, directive_message, messages, wait_until, Cluster,
};
use common::models::{add_model, ModelOptions};

const TURN: Duration = Duration::from_secs(30);

async fn user_id(cluster: &Cluster, username: &str) -> String {
    let row = cluster
        .sql()
        .await
        .query_one(
            "SELECT id::text FROM users WHERE username = $1",
            &[&username],
        )
        .await
        .unwrap();
    row.get(0)
}

async fn usage(api: &ApiClient) -> Value {
    let (status, body) = api.get("/users/me/usage").await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn timestamp(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        value.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

async fn put_limit(admin: &ApiClient, user: &str, limit: Value) {
    let (status, body) = admin
        .put(
            &format!("/users/{user}/spend-limit"),
            &json!({ "limit_micros": limit }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

async fn limit_of(api: &ApiClient) -> Value {
    usage(api).await["limit"]["limit_micros"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn spend_limits_stop_new_turns_and_running_ones_and_keep_the_queue() {
    let mut cluster = Cluster::start(0, 0).await;
    cluster.make_admin("alice").await;
    for _ in 0..2 {
        cluster.add_api().await.unwrap();
        cluster
            .add_worker(&["--tools", "current_time", "--title-timeout-ms", "10000"])
            .await
            .unwrap();
    }
    let admin = cluster.api(0);
    let bob_token = cluster.create_user("bob").await;
    let bob = cluster.api_as(1, &bob_token);
    let bob_id = user_id(&cluster, "bob").await;
    // One micro-dollar per token in and out.
    let model = add_model(
        &cluster,
        "openai-compatible",
        ModelOptions {
            input_price_micros: Some(1_000_000),
            output_price_micros: Some(1_000_000),
            ..ModelOptions::default()
        },
    )
    .await;

    // Off: no limit object.
    assert_eq!(usage(&bob).await["limit"], Value::Null);
    let (status, body) = admin
        .put(
            "/usage-limits",
            &json!({"enabled": true, "period": "day", "default_limit_micros": null}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    let (status, body) = bob
        .post(
            "/chats",
            &json!({"model_config_id": model, "message": directive_message("hello", json!({"tokens": 20}))}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let chat = body["chat"]["id"].as_str().unwrap().to_string();
    wait_until(TURN, "the reply and its title", || async {
        (chat_status(&bob, &chat).await == "waiting"
            && !bob.get(&format!("/chats/{chat}")).await.unwrap().1["chat"]["title"]
                .as_str()
                .unwrap_or_default()
                .is_empty())
        .then_some(())
    })
    .await;
    // Spend counts the title request too (a usage record) — wait for it to be stored.
    let spent = wait_until(TURN, "the title's usage", || async {
        let body = usage(&bob).await;
        (body["messages"] == 2).then_some(body)
    })
    .await;
    let limit = &spent["limit"];
    let spent_micros = limit["spent_micros"].as_i64().unwrap();
    assert!(spent_micros > 20, "{spent}");
    assert_eq!(
        spent["cost_micros"].as_i64().unwrap(),
        spent_micros,
        "{spent}"
    );
    assert_eq!(limit["limit_micros"], Value::Null);
    assert_eq!(limit["remaining_micros"], Value::Null);
    assert_eq!(limit["period"], "day");
    let period_start = timestamp(&limit["period_start"]);
    assert_eq!(period_start.time(), time::Time::MIDNIGHT);
    assert_eq!(
        timestamp(&limit["resets_at"]) - period_start,
        time::Duration::days(1)
    );

    // At the limit: every route that would start a turn answers 429 with the details.
    put_limit(&admin, &bob_id, json!(spent_micros)).await;
    let refused = wait_until(TURN, "the limit to apply", || async {
        let (status, body) = bob
            .post(
                &format!("/chats/{chat}/messages"),
                &json!({"content": "more"}),
            )
            .await
            .unwrap();
        (status == 429).then_some(body)
    })
    .await;
    assert_eq!(
        refused["error"]["code"], "spend_limit_exceeded",
        "{refused}"
    );
    let details = &refused["error"]["details"];
    assert_eq!(details["limit_micros"].as_i64(), Some(spent_micros));
    assert!(details["spent_micros"].as_i64().unwrap() >= spent_micros);
    assert_eq!(
        timestamp(&details["resets_at"]),
        timestamp(&limit["resets_at"])
    );
    assert!(details["retry_after_s"].as_u64().unwrap() >= 1);
    let response = cluster
        .http
        .post(format!("{}/api/v1/chats", cluster.apis[0].url))
        .bearer_auth(&bob_token)
        .json(&json!({"message": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let first = messages(&bob, &chat).await[0]["id"].as_i64().unwrap();
    let (status, _) = bob
        .patch(
            &format!("/chats/{chat}/messages/{first}"),
            &json!({"content": "again"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 429, "edit and rerun starts a turn");
    // A chat without a message starts nothing.
    let (status, _) = bob
        .post("/chats", &json!({"title": "later"}))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let body = usage(&bob).await;
    assert_eq!(body["limit"]["remaining_micros"], 0, "{body}");

    // A running turn ends at its next step boundary; what was queued stays queued.
    put_limit(&admin, &bob_id, json!(spent_micros + 1)).await;
    let steps = directive_message(
        "use the clock",
        json!({"tool_calls": [{"name": "current_time"}], "tool_steps": 5, "tokens": 10,
               "tokens_per_second": 10}),
    );
    let sent = wait_until(TURN, "the raised limit", || async {
        let (status, body) = bob
            .post(
                &format!("/chats/{chat}/messages"),
                &json!({ "content": steps }),
            )
            .await
            .unwrap();
        (status == 201).then_some(body)
    })
    .await;
    assert!(sent["message"]["id"].is_i64());
    wait_until(TURN, "the turn to run", || async {
        (chat_status(&bob, &chat).await == "running").then_some(())
    })
    .await;
    let (status, body) = bob
        .post(
            &format!("/chats/{chat}/messages"),
            &json!({"content": "queued while running"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let error = wait_until(TURN, "the turn to stop", || async {
        let (_, body) = bob.get(&format!("/chats/{chat}")).await.unwrap();
        (body["chat"]["status"] == "error").then(|| body["chat"]["last_error"].clone())
    })
    .await;
    assert_eq!(error["kind"], "spend_limit_exceeded", "{error}");
    let history = messages(&bob, &chat).await;
    let tool_steps = history.iter().filter(|m| m["role"] == "assistant").count();
    assert_eq!(
        tool_steps, 2,
        "the first reply and one step of the new turn"
    );
    let (_, body) = bob.get(&format!("/chats/{chat}/messages")).await.unwrap();
    let queued = body["queued"].as_array().unwrap().clone();
    assert_eq!(queued.len(), 1, "the queued message waits: {body}");

    // Lifted: promoting the queued message runs it.
    put_limit(&admin, &bob_id, Value::Null).await;
    let queued_id = queued[0]["id"].as_i64().unwrap();
    wait_until(TURN, "the promote to be accepted", || async {
        let (status, _) = bob
            .post(
                &format!("/chats/{chat}/queue/{queued_id}/promote"),
                &json!({}),
            )
            .await
            .unwrap();
        (status == 201).then_some(())
    })
    .await;
    wait_until(TURN, "the queued message's reply", || async {
        (assistant_texts(&bob, &chat).await.len() == 3
            && chat_status(&bob, &chat).await == "waiting")
            .then_some(())
    })
    .await;

    // Own limit, else the lowest group limit, else the default.
    let group = |name: &str, limit: i64| {
        let admin = admin.clone();
        let body = json!({"name": name, "spend_limit_micros": limit});
        async move {
            let (status, body) = admin.post("/groups", &body).await.unwrap();
            assert_eq!(status, 201, "{body}");
            body["group"]["id"].as_str().unwrap().to_string()
        }
    };
    let (five, three) = (group("five", 5).await, group("three", 3).await);
    for group in [&five, &three] {
        let (status, body) = admin
            .post(
                &format!("/groups/{group}/members"),
                &json!({ "user_id": bob_id }),
            )
            .await
            .unwrap();
        assert_eq!((status, body["group"]["members"].clone()), (200, json!(1)));
    }
    assert_eq!(limit_of(&bob).await, 3);
    let (status, _) = admin
        .delete(&format!("/groups/{three}/members/{bob_id}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(limit_of(&bob).await, 5);
    put_limit(&admin, &bob_id, json!(100)).await;
    assert_eq!(limit_of(&bob).await, 100);
    put_limit(&admin, &bob_id, Value::Null).await;
    assert_eq!(
        admin.delete(&format!("/groups/{five}")).await.unwrap().0,
        204
    );
    let (status, _) = admin
        .put(
            "/usage-limits",
            &json!({"enabled": true, "period": "week", "default_limit_micros": 7}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let body = usage(&bob).await;
    assert_eq!(body["limit"]["limit_micros"], 7, "{body}");
    let start = timestamp(&body["limit"]["period_start"]);
    assert_eq!(start.weekday(), Weekday::Monday, "weeks start on Monday");
    assert_eq!(start.time(), time::Time::MIDNIGHT);
    assert_eq!(
        timestamp(&body["limit"]["resets_at"]) - start,
        time::Duration::days(7)
    );

    // Bad input and other users.
    for (body, field) in [
        (
            json!({"enabled": true, "period": "year", "default_limit_micros": null}),
            "period",
        ),
        (
            json!({"enabled": true, "period": "day", "default_limit_micros": -1}),
            "default_limit_micros",
        ),
    ] {
        let (status, answer) = admin.put("/usage-limits", &body).await.unwrap();
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["details"]["field"], field);
    }
    assert_eq!(bob.get("/usage-limits").await.unwrap().0, 403);
    assert_eq!(
        bob.put(
            &format!("/users/{bob_id}/spend-limit"),
            &json!({"limit_micros": null})
        )
        .await
        .unwrap()
        .0,
        403
    );
    let (status, _) = admin
        .post("/groups", &json!({"name": "five", "spend_limit_micros": 1}))
        .await
        .unwrap();
    assert_eq!(status, 201, "the deleted group's name is free again");
    let (status, _) = admin
        .post("/groups", &json!({"name": "five", "spend_limit_micros": 1}))
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (status, _) = admin
        .post(
            &format!("/groups/{three}/members"),
            &json!({"user_id": uuid::Uuid::new_v4()}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
}

/// The cap counts a user's running chats across the cluster: two workers with a cap of 2 keep
/// alice at 2 running chats (one per worker would allow 4). Claims on two workers in the same
/// instant may each take the last slot, so the hard bound is workers × cap; at almost every
/// moment it is the cap.
#[tokio::test(flavor = "multi_thread")]
async fn one_user_cannot_take_every_worker_slot() {
    let mut cluster = Cluster::start(2, 0).await;
    for _ in 0..2 {
        cluster
            .add_worker(&["--max-running-chats-per-user", "2"])
            .await
            .unwrap();
    }
    let alice = cluster.api(0);
    let bob = cluster.api_as(1, &cluster.create_user("bob").await);
    let slow = directive_message("slow", json!({"tokens": 30, "tokens_per_second": 30}));
    let mut alice_chats = Vec::new();
    for _ in 0..8 {
        alice_chats.push(create_chat(&alice, &slow).await.0);
    }
    let (bob_chat, _) = create_chat(&bob, &slow).await;
    let sql = cluster.sql().await;
    let mut bob_ran_while_alice_waited = false;
    let mut samples = Vec::new();
    let deadline = tokio::time::Instant::now() + TURN;
    loop {
        let row = sql
            .query_one(
                "SELECT count(*) FILTER (WHERE u.username = 'alice' AND c.worker_id IS NOT NULL), \
                 count(*) FILTER (WHERE u.username = 'alice' AND c.status = 'pending'), \
                 bool_or(c.id = $1::text::uuid AND c.status <> 'pending'), \
                 count(*) FILTER (WHERE c.status = 'waiting') \
                 FROM chats c JOIN users u ON u.id = c.owner_id",
                &[&bob_chat],
            )
            .await
            .unwrap();
        let (running, pending): (i64, i64) = (row.get(0), row.get(1));
        assert!(running <= 4, "alice runs {running} chats at once");
        if pending > 0 {
            samples.push(running);
            if row.get::<_, bool>(2) {
                bob_ran_while_alice_waited = true;
            }
        }
        if row.get::<_, i64>(3) == 9 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chats did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    assert!(
        median <= 2,
        "alice's running chats while others waited: {samples:?}"
    );
    assert!(
        bob_ran_while_alice_waited,
        "bob's chat ran while alice's waited"
    );
    for chat in &alice_chats {
        assert_eq!(assistant_texts(&alice, chat).await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_token_has_a_request_rate_limit() {
    let mut cluster = Cluster::start(0, 0).await;
    cluster
        .add_api_with(&["--rate-limit-per-second", "2", "--rate-limit-burst", "3"])
        .await
        .unwrap();
    let alice = cluster.api(0);
    let bob = cluster.api_as(0, &cluster.create_user("bob").await);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(alice.get("/chats").await.unwrap().0);
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let response = cluster
        .http
        .get(format!("{}/api/v1/chats", cluster.apis[0].url))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        bob.get("/chats").await.unwrap().0,
        200,
        "another token's bucket"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(alice.get("/chats").await.unwrap().0, 200, "refilled");
    // Nonsense is refused at startup, naming the flag.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args([
            "api",
            "--database-url",
            &cluster.db.url,
            "--rate-limit-burst",
            "0.5",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--rate-limit-burst"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_chat_trees_are_archived_after_the_retention_period() {
    let mut cluster = Cluster::start(2, 0).await;
    for _ in 0..2 {
        cluster
            .add_worker(&["--archive-inactive-after-days", "7"])
            .await
            .unwrap();
    }
    let api = cluster.api(0);
    let create = |body: Value| {
        let api = api.clone();
        async move {
            let (status, body) = api.post("/chats", &body).await.unwrap();
            assert_eq!(status, 201, "{body}");
            body["chat"]["id"].as_str().unwrap().to_string()
        }
    };
    let old = create(json!({"title": "old"})).await;
    let child = create(json!({"parent_chat_id": old})).await;
    let pinned = create(json!({"title": "old and pinned"})).await;
    let recent = create(json!({"title": "recent"})).await;
    let tools =
        json!([{"name": "lookup", "description": "Client side.", "schema": {"type": "object"}}]);
    let busy = create(json!({"dynamic_tools": tools,
        "message": directive_message("call", json!({"tool_calls": [{"name": "lookup"}]}))}))
    .await;
    let kept_pin = create(json!({"title": "pinned, recent"})).await;
    for (chat, position) in [(&pinned, 1), (&kept_pin, 2)] {
        let (status, _) = api
            .patch(&format!("/chats/{chat}"), &json!({ "pin_order": position }))
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    wait_until(TURN, "requires_action", || async {
        (chat_status(&api, &busy).await == "requires_action").then_some(())
    })
    .await;
    cluster
        .sql()
        .await
        .execute(
            "UPDATE chats SET updated_at = now() - interval '10 days' \
             WHERE id::text = ANY($1)",
            &[&vec![
                old.clone(),
                child.clone(),
                pinned.clone(),
                busy.clone(),
            ]],
        )
        .await
        .unwrap();
    let archived = |chat: String| {
        let api = api.clone();
        async move {
            let (_, body) = api.get(&format!("/chats/{chat}")).await.unwrap();
            (
                body["chat"]["archived"].as_bool().unwrap(),
                body["chat"]["pin_order"].clone(),
            )
        }
    };
    wait_until(TURN, "the sweep to archive the idle trees", || async {
        (archived(old.clone()).await.0 && archived(pinned.clone()).await.0).then_some(())
    })
    .await;
    assert_eq!(
        archived(child.clone()).await,
        (true, json!(0)),
        "the child too"
    );
    assert_eq!(archived(pinned.clone()).await, (true, json!(0)), "unpinned");
    assert_eq!(
        archived(kept_pin.clone()).await,
        (false, json!(1)),
        "the gap closed"
    );
    assert!(!archived(recent.clone()).await.0);
    assert!(!archived(busy.clone()).await.0, "busy trees stay");
}
