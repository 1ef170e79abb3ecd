//! Users and API tokens through HTTP on two API replicas: admins create users and tokens,
//! users manage their own tokens (the secret is shown once), and revoking a token,
//! suspending a user or removing admin rights holds on the *other* replica at once (a
//! notification, not the 30 s cache) and ends the open streams of that token or user.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use chatd_client::ApiClient;
use common::cluster::{create_chat, wait_until, Cluster};

/// Far below the token cache's 30 s TTL: only the notification can make it.
const PROMPTLY: Duration = Duration::from_secs(5);

async fn status_of(api: &ApiClient, path: &str) -> u16 {
    api.get(path).await.unwrap().0
}

/// Waits until `api` answers `path` with `expected`; returns how long it took.
async fn until_status(api: &ApiClient, path: &str, expected: u16) -> Duration {
    let started = Instant::now();
    wait_until(
        PROMPTLY,
        &format!("{path} to answer {expected}"),
        || async { (status_of(api, path).await == expected).then_some(()) },
    )
    .await;
    started.elapsed()
}

/// Reads a stream until it ends (`true`) or `PROMPTLY` passes (`false`).
async fn ends<S, T>(mut stream: S) -> bool
where
    S: futures::Stream<Item = T> + Unpin,
{
    tokio::time::timeout(PROMPTLY, async { while stream.next().await.is_some() {} })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_manage_users_and_tokens_and_revocation_holds_everywhere_at_once() {
    let mut cluster = Cluster::start(0, 0).await;
    cluster.make_admin("alice").await;
    cluster.add_api().await.unwrap();
    cluster.add_api().await.unwrap();
    cluster.add_worker(&[]).await.unwrap();
    let (admin_a, admin_b) = (cluster.api(0), cluster.api(1));

    // An admin creates a user and a token for them; the secret is in that answer only.
    let (status, body) = admin_a
        .post(
            "/users",
            &json!({"username": "carol", "display_name": "Carol C."}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let carol_id = body["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["user"]["is_admin"], false);
    let (status, body) = admin_a
        .post(
            &format!("/users/{carol_id}/tokens"),
            &json!({"name": "laptop"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_string();
    let first_token = body["token"]["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with(&format!(
        "chatd_{}_",
        body["token"]["prefix"].as_str().unwrap()
    )));
    let carol_a = cluster.api_as(0, &secret);
    let carol_b = cluster.api_as(1, &secret);
    let (status, me) = carol_b.get("/users/me").await.unwrap();
    assert_eq!(
        (status, me["user"]["username"].clone()),
        (200, json!("carol"))
    );
    assert_eq!(me["user"]["display_name"], "Carol C.");

    // Her own tokens: listed without secrets, last use recorded.
    let (status, body) = carol_a
        .post(
            "/users/me/tokens",
            &json!({"name": "ci", "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let ci_secret = body["secret"].as_str().unwrap().to_string();
    let ci_token = body["token"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["token"]["expires_at"], "2099-01-01T00:00:00Z");
    let (_, listed) = carol_a.get("/users/me/tokens").await.unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{listed}");
    assert!(
        !listed.to_string().contains(&secret[10..]),
        "no secret in a list"
    );
    let laptop = items
        .iter()
        .find(|t| t["id"] == first_token.as_str())
        .unwrap();
    assert!(laptop["last_used_at"].is_string(), "{laptop}");
    let (status, body) = admin_b
        .get(&format!("/users/{carol_id}/tokens"))
        .await
        .unwrap();
    assert_eq!((status, body["items"].as_array().unwrap().len()), (200, 2));

    // Revoking a token holds on the other replica at once, and ends its open streams.
    let ci_b = cluster.api_as(1, &ci_secret);
    let (chat, _) = create_chat(&ci_b, "hello").await;
    assert_eq!(status_of(&ci_b, "/chats").await, 200, "cached on replica B");
    let stream = ci_b.stream(&chat, None).await.unwrap();
    let watch = ci_b.watch().await.unwrap();
    let (status, _) = carol_a
        .delete(&format!("/users/me/tokens/{ci_token}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    let took = until_status(&ci_b, "/chats", 401).await;
    println!("token revocation reached the other replica in {took:?}");
    assert!(ends(stream).await, "the revoked token's chat stream ends");
    assert!(ends(watch).await, "the revoked token's watch stream ends");
    assert_eq!(
        status_of(&carol_b, "/chats").await,
        200,
        "her other token works"
    );
    assert_eq!(
        carol_a
            .delete(&format!("/users/me/tokens/{ci_token}"))
            .await
            .unwrap()
            .0,
        404
    );

    // Suspending a user: all their tokens stop on every replica; unsuspending restores them.
    let stream = carol_b.stream(&chat, None).await.unwrap();
    let (status, body) = admin_a
        .patch(&format!("/users/{carol_id}"), &json!({"suspended": true}))
        .await
        .unwrap();
    assert_eq!(
        (status, body["user"]["suspended"].clone()),
        (200, json!(true))
    );
    let took = until_status(&carol_b, "/users/me", 401).await;
    println!("suspension reached the other replica in {took:?}");
    assert!(ends(stream).await, "a suspended user's streams end");
    admin_a
        .patch(&format!("/users/{carol_id}"), &json!({"suspended": false}))
        .await
        .unwrap();
    until_status(&carol_b, "/users/me", 200).await;

    // Admin rights: granted, then removed — the other replica refuses admin routes at once.
    admin_a
        .patch(&format!("/users/{carol_id}"), &json!({"is_admin": true}))
        .await
        .unwrap();
    until_status(&carol_b, "/users", 200).await;
    admin_a
        .patch(&format!("/users/{carol_id}"), &json!({"is_admin": false}))
        .await
        .unwrap();
    let took = until_status(&carol_b, "/users", 403).await;
    println!("losing admin rights reached the other replica in {took:?}");

    // An admin revokes a user's token.
    let (status, _) = admin_b
        .delete(&format!("/users/{carol_id}/tokens/{first_token}"))
        .await
        .unwrap();
    assert_eq!(status, 204);
    until_status(&carol_a, "/users/me", 401).await;

    // The last active admin cannot be demoted or suspended.
    let alice_id = {
        let (_, me) = admin_a.get("/users/me").await.unwrap();
        me["user"]["id"].as_str().unwrap().to_string()
    };
    for body in [json!({"is_admin": false}), json!({"suspended": true})] {
        let (status, answer) = admin_a
            .patch(&format!("/users/{alice_id}"), &body)
            .await
            .unwrap();
        assert_eq!(status, 409, "{answer}");
    }
    assert_eq!(status_of(&admin_b, "/users").await, 200);

    // Listing pages by username.
    for name in ["dave", "erin", "frank"] {
        let (status, _) = admin_a
            .post("/users", &json!({"username": name}))
            .await
            .unwrap();
        assert_eq!(status, 201);
    }
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/users?limit=2".to_string()
        } else {
            format!("/users?limit=2&after={after}")
        };
        let (status, body) = admin_b.get(&path).await.unwrap();
        assert_eq!(status, 200, "{body}");
        for user in body["items"].as_array().unwrap() {
            names.push(user["username"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    assert_eq!(names, ["alice", "carol", "dave", "erin", "frank"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_user_and_token_requests_are_refused_clearly() {
    let mut cluster = Cluster::start(0, 0).await;
    cluster.make_admin("alice").await;
    cluster.add_api().await.unwrap();
    let admin = cluster.api(0);
    let bob = cluster.api_as(0, &cluster.create_user("bob").await);
    let field = |body: &Value| body["error"]["details"]["field"].clone();
    for (body, name) in [
        (json!({"username": "has space"}), "username"),
        (json!({"username": ""}), "username"),
        (json!({"username": "x".repeat(65)}), "username"),
        (
            json!({"username": "ok", "display_name": "a\u{0}b"}),
            "display_name",
        ),
    ] {
        let (status, answer) = admin.post("/users", &body).await.unwrap();
        assert_eq!((status, field(&answer)), (400, json!(name)), "{body}");
    }
    let (status, _) = admin
        .post("/users", &json!({"username": "bob"}))
        .await
        .unwrap();
    assert_eq!(status, 409, "taken");
    for path in ["/users", "/groups", "/usage-limits"] {
        assert_eq!(status_of(&bob, path).await, 403, "{path}");
    }
    let (status, answer) = bob
        .post(
            "/users/me/tokens",
            &json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!((status, field(&answer)), (400, json!("expires_at")));
    let (status, answer) = bob
        .post(
            "/users/me/tokens",
            &json!({"name": "x", "expires_at": "tomorrow"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{answer}");
    // Another user's token is not found through /users/me.
    let (_, tokens) = admin.get("/users/me/tokens").await.unwrap();
    let alice_token = tokens["items"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = bob
        .delete(&format!("/users/me/tokens/{alice_token}"))
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(status_of(&admin, "/users/me").await, 200);
    assert_eq!(
        status_of(&admin, &format!("/users/{}", uuid::Uuid::new_v4())).await,
        404
    );
    assert_eq!(status_of(&admin, "/users/not-a-uuid").await, 400);
    // An expired token does not authenticate.
    let (status, body) = bob
        .post(
            "/users/me/tokens",
            &json!({"name": "brief", "expires_at": (time::OffsetDateTime::now_utc() + time::Duration::seconds(2)).format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let brief = cluster.api_as(0, body["secret"].as_str().unwrap());
    assert_eq!(status_of(&brief, "/users/me").await, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status_of(&brief, "/users/me").await,
        401,
        "expired, cached or not"
    );
}
