//! The advisor through the cluster: admin settings (`/config/advisor`), the `advisor` tool
//! offered only to root chats while enabled (and the prompt mentioning it only then), a
//! consultation that sees the conversation and answers the agent, the per-turn cap
//! (`limit_reached`), its tokens billed on the tool result's row, and the exclusive policy.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use chatd_client::ApiClient;
use common::cluster::{assistant_texts, chat_status, messages, wait_until, Cluster};

const TURN: Duration = Duration::from_secs(30);

async fn cluster() -> Cluster {
    let mut cluster = Cluster::start(0, 0).await;
    // The test user administers (before any request, so no cached token says otherwise).
    cluster.make_admin("alice").await;
    cluster.add_api().await.expect("api");
    cluster.add_api().await.expect("api 2");
    cluster
        .add_worker(&["--tools", "spawn_agent,wait_agent"])
        .await
        .expect("worker");
    cluster
}

async fn run(api: &ApiClient, text: &str, directive: Value) -> String {
    let (status, created) = api
        .post(
            "/chats",
            &json!({"message": format!("{text}\n@mock {directive}")}),
        )
        .await
        .expect("create chat");
    assert_eq!(status, 201, "{created}");
    let id = created["chat"]["id"].as_str().expect("id").to_owned();
    wait_until(TURN, "the turn's end", || async {
        (chat_status(api, &id).await == "waiting").then_some(())
    })
    .await;
    id
}

