//! Attachments through the cluster: files uploaded on one replica and read on the other, typed
//! by their bytes, owner-scoped; `file` parts reaching the provider in every protocol (seen
//! through `chatd mock-llm`'s `"echo": "attachments"`); and attachments a provider or model
//! cannot take ending the turn with an `attachment` error that names the file, before any
//! provider call.

mod common;

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

use chatd_client::ApiClient;
use common::cluster::{assistant_texts, directive_message, messages, wait_until, Cluster};
use common::models::{add_model, ModelOptions, PROTOCOLS};

const TURN: Duration = Duration::from_secs(30);

fn png(size: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(size, 7);
    bytes
}

fn pdf(size: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.resize(size, b'%');
    bytes
}

/// Uploads raw `bytes` (with `content_type`) on replica `index` as `token`.
async fn upload(
    cluster: &Cluster,
    index: usize,
    token: &str,
    bytes: Vec<u8>,
    content_type: &str,
    query: &str,
) -> (u16, Value) {
    let response = cluster
        .http
        .post(format!("{}/api/v1/files{query}", cluster.apis[index].url))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn file_id(cluster: &Cluster, bytes: Vec<u8>, name: &str) -> String {
    let (status, body) = upload(
        cluster,
        0,
        &cluster.token,
        bytes,
        "application/octet-stream",
        &format!("?name={name}"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["file"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_stored_typed_by_their_bytes_and_owner_scoped() {
    let cluster = Cluster::start(2, 0).await;
    let bytes = png(5120);
    let (status, body) = upload(
        &cluster,
        0,
        &cluster.token,
        bytes.clone(),
        "text/plain",
        "?name=pixel.png",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let file = &body["file"];
    assert_eq!(file["media_type"], "image/png", "sniffed, not the header");
    assert_eq!(file["size_bytes"], 5120);
    assert_eq!(file["name"], "pixel.png");
    assert_eq!(file["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
    let id = file["id"].as_str().unwrap().to_string();

    let (status, meta) = cluster
        .api(1)
        .get(&format!("/files/{id}/meta"))
        .await
        .unwrap();
    assert_eq!((status, &meta["file"]), (200, file));
    let response = cluster
        .http
        .get(format!("{}/api/v1/files/{id}", cluster.apis[1].url))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.contains("filename=\"pixel.png\""),
        "{disposition}"
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);

    // Multipart: the file field's name and its text subtype.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"# Notes\n".to_vec())
            .file_name("notes.md")
            .mime_str("text/markdown")
            .unwrap(),
    );
    let response = cluster
        .http
        .post(format!("{}/api/v1/files", cluster.apis[1].url))
        .bearer_auth(&cluster.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["file"]["media_type"], "text/markdown");
    assert_eq!(body["file"]["name"], "notes.md");

    // Refused: types chatd does not take, too large, bad names; other users' files.
    let (status, body) = upload(
        &cluster,
        0,
        &cluster.token,
        vec![0, 1, 2, 3],
        "image/png",
        "",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (415, json!("unsupported_media_type"))
    );
    let (status, body) = upload(
        &cluster,
        1,
        &cluster.token,
        png(10 * 1024 * 1024 + 1),
        "image/png",
        "",
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let (status, body) = upload(&cluster, 0, &cluster.token, Vec::new(), "image/png", "").await;
    assert_eq!(status, 201, "an empty file is empty text: {body}");
    assert_eq!(
        (
            body["file"]["media_type"].clone(),
            body["file"]["size_bytes"].clone()
        ),
        (json!("text/plain"), json!(0))
    );
    let response = cluster
        .http
        .post(format!("{}/api/v1/files", cluster.apis[0].url))
        .bearer_auth(&cluster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "no body and no Content-Type");
    let (status, body) = upload(
        &cluster,
        0,
        &cluster.token,
        png(100),
        "image/png",
        "?name=a/b",
    )
    .await;
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (400, json!("name"))
    );
    let bob = cluster.api_as(1, &cluster.create_user("bob").await);
    assert_eq!(bob.get(&format!("/files/{id}/meta")).await.unwrap().0, 404);
    assert_eq!(bob.get(&format!("/files/{id}")).await.unwrap().0, 404);
    // Bob cannot attach it either: a part naming another user's file is an invalid reference.
    let (status, body) = bob
        .post(
            "/chats",
            &json!({"message": [{"type": "text", "text": "mine?"}, {"type": "file", "file_id": id}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["field"], "message[1].file_id");
}

/// The attachment lines each protocol's encoding shows the mock: images and PDFs inline in
/// all three; text files as Anthropic plain-text documents (Chat and Responses get them as
/// text).
fn expected_lines(kind: &str) -> Vec<&'static str> {
    let mut lines = vec!["image/png 5120 inline", "application/pdf 3000 inline"];
    if kind == "anthropic" {
        lines.push("text/plain 5 text");
    }
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_reach_the_provider_in_every_protocol() {
    let cluster = Cluster::start(2, 2).await;
    let image = file_id(&cluster, png(5120), "pixel.png").await;
    let document = file_id(&cluster, pdf(3000), "report.pdf").await;
    let hello = base64::engine::general_purpose::STANDARD.encode("hello");
    for kind in PROTOCOLS {
        let model = add_model(&cluster, kind, ModelOptions::default()).await;
        let (status, body) = cluster
            .api(0)
            .post(
                "/chats",
                &json!({"model_config_id": model, "message": [
                    {"type": "text", "text": directive_message("what do you see?", json!({"echo": "attachments"}))},
                    {"type": "file", "file_id": image},
                    {"type": "file", "file_id": document},
                    {"type": "file", "data": hello, "media_type": "text/plain"},
                ]}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        let parts = body["message"]["content"].as_array().unwrap().clone();
        assert_eq!(parts[1]["media_type"], "image/png");
        assert_eq!(parts[1]["name"], "pixel.png");
        assert_eq!(parts[3]["media_type"], "text/plain");
        let chat = body["chat"]["id"].as_str().unwrap().to_string();
        let api_b = cluster.api(1);
        let reply = wait_until(TURN, "the echo", || async {
            assistant_texts(&api_b, &chat).await.first().cloned()
        })
        .await;
        let lines: Vec<&str> = reply.lines().collect();
        assert_eq!(lines, expected_lines(kind), "{kind}");
        // The stored message keeps references, not bytes; the chat is linked to its files
        // until it is deleted.
        let stored = messages(&api_b, &chat).await;
        assert!(stored[0]["content"][1]["data"].is_null(), "{}", stored[0]);
        let links = || async {
            cluster
                .sql()
                .await
                .query_one(
                    "SELECT count(*) FROM chat_files WHERE chat_id = $1::text::uuid",
                    &[&chat],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        assert_eq!(links().await, 2);
        let (status, _) = cluster
            .api(0)
            .delete(&format!("/chats/{chat}"))
            .await
            .unwrap();
        assert_eq!(status, 204);
        assert_eq!(links().await, 0, "deleting a chat unlinks its files");
    }
}

async fn last_error(api: &ApiClient, chat: &str) -> Value {
    wait_until(TURN, "the turn to fail", || async {
        let (_, body) = api.get(&format!("/chats/{chat}")).await.unwrap();
        (body["chat"]["status"] == "error").then(|| body["chat"]["last_error"].clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_a_model_cannot_take_end_the_turn_naming_the_file() {
    let cluster = Cluster::start(0, 0).await;
    cluster.make_admin("alice").await;
    let mut cluster = cluster;
    for _ in 0..2 {
        cluster.add_api().await.unwrap();
        cluster.add_worker(&[]).await.unwrap();
    }
    let api = cluster.api(0);
    let anthropic = add_model(&cluster, "anthropic", ModelOptions::default()).await;
    let openai = add_model(&cluster, "openai-compatible", ModelOptions::default()).await;
    let big = file_id(&cluster, png(6 * 1024 * 1024), "big.png").await;
    let with_image = |model: &str, file: &str| {
        json!({"model_config_id": model, "message": [
            {"type": "text", "text": "look at this"}, {"type": "file", "file_id": file}]})
    };

    // Over Anthropic's 5 MiB per image: a clear error before any provider call.
    let (status, body) = api
        .post("/chats", &with_image(&anthropic, &big))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let chat = body["chat"]["id"].as_str().unwrap().to_string();
    let error = last_error(&api, &chat).await;
    assert_eq!(error["kind"], "attachment", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("big.png") && message.contains("5 MiB"),
        "{message}"
    );
    // OpenAI takes it.
    let (_, body) = api
        .post("/chats", &with_image(&openai, &big))
        .await
        .unwrap();
    let chat = body["chat"]["id"].as_str().unwrap().to_string();
    wait_until(TURN, "the reply", || async {
        (assistant_texts(&api, &chat).await.len() == 1).then_some(())
    })
    .await;

    // A model without images: 400 at send time…
    let small = file_id(&cluster, png(64), "small.png").await;
    let (status, body) = api
        .patch(
            &format!("/model-configs/{anthropic}"),
            &json!({"supports_images": false}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["model_config"]["supports_images"].clone()),
        (200, json!(false))
    );
    let (status, body) = api
        .post("/chats", &with_image(&anthropic, &small))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["field"], "message");
    // …and an `attachment` error when the turn falls back to it: the chat's model accepts
    // images, but it is disabled by the time the turn runs, and the default does not.
    let (_, models) = api.get("/model-configs").await.unwrap();
    let default = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["is_default"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.patch(
        &format!("/model-configs/{default}"),
        &json!({"supports_images": false}),
    )
    .await
    .unwrap();
    let (_, body) = api
        .post(
            "/chats",
            &json!({"model_config_id": openai, "title": "falls back"}),
        )
        .await
        .unwrap();
    let chat = body["chat"]["id"].as_str().unwrap().to_string();
    let (status, _) = api
        .patch(
            &format!("/model-configs/{openai}"),
            &json!({"enabled": false}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = api
        .post(
            &format!("/chats/{chat}/messages"),
            &json!({"content": [{"type": "text", "text": "and this?"}, {"type": "file", "file_id": small}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let error = last_error(&cluster.api(1), &chat).await;
    assert_eq!(error["kind"], "attachment", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("small.png") && message.contains("accepts no images"),
        "{message}"
    );
}

/// A compaction summary carries the summarised messages' attachments by reference: after it,
/// the next turn's prompt (which starts at the summary) still shows the provider the image.
#[tokio::test(flavor = "multi_thread")]
async fn attachments_survive_compaction_by_reference() {
    let mut cluster = Cluster::start(2, 0).await;
    cluster
        .add_worker(&["--tools", "current_time"])
        .await
        .unwrap();
    let model = add_model(
        &cluster,
        "openai-compatible",
        ModelOptions {
            context_limit: 40,
            compression_threshold: 50,
            ..ModelOptions::default()
        },
    )
    .await;
    let image = file_id(&cluster, png(5120), "pixel.png").await;
    let api = cluster.api(0);
    let long = "please remember these words one two three four five six seven eight nine ten \
                eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let (status, body) = api
        .post(
            "/chats",
            &json!({"model_config_id": model, "message": [
                {"type": "text", "text": directive_message(long, json!({"tool_calls": [{"name": "current_time"}]}))},
                {"type": "file", "file_id": image},
            ]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let chat = body["chat"]["id"].as_str().unwrap().to_string();
    let summary = wait_until(TURN, "the compaction summary", || async {
        messages(&api, &chat).await.into_iter().find(|m| {
            chatd_client::content_text(&m["content"]).starts_with("[Conversation summarised]")
        })
    })
    .await;
    let parts = summary["content"].as_array().unwrap();
    assert!(
        parts
            .iter()
            .any(|part| part["type"] == "file" && part["file_id"] == image.as_str()),
        "{summary}"
    );
    wait_until(TURN, "the first turn to end", || async {
        (common::cluster::chat_status(&api, &chat).await == "waiting").then_some(())
    })
    .await;
    let (status, body) = cluster
        .api(1)
        .post(
            &format!("/chats/{chat}/messages"),
            &json!({"content": directive_message("still there?", json!({"echo": "attachments"}))}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let reply = wait_until(TURN, "the echo", || async {
        let texts = assistant_texts(&api, &chat).await;
        texts.last().filter(|text| text.contains("inline")).cloned()
    })
    .await;
    assert_eq!(reply, "image/png 5120 inline");
}
