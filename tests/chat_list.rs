//! Finding chats through HTTP on two API replicas and two workers: pins first and gap-free,
//! then activity order with exact keyset paging (ties included), unread markers with their
//! filter and watch events, title search and label filters.

mod common;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use chatd_client::ApiClient;
use common::chats::{child_of, list_ids, replies, send};
use common::cluster::{create_chat, Cluster};

const TURN: Duration = Duration::from_secs(30);

async fn pin(api: &ApiClient, chat: &str, position: i64) -> (u16, Value) {
    api.patch(&format!("/chats/{chat}"), &json!({ "pin_order": position }))
        .await
        .unwrap()
}

async fn pins(api: &ApiClient) -> Vec<(String, i64)> {
    let (_, body) = api.get("/chats?limit=100").await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|chat| chat["pin_order"].as_i64().unwrap() > 0)
        .map(|chat| {
            (
                chat["id"].as_str().unwrap().to_string(),
                chat["pin_order"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_chats_come_first_without_gaps_and_paging_is_exact() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let mut chats = Vec::new();
    for index in 0..6 {
        chats.push(child_of(&api_a, None, json!({"title": format!("chat {index}")})).await);
    }
    let c = |index: usize| chats[index].clone();
    assert_eq!(pin(&api_a, &c(1), 1).await.0, 200);
    assert_eq!(pin(&api_b, &c(3), 1).await.0, 200);
    assert_eq!(pins(&api_a).await, [(c(3), 1), (c(1), 2)]);
    let (status, body) = pin(&api_a, &c(5), 2).await;
    assert_eq!((status, body["chat"]["pin_order"].clone()), (200, json!(2)));
    assert_eq!(pins(&api_b).await, [(c(3), 1), (c(5), 2), (c(1), 3)]);
    let (_, body) = pin(&api_a, &c(0), 99).await;
    assert_eq!(body["chat"]["pin_order"], 4, "past the end: last");
    assert_eq!(pin(&api_b, &c(5), 0).await.0, 200);
    assert_eq!(pins(&api_a).await, [(c(3), 1), (c(1), 2), (c(0), 3)]);
    // Moving a pinned chat down and up.
    pin(&api_a, &c(3), 3).await;
    assert_eq!(pins(&api_a).await, [(c(1), 1), (c(0), 2), (c(3), 3)]);
    pin(&api_a, &c(3), 1).await;
    assert_eq!(pins(&api_a).await, [(c(3), 1), (c(1), 2), (c(0), 3)]);

    // Pinned first by position, then the rest by updated_at (pin moves are not activity).
    let expected = vec![c(3), c(1), c(0), c(5), c(4), c(2)];
    for limit in [1, 2, 4, 100] {
        assert_eq!(list_ids(&api_b, "", limit).await, expected, "limit {limit}");
    }
    // Ties in updated_at: by id, descending, across pages.
    cluster
        .sql()
        .await
        .execute(
            "UPDATE chats SET updated_at = '2026-01-01T00:00:00Z' \
             WHERE id::text = ANY($1)",
            &[&vec![c(2), c(4), c(5)]],
        )
        .await
        .unwrap();
    let mut tied = vec![c(2), c(4), c(5)];
    tied.sort();
    tied.reverse();
    let expected: Vec<String> = [c(3), c(1), c(0)].into_iter().chain(tied).collect();
    for limit in [1, 2, 5] {
        assert_eq!(list_ids(&api_a, "", limit).await, expected, "limit {limit}");
    }

    // Archiving a pinned chat unpins it and closes the gap.
    api_a
        .patch(&format!("/chats/{}", c(1)), &json!({"archived": true}))
        .await
        .unwrap();
    assert_eq!(pins(&api_a).await, [(c(3), 1), (c(0), 2)]);
    assert_eq!(
        pin(&api_a, &c(1), 1).await.0,
        409,
        "archived chats are not pinned"
    );
    let child = child_of(&api_a, Some(&c(0)), json!({})).await;
    assert_eq!(
        pin(&api_a, &child, 1).await.0,
        409,
        "children are not listed"
    );
    let (status, body) = pin(&api_a, &c(2), -1).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (400, json!("pin_order"))
    );
    // Deleting one too.
    api_a.delete(&format!("/chats/{}", c(3))).await.unwrap();
    assert_eq!(pins(&api_b).await, [(c(0), 1)]);
    let (status, _) = api_a.get("/chats?after=garbage").await.unwrap();
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn unread_replies_are_marked_filtered_and_watched() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let quiet = child_of(&api_a, None, json!({})).await;
    let (chat, question) = create_chat(&api_a, "anything new?").await;
    replies(&api_a, &chat, 1).await;
    let unread = |api: ApiClient, chat: String| async move {
        let (_, body) = api.get(&format!("/chats/{chat}")).await.unwrap();
        body["chat"]["has_unread"].as_bool().unwrap()
    };
    assert!(unread(api_b.clone(), chat.clone()).await);
    assert!(!unread(api_b.clone(), quiet.clone()).await);
    assert_eq!(
        list_ids(&api_b, "unread=true", 10).await,
        vec![chat.clone()]
    );
    assert_eq!(
        list_ids(&api_b, "unread=false", 10).await,
        vec![quiet.clone()]
    );

    let mut watch = api_b.watch().await.unwrap();
    // No body: the marker moves to the newest message.
    let response = cluster
        .http
        .post(format!("{}/api/v1/chats/{chat}/read", cluster.apis[0].url))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["chat"]["has_unread"], false);
    let event = loop {
        let event = tokio::time::timeout(TURN, watch.next())
            .await
            .expect("a watch event")
            .unwrap()
            .unwrap();
        if event.data["kind"] == "read" {
            break event;
        }
    };
    assert_eq!(event.data["chat"]["id"], chat.as_str());
    assert_eq!(event.data["chat"]["has_unread"], false);
    assert!(list_ids(&api_a, "unread=true", 10).await.is_empty());

    // Back to the question: the reply is unread again.
    let (status, body) = api_b
        .post(
            &format!("/chats/{chat}/read"),
            &json!({"message_id": question}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["chat"]["has_unread"].clone()),
        (200, json!(true))
    );
    // A new reply after reading is unread.
    api_a
        .post(&format!("/chats/{chat}/read"), &json!({}))
        .await
        .unwrap();
    send(&api_a, &chat, "and now?").await;
    replies(&api_a, &chat, 2).await;
    assert!(unread(api_a.clone(), chat.clone()).await);

    for (body, expected) in [
        // The chat exists; the message the body names does not (a 404 would say the chat
        // is missing).
        (json!({"message_id": 999_999_999}), 422),
        (json!({"message_id": "x"}), 400),
        (json!({"message_id": 0}), 400),
        (json!({"other": 1}), 400),
    ] {
        let (status, answer) = api_a
            .post(&format!("/chats/{chat}/read"), &body)
            .await
            .unwrap();
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let (status, _) = api_a.get("/chats?unread=maybe").await.unwrap();
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn chats_are_found_by_title_and_labels() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let alpha = child_of(
        &api_a,
        None,
        json!({"title": "Alpha report", "labels": {"team": "a", "env": "prod"}}),
    )
    .await;
    let beta = child_of(
        &api_a,
        None,
        json!({"title": "beta 100%_done", "labels": {"team": "a"}}),
    )
    .await;
    let gamma = child_of(&api_a, None, json!({"title": "gamma"})).await;
    let query = |q: &str| {
        let q = q.replace('%', "%25").replace(' ', "%20");
        format!("q={q}")
    };
    assert_eq!(
        list_ids(&api_b, &query("ALPHA"), 10).await,
        vec![alpha.clone()]
    );
    assert_eq!(list_ids(&api_b, &query("a"), 10).await.len(), 3);
    assert_eq!(
        list_ids(&api_b, &query("100%_"), 10).await,
        vec![beta.clone()]
    );
    assert_eq!(list_ids(&api_b, &query("_"), 10).await, vec![beta.clone()]);
    assert_eq!(list_ids(&api_b, &query("%"), 10).await, vec![beta.clone()]);
    assert!(list_ids(&api_b, &query("delta"), 10).await.is_empty());
    assert_eq!(
        list_ids(&api_a, "label=team:a&label=env:prod", 10).await,
        vec![alpha.clone()]
    );
    assert_eq!(
        list_ids(&api_a, "label=team:a", 1).await,
        [beta.clone(), alpha.clone()]
    );
    assert_eq!(
        list_ids(&api_a, &format!("label=team:a&{}", query("report")), 10).await,
        vec![alpha.clone()]
    );
    assert!(list_ids(&api_a, "archived=true", 10).await.is_empty());
    api_a
        .patch(&format!("/chats/{gamma}"), &json!({"archived": true}))
        .await
        .unwrap();
    assert_eq!(list_ids(&api_a, "archived=true", 10).await, [gamma]);
    let long = "x".repeat(201);
    let (status, body) = api_a.get(&format!("/chats?q={long}")).await.unwrap();
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (400, json!("q"))
    );
}
