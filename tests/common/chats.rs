//! Chat helpers shared by the conversation tests (`conversations`, `chat_list`).

use std::time::Duration;

use serde_json::{json, Value};

use chatd_client::ApiClient;

use super::cluster::{assistant_texts, chat_status, wait_until};

const TURN: Duration = Duration::from_secs(30);

/// Sends `text` to the chat; returns (status, body).
pub async fn send(api: &ApiClient, chat_id: &str, text: &str) -> (u16, Value) {
    api.post(
        &format!("/chats/{chat_id}/messages"),
        &json!({ "content": text }),
    )
    .await
    .expect("send")
}

/// Waits until the chat has `count` assistant messages and is waiting.
pub async fn replies(api: &ApiClient, chat_id: &str, count: usize) -> Vec<String> {
    wait_until(TURN, "the replies", || async {
        let texts = assistant_texts(api, chat_id).await;
        (texts.len() == count && chat_status(api, chat_id).await == "waiting").then_some(texts)
    })
    .await
}

/// Creates a chat (no message unless `extra` has one) under `parent`; returns its id.
pub async fn child_of(api: &ApiClient, parent: Option<&str>, extra: Value) -> String {
    let mut body = json!({ "parent_chat_id": parent });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let (status, body) = api.post("/chats", &body).await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["chat"]["id"].as_str().unwrap().to_string()
}

/// Ids of `GET /chats?<query>`, following `next` with `limit` per page.
pub async fn list_ids(api: &ApiClient, query: &str, limit: usize) -> Vec<String> {
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
