//! Parser tests on small hand-written streams: tool-call corner cases, servers that leave
//! fields out, malformed events. Parsed whole, byte by byte and with every line ending, like
//! the recorded fixtures.

use serde_json::json;

use super::tests::{args, completed, end, event, finish, parse, start, text, TEXT};
use crate::provider::{ErrorKind, FinishReason};

#[test]
fn older_llama_cpp_calls_without_item_ids_match_by_call_id() {
    let fixture = [
        event(json!({"type": "response.output_item.added", "item": {"arguments": "",
            "call_id": "fc_abc", "name": "add", "type": "function_call", "status": "in_progress"}})),
        event(json!({"type": "response.function_call_arguments.delta", "delta": "{\"n\":", "item_id": "fc_abc"})),
        event(json!({"type": "response.function_call_arguments.delta", "delta": "1}", "item_id": "fc_abc"})),
        event(json!({"type": "response.output_item.done", "item": {"type": "function_call",
            "status": "completed", "arguments": "{\"n\":1}", "call_id": "fc_abc", "name": "add"}})),
        completed("resp_old"),
    ]
    .concat();
    assert_eq!(
        parse(&fixture),
        vec![
            start(0, "fc_abc", "add"),
            args(0, "{\"n\":"),
            args(0, "1}"),
            end(0, json!({"n": 1})),
            finish(FinishReason::ToolCalls, "resp_old"),
        ]
    );
}

#[test]
fn tool_call_edge_cases() {
    let added = |id: &str, call_id: &str, name: &str| {
        event(
            json!({"type": "response.output_item.added", "item": {"id": id,
            "type": "function_call", "call_id": call_id, "name": name, "arguments": ""}}),
        )
    };
    let delta = |item_id: &str, delta: &str| {
        event(
            json!({"type": "response.function_call_arguments.delta", "item_id": item_id, "delta": delta}),
        )
    };
    let done = |item_id: &str, arguments: &str| {
        event(
            json!({"type": "response.function_call_arguments.done", "item_id": item_id, "arguments": arguments}),
        )
    };
    let fixture = [
        // Deltas before the call was announced are held until its name is known.
        delta("fc_early", "{\"q\":"),
        event(
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_early",
            "name": "search", "arguments": "{\"q\":\"x\"}"}),
        ),
        // The done arguments extend what was streamed: the rest arrives as a delta.
        added("fc_b", "call_b", "extend"),
        delta("fc_b", "{\"a\":"),
        done("fc_b", "{\"a\":1}"),
        // The done arguments replace what was streamed.
        added("fc_c", "call_c", "replace"),
        delta("fc_c", "garbage"),
        done("fc_c", "{\"b\":2}"),
        // Not JSON, kept verbatim; a done event without arguments keeps the deltas.
        added("fc_d", "call_d", "broken"),
        delta("fc_d", "not json"),
        event(json!({"type": "response.function_call_arguments.done", "item_id": "fc_d"})),
        // No arguments at all, and never closed before the terminal event.
        added("fc_e", "call_e", "noop"),
        // Events about a closed call are ignored.
        delta("fc_b", "ignored"),
        completed("resp_edges"),
    ]
    .concat();
    assert_eq!(
        parse(&fixture),
        vec![
            start(0, "fc_early", "search"),
            args(0, "{\"q\":"),
            args(0, "\"x\"}"),
            end(0, json!({"q": "x"})),
            start(1, "call_b", "extend"),
            args(1, "{\"a\":"),
            args(1, "1}"),
            end(1, json!({"a": 1})),
            start(2, "call_c", "replace"),
            args(2, "garbage"),
            end(2, json!({"b": 2})),
            start(3, "call_d", "broken"),
            args(3, "not json"),
            end(3, json!("not json")),
            start(4, "call_e", "noop"),
            end(4, json!({})),
            finish(FinishReason::ToolCalls, "resp_edges"),
        ]
    );
}

#[test]
fn event_type_from_the_sse_name_and_id_from_created() {
    let fixture = concat!(
        "event: response.created\ndata: {\"response\":{\"id\":\"resp_named\"}}\n\n",
        "event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\n",
        "event: response.completed\ndata: {\"response\":{\"status\":\"completed\"}}",
    );
    assert_eq!(
        parse(fixture),
        vec![text("hi"), finish(FinishReason::Stop, "resp_named")]
    );
}

#[test]
fn malformed_handled_event_is_a_retryable_error_and_nothing_follows_the_end() {
    let malformed = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":7}\n\n";
    assert!(matches!(
        &parse(malformed)[..],
        [Err((ErrorKind::Generic, true, message))] if message.contains("malformed")
    ));
    let after_end = [completed("resp_end"), TEXT.to_owned()].concat();
    assert_eq!(
        parse(&after_end),
        vec![finish(FinishReason::Stop, "resp_end")]
    );
}
