//! Shared setup of the admin API tests: a cluster with a keyless and a keyed API replica, an
//! admin token, and helpers for requests and turns.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::cluster::{wait_until, Cluster, Process};

pub const TURN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Raw {
    pub status: u16,
    pub body: String,
}

impl Raw {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A cluster whose API replica 0 has no encryption key and replica 1 has `key`, an admin
/// token, and the key.
pub struct Setup {
    pub cluster: Cluster,
    /// Token of the admin user `root`.
    pub admin: String,
    /// The encryption key of API replica 1 and of the workers (base64).
    pub key: String,
}

impl Setup {
    pub async fn start(workers: usize) -> Setup {
        let mut cluster = Cluster::start(1, 0).await;
        let key = chatd_shared::crypto::generate_key();
        spawn_api_with_key(&mut cluster, &key).await;
        for _ in 0..workers {
            cluster
                .add_worker(&["--encryption-key", &key])
                .await
                .expect("start a worker");
        }
        let client = cluster.sql().await;
        chatd_shared::db::admin::create_user(&client, "root", true)
            .await
            .expect("create the admin");
        let admin = chatd_shared::db::admin::create_token(&client, "root", "test")
            .await
            .expect("create the admin token");
        Setup {
            cluster,
            admin,
            key,
        }
    }

    /// A request to API replica `api` (1 has the encryption key).
    pub async fn call(
        &self,
        api: usize,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Raw {
        let mut request = self.cluster.http.request(
            method,
            format!("{}/api/v1{path}", self.cluster.apis[api].url),
        );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("send");
        Raw {
            status: response.status().as_u16(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    /// An admin request with a JSON body to the replica with the key; asserts `status`.
    pub async fn admin(&self, method: Method, path: &str, body: Value, status: u16) -> Value {
        let body = (!body.is_null()).then(|| body.to_string());
        let response = self
            .call(1, method.clone(), path, Some(&self.admin), body.as_deref())
            .await;
        assert_eq!(
            response.status, status,
            "{method} {path}: {}",
            response.body
        );
        response.json()
    }

    pub async fn user(&self, method: Method, path: &str, body: Value) -> Raw {
        let body = (!body.is_null()).then(|| body.to_string());
        self.call(0, method, path, Some(&self.cluster.token), body.as_deref())
            .await
    }

    /// The provider `Cluster::start` seeded (the mock LLM, no key).
    pub async fn mock_provider(&self) -> String {
        let providers = self
            .admin(Method::GET, "/providers", Value::Null, 200)
            .await;
        providers["items"][0]["id"]
            .as_str()
            .expect("seeded provider")
            .to_string()
    }

    pub async fn default_model(&self) -> Option<String> {
        let models = self
            .admin(Method::GET, "/model-configs", Value::Null, 200)
            .await;
        models["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|model| model["is_default"] == true)
            .map(|model| model["id"].as_str().expect("id").to_string())
    }

    pub async fn create_model(&self, provider_id: &str, extra: Value) -> String {
        let mut body = json!({"provider_id": provider_id, "model": "mock"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let created = self.admin(Method::POST, "/model-configs", body, 201).await;
        created["model_config"]["id"]
            .as_str()
            .expect("model config id")
            .to_string()
    }

    pub async fn defaults_in_db(&self) -> Vec<Uuid> {
        let client = self.cluster.sql().await;
        client
            .query(
                "SELECT id FROM model_configs WHERE is_default AND NOT deleted",
                &[],
            )
            .await
            .expect("read defaults")
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

/// Starts one more `chatd api` with `--encryption-key` and adds it to `cluster.apis`.
pub async fn spawn_api_with_key(cluster: &mut Cluster, key: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port");
    let log_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-logs")
        .join(&cluster.db.name);
    std::fs::create_dir_all(&log_dir).expect("create the log folder");
    let log = std::fs::File::create(log_dir.join("api-with-key.log")).expect("create the log");
    let child = Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["api", "--database-url", &cluster.db.url])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--encryption-key", key])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log"))
        .stderr(log)
        .env("RUST_LOG", "info")
        .spawn()
        .expect("spawn chatd api");
    let url = format!("http://127.0.0.1:{port}");
    let http = cluster.http.clone();
    let ready = format!("{url}/readyz");
    cluster.apis.push(Process {
        child,
        url,
        worker_id: None,
        args: Vec::new(),
    });
    wait_until(Duration::from_secs(30), "the keyed API to be ready", || {
        let http = http.clone();
        let ready = ready.clone();
        async move {
            let response = http.get(&ready).send().await.ok()?;
            response.status().is_success().then_some(())
        }
    })
    .await;
}

/// A body field naming something that does not exist: 422 `invalid_reference` naming it.
pub fn assert_missing_reference(response: &Raw, field: &str) {
    assert_eq!(response.status, 422, "{}", response.body);
    let body = response.json();
    assert_eq!(
        body["error"]["code"], "invalid_reference",
        "{}",
        response.body
    );
    assert_eq!(
        body["error"]["details"]["field"], field,
        "{}",
        response.body
    );
}

pub fn assert_field_error(response: &Raw, field: &str) {
    assert_eq!(response.status, 400, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error"]["code"], "validation", "{}", response.body);
    assert_eq!(
        body["error"]["details"]["field"], field,
        "{}",
        response.body
    );
}

/// Creates a chat without a message for `model_config_id` (so no worker resolves its model
/// before the test changes the config), returning its id.
pub async fn idle_chat(setup: &Setup, model_config_id: &str) -> String {
    let created = setup
        .user(
            Method::POST,
            "/chats",
            json!({"model_config_id": model_config_id}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.json()["chat"]["id"]
        .as_str()
        .expect("chat id")
        .to_string()
}

pub async fn send(setup: &Setup, chat_id: &str, text: &str) {
    let sent = setup
        .user(
            Method::POST,
            &format!("/chats/{chat_id}/messages"),
            json!({"content": text}),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
}

/// Waits until the chat is idle (`waiting`/`error`) with `assistants` assistant messages (or
/// in `error`), and returns (status, chat, assistant messages).
pub async fn settled(
    setup: &Setup,
    chat_id: &str,
    assistants: usize,
) -> (String, Value, Vec<Value>) {
    let api = setup.cluster.api(0);
    wait_until(TURN_TIMEOUT, "the turn to finish", || {
        let api = api.clone();
        async move {
            let (_, chat) = api.get(&format!("/chats/{chat_id}")).await.ok()?;
            let status = chat["chat"]["status"].as_str()?.to_string();
            let messages = crate::common::cluster::messages(&api, chat_id).await;
            let replies: Vec<Value> = messages
                .into_iter()
                .filter(|message| message["role"] == "assistant")
                .collect();
            let done = (status == "waiting" && replies.len() >= assistants) || status == "error";
            done.then_some((status, chat["chat"].clone(), replies))
        }
    })
    .await
}
