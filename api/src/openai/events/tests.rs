use super::*;
use chatd_shared::domain::Role;
use time::OffsetDateTime;
use uuid::Uuid;

fn response() -> ResponseRow {
    ResponseRow {
        id: Uuid::nil(),
        chat_id: Uuid::nil(),
        owner_id: Uuid::nil(),
        previous_response_id: None,
        input_first_id: 1,
        input_last_id: 1,
        start_attempt: 0,
        model: "m".into(),
        instructions: None,
        metadata: json!({}),
        tools: json!([]),
        store: true,
        background: false,
        cancelled: false,
        created_at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn text_frame(text: &str) -> Value {
    json!({"part": {"type": "text", "text": text}})
}

fn row(id: i64, attempt: i32, seq: i64, text: &str) -> MessageRow {
    MessageRow {
        id,
        chat_id: Uuid::nil(),
        role: Role::Assistant,
        content: json!([{"type": "text", "text": text}]),
        created_at: OffsetDateTime::UNIX_EPOCH,
        model_config_id: None,
        input_tokens: None,
        output_tokens: None,
        reasoning_tokens: None,
        cache_read_tokens: None,
        cache_write_tokens: None,
        cost_micros: None,
        runtime_ms: None,
        attempt: Some(attempt),
        stream_seq: Some(seq),
    }
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|event| !is_marker(event))
        .map(|event| event["type"].as_str().unwrap())
        .collect()
}

fn numbers(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|event| event["sequence_number"].as_i64().unwrap())
        .collect()
}

/// A live stream: frames, then the row; what a resume from any event of it sees.
fn live(after: i64) -> Vec<Value> {
    let mut renderer = EventRenderer::new(response(), vec![], after);
    renderer.start(json!({"status": "queued"}));
    renderer.frame(1, 1, "message_part", &text_frame("Hel"));
    renderer.frame(1, 2, "message_part", &text_frame("lo"));
    renderer.message(&row(2, 1, 2, "Hello"));
    renderer.finish(json!({"status": "completed"}));
    renderer.take()
}

#[test]
fn the_grammar_of_a_streamed_answer() {
    let events = live(-1);
    assert_eq!(
        kinds(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let numbers = numbers(&events);
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "{numbers:?}"
    );
    assert_eq!(events[8]["item"]["content"][0]["text"], "Hello");
    assert_eq!(events[2]["item"]["id"], events[8]["item"]["id"]);
}

#[test]
fn a_resume_from_any_event_continues_with_the_same_numbers() {
    let all = live(-1);
    for (index, event) in all.iter().enumerate() {
        let after = event["sequence_number"].as_i64().unwrap();
        assert_eq!(
            live(after),
            all[index + 1..].to_vec(),
            "after event {index}"
        );
    }
}

#[test]
fn a_row_without_previews_is_rendered_whole() {
    let mut renderer = EventRenderer::new(response(), vec![], -1);
    renderer.start(json!({}));
    renderer.message(&row(2, 1, 0, "Hi"));
    let events = renderer.take();
    assert_eq!(
        kinds(&events)[2..],
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done"
        ]
    );
    assert_eq!(events[4]["delta"], "Hi");
}

#[test]
fn a_superseded_attempt_closes_its_items_incomplete_and_numbers_keep_growing() {
    let mut renderer = EventRenderer::new(response(), vec![], -1);
    renderer.start(json!({}));
    renderer.frame(1, 1, "message_part", &text_frame("Hel"));
    renderer.frame(2, 1, "message_part", &text_frame("Bye"));
    renderer.message(&row(2, 2, 1, "Bye"));
    let events = renderer.take();
    let numbers = numbers(&events);
    assert!(
        numbers.windows(2).all(|pair| pair[0] < pair[1]),
        "{numbers:?}"
    );
    let done: Vec<&Value> = events
        .iter()
        .filter(|event| event["type"] == "response.output_item.done")
        .collect();
    assert_eq!(done[0]["item"]["status"], "incomplete");
    assert_eq!(done[0]["output_index"], 0);
    assert_eq!(done[1]["item"]["status"], "completed");
    assert_eq!(done[1]["output_index"], 1);
    assert_eq!(done[1]["item"]["content"][0]["text"], "Bye");
}

#[test]
fn missing_previews_are_made_up_by_one_delta() {
    let mut renderer = EventRenderer::new(response(), vec![], -1);
    renderer.start(json!({}));
    renderer.frame(1, 1, "message_part", &text_frame("Hel"));
    renderer.message(&row(2, 1, 3, "Hello"));
    let events = renderer.take();
    let deltas: String = events
        .iter()
        .filter(|event| event["type"] == "response.output_text.delta")
        .map(|event| event["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Hello");
}

#[test]
fn client_tool_calls_stream_as_function_calls() {
    let mut renderer = EventRenderer::new(response(), vec!["lookup".into()], -1);
    renderer.start(json!({}));
    let call = |delta: &str| {
        json!({"part": {"type": "tool-call", "tool_call_id": "c1",
        "tool_name": "lookup", "args_delta": delta}})
    };
    renderer.frame(1, 1, "message_part", &call(""));
    renderer.frame(1, 2, "message_part", &call("{\"q\":"));
    renderer.frame(1, 3, "message_part", &call("1}"));
    let mut committed = row(2, 1, 3, "");
    committed.content = json!([{"type": "tool-call", "tool_call_id": "c1", "tool_name": "lookup", "args": {"q": 1}}]);
    renderer.message(&committed);
    let events = renderer.take();
    assert_eq!(
        kinds(&events)[2..],
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done"
        ]
    );
    assert_eq!(events[6]["item"]["call_id"], "c1");
    assert_eq!(events[6]["item"]["arguments"], "{\"q\":1}");
}
