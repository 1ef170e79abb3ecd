//! The admin HTTP API (providers, model configs) and the spend routes, through real `chatd`
//! processes and a real PostgreSQL: secrets stay write-only and encrypted, input is validated
//! field by field, there is at most one default model, deletes are soft, chats fall back to
//! the default model, and spend figures equal the sums of the stored rows.

mod common;
#[path = "admin_api/models.rs"]
mod models;
#[path = "admin_api/setup.rs"]
mod setup;
#[path = "admin_api/spend.rs"]
mod spend;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use setup::{assert_field_error, Setup};

#[tokio::test(flavor = "multi_thread")]
async fn providers_keep_api_keys_secret_and_refuse_bad_input() {
    let setup = Setup::start(0).await;
    let mut bodies = Vec::new();

    // Authentication and authorisation come before the body is even read.
    let anonymous = setup.call(1, Method::GET, "/providers", None, None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let provider_id = setup.mock_provider().await;
    for (method, path, body) in [
        (Method::GET, "/providers".to_string(), None),
        (Method::POST, "/providers".to_string(), Some("{\"bad\": ")),
        (Method::GET, format!("/providers/{provider_id}"), None),
        (
            Method::PATCH,
            format!("/providers/{provider_id}"),
            Some("{}"),
        ),
        (Method::DELETE, format!("/providers/{provider_id}"), None),
        (Method::POST, "/model-configs".to_string(), Some("{}")),
        (
            Method::PATCH,
            format!("/model-configs/{}", Uuid::new_v4()),
            Some("{}"),
        ),
        (
            Method::DELETE,
            format!("/model-configs/{}", Uuid::new_v4()),
            None,
        ),
        (
            Method::GET,
            "/model-configs?include_deleted=true".to_string(),
            None,
        ),
    ] {
        let response = setup
            .call(0, method.clone(), &path, Some(&setup.cluster.token), body)
            .await;
        assert_eq!(response.status, 403, "{method} {path}: {}", response.body);
        assert_eq!(response.json()["error"]["code"], "forbidden");
    }

    // A replica without an encryption key cannot store API keys, and says how to fix it.
    let keyless = setup
        .call(
            0,
            Method::POST,
            "/providers",
            Some(&setup.admin),
            Some(r#"{"kind": "openai", "base_url": "https://api.example.com/v1", "api_key": "sk-nokey-1234"}"#),
        )
        .await;
    assert_field_error(&keyless, "api_key");
    assert!(
        keyless.body.contains("--encryption-key"),
        "{}",
        keyless.body
    );
    bodies.push(keyless.body);

    let secret = "sk-first-secret-0123456789";
    let created = setup
        .admin(
            Method::POST,
            "/providers",
            json!({"kind": "anthropic", "base_url": "https://api.example.com/v1/",
                   "api_key": secret, "display_name": "Example"}),
            201,
        )
        .await;
    let provider = &created["provider"];
    assert_eq!(provider["has_api_key"], true);
    assert_eq!(provider["kind"], "anthropic");
    assert_eq!(provider["base_url"], "https://api.example.com/v1");
    assert_eq!(provider["enabled"], true);
    let id = provider["id"].as_str().expect("id").to_string();
    bodies.push(created.to_string());

    // At rest: ciphertext that the configured key opens.
    let key = chatd_shared::crypto::parse_key(&setup.key).expect("key");
    let stored = |id: String| {
        let cluster = &setup.cluster;
        async move {
            let client = cluster.sql().await;
            let id = Uuid::parse_str(&id).expect("uuid");
            client
                .query_one(
                    "SELECT api_key_encrypted FROM providers WHERE id = $1",
                    &[&id],
                )
                .await
                .expect("read the provider")
                .get::<_, Option<Vec<u8>>>(0)
        }
    };
    let sealed = stored(id.clone()).await.expect("a stored key");
    assert!(!sealed
        .windows(secret.len())
        .any(|window| window == secret.as_bytes()));
    assert_eq!(chatd_shared::crypto::open(&key, &sealed).unwrap(), secret);

    for path in ["/providers".to_string(), format!("/providers/{id}")] {
        let read = setup
            .call(1, Method::GET, &path, Some(&setup.admin), None)
            .await;
        assert_eq!(read.status, 200, "{}", read.body);
        assert!(read.body.contains("\"has_api_key\":true"), "{}", read.body);
        bodies.push(read.body);
    }

    // Replace, keep across other changes, erase.
    let second = "sk-second-secret-9876543210";
    let patched = setup
        .admin(
            Method::PATCH,
            &format!("/providers/{id}"),
            json!({"api_key": second}),
            200,
        )
        .await;
    bodies.push(patched.to_string());
    let sealed = stored(id.clone()).await.expect("a stored key");
    assert_eq!(chatd_shared::crypto::open(&key, &sealed).unwrap(), second);
    let disabled = setup
        .admin(
            Method::PATCH,
            &format!("/providers/{id}"),
            json!({"enabled": false, "display_name": "Renamed"}),
            200,
        )
        .await;
    assert_eq!(disabled["provider"]["has_api_key"], true);
    assert_eq!(disabled["provider"]["enabled"], false);
    assert_eq!(disabled["provider"]["display_name"], "Renamed");
    let erased = setup
        .admin(
            Method::PATCH,
            &format!("/providers/{id}"),
            json!({"api_key": null}),
            200,
        )
        .await;
    assert_eq!(erased["provider"]["has_api_key"], false);
    assert_eq!(stored(id.clone()).await, None);
    bodies.push(erased.to_string());

    // Bad input: 400 naming the field.
    let post = |body: &'static str| {
        setup.call(
            1,
            Method::POST,
            "/providers",
            Some(&setup.admin),
            Some(body),
        )
    };
    for (body, field) in [
        (
            r#"{"kind": "gpt", "base_url": "https://x.example"}"#,
            "kind",
        ),
        (r#"{"base_url": "https://x.example"}"#, ""),
        (
            r#"{"kind": "openai", "base_url": "ftp://x.example"}"#,
            "base_url",
        ),
        (
            r#"{"kind": "openai", "base_url": "x.example/v1"}"#,
            "base_url",
        ),
        (
            r#"{"kind": "openai", "base_url": "https://u:p@x.example/v1"}"#,
            "base_url",
        ),
        (
            r#"{"kind": "openai", "base_url": "https://x.example/v1?k=1"}"#,
            "base_url",
        ),
        (
            r#"{"kind": "openai", "base_url": "https://x.example", "api_key": ""}"#,
            "api_key",
        ),
        (
            r#"{"kind": "openai", "base_url": "https://x.example", "owner": "me"}"#,
            "owner",
        ),
    ] {
        let response = post(body).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        if !field.is_empty() {
            assert_field_error(&response, field);
        }
    }
    let long_url = format!(
        r#"{{"kind": "openai", "base_url": "https://x.example/{}"}}"#,
        "a".repeat(3000)
    );
    let response = setup
        .call(
            1,
            Method::POST,
            "/providers",
            Some(&setup.admin),
            Some(&long_url),
        )
        .await;
    assert_field_error(&response, "base_url");
    let response = setup
        .call(
            1,
            Method::PATCH,
            &format!("/providers/{id}"),
            Some(&setup.admin),
            Some(r#"{"kind": "mock", "api_key": 5}"#),
        )
        .await;
    assert_field_error(&response, "api_key");
    let missing = setup
        .call(
            1,
            Method::GET,
            &format!("/providers/{}", Uuid::new_v4()),
            Some(&setup.admin),
            None,
        )
        .await;
    assert_eq!(missing.status, 404);
    let malformed = setup
        .call(
            1,
            Method::GET,
            "/providers/not-a-uuid",
            Some(&setup.admin),
            None,
        )
        .await;
    assert_field_error(&malformed, "provider_id");

    // Delete: refused while a live model config uses the provider, naming it; hidden (row
    // kept for spend history, disabled, key erased) while only deleted configs reference it;
    // removed when nothing does. Either way it is gone from every route.
    setup
        .admin(
            Method::PATCH,
            &format!("/providers/{id}"),
            json!({"api_key": secret}),
            200,
        )
        .await;
    let model = setup.create_model(&id, json!({"model": "claude-x"})).await;
    let refused = setup
        .call(
            1,
            Method::DELETE,
            &format!("/providers/{id}"),
            Some(&setup.admin),
            None,
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains(&model), "{}", refused.body);
    setup
        .admin(
            Method::DELETE,
            &format!("/model-configs/{model}"),
            Value::Null,
            204,
        )
        .await;
    setup
        .admin(
            Method::DELETE,
            &format!("/providers/{id}"),
            Value::Null,
            204,
        )
        .await;
    assert_eq!(stored(id.clone()).await, None, "the key is erased");
    for (method, status) in [(Method::GET, 404), (Method::DELETE, 404)] {
        setup
            .admin(method, &format!("/providers/{id}"), Value::Null, status)
            .await;
    }
    let listed = setup
        .admin(Method::GET, "/providers", Value::Null, 200)
        .await;
    assert!(
        !listed.to_string().contains(&id),
        "hidden from the list: {listed}"
    );
    let hidden: (bool, bool) = {
        let sql = setup.cluster.sql().await;
        let row = sql
            .query_one(
                "SELECT deleted, enabled FROM providers WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .expect("the row stays for spend history");
        (row.get(0), row.get(1))
    };
    assert_eq!(hidden, (true, false));
    let unused = setup
        .admin(
            Method::POST,
            "/providers",
            json!({"kind": "mock", "base_url": "http://127.0.0.1:1"}),
            201,
        )
        .await;
    let unused = unused["provider"]["id"].as_str().expect("id").to_string();
    setup
        .admin(
            Method::DELETE,
            &format!("/providers/{unused}"),
            Value::Null,
            204,
        )
        .await;
    setup
        .admin(
            Method::GET,
            &format!("/providers/{unused}"),
            Value::Null,
            404,
        )
        .await;

    for body in &bodies {
        assert!(!body.contains(secret) && !body.contains(second), "{body}");
        assert!(!body.contains("api_key_encrypted"), "{body}");
    }
}
