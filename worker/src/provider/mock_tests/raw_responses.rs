//! The Responses route with raw HTTP: event order, sequence numbers, items, usage, chaining.

use serde_json::{json, Value};

use super::{event_names, events_named, MockServer, SseEvent, TWO_CALLS};
use chatd_mock_llm::reply::{count_words, reasoning_text};
use chatd_mock_llm::reply_text;

fn tools() -> Value {
    json!([
        {"type": "function", "name": "read_file", "parameters": {"type": "object"}},
        {"type": "function", "name": "sum", "parameters": {"type": "object"}}
    ])
}

/// Every event's `type` is its `event:` name and `sequence_number` counts from 0.
fn assert_well_formed(events: &[SseEvent]) {
    for (number, event) in events.iter().enumerate() {
        let data = event.json();
        assert_eq!(data["type"].as_str(), event.event.as_deref(), "{data}");
        assert_eq!(data["sequence_number"], number, "{data}");
    }
}

fn joined(events: &[SseEvent], name: &str) -> String {
    events_named(events, name)
        .iter()
        .filter_map(|data| data["delta"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn responses_stream_text_with_reasoning_and_cached_usage() {
    let server = MockServer::start().await;
    let text = "Think first\n@mock {\"tokens\": 3, \"reasoning_tokens\": 2, \"cached_tokens\": 4}";
    let body = json!({
        "model": "m", "stream": true, "instructions": "Be brief.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]
    });
    let events = server.sse("responses", &body).await;
    assert_well_formed(&events);
    assert_eq!(
        event_names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(
        joined(&events, "response.reasoning_summary_text.delta"),
        reasoning_text(text, 2)
    );
    assert_eq!(
        joined(&events, "response.output_text.delta"),
        reply_text(text, 3)
    );
    let created = &events_named(&events, "response.created")[0]["response"];
    assert_eq!(created["status"], "in_progress");
    let completed = &events_named(&events, "response.completed")[0]["response"];
    assert_eq!(completed["id"], created["id"]);
    assert_eq!(completed["status"], "completed");
    assert_eq!(
        completed["usage"],
        json!({
            "input_tokens": 2 + count_words(text),
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 2},
            "total_tokens": 2 + count_words(text) + 5,
        })
    );
    let output = &completed["output"];
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[1]["type"], "message");
    assert_eq!(output[1]["content"][0]["text"], reply_text(text, 3));
    let text_delta = &events_named(&events, "response.output_text.delta")[0];
    assert_eq!(text_delta["output_index"], 1);
    assert_eq!(text_delta["item_id"], output[1]["id"]);
    server.stop().await;
}

#[tokio::test]
async fn responses_parallel_function_calls_stream_argument_fragments() {
    let server = MockServer::start().await;
    let body = json!({"model": "m", "stream": true, "tools": tools(), "input": TWO_CALLS});
    let events = server.sse("responses", &body).await;
    assert_well_formed(&events);
    let added = events_named(&events, "response.output_item.added");
    assert_eq!(added.len(), 2);
    let expected = [json!({"path": "/tmp/a.txt"}), json!({"a": 1, "b": 2})];
    let mut output_tokens = 0;
    for (index, item) in added.iter().enumerate() {
        assert_eq!(item["output_index"], index);
        assert_eq!(item["item"]["type"], "function_call");
        assert_eq!(item["item"]["call_id"], format!("call_{index}"));
        assert_eq!(item["item"]["arguments"], "");
        let item_id = &item["item"]["id"];
        let fragments: Vec<String> =
            events_named(&events, "response.function_call_arguments.delta")
                .iter()
                .filter(|delta| &delta["item_id"] == item_id)
                .filter_map(|delta| delta["delta"].as_str().map(str::to_owned))
                .collect();
        assert!((2..=3).contains(&fragments.len()), "{fragments:?}");
        output_tokens += 1 + fragments.len();
        let arguments: Value = serde_json::from_str(&fragments.concat()).expect("arguments JSON");
        assert_eq!(arguments, expected[index]);
        let done = &events_named(&events, "response.function_call_arguments.done")[index];
        assert_eq!(done["item_id"], *item_id);
        assert_eq!(done["arguments"], fragments.concat());
    }
    assert_ne!(added[0]["item"]["id"], added[1]["item"]["id"]);
    let names = event_names(&events);
    let first_done = names
        .iter()
        .position(|name| *name == "response.output_item.done");
    let second_added = names
        .iter()
        .rposition(|name| *name == "response.output_item.added");
    assert!(first_done < second_added, "one item at a time: {names:?}");
    let completed = &events_named(&events, "response.completed")[0]["response"];
    assert_eq!(completed["output"][1]["name"], "sum");
    assert_eq!(completed["output"][1]["status"], "completed");
    assert_eq!(completed["usage"]["output_tokens"], output_tokens);
    server.stop().await;
}

#[tokio::test]
async fn responses_chain_continues_stored_conversations_and_unknown_ids_fail() {
    let server = MockServer::start().await;
    let (status, first) = server
        .post_json(
            "responses",
            &json!({"model": "m", "tools": tools(), "input": TWO_CALLS}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(first["object"], "response");
    assert_eq!(first["output"][0]["type"], "function_call");
    let first_id = first["id"].as_str().expect("response id").to_owned();

    let results = json!([
        {"type": "function_call_output", "call_id": "call_0", "output": "hello  world"},
        {"type": "function_call_output", "call_id": "call_1", "output": "{\"total\":3}"}
    ]);
    let chained = json!({"model": "m", "stream": true, "tools": tools(),
                         "previous_response_id": first_id, "input": results});
    let events = server.sse("responses", &chained).await;
    assert_eq!(
        joined(&events, "response.output_text.delta"),
        super::two_calls_quoted()
    );
    let completed = &events_named(&events, "response.completed")[0]["response"];
    assert_eq!(
        completed["usage"]["input_tokens"],
        count_words(TWO_CALLS) + 2 + 1,
        "the stored history counts as input"
    );
    let stats = server.stats().await;
    assert_eq!(stats["requests"]["responses"], 2);
    assert_eq!(stats["requests"]["responses_chained"], 1);
    assert_eq!(stats["stored_responses"], 2);

    let not_found = |id: &str| {
        json!({"error": {
            "message": format!("Previous response with id '{id}' not found."),
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found"
        }})
    };
    let chain_onto = |id: &str| json!({"model": "m", "previous_response_id": id, "input": "next"});
    let (status, body) = server
        .post_json("responses", &chain_onto("resp_unknown"))
        .await;
    assert_eq!((status, body), (400, not_found("resp_unknown")));

    // `forget_responses` clears the store and does not store its own answer.
    let (_, forgetful) = server
        .post_json(
            "responses",
            &json!({"input": "@mock {\"forget_responses\": true}"}),
        )
        .await;
    let forgetful_id = forgetful["id"].as_str().expect("response id").to_owned();
    for id in [forgetful_id.as_str(), first_id.as_str()] {
        let (status, body) = server.post_json("responses", &chain_onto(id)).await;
        assert_eq!((status, body), (400, not_found(id)));
    }

    // `store: false` is not remembered; `POST /mock/forget` forgets the rest.
    let (_, unstored) = server
        .post_json("responses", &json!({"input": "hi", "store": false}))
        .await;
    let unstored_id = unstored["id"].as_str().expect("response id").to_owned();
    let (status, _) = server
        .post_json("responses", &chain_onto(&unstored_id))
        .await;
    assert_eq!(status, 400);
    let (_, stored) = server.post_json("responses", &json!({"input": "hi"})).await;
    let forgotten: Value = server
        .http
        .post(format!("{}/mock/forget", server.root))
        .send()
        .await
        .expect("forget answers")
        .json()
        .await
        .expect("forget JSON");
    assert_eq!(forgotten, json!({"forgotten": 1}));
    let stored_id = stored["id"].as_str().expect("response id");
    let (status, _) = server.post_json("responses", &chain_onto(stored_id)).await;
    assert_eq!(status, 400);
    assert_eq!(server.stats().await["requests"]["responses_chained"], 1);
    server.stop().await;
}

#[tokio::test]
async fn responses_stream_error_cut_limit_and_error_statuses() {
    let server = MockServer::start().await;
    let failing = json!({"stream": true, "input": "@mock {\"stream_error_after\": 1}"});
    let events = server.sse("responses", &failing).await;
    assert_well_formed(&events);
    let names = event_names(&events);
    assert_eq!(
        names[names.len() - 3..],
        ["response.output_text.delta", "error", "response.failed"]
    );
    let error = &events_named(&events, "error")[0];
    assert_eq!(error["code"], "server_overloaded");
    assert_eq!(error["message"], "mock stream error: overloaded");
    let failed = &events_named(&events, "response.failed")[0]["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["code"], "server_overloaded");
    // A failed response is not stored.
    let failed_id = failed["id"].as_str().expect("response id");
    let (status, _) = server
        .post_json(
            "responses",
            &json!({"previous_response_id": failed_id, "input": "again"}),
        )
        .await;
    assert_eq!(status, 400);

    let cut = json!({"stream": true, "input": "@mock {\"cut_after\": 2}"});
    let events = server.sse("responses", &cut).await;
    assert_eq!(
        event_names(&events).last(),
        Some(&"response.output_text.delta")
    );
    assert_eq!(events_named(&events, "response.output_text.delta").len(), 2);

    let limited = json!({"stream": true, "max_output_tokens": 2, "input": "@mock {\"tokens\": 5}"});
    let events = server.sse("responses", &limited).await;
    let incomplete = &events_named(&events, "response.incomplete")[0]["response"];
    assert_eq!(incomplete["status"], "incomplete");
    assert_eq!(
        incomplete["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(incomplete["usage"]["output_tokens"], 2);

    let rate_limited = server
        .post(
            "responses",
            &json!({"stream": true, "input": "@mock {\"error_status\": 429, \"retry_after_s\": 3}"}),
        )
        .await;
    assert_eq!(rate_limited.status().as_u16(), 429);
    assert_eq!(
        rate_limited
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()),
        Some("3")
    );
    let body: Value = rate_limited.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let (status, body) = server
        .post_json("responses", &json!({"input": "@mock {\"tokenz\": 1}"}))
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|message| message.contains("unknown field `tokenz`")));
    server.stop().await;
}
