//! `GET /chats/{id}/cost` and `GET /users/me/usage` against sums computed from the stored
//! rows.

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::setup::{assert_field_error, idle_chat, send, settled, Setup};

/// Sums of the stored assistant rows of `chat_ids`, checking each row's cost against the
/// worker's rule (ceil to whole micro-dollars).
async fn stored_totals(
    setup: &Setup,
    chat_ids: &[&str],
    prices: Option<(i64, i64)>,
) -> (Option<i64>, [i64; 7]) {
    let client = setup.cluster.sql().await;
    let ids: Vec<Uuid> = chat_ids
        .iter()
        .map(|id| Uuid::parse_str(id).unwrap())
        .collect();
    let rows = client
        .query(
            "SELECT input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, \
             cache_write_tokens, runtime_ms, cost_micros FROM chat_messages \
             WHERE chat_id = ANY($1) AND role = 'assistant'",
            &[&ids],
        )
        .await
        .unwrap();
    let mut sums = [0i64; 7];
    let mut cost: Option<i64> = None;
    for row in &rows {
        for (index, sum) in sums.iter_mut().enumerate().take(6) {
            *sum += row.get::<_, Option<i64>>(index).unwrap_or(0);
        }
        sums[6] += 1;
        let stored: Option<i64> = row.get(6);
        let input = row.get::<_, Option<i64>>(0).unwrap_or(0);
        let output = row.get::<_, Option<i64>>(1).unwrap_or(0);
        match prices {
            Some((input_price, output_price)) => {
                let micros = input * input_price + output * output_price;
                let expected = (micros + 999_999) / 1_000_000;
                assert_eq!(
                    stored,
                    Some(expected),
                    "row cost is ceil(tokens × price / 1e6)"
                );
                assert!(input > 0 && output > 0, "the mock reports usage");
            }
            None => assert_eq!(stored, None),
        }
        if let Some(stored) = stored {
            cost = Some(cost.unwrap_or(0) + stored);
        }
    }
    (cost, sums)
}

