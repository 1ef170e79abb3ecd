use serde_json::Value;

use super::*;

fn doc() -> Value {
    serde_json::from_str(&document(&ApiConfig::new(String::new()))).expect("valid JSON")
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), operation));
        }
    }
    out
}

#[test]
fn every_operation_has_an_error_table_entry_and_the_table_no_stale_one() {
    let doc = doc();
    let ids: Vec<String> = operations(&doc)
        .iter()
        .map(|(_, _, operation)| operation["operationId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 67, "{ids:?}");
    for (id, _) in ERRORS {
        assert!(
            ids.iter().any(|known| known == id),
            "{id} is not an operation"
        );
    }
}

#[test]
fn every_reference_resolves() {
    let doc = doc();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 50);
    for reference in refs {
        let pointer = reference.trim_start_matches('#');
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                out.push(reference.clone());
            }
            map.values().for_each(|value| collect_refs(value, out));
        }
        Value::Array(items) => items.iter().for_each(|value| collect_refs(value, out)),
        _ => {}
    }
}

/// A schema that admits any JSON, or any object.
fn free_form(schema: &Value) -> bool {
    match schema {
        Value::Bool(true) => true,
        Value::Object(map) => {
            let constrained = [
                "$ref",
                "properties",
                "additionalProperties",
                "propertyNames",
                "items",
                "oneOf",
                "anyOf",
                "allOf",
                "enum",
                "const",
                "pattern",
                "format",
                "maxLength",
                "minimum",
                "maximum",
            ];
            let typed = map.get("type");
            let any_type = typed.is_none()
                || typed == Some(&Value::String("object".into()))
                || matches!(typed, Some(Value::Array(types))
                    if types.contains(&Value::String("object".into())));
            any_type
                && !constrained.iter().any(|key| map.contains_key(*key))
                && !matches!(typed, Some(Value::String(kind)) if kind != "object")
        }
        _ => false,
    }
}

/// Paths (in the document) of every free-form schema.
fn free_form_places(value: &Value, path: &str, out: &mut Vec<String>) {
    let Value::Object(map) = value else {
        if let Value::Array(items) = value {
            for (index, item) in items.iter().enumerate() {
                free_form_places(item, &format!("{path}/{index}"), out);
            }
        }
        return;
    };
    for (key, child) in map {
        let child_path = format!("{path}/{key}");
        let is_schema_slot = matches!(key.as_str(), "schema" | "additionalProperties" | "items")
            || path.ends_with("/properties");
        if is_schema_slot && free_form(child) {
            out.push(child_path.clone());
        }
        free_form_places(child, &child_path, out);
    }
}

#[test]
fn free_form_json_appears_only_where_the_data_is_free_form() {
    let doc = doc();
    let mut places = Vec::new();
    free_form_places(&doc, "", &mut places);
    let allowed = [
        "/components/schemas/ContentPart/oneOf/2/properties/args",
        "/components/schemas/ContentPart/oneOf/3/properties/result",
        "/components/schemas/ContentPart/oneOf/5/properties/args",
        "/components/schemas/ContentPart/oneOf/6/properties/content",
        "/components/schemas/PendingToolCall/properties/args",
        "/components/schemas/DynamicTool/anyOf/0/properties/schema",
        "/components/schemas/DynamicTool/anyOf/1/properties/function/properties/parameters",
        "/components/schemas/DynamicTool/anyOf/2/properties/parameters",
        "/components/schemas/DynamicTool/anyOf/3/properties/input_schema",
        "/components/schemas/DynamicTool/anyOf/3/properties/cache_control",
        "/components/schemas/ToolResultInput/properties/output",
        "/components/schemas/UiMessage/properties/parts/items",
        "/paths//openapi.json/get/responses/200/content/application/json/schema",
    ];
    for place in &places {
        assert!(
            allowed.contains(&place.as_str()),
            "free-form schema at {place}"
        );
    }
    assert_eq!(places.len(), allowed.len(), "{places:#?}");
    assert_eq!(
        FREE_FORM.len(),
        8,
        "the description lists each kind of place"
    );
}

#[test]
fn the_stream_routes_describe_their_events() {
    let doc = doc();
    let stream = &doc["paths"]["/chats/{chat_id}/stream"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"]["oneOf"];
    let names: Vec<&str> = stream
        .as_array()
        .unwrap()
        .iter()
        .map(|variant| variant["properties"]["event"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "status",
            "message",
            "message_part",
            "queue",
            "retry",
            "error",
            "attempt_reset",
            "history_truncated",
            "history_reset",
            "action_required",
            "title"
        ]
    );
    let watch = &doc["paths"]["/chats/watch"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"]["oneOf"];
    assert_eq!(watch.as_array().unwrap().len(), 2);
}

#[test]
fn the_limits_of_the_replica_are_stated() {
    let mut config = ApiConfig::new(String::new());
    config.max_body_bytes = 12_345;
    config.max_queue_len = 7;
    let doc: Value = serde_json::from_str(&document(&config)).unwrap();
    let description = doc["info"]["description"].as_str().unwrap();
    assert!(description.contains("at most 12345 bytes"), "{description}");
    assert!(description.contains("at most 7 messages"), "{description}");
    let too_large = doc["components"]["responses"]["PayloadTooLarge"]["description"]
        .as_str()
        .unwrap();
    assert!(too_large.contains("12345"));
    let title = &doc["components"]["schemas"]["PatchChatRequest"]["properties"]["title"];
    assert_eq!(title["maxLength"], 200);
}
