//! Model configs: validation, exactly one default, what ordinary users see, soft deletes, and
//! the worker's fallback to the default model.

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::setup::{assert_field_error, assert_missing_reference, idle_chat, send, settled, Setup};

#[tokio::test(flavor = "multi_thread")]
async fn model_configs_validate_input_and_keep_exactly_one_default() {
    let setup = Setup::start(0).await;
    let provider = setup.mock_provider().await;
    let seeded_default = setup.default_model().await.expect("seeded default");

    let post = |body: String| {
        let setup = &setup;
        async move {
            setup
                .call(
                    1,
                    Method::POST,
                    "/model-configs",
                    Some(&setup.admin),
                    Some(&body),
                )
                .await
        }
    };
    let unknown_provider = Uuid::new_v4();
    for (extra, field) in [
        (r#""compression_threshold": 101"#, "compression_threshold"),
        (r#""compression_threshold": -1"#, "compression_threshold"),
        (r#""context_limit": 0"#, "context_limit"),
        (r#""context_limit": "big""#, "context_limit"),
        (r#""max_output_tokens": 0"#, "max_output_tokens"),
        (r#""input_price_micros": -5"#, "input_price_micros"),
        (r#""is_default": true, "enabled": false"#, "is_default"),
        (r#""deleted": true"#, "deleted"),
        (r#""temperature": 1"#, "temperature"),
    ] {
        let body = format!(r#"{{"provider_id": "{provider}", "model": "m", {extra}}}"#);
        assert_field_error(&post(body).await, field);
    }
    assert_field_error(
        &post(format!(r#"{{"provider_id": "{provider}", "model": "  "}}"#)).await,
        "model",
    );
    assert_missing_reference(
        &post(format!(
            r#"{{"provider_id": "{unknown_provider}", "model": "m"}}"#
        ))
        .await,
        "provider_id",
    );

    // Creating a default moves the flag; so does patching one.
    let first = setup
        .create_model(
            &provider,
            json!({"is_default": true, "input_price_micros": 1}),
        )
        .await;
    assert_eq!(
        setup.defaults_in_db().await,
        vec![Uuid::parse_str(&first).unwrap()]
    );
    let second = setup.create_model(&provider, json!({})).await;
    let patched = setup
        .admin(
            Method::PATCH,
            &format!("/model-configs/{second}"),
            json!({"is_default": true, "display_name": "Second", "max_output_tokens": 512}),
            200,
        )
        .await;
    assert_eq!(patched["model_config"]["is_default"], true);
    assert_eq!(patched["model_config"]["max_output_tokens"], 512);
    assert_eq!(
        setup.defaults_in_db().await,
        vec![Uuid::parse_str(&second).unwrap()]
    );
    let cleared = setup
        .admin(
            Method::PATCH,
            &format!("/model-configs/{first}"),
            json!({"input_price_micros": null}),
            200,
        )
        .await;
    assert_eq!(cleared["model_config"]["input_price_micros"], Value::Null);
    assert_eq!(cleared["model_config"]["is_default"], false);
    assert_ne!(seeded_default, second);

    // Concurrent switches serialise: every one succeeds and one default remains.
    let mut candidates = Vec::new();
    for _ in 0..6 {
        candidates.push(setup.create_model(&provider, json!({})).await);
    }
    let paths: Vec<String> = candidates
        .iter()
        .map(|id| format!("/model-configs/{id}"))
        .collect();
    let switches = paths.iter().map(|path| {
        setup.call(
            1,
            Method::PATCH,
            path,
            Some(&setup.admin),
            Some(r#"{"is_default": true}"#),
        )
    });
    for response in futures::future::join_all(switches).await {
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let defaults = setup.defaults_in_db().await;
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    let default = defaults[0].to_string();
    assert!(candidates.contains(&default));

    // The default cannot be disabled.
    let disable_default = setup
        .call(
            1,
            Method::PATCH,
            &format!("/model-configs/{default}"),
            Some(&setup.admin),
            Some(r#"{"enabled": false}"#),
        )
        .await;
    // A conflict with the stored config (409); asking for both at once is malformed (400).
    assert_eq!(disable_default.status, 409, "{}", disable_default.body);
    assert!(
        disable_default.body.contains("enabled"),
        "{}",
        disable_default.body
    );
    let contradictory = setup
        .call(
            1,
            Method::PATCH,
            &format!("/model-configs/{default}"),
            Some(&setup.admin),
            Some(r#"{"enabled": false, "is_default": true}"#),
        )
        .await;
    assert_field_error(&contradictory, "enabled");

    // What ordinary users see: usable configs only, public fields only.
    let disabled = setup
        .create_model(&provider, json!({"enabled": false}))
        .await;
    let deleted = setup.create_model(&provider, json!({})).await;
    setup
        .admin(
            Method::DELETE,
            &format!("/model-configs/{deleted}"),
            Value::Null,
            204,
        )
        .await;
    // Once deleted it is gone: deleting it again is a 404, like any route on it.
    setup
        .admin(
            Method::DELETE,
            &format!("/model-configs/{deleted}"),
            Value::Null,
            404,
        )
        .await;
    let listed = setup.user(Method::GET, "/model-configs", Value::Null).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let ids: Vec<String> = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_string())
        .collect();
    assert!(ids.contains(&default) && ids.contains(&first));
    assert!(!ids.contains(&disabled) && !ids.contains(&deleted));
    assert!(!listed.body.contains("provider_id") && !listed.body.contains("base_url"));
    assert!(!listed.body.contains("compression_threshold"));
    assert_eq!(listed.json()["items"][0]["id"], default.as_str());
    for hidden in [&disabled, &deleted] {
        let response = setup
            .user(
                Method::GET,
                &format!("/model-configs/{hidden}"),
                Value::Null,
            )
            .await;
        assert_eq!(response.status, 404, "{}", response.body);
    }
    let visible = setup
        .user(Method::GET, &format!("/model-configs/{first}"), Value::Null)
        .await;
    assert_eq!(visible.status, 200, "{}", visible.body);
    assert_eq!(visible.json()["model_config"]["model"], "mock");

    // Administrators see disabled ones, and deleted ones on request.
    let admin_ids = |body: Value| -> Vec<String> {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["id"].as_str().expect("id").to_string())
            .collect()
    };
    let all = admin_ids(
        setup
            .admin(Method::GET, "/model-configs", Value::Null, 200)
            .await,
    );
    assert!(all.contains(&disabled) && !all.contains(&deleted));
    let with_deleted = admin_ids(
        setup
            .admin(
                Method::GET,
                "/model-configs?include_deleted=true",
                Value::Null,
                200,
            )
            .await,
    );
    assert!(with_deleted.contains(&deleted));

    // Soft delete: the row stays, flagged (the admin list shows it), and every route treats
    // it as gone.
    for method in [Method::GET, Method::DELETE] {
        setup
            .admin(
                method,
                &format!("/model-configs/{deleted}"),
                Value::Null,
                404,
            )
            .await;
    }
    setup
        .admin(
            Method::PATCH,
            &format!("/model-configs/{deleted}"),
            json!({"model": "again"}),
            404,
        )
        .await;
    let client = setup.cluster.sql().await;
    let still_there: i64 = client
        .query_one(
            "SELECT count(*) FROM model_configs WHERE id = $1 AND deleted",
            &[&Uuid::parse_str(&deleted).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still_there, 1);
    let patch_deleted = setup
        .call(
            1,
            Method::PATCH,
            &format!("/model-configs/{deleted}"),
            Some(&setup.admin),
            Some(r#"{"display_name": "again"}"#),
        )
        .await;
    assert_eq!(patch_deleted.status, 404, "{}", patch_deleted.body);

    // Deleting the default leaves none.
    setup
        .admin(
            Method::DELETE,
            &format!("/model-configs/{default}"),
            Value::Null,
            204,
        )
        .await;
    assert!(setup.defaults_in_db().await.is_empty());
    assert_eq!(setup.default_model().await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn chats_fall_back_to_the_default_model_and_fail_clearly_without_one() {
    let setup = Setup::start(1).await;
    let provider = setup.mock_provider().await;
    let default = setup.default_model().await.expect("seeded default");
    let to_disable = setup
        .create_model(&provider, json!({"model": "disabled-one"}))
        .await;
    let to_delete = setup
        .create_model(&provider, json!({"model": "deleted-one"}))
        .await;
    let kept = setup
        .create_model(&provider, json!({"model": "kept"}))
        .await;

    let disabled_chat = idle_chat(&setup, &to_disable).await;
    let deleted_chat = idle_chat(&setup, &to_delete).await;
    let kept_chat = idle_chat(&setup, &kept).await;
    setup
        .admin(
            Method::PATCH,
            &format!("/model-configs/{to_disable}"),
            json!({"enabled": false}),
            200,
        )
        .await;
    setup
        .admin(
            Method::DELETE,
            &format!("/model-configs/{to_delete}"),
            Value::Null,
            204,
        )
        .await;

    for chat_id in [&disabled_chat, &deleted_chat] {
        send(&setup, chat_id, "hello").await;
        let (status, chat, replies) = settled(&setup, chat_id, 1).await;
        assert_eq!(status, "waiting", "{chat}");
        assert_eq!(replies[0]["model_config_id"], default.as_str(), "{chat}");
    }
    send(&setup, &kept_chat, "hello").await;
    let (_, _, replies) = settled(&setup, &kept_chat, 1).await;
    assert_eq!(replies[0]["model_config_id"], kept.as_str());

    // Without a default, a chat whose model is gone fails with a config error.
    let orphan = setup
        .create_model(&provider, json!({"model": "orphan"}))
        .await;
    let orphan_chat = idle_chat(&setup, &orphan).await;
    setup
        .admin(
            Method::DELETE,
            &format!("/model-configs/{default}"),
            Value::Null,
            204,
        )
        .await;
    setup
        .admin(
            Method::PATCH,
            &format!("/model-configs/{orphan}"),
            json!({"enabled": false}),
            200,
        )
        .await;
    send(&setup, &orphan_chat, "hello").await;
    let (status, chat, replies) = settled(&setup, &orphan_chat, 1).await;
    assert_eq!(status, "error", "{chat}");
    assert_eq!(chat["last_error"]["kind"], "config", "{chat}");
    assert!(replies.is_empty());
}

/// One definition of "usable" (enabled, not deleted, provider enabled) for every check: a
/// config of a disabled provider is refused at chat create and send like a disabled config,
/// and hidden from ordinary users' lists. Before, create and send checked only the config.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_of_a_disabled_provider_is_not_usable_anywhere() {
    let setup = Setup::start(0).await;
    let default = setup.default_model().await.expect("seeded default");
    let other_provider = setup
        .admin(
            Method::POST,
            "/providers",
            json!({"kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"}),
            201,
        )
        .await["provider"]["id"]
        .as_str()
        .expect("provider id")
        .to_string();
    let model = setup
        .create_model(&other_provider, json!({"model": "elsewhere"}))
        .await;
    let chat_id = idle_chat(&setup, &model).await;
    setup
        .admin(
            Method::PATCH,
            &format!("/providers/{other_provider}"),
            json!({"enabled": false}),
            200,
        )
        .await;

    let create = setup
        .user(Method::POST, "/chats", json!({"model_config_id": model}))
        .await;
    assert_missing_reference(&create, "model_config_id");
    let sent = setup
        .user(
            Method::POST,
            &format!("/chats/{chat_id}/messages"),
            json!({"content": "hi", "model_config_id": model}),
        )
        .await;
    assert_missing_reference(&sent, "model_config_id");
    let listed = setup.user(Method::GET, "/model-configs", Value::Null).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let ids: Vec<String> = listed.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, [default]);
}

/// `chatd admin` writes providers and model configs through the same store functions as the
/// admin API: the same `base_url` check (before, the command line accepted credentials and
/// queries in it) and the same default-model switch (exactly one default afterwards).
#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_writes_through_the_admin_api_s_checks() {
    let setup = Setup::start(0).await;
    let url = setup.cluster.db.url.clone();
    let admin = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .arg("admin")
            .args(&args)
            .output()
            .await
            .expect("run chatd admin")
    };
    let args = |list: &[&str]| list.iter().map(|arg| arg.to_string()).collect::<Vec<_>>();

    for (bad, why) in [
        ("https://user:secret@api.example.com/v1", "credentials"),
        ("https://api.example.com/v1?key=1", "query"),
        ("ftp://api.example.com", "scheme"),
    ] {
        let output = admin(args(&[
            "create-provider",
            "--database-url",
            &url,
            "--kind",
            "openai",
            "--base-url",
            bad,
        ]))
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad} was accepted");
        assert!(
            stderr.contains("base_url") && stderr.contains(why),
            "{bad}: {stderr}"
        );
    }

    let provider = setup.mock_provider().await;
    let output = admin(args(&[
        "create-model",
        "--database-url",
        &url,
        "--provider",
        &provider,
        "--model",
        "new-default",
        "--default",
    ]))
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id: Uuid = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("the new config's id");
    assert_eq!(setup.defaults_in_db().await, [id]);
    let blank = admin(args(&[
        "create-model",
        "--database-url",
        &url,
        "--provider",
        &provider,
        "--model",
        " ",
    ]))
    .await;
    assert!(!blank.status.success());
    assert!(String::from_utf8_lossy(&blank.stderr).contains("model"));
}