fn assert_totals(body: &Value, cost: Option<i64>, sums: [i64; 7], unpriced: i64) {
    assert_eq!(body["cost_micros"], json!(cost), "{body}");
    let names = [
        "input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "runtime_ms",
        "messages",
    ];
    for (name, sum) in names.iter().zip(sums) {
        assert_eq!(body[*name], sum, "{name}: {body}");
    }
    assert_eq!(body["unpriced_messages"], unpriced, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cost_and_usage_equal_the_sums_of_the_stored_rows() {
    let setup = Setup::start(1).await;
    // A priced model on a provider with an API key: the worker opens what the API sealed.
    let provider = setup
        .admin(
            Method::POST,
            "/providers",
            json!({"kind": "openai-compatible", "base_url": format!("{}/v1", setup.cluster.mock_url),
                   "api_key": "sk-mock-key"}),
            201,
        )
        .await;
    let provider = provider["provider"]["id"].as_str().expect("id").to_string();
    let (input_price, output_price) = (1_234_567, 7_654_321);
    let priced = setup
        .create_model(
            &provider,
            json!({"model": "priced", "input_price_micros": input_price,
                   "output_price_micros": output_price}),
        )
        .await;

    let chat = idle_chat(&setup, &priced).await;
    send(&setup, &chat, "first question").await;
    settled(&setup, &chat, 1).await;
    send(
        &setup,
        &chat,
        "second question\n@mock {\"tokens\": 31, \"reasoning_tokens\": 5}",
    )
    .await;
    let (_, _, replies) = settled(&setup, &chat, 2).await;
    assert!(replies
        .iter()
        .all(|reply| reply["model_config_id"] == priced.as_str()));
    let child = setup
        .user(
            Method::POST,
            "/chats",
            json!({"message": "child", "model_config_id": priced, "parent_chat_id": chat}),
        )
        .await;
    assert_eq!(child.status, 201, "{}", child.body);
    let child = child.json()["chat"]["id"].as_str().expect("id").to_string();
    settled(&setup, &child, 1).await;
    // An unpriced chat on the seeded default.
    let (free_chat, _) = crate::common::cluster::create_chat(&setup.cluster.api(0), "free").await;
    settled(&setup, &free_chat, 1).await;
    // Spend history survives soft deletion (an edit) and compaction.
    let client = setup.cluster.sql().await;
    client
        .execute(
            "UPDATE chat_messages SET deleted = true, compressed = true WHERE id = \
             (SELECT min(id) FROM chat_messages WHERE chat_id = $1 AND role = 'assistant')",
            &[&Uuid::parse_str(&chat).unwrap()],
        )
        .await
        .unwrap();

    let prices = Some((input_price, output_price));
    let (tree_cost, tree_sums) = stored_totals(&setup, &[&chat, &child], prices).await;
    assert_eq!(tree_sums[6], 3);
    let cost = setup
        .user(Method::GET, &format!("/chats/{chat}/cost"), Value::Null)
        .await;
    assert_eq!(cost.status, 200, "{}", cost.body);
    let cost = cost.json();
    assert_eq!(cost["chat_id"], chat.as_str());
    assert_eq!(cost["chats"], 2);
    assert_totals(&cost, tree_cost, tree_sums, 0);
    assert_eq!(cost["by_model"].as_array().map(Vec::len), Some(1), "{cost}");
    assert_eq!(cost["by_model"][0]["model_config_id"], priced.as_str());
    assert_eq!(cost["by_model"][0]["model"], "priced");
    assert_totals(&cost["by_model"][0], tree_cost, tree_sums, 0);

    let (child_cost, child_sums) = stored_totals(&setup, &[&child], prices).await;
    let only_child = setup
        .user(Method::GET, &format!("/chats/{child}/cost"), Value::Null)
        .await
        .json();
    assert_eq!(only_child["chats"], 1);
    assert_totals(&only_child, child_cost, child_sums, 0);

    let (free_cost, free_sums) = stored_totals(&setup, &[&free_chat], None).await;
    let free = setup
        .user(
            Method::GET,
            &format!("/chats/{free_chat}/cost"),
            Value::Null,
        )
        .await
        .json();
    assert_totals(&free, free_cost, free_sums, free_sums[6]);
    assert_eq!(free["cost_micros"], Value::Null);

    // Usage over the current month: everything above.
    // The free chat's rows are unpriced, so the priced tree's cost is the whole cost.
    let all_cost = tree_cost;
    let mut all_sums = [0i64; 7];
    for (index, sum) in all_sums.iter_mut().enumerate() {
        *sum = tree_sums[index] + free_sums[index];
    }
    let usage = setup
        .user(Method::GET, "/users/me/usage", Value::Null)
        .await;
    assert_eq!(usage.status, 200, "{}", usage.body);
    let usage = usage.json();
    assert_totals(&usage, all_cost, all_sums, free_sums[6]);
    assert_eq!(
        usage["by_model"].as_array().map(Vec::len),
        Some(2),
        "{usage}"
    );
    let days = usage["days"].as_array().expect("days");
    assert!(!days.is_empty());
    let day_messages: i64 = days
        .iter()
        .map(|day| day["messages"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(day_messages, all_sums[6]);
    let day_cost: i64 = days
        .iter()
        .map(|day| day["cost_micros"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(Some(day_cost), all_cost);

    let future = setup
        .user(
            Method::GET,
            "/users/me/usage?from=2999-01-01T00:00:00Z&to=2999-02-01T00:00:00Z",
            Value::Null,
        )
        .await;
    assert_eq!(future.status, 200, "{}", future.body);
    assert_totals(&future.json(), None, [0; 7], 0);

    for (query, field) in [
        ("from=last-week", "from"),
        ("to=2025-02-30T00:00:00Z", "to"),
        ("from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z", "from"),
        ("window=month", "window"),
    ] {
        let response = setup
            .user(
                Method::GET,
                &format!("/users/me/usage?{query}"),
                Value::Null,
            )
            .await;
        assert_field_error(&response, field);
    }

    // Another user: the chat's cost is a 404 identical to a nonexistent chat's, and their
    // usage is empty.
    let bob = setup.cluster.create_user("bob").await;
    let foreign = setup
        .call(
            0,
            Method::GET,
            &format!("/chats/{chat}/cost"),
            Some(&bob),
            None,
        )
        .await;
    let nonexistent = setup
        .call(
            0,
            Method::GET,
            &format!("/chats/{}/cost", Uuid::new_v4()),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.body, nonexistent.body);
    let bob_usage = setup
        .call(0, Method::GET, "/users/me/usage", Some(&bob), None)
        .await;
    assert_eq!(bob_usage.status, 200, "{}", bob_usage.body);
    assert_totals(&bob_usage.json(), None, [0; 7], 0);
}
