//! Conversation management through HTTP on two API replicas and two workers: edit and rerun
//! (with `history_reset` on streams of the other replica and on reconnects), archive and delete
//! cascading through a chat tree (pins, unread markers and finding chats: `chat_list.rs`).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use chatd_client::{content_text, ApiClient, StreamEvent};
use common::chats::{child_of, replies, send};
use common::cluster::{chat_status, create_chat, directive_message, messages, wait_until, Cluster};
use common::sse::Reader;

const TURN: Duration = Duration::from_secs(30);

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
