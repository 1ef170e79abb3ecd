//! Conversation management through HTTP on two API replicas and two workers: edit and rerun
//! (with `history_reset` on streams of the other replica and on reconnects), archive and delete
//! cascading through a chat tree, pins, unread markers, and finding chats.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use chatd_client::{content_text, ApiClient, StreamEvent};
use common::cluster::{
    assistant_texts, chat_status, create_chat, directive_message, messages, wait_until, Cluster,
};
use common::sse::Reader;

const TURN: Duration = Duration::from_secs(30);

async fn send(api: &ApiClient, chat_id: &str, text: &str) -> (u16, Value) {
    api.post(
        &format!("/chats/{chat_id}/messages"),
        &json!({ "content": text }),
    )
    .await
    .expect("send")
}

/// Waits until the chat has `count` assistant messages and is waiting.
async fn replies(api: &ApiClient, chat_id: &str, count: usize) -> Vec<String> {
    wait_until(TURN, "the replies", || async {
        let texts = assistant_texts(api, chat_id).await;
        (texts.len() == count && chat_status(api, chat_id).await == "waiting").then_some(texts)
    })
    .await
}

/// (role, text) of each visible message.
async fn history(api: &ApiClient, chat_id: &str) -> Vec<(String, String)> {
    messages(api, chat_id)
        .await
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_string(),
                content_text(&m["content"]),
            )
        })
        .collect()
}

fn message_texts(events: &[StreamEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|event| event.event == "message")
        .map(|event| {
            (
                event.data["role"].as_str().unwrap_or_default().to_string(),
                content_text(&event.data["content"]),
            )
        })
        .collect()
}

