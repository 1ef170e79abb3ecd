//! What reaches the provider as system text, in every protocol: the chat's `system_prompt`,
//! the deployment's system prompt (admin) and each user's instructions. A turn's prompt is the
//! deployment's prompt, then the owner's instructions, then the chat's own `system_prompt`,
//! each its own system part — seen through `chatd mock-llm`'s `"echo": "system"`, on every
//! replica and worker, and changed from the next step on.

mod common;

use std::time::Duration;

use serde_json::json;

use chatd_client::ApiClient;
use chatd_shared::db::instructions::DEFAULT_SYSTEM_PROMPT;
use common::cluster::{assistant_texts, directive_message, wait_until, Cluster};
use common::models::{add_model, ModelOptions, PROTOCOLS};

const TURN: Duration = Duration::from_secs(30);

fn echo(text: &str) -> String {
    directive_message(text, json!({"echo": "system"}))
}

/// Sends `message` to `chat_id` and returns the reply (the `count`-th assistant message).
async fn reply(api: &ApiClient, chat_id: &str, message: &str, count: usize) -> String {
    let (status, body) = api
        .post(
            &format!("/chats/{chat_id}/messages"),
            &json!({ "content": message }),
        )
        .await
        .expect("send");
    assert_eq!(status, 201, "{body}");
    wait_until(TURN, "the reply", || async {
        let texts = assistant_texts(api, chat_id).await;
        (texts.len() == count).then(|| texts[count - 1].clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_s_prompt_is_deployment_then_user_then_chat() {
    let cluster = Cluster::start(0, 0).await;
    // The test user is the admin here (before any request, so no cached token says otherwise).
    cluster.make_admin("alice").await;
    let mut cluster = cluster;
    for _ in 0..2 {
        cluster.add_api().await.expect("api");
        cluster.add_worker(&[]).await.expect("worker");
    }
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let bob = cluster.api_as(1, &cluster.create_user("bob").await);

    // Nothing set: only the chat's own prompt.
    let (status, body) = api_a.get("/config/system-prompt").await.expect("get");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"system_prompt": "", "include_default": false}));
    let (status, body) = api_a.get("/users/me/instructions").await.expect("get");
    assert_eq!((status, body), (200, json!({"instructions": ""})));
    let (status, body) = api_a
        .post(
            "/chats",
            &json!({"system_prompt": "Chat rules.", "message": echo("one")}),
        )
        .await
        .expect("create");
    assert_eq!(status, 201, "{body}");
    let chat = body["chat"]["id"].as_str().unwrap().to_owned();
    let first = wait_until(TURN, "the first reply", || async {
        assistant_texts(&api_a, &chat).await.first().cloned()
    })
    .await;
    assert_eq!(first, "Chat rules.");

    // Set on one replica, in effect on the next turn whichever worker runs it.
    let (status, body) = api_a
        .put(
            "/config/system-prompt",
            &json!({"system_prompt": "Deployment rules.", "include_default": false}),
        )
        .await
        .expect("put");
    assert_eq!(status, 200, "{body}");
    let (status, body) = api_b
        .put(
            "/users/me/instructions",
            &json!({"instructions": "Call me Al."}),
        )
        .await
        .expect("put");
    assert_eq!(
        (status, body),
        (200, json!({"instructions": "Call me Al."}))
    );
    assert_eq!(
        reply(&api_b, &chat, &echo("two"), 2).await,
        "Deployment rules.\n\nCall me Al.\n\nChat rules."
    );
    // Another user's chats get the deployment's prompt, not alice's instructions.
    let (status, body) = bob
        .post("/chats", &json!({"message": echo("bob")}))
        .await
        .expect("create");
    assert_eq!(status, 201, "{body}");
    let bob_chat = body["chat"]["id"].as_str().unwrap().to_owned();
    let bob_reply = wait_until(TURN, "bob's reply", || async {
        assistant_texts(&bob, &bob_chat).await.first().cloned()
    })
    .await;
    assert_eq!(bob_reply, "Deployment rules.");

    // The built-in prompt first; cleared instructions are gone.
    api_b
        .put(
            "/config/system-prompt",
            &json!({"system_prompt": "Deployment rules.", "include_default": true}),
        )
        .await
        .expect("put");
    api_a
        .put("/users/me/instructions", &json!({"instructions": ""}))
        .await
        .expect("put");
    assert_eq!(
        reply(&api_a, &chat, &echo("three"), 3).await,
        format!("{DEFAULT_SYSTEM_PROMPT}\n\nDeployment rules.\n\nChat rules.")
    );
    let (_, body) = api_b.get("/config/system-prompt").await.expect("get");
    assert_eq!(
        body,
        json!({"system_prompt": "Deployment rules.", "include_default": true})
    );

    // Only admins see or set the deployment's prompt; bad input names the field.
    let (status, _) = bob.get("/config/system-prompt").await.expect("get");
    assert_eq!(status, 403);
    let (status, _) = bob
        .put(
            "/config/system-prompt",
            &json!({"system_prompt": "mine", "include_default": false}),
        )
        .await
        .expect("put");
    assert_eq!(status, 403);
    let (status, body) = bob
        .put(
            "/users/me/instructions",
            &json!({"instructions": "x".repeat(16_385)}),
        )
        .await
        .expect("put");
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("instructions"), "{body}");
    let (status, body) = bob
        .put("/users/me/instructions", &json!({"instruction": "typo"}))
        .await
        .expect("put");
    assert_eq!(status, 400, "{body}");
}