/// The results of the chat's `advisor` calls: (result, is_error).
async fn advice(api: &ApiClient, chat_id: &str) -> Vec<(Value, bool)> {
    messages(api, chat_id)
        .await
        .iter()
        .filter(|message| message["role"] == "tool")
        .flat_map(|message| message["content"].as_array().cloned().unwrap_or_default())
        .filter(|part| part["tool_name"] == "advisor")
        .map(|part| {
            (
                part["result"].clone(),
                part["is_error"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn consult(question: &str) -> Value {
    json!({"name": "advisor", "arguments": {"question": question}})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_advisor_is_configured_offered_to_root_chats_and_capped() {
    let cluster = cluster().await;
    let (api, api_b) = (cluster.api(0), cluster.api(1));

    // Settings: disabled until set; ranges and references checked; admins only.
    let (status, body) = api.get("/config/advisor").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], false);
    for (bad, status_code) in [
        (
            json!({"enabled": true, "max_uses_per_turn": 0, "max_output_tokens": 100, "model_config_id": null}),
            400,
        ),
        (
            json!({"enabled": true, "max_uses_per_turn": 2, "max_output_tokens": 40000, "model_config_id": null}),
            400,
        ),
        (
            json!({"enabled": true, "max_uses_per_turn": 2, "max_output_tokens": 100, "model_config_id": Uuid::new_v4()}),
            422,
        ),
    ] {
        let (status, body) = api.put("/config/advisor", &bad).await.unwrap();
        assert_eq!(status, status_code, "{bad}: {body}");
    }
    let bob = cluster.create_user("bob").await;
    let (status, _) = cluster
        .api_as(0, &bob)
        .get("/config/advisor")
        .await
        .unwrap();
    assert_eq!(status, 403);

    // Disabled: neither offered nor mentioned.
    let chat = run(&api, "Tools?", json!({"echo": "tools"})).await;
    assert_eq!(
        assistant_texts(&api, &chat).await,
        ["spawn_agent\nwait_agent"]
    );

    let settings = json!({"enabled": true, "max_uses_per_turn": 2, "max_output_tokens": 200, "model_config_id": null});
    let (status, body) = api.put("/config/advisor", &settings).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, settings);
    let (_, body) = api_b.get("/config/advisor").await.unwrap();
    assert_eq!(body, settings, "on every replica");

    // Enabled: offered to a root chat and mentioned in its prompt (from the next turn on).
    wait_until(TURN, "the advisor offered", || async {
        let chat = run(&api, "Tools?", json!({"echo": "tools"})).await;
        (assistant_texts(&api, &chat).await == ["advisor\nspawn_agent\nwait_agent"]).then_some(())
    })
    .await;
    let chat = run(&api, "System?", json!({"echo": "system"})).await;
    assert!(
        assistant_texts(&api, &chat).await[0]
            .contains("consult an advisor with the `advisor` tool"),
        "the prompt mentions it"
    );

    // A consultation sees the conversation and answers the agent; the third of a turn is
    // over the cap of two; each consultation is billed on its tool row.
    let question = format!("Which path?\n@mock {}", json!({"echo": "system"}));
    let script = json!({"tool_script": [
        [consult(&question)], [consult("And now?")], [consult("Once more?")]
    ]});
    let chat = run(&api, "Plan the migration.", script).await;
    let got = advice(&api, &chat).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let first = got[0].0["advice"].as_str().unwrap_or_default();
    assert!(
        !got[0].1 && first.contains("You are the advisor of an AI agent"),
        "{first}"
    );
    assert!(
        !got[1].1 && !got[1].0["advice"].as_str().unwrap_or_default().is_empty(),
        "{got:?}"
    );
    assert!(got[2].1, "{got:?}");
    assert_eq!(got[2].0["error"], "limit_reached", "{got:?}");
    let sql = cluster.sql().await;
    let billed: Vec<(Option<i64>, Option<i64>, Option<Uuid>)> = sql
        .query(
            "SELECT input_tokens, output_tokens, model_config_id FROM chat_messages \
             WHERE chat_id = $1 AND role = 'tool' ORDER BY id",
            &[&Uuid::parse_str(&chat).unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(billed.len(), 3);
    for (input, output, model) in &billed[..2] {
        assert!(
            input.unwrap_or(0) > 0 && output.unwrap_or(0) > 0 && model.is_some(),
            "{billed:?}"
        );
    }
    assert_eq!(billed[2].0, None, "a refused consultation costs nothing");
    // The chat's cost is its steps, its title and its two consultations.
    let sum = |sql_text: &'static str| {
        let sql = &sql;
        let chat = Uuid::parse_str(&chat).unwrap();
        async move {
            sql.query_one(sql_text, &[&chat])
                .await
                .unwrap()
                .get::<_, Option<i64>>(0)
                .unwrap_or(0)
        }
    };
    let steps = sum("SELECT sum(input_tokens)::int8 FROM chat_messages WHERE chat_id = $1 AND role = 'assistant'").await;
    let consultations = sum(
        "SELECT sum(input_tokens)::int8 FROM chat_messages WHERE chat_id = $1 AND role = 'tool'",
    )
    .await;
    let title = sum("SELECT sum(input_tokens)::int8 FROM usage_records WHERE chat_id = $1").await;
    assert!(consultations > 0);
    let (_, cost) = api.get(&format!("/chats/{chat}/cost")).await.unwrap();
    assert_eq!(
        cost["input_tokens"].as_i64(),
        Some(steps + consultations + title),
        "{cost}"
    );

    // With company, the exclusive policy refuses every call.
    let script = json!({"tool_script": [[consult("Help?"), {"name": "wait_agent", "arguments": {"chat_id": Uuid::nil()}}]]});
    let chat = run(&api, "Both at once.", script).await;
    let got = advice(&api, &chat).await;
    assert!(
        got[0].1
            && got[0]
                .0
                .as_str()
                .unwrap_or_default()
                .contains("policy error"),
        "{got:?}"
    );

    // A sub-agent is not offered the advisor.
    let child_prompt = format!("Tools?\n@mock {}", json!({"echo": "tools"}));
    let script =
        json!({"tool_script": [[{"name": "spawn_agent", "arguments": {"prompt": child_prompt}}]]});
    let parent = run(&api, "Delegate.", script).await;
    let (_, body) = api.get(&format!("/chats/{parent}")).await.unwrap();
    let child = body["children"][0].as_str().expect("a child").to_owned();
    wait_until(TURN, "the child's answer", || async {
        (chat_status(&api, &child).await == "waiting").then_some(())
    })
    .await;
    assert_eq!(
        assistant_texts(&api, &child).await,
        ["spawn_agent\nwait_agent"]
    );
}