/// Reads until `count` messages followed by a `waiting` status have been seen (counting from
/// the start of `reader.seen`).
async fn read_until_messages(reader: &mut Reader, from: usize, count: usize) {
    loop {
        let seen = &reader.seen[from..];
        let messages = seen.iter().filter(|e| e.event == "message").count();
        let waiting_last = seen
            .iter()
            .rev()
            .find(|e| e.event == "status")
            .is_some_and(|e| e.data["status"] == "waiting");
        if messages >= count && waiting_last {
            return;
        }
        reader.next(TURN).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_a_user_message_reruns_from_it_on_every_replica() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let (chat, first) = create_chat(&api_a, "one").await;
    replies(&api_a, &chat, 1).await;
    let (status, body) = send(&api_a, &chat, "two").await;
    assert_eq!(status, 201, "{body}");
    let second = body["message"]["id"].as_i64().unwrap();
    replies(&api_a, &chat, 2).await;
    let old_reply_id = messages(&api_a, &chat).await.last().unwrap()["id"]
        .as_i64()
        .unwrap();

    // A stream on the other replica holds the whole history.
    let mut reader = Reader::open(&api_b, &chat, None).await;
    read_until_messages(&mut reader, 0, 4).await;

    let (status, body) = api_a
        .patch(
            &format!("/chats/{chat}/messages/{second}"),
            &json!({"content": "two, edited"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let replacement = body["message"]["id"].as_i64().unwrap();
    assert!(replacement > old_reply_id, "{body}");
    assert_eq!(content_text(&body["message"]["content"]), "two, edited");

    // The stream says history_reset, then the current history, then the new turn.
    let reset = reader
        .until(TURN, |event| event.event == "history_reset")
        .await;
    assert_eq!(reset.data, json!({}));
    let from = reader.seen.len();
    read_until_messages(&mut reader, from, 4).await;
    let after_reset = message_texts(&reader.seen[from..]);
    let stored = history(&api_b, &chat).await;
    assert_eq!(after_reset, stored, "streamed after the reset == stored");
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[0], ("user".into(), "one".into()));
    assert_eq!(stored[2], ("user".into(), "two, edited".into()));
    assert!(
        !stored.iter().any(|(_, text)| text == "two"),
        "the edited message is gone: {stored:?}"
    );

    // The provider saw the new history only: a chat that never had "two" gets the same reply
    // for the same prompt (same text, same input tokens).
    let (control, _) = create_chat(&api_b, "one").await;
    replies(&api_b, &control, 1).await;
    send(&api_b, &control, "two, edited").await;
    replies(&api_b, &control, 2).await;
    let usage = |list: Vec<Value>| {
        list.iter()
            .filter(|m| m["role"] == "assistant")
            .map(|m| {
                (
                    content_text(&m["content"]),
                    m["usage"]["input_tokens"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        usage(messages(&api_a, &chat).await),
        usage(messages(&api_a, &control).await)
    );

    // A reconnect whose cursor names a removed message: history_reset, then the history.
    let mut resumed = Reader::open(&api_a, &chat, Some(&format!("{old_reply_id}-0-0"))).await;
    let first_event = resumed.next(TURN).await;
    assert_eq!(first_event.event, "history_reset", "{first_event:?}");
    read_until_messages(&mut resumed, 1, 4).await;
    assert_eq!(message_texts(&resumed.seen), stored);
    // A cursor on a message that is still there continues without a reset.
    let kept = messages(&api_a, &chat).await[1]["id"].as_i64().unwrap();
    let mut resumed = Reader::open(&api_b, &chat, Some(&format!("{kept}-0-0"))).await;
    read_until_messages(&mut resumed, 0, 2).await;
    assert!(!resumed.seen.iter().any(|e| e.event == "history_reset"));
    assert_eq!(message_texts(&resumed.seen), stored[2..].to_vec());

    // Bad edits.
    let assistant = messages(&api_a, &chat).await[1]["id"].as_i64().unwrap();
    let edit = |id: i64, content: Value| {
        let api = api_b.clone();
        let chat = chat.clone();
        async move {
            api.patch(
                &format!("/chats/{chat}/messages/{id}"),
                &json!({ "content": content }),
            )
            .await
            .unwrap()
        }
    };
    let (status, body) = edit(assistant, json!("x")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["field"], "message_id", "{body}");
    assert_eq!(edit(second, json!("x")).await.0, 404, "a removed message");
    assert_eq!(edit(999_999_999, json!("x")).await.0, 404);
    assert_eq!(edit(first, json!("  ")).await.0, 400, "blank content");
    let bob = cluster.api_as(0, &cluster.create_user("bob").await);
    let (status, body) = bob
        .patch(
            &format!("/chats/{chat}/messages/{first}"),
            &json!({"content": "mine now"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404, "another user's chat: {body}");
    let (status, _) = api_a
        .patch(&format!("/chats/{chat}"), &json!({"archived": true}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(edit(first, json!("x")).await.0, 409, "archived");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_fences_out_the_running_turn_and_clears_the_queue() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let slow = directive_message("slow", json!({"tokens": 400, "tokens_per_second": 40}));
    let (chat, first) = create_chat(&api_a, &slow).await;
    wait_until(TURN, "the slow turn to run", || async {
        (chat_status(&api_a, &chat).await == "running").then_some(())
    })
    .await;
    let (status, body) = send(&api_b, &chat, "queued behind").await;
    assert_eq!(status, 202, "{body}");
    let mut reader = Reader::open(&api_b, &chat, None).await;
    reader
        .until(TURN, |event| event.event == "message_part")
        .await;

    let (status, body) = api_a
        .patch(
            &format!("/chats/{chat}/messages/{first}"),
            &json!({"content": "fast"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    reader
        .until(TURN, |event| event.event == "history_reset")
        .await;
    let from = reader.seen.len();
    read_until_messages(&mut reader, from, 2).await;
    let stored = history(&api_a, &chat).await;
    assert_eq!(message_texts(&reader.seen[from..]), stored);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0], ("user".into(), "fast".into()));
    let (_, body) = api_a.get(&format!("/chats/{chat}/messages")).await.unwrap();
    assert_eq!(body["queued"], json!([]), "the queue was cleared: {body}");
    // The fenced turn never commits: still one reply after it would have finished.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let visible: i64 = cluster
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM chat_messages WHERE chat_id = $1::text::uuid \
             AND role = 'assistant' AND NOT deleted",
            &[&chat],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, 1);
    assert_eq!(history(&api_b, &chat).await, stored);
}

/// Creates a chat (no message) under `parent`; returns its id.
async fn child_of(api: &ApiClient, parent: Option<&str>, extra: Value) -> String {
    let mut body = json!({ "parent_chat_id": parent });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let (status, body) = api.post("/chats", &body).await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["chat"]["id"].as_str().unwrap().to_string()
}

async fn archived(api: &ApiClient, chat_id: &str) -> bool {
    let (status, body) = api.get(&format!("/chats/{chat_id}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["chat"]["archived"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn archiving_cascades_through_the_tree_and_waits_for_idle_chats() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let root = child_of(&api_a, None, json!({})).await;
    let child = child_of(&api_a, Some(&root), json!({})).await;
    let tools = json!([{"name": "lookup", "description": "Client side.",
        "schema": {"type": "object"}}]);
    let grandchild = child_of(
        &api_b,
        Some(&child),
        json!({"dynamic_tools": tools,
               "message": directive_message("call", json!({"tool_calls": [{"name": "lookup"}]}))}),
    )
    .await;
    wait_until(TURN, "requires_action", || async {
        (chat_status(&api_a, &grandchild).await == "requires_action").then_some(())
    })
    .await;
    // Each chat lists its direct sub-chats.
    for (chat, children) in [
        (&root, json!([child])),
        (&child, json!([grandchild])),
        (&grandchild, json!([])),
    ] {
        let (_, body) = api_b.get(&format!("/chats/{chat}")).await.unwrap();
        assert_eq!(body["children"], children, "{body}");
    }
    let mut watch = api_b.watch().await.unwrap();

    // Busy anywhere in the tree: 409 naming the busy chat.
    let (status, body) = api_a
        .patch(&format!("/chats/{root}"), &json!({"archived": true}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    let text = body.to_string();
    assert!(
        text.contains(&grandchild) && text.contains("requires_action"),
        "{text}"
    );
    assert!(!archived(&api_a, &root).await);

    let (status, _) = api_a
        .post(&format!("/chats/{grandchild}/interrupt"), &json!({}))
        .await
        .unwrap();
    assert!(status < 300);
    let (status, body) = api_b
        .patch(&format!("/chats/{root}"), &json!({"archived": true}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for chat in [&root, &child, &grandchild] {
        assert!(archived(&api_a, chat).await, "{chat}");
    }
    // One `archived` event per chat changed.
    let mut seen = HashSet::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(TURN, watch.next())
            .await
            .expect("a watch event")
            .unwrap()
            .unwrap();
        if event.data["kind"] == "archived" {
            assert_eq!(event.data["chat"]["archived"], true);
            seen.insert(event.data["chat"]["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        seen,
        HashSet::from([root.clone(), child.clone(), grandchild.clone()])
    );

    // Archived chats never run, and take no children.
    let (status, _) = send(&api_a, &grandchild, "hello").await;
    assert_eq!(status, 409);
    let (status, _) = api_a
        .post("/chats", &json!({"parent_chat_id": root, "message": "x"}))
        .await
        .unwrap();
    assert_eq!(status, 409);
    // A child cannot come back while its parent is archived.
    let (status, body) = api_a
        .patch(&format!("/chats/{child}"), &json!({"archived": false}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains(&root), "{body}");

    // Unarchiving the root brings the tree back; archiving a middle chat takes its subtree.
    let (status, _) = api_b
        .patch(&format!("/chats/{root}"), &json!({"archived": false}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    for chat in [&root, &child, &grandchild] {
        assert!(!archived(&api_b, chat).await, "{chat}");
    }
    let (status, _) = api_a
        .patch(&format!("/chats/{child}"), &json!({"archived": true}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(!archived(&api_a, &root).await);
    assert!(archived(&api_a, &child).await);
    assert!(archived(&api_a, &grandchild).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_hides_the_tree_and_keeps_its_spend() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let (root, _) = create_chat(&api_a, "root").await;
    replies(&api_a, &root, 1).await;
    let (status, body) = api_a
        .post(
            "/chats",
            &json!({"parent_chat_id": root, "message": "child"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let child = body["chat"]["id"].as_str().unwrap().to_string();
    replies(&api_a, &child, 1).await;
    let usage = || async {
        let (status, body) = api_b.get("/users/me/usage").await.unwrap();
        assert_eq!(status, 200, "{body}");
        body["by_model"].clone()
    };
    let before = usage().await;
    assert!(before.to_string().contains("input_tokens"), "{before}");

    let bob = cluster.api_as(1, &cluster.create_user("bob").await);
    assert_eq!(bob.delete(&format!("/chats/{root}")).await.unwrap().0, 404);

    let mut stream = Reader::open(&api_b, &child, None).await;
    read_until_messages(&mut stream, 0, 2).await;
    let (status, body) = api_a.delete(&format!("/chats/{root}")).await.unwrap();
    assert_eq!(status, 204, "{body}");
    for chat in [&root, &child] {
        for path in [
            format!("/chats/{chat}"),
            format!("/chats/{chat}/messages"),
            format!("/chats/{chat}/cost"),
        ] {
            assert_eq!(api_b.get(&path).await.unwrap().0, 404, "{path}");
        }
        assert_eq!(send(&api_b, chat, "hello?").await.0, 404);
        assert!(api_a.stream(chat, None).await.is_err(), "no stream");
    }
    let (_, list) = api_b.get("/chats").await.unwrap();
    assert!(!list.to_string().contains(&root), "{list}");
    assert_eq!(usage().await, before, "spend stays in the totals");
    // An open stream of a deleted chat ends.
    tokio::time::timeout(TURN, async {
        loop {
            match tokio::time::timeout(Duration::from_secs(1), stream_next(&mut stream)).await {
                Ok(None) => return,
                Ok(Some(_)) | Err(_) => continue,
            }
        }
    })
    .await
    .expect("the stream of the deleted chat ends");
    assert_eq!(
        api_a.delete(&format!("/chats/{root}")).await.unwrap().0,
        404
    );

    // Refused while busy.
    let tools = json!([{"name": "lookup", "description": "Client side.",
        "schema": {"type": "object"}}]);
    let busy = child_of(
        &api_a,
        None,
        json!({"dynamic_tools": tools,
               "message": directive_message("call", json!({"tool_calls": [{"name": "lookup"}]}))}),
    )
    .await;
    wait_until(TURN, "requires_action", || async {
        (chat_status(&api_a, &busy).await == "requires_action").then_some(())
    })
    .await;
    let (status, body) = api_b.delete(&format!("/chats/{busy}")).await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(api_b.get(&format!("/chats/{busy}")).await.unwrap().0, 200);
}

/// The next event of a reader's stream, or `None` when it ended.
async fn stream_next(reader: &mut Reader) -> Option<StreamEvent> {
    reader.try_next().await
}

/// Ids of `GET /chats?<query>`, following `next` with `limit` per page.
async fn list_ids(api: &ApiClient, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/chats?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let (status, body) = api.get(&path).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        for item in body["items"].as_array().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_string());
        }
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => {
                assert_eq!(body["has_more"], false);
                return ids;
            }
        }
        assert!(ids.len() < 1000, "paging does not end");
    }
}

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
        (json!({"message_id": 999_999_999}), 404),
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

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_closes_pending_client_tool_calls() {
    let cluster = Cluster::start(2, 2).await;
    let (api_a, api_b) = (cluster.api(0), cluster.api(1));
    let tools = json!([{"name": "lookup", "description": "Client side.",
        "schema": {"type": "object"}}]);
    let call = directive_message("call", json!({"tool_calls": [{"name": "lookup"}]}));
    let chat = child_of(
        &api_a,
        None,
        json!({"dynamic_tools": tools, "message": call}),
    )
    .await;
    wait_until(TURN, "requires_action", || async {
        (chat_status(&api_a, &chat).await == "requires_action").then_some(())
    })
    .await;
    let before = messages(&api_a, &chat).await;
    let question = before[0]["id"].as_i64().unwrap();
    let call_id = before
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|part| part["type"] == "tool-call")
        .and_then(|part| part["tool_call_id"].as_str().map(str::to_string))
        .expect("a pending tool call");

    let (status, body) = api_b
        .patch(
            &format!("/chats/{chat}/messages/{question}"),
            &json!({"content": "never mind, just answer"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    replies(&api_a, &chat, 1).await;
    let stored = history(&api_b, &chat).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0], ("user".into(), "never mind, just answer".into()));
    // The old call is gone with its message: its result is refused.
    let (status, body) = api_a
        .post(
            &format!("/chats/{chat}/tool-results"),
            &json!({"results": [{"tool_call_id": call_id, "output": "late"}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
}
