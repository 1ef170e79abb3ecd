//! Tool declarations in the shapes people paste from the vendors' documentation, read into
//! the one canonical [`DynamicTool`] chatd stores:
//!
//! - chatd's own: `{name, description, schema, exclusive}`;
//! - OpenAI Chat Completions: `{"type": "function", "function": {name, description, parameters, strict}}`;
//! - OpenAI Responses, and flat: `{type?: "function", name, description, parameters, strict?}`;
//! - Anthropic: `{name, description, input_schema, cache_control?}`.
//!
//! Unknown keys are refused, naming the key and the shapes, so a typo never silently drops a
//! tool's schema. `strict` and `cache_control` are accepted and not kept (chatd does not
//! forward them).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::domain::{object_schema, DynamicTool};

const SHAPES: &str = "a tool is {name, description, schema, exclusive} (chatd), \
    {type: \"function\", function: {name, description, parameters}} (OpenAI), \
    {name, description, parameters} (flat, OpenAI Responses) or \
    {name, description, input_schema} (Anthropic)";

impl<'de> Deserialize<'de> for DynamicTool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DynamicTool, D::Error> {
        let map = Map::<String, Value>::deserialize(deserializer)?;
        parse(map).map_err(D::Error::custom)
    }
}

/// Reads one declaration (see the module documentation for the shapes).
pub fn parse(mut map: Map<String, Value>) -> Result<DynamicTool, String> {
    match map.remove("type") {
        None => {}
        Some(Value::String(kind)) if kind == "function" => {}
        Some(other) => {
            return Err(format!(
                "tool `type` must be \"function\" (got {other}); {SHAPES}"
            ))
        }
    }
    if let Some(function) = map.remove("function") {
        // The Chat Completions shape: everything is inside `function`.
        if let Some(key) = map.keys().next() {
            return Err(format!(
                "unknown field `{key}` next to `function`; {SHAPES}"
            ));
        }
        let Value::Object(inner) = function else {
            return Err(format!("`function` must be an object; {SHAPES}"));
        };
        return flat(inner, &["parameters", "strict"]);
    }
    flat(
        map,
        &[
            "schema",
            "exclusive",
            "parameters",
            "strict",
            "input_schema",
            "cache_control",
        ],
    )
}

/// `{name, description, <schema key>…}` with only `allowed` keys besides name and description.
fn flat(mut map: Map<String, Value>, allowed: &[&str]) -> Result<DynamicTool, String> {
    for key in map.keys() {
        if key != "name" && key != "description" && !allowed.contains(&key.as_str()) {
            return Err(format!("unknown field `{key}`; {SHAPES}"));
        }
    }
    let name = match map.remove("name") {
        Some(Value::String(name)) => name,
        Some(_) => return Err("tool `name` must be a string".into()),
        None => return Err(format!("missing field `name`; {SHAPES}")),
    };
    let description = match map.remove("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(description)) => description,
        Some(_) => return Err("tool `description` must be a string".into()),
    };
    let mut schema = None;
    for key in ["schema", "parameters", "input_schema"] {
        match map.remove(key) {
            None | Some(Value::Null) => {}
            Some(value) if schema.is_none() => schema = Some(value),
            Some(_) => {
                return Err(format!(
                    "a tool has one argument schema: `schema`, `parameters` or `input_schema`, not several; {SHAPES}"
                ))
            }
        }
    }
    let exclusive = match map.remove("exclusive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(exclusive)) => exclusive,
        Some(_) => return Err("tool `exclusive` must be a boolean".into()),
    };
    if let Some(strict) = map.remove("strict") {
        if !strict.is_boolean() && !strict.is_null() {
            return Err("tool `strict` must be a boolean".into());
        }
    }
    Ok(DynamicTool {
        name,
        description,
        schema: schema.unwrap_or_else(object_schema),
        exclusive,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(value: Value) -> Result<DynamicTool, String> {
        serde_json::from_value::<DynamicTool>(value).map_err(|error| error.to_string())
    }

    fn weather() -> DynamicTool {
        DynamicTool {
            name: "get_weather".into(),
            description: "Weather in a city".into(),
            schema: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            exclusive: false,
        }
    }

    #[test]
    fn every_vendor_shape_reads_into_the_canonical_one() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let shapes = [
            json!({"name": "get_weather", "description": "Weather in a city", "schema": schema}),
            json!({"type": "function", "function": {"name": "get_weather",
                "description": "Weather in a city", "parameters": schema, "strict": true}}),
            json!({"type": "function", "name": "get_weather", "description": "Weather in a city",
                "parameters": schema, "strict": false}),
            json!({"name": "get_weather", "description": "Weather in a city", "parameters": schema}),
            json!({"name": "get_weather", "description": "Weather in a city",
                "input_schema": schema, "cache_control": {"type": "ephemeral"}}),
        ];
        for shape in shapes {
            assert_eq!(read(shape.clone()).unwrap(), weather(), "{shape}");
        }
        // Stored form round-trips.
        let stored = serde_json::to_value(weather()).unwrap();
        assert_eq!(read(stored).unwrap(), weather());
    }

    #[test]
    fn defaults_and_exclusive() {
        let tool = read(json!({"name": "stop", "exclusive": true})).unwrap();
        assert_eq!(tool.schema, json!({"type": "object"}));
        assert_eq!(tool.description, "");
        assert!(tool.exclusive);
    }

    #[test]
    fn mistakes_are_named() {
        let typo = read(json!({"name": "a", "paramaters": {}})).unwrap_err();
        assert!(typo.contains("unknown field `paramaters`"), "{typo}");
        let two = read(json!({"name": "a", "parameters": {}, "input_schema": {}})).unwrap_err();
        assert!(two.contains("one argument schema"), "{two}");
        let kind = read(json!({"type": "web_search", "name": "a"})).unwrap_err();
        assert!(kind.contains("must be \"function\""), "{kind}");
        let beside = read(json!({"function": {"name": "a"}, "name": "b"})).unwrap_err();
        assert!(beside.contains("next to `function`"), "{beside}");
        let missing = read(json!({"description": "x"})).unwrap_err();
        assert!(missing.contains("missing field `name`"), "{missing}");
        let nested_bad =
            read(json!({"type": "function", "function": {"name": "a", "input_schema": {}}}))
                .unwrap_err();
        assert!(
            nested_bad.contains("unknown field `input_schema`"),
            "{nested_bad}"
        );
    }
}