/// What reached the provider, in every protocol: a chat's `system_prompt` is the request's
/// system text (`"echo": "system"` makes the mock answer with exactly that).
#[tokio::test(flavor = "multi_thread")]
async fn the_chat_s_system_prompt_reaches_the_provider_in_every_protocol() {
    let cluster = Cluster::start(2, 1).await;
    let api = cluster.api(0);
    for kind in PROTOCOLS {
        let model = add_model(&cluster, kind, ModelOptions::default()).await;
        let prompt = format!("You answer as the {kind} test.\nKeep it short.");
        let (status, body) = api
            .post(
                "/chats",
                &json!({
                    "model_config_id": model,
                    "system_prompt": prompt,
                    "message": directive_message("what were you told?", json!({"echo": "system"})),
                }),
            )
            .await
            .expect("create chat");
        assert_eq!(status, 201, "{body}");
        let chat_id = body["chat"]["id"].as_str().expect("chat id").to_owned();
        let texts = wait_until(TURN, "the echo", || {
            let api = cluster.api(1);
            let chat_id = chat_id.clone();
            async move {
                let texts = assistant_texts(&api, &chat_id).await;
                (!texts.is_empty()).then_some(texts)
            }
        })
        .await;
        assert_eq!(texts, [prompt], "{kind}");
    }
}

/// `"echo": "tools"`: the sorted names of the tools a request offered, in every protocol —
/// the worker's built-in tools and the chat's client tools alike.
#[tokio::test(flavor = "multi_thread")]
async fn the_offered_tools_reach_the_provider_in_every_protocol() {
    let mut cluster = Cluster::start(2, 0).await;
    cluster
        .add_worker(&["--tools", "current_time"])
        .await
        .expect("worker");
    let api = cluster.api(0);
    let tools = json!([
        {"name": "zz_lookup", "description": "Client side.", "schema": {"type": "object"}},
        {"name": "aa_fetch", "description": "Client side.", "schema": {"type": "object"}},
    ]);
    for kind in PROTOCOLS {
        let model = add_model(&cluster, kind, ModelOptions::default()).await;
        let (status, body) = api
            .post(
                "/chats",
                &json!({
                    "model_config_id": model,
                    "dynamic_tools": tools,
                    "message": directive_message("which tools?", json!({"echo": "tools"})),
                }),
            )
            .await
            .expect("create chat");
        assert_eq!(status, 201, "{body}");
        let chat_id = body["chat"]["id"].as_str().expect("chat id").to_owned();
        let api_b = cluster.api(1);
        let reply = wait_until(TURN, "the echo", || async {
            assistant_texts(&api_b, &chat_id).await.first().cloned()
        })
        .await;
        assert_eq!(reply, "aa_fetch\ncurrent_time\nzz_lookup", "{kind}");
    }
}
