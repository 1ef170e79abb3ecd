//! The OpenAPI document, generated from the code: the wire types derive their schemas
//! (`utoipa::ToSchema`), each handler declares its route, parameters and success responses
//! (`#[utoipa::path]`), and the router is built from the same declarations
//! (`utoipa_axum::routes!`), so a route cannot exist undocumented. [`finish`] adds what is the
//! same for many operations: error responses (the [`ERRORS`] table), links between
//! operations, the event schemas of the two SSE routes, and the replica's limits.
//!
//! Every rule the server enforces on input is stated as a schema (lengths count characters,
//! as JSON Schema does; patterns say "no NUL", "not blank", "no control characters"), except
//! the few no schema can state, which the descriptions name: names unique within one
//! request, `from` not after `to`, NUL inside free-form JSON, the body size limit.

pub mod events;
pub mod schemas;

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::config::ApiConfig;

#[derive(OpenApi)]
#[openapi(
    info(title = "chatd", version = env!("CARGO_PKG_VERSION")),
    components(schemas(
        crate::error::ErrorBody,
        events::StatusEvent,
        events::MessagePartEvent,
        events::RetryEvent,
        events::ErrorEvent,
        events::QueueEvent,
        events::AttemptResetEvent,
        events::HistoryTruncatedEvent,
        events::HistoryResetEvent,
        events::ActionRequiredEvent,
        events::TitleEvent,
        events::ChatListEvent,
        events::ResyncEvent,
        crate::dto::Message,
    )),
    tags(
        (name = "chats", description = "Chats, messages, the queue and interrupts"),
        (name = "streams", description = "Server-sent events: one chat, or the chat list"),
        (name = "spend", description = "What the caller's chats cost"),
        (name = "users", description = "The caller's own settings"),
        (name = "admin", description = "Providers, model configs and the deployment's system prompt (writes — and the system prompt — need an admin token)"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The error statuses each operation can answer, besides 401 (every operation but
/// `getOpenApi`) and 503 (every operation: the database is out of reach; `Retry-After`).
pub const ERRORS: &[(&str, &[u16])] = &[
    ("createChat", &[400, 409, 413, 415, 422, 429]),
    ("listChats", &[400]),
    ("watchChats", &[429]),
    ("getChat", &[400, 404]),
    ("patchChat", &[400, 404, 409, 413]),
    ("deleteChat", &[400, 404, 409]),
    ("markChatRead", &[400, 404, 413, 422]),
    ("listMessages", &[400, 404]),
    ("sendMessage", &[400, 404, 409, 413, 415, 422, 429]),
    ("editMessage", &[400, 404, 409, 413, 415, 422, 429]),
    ("interruptChat", &[400, 404, 409]),
    ("deleteQueuedMessage", &[400, 404, 409]),
    ("promoteQueuedMessage", &[400, 404, 409, 429]),
    ("streamChat", &[400, 404, 429]),
    ("uiStreamChat", &[400, 404, 409, 413, 415, 422, 429]),
    ("resumeUiStream", &[400, 404, 429]),
    ("uiStreamNewChat", &[400, 409, 413, 415, 422, 429]),
    ("submitToolResults", &[400, 404, 409, 413, 429]),
    ("getChatCost", &[400, 404]),
    ("getUsage", &[400]),
    ("getInstructions", &[]),
    ("putInstructions", &[400, 413]),
    ("getSystemPrompt", &[403]),
    ("putSystemPrompt", &[400, 403, 413]),
    ("listProviders", &[403]),
    ("createProvider", &[400, 403, 409, 413]),
    ("getProvider", &[400, 403, 404]),
    ("patchProvider", &[400, 403, 404, 409, 413]),
    ("deleteProvider", &[400, 403, 404, 409]),
    ("getAdvisor", &[403]),
    ("putAdvisor", &[400, 403, 413, 422]),
    ("listMcpServers", &[403]),
    ("createMcpServer", &[400, 403, 409, 413]),
    ("getMcpServer", &[400, 403, 404]),
    ("patchMcpServer", &[400, 403, 404, 409, 413]),
    ("deleteMcpServer", &[400, 403, 404]),
    ("listModelConfigs", &[400, 403]),
    ("createModelConfig", &[400, 403, 409, 413, 422]),
    ("getModelConfig", &[400, 404]),
    ("patchModelConfig", &[400, 403, 404, 409, 413, 422]),
    ("deleteModelConfig", &[400, 403, 404, 409]),
    ("listUsers", &[400, 403]),
    ("createUser", &[400, 403, 409, 413]),
    ("getMe", &[]),
    ("listMyTokens", &[]),
    ("createMyToken", &[400, 413]),
    ("deleteMyToken", &[400, 404]),
    ("getUser", &[400, 403, 404]),
    ("patchUser", &[400, 403, 404, 409, 413]),
    ("listUserTokens", &[400, 403, 404]),
    ("createUserToken", &[400, 403, 404, 413]),
    ("deleteUserToken", &[400, 403, 404]),
    ("getUsageLimits", &[403]),
    ("putUsageLimits", &[400, 403, 413]),
    ("putUserSpendLimit", &[400, 403, 404, 413]),
    ("listGroups", &[403]),
    ("createGroup", &[400, 403, 409, 413]),
    ("getGroup", &[400, 403, 404]),
    ("putGroup", &[400, 403, 404, 409, 413]),
    ("deleteGroup", &[400, 403, 404]),
    ("listGroupMembers", &[400, 403, 404]),
    ("addGroupMember", &[400, 403, 404, 413, 422]),
    ("removeGroupMember", &[400, 403, 404]),
    ("uploadFile", &[400, 413, 415]),
    ("downloadFile", &[400, 404]),
    ("getFileMeta", &[400, 404]),
    ("getOpenApi", &[]),
];

/// Where the document allows any JSON: data that is free-form by nature. A test checks that
/// these are the only such places.
pub const FREE_FORM: &[&str] = &[
    "ContentPart (tool-call, provider-tool-call): args — a tool's arguments",
    "ContentPart (tool-result): result — a tool's result",
    "ContentPart (provider-tool-result): content — a provider tool's result block",
    "PendingToolCall: args — a tool's arguments",
    "DynamicTool: schema, parameters, input_schema — a tool's JSON Schema (and Anthropic's cache_control)",
    "ToolResultInput: output — a client tool's result",
    "UiMessage: parts — the AI SDK's message parts (only some are read)",
    "GET /openapi.json — this document",
];

/// `<message_id>-<attempt>-<seq>`: a chat stream's cursor (SSE `id`).
pub const STREAM_CURSOR: &str = r"^[0-9]{1,18}-[0-9]{1,9}-[0-9]{1,18}$";

/// The document for a replica with `config`, as JSON.
pub fn document(config: &ApiConfig) -> String {
    let (_, api) = crate::routes::api_routes().split_for_parts();
    let value = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    finish(value, config).to_string()
}

/// `canonical` (chatd's generated schema) or a vendor's shape, each closed.
fn dynamic_tool_shapes(mut canonical: Value) -> Value {
    canonical["additionalProperties"] = json!(false);
    let name = canonical["properties"]["name"].clone();
    let description = canonical["properties"]["description"].clone();
    let schema = json!({"type": "object",
        "description": "JSON Schema of the arguments. Free-form; its strings must not contain NUL."});
    let function = json!({"type": "string", "enum": ["function"]});
    let flat = |schema_key: &str, extra: Value| {
        let mut properties = json!({"name": name, "description": description, schema_key: schema});
        for (key, value) in extra.as_object().expect("extra properties") {
            properties[key] = value.clone();
        }
        json!({"type": "object", "required": ["name"], "additionalProperties": false,
            "properties": properties})
    };
    let openai_flat = flat(
        "parameters",
        json!({"type": function, "strict": {"type": ["boolean", "null"]}}),
    );
    json!({
        "description": "A client-executed tool. Stored as chatd's shape; the vendors' shapes are \
            read into it: OpenAI Chat Completions (`{type: \"function\", function: {…}}`), \
            OpenAI Responses or flat (`parameters`), Anthropic (`input_schema`). `strict` and \
            `cache_control` are accepted and not kept.",
        "anyOf": [
            canonical,
            {"type": "object", "required": ["function"], "additionalProperties": false,
                "properties": {"type": function, "function": {
                    "type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {"name": name, "description": description,
                        "parameters": schema, "strict": {"type": ["boolean", "null"]}}}}},
            openai_flat,
            flat("input_schema", json!({"cache_control": {"type": "object"}})),
        ],
    })
}

/// Adds what many operations share to the generated document.
pub fn finish(mut doc: Value, config: &ApiConfig) -> Value {
    doc["openapi"] = json!("3.1.0");
    doc["info"]["description"] = json!(description(config));
    doc["servers"] = json!([{"url": "/api/v1"}]);
    doc["security"] = json!([{"bearer": []}]);
    let components = doc["components"].as_object_mut().expect("components");
    components.insert(
        "securitySchemes".into(),
        json!({"bearer": {"type": "http", "scheme": "bearer",
            "description": "An API token (`chatd admin create-token`)."}}),
    );
    components.insert("responses".into(), error_responses(config));
    let schemas = components
        .get_mut("schemas")
        .and_then(Value::as_object_mut)
        .expect("schemas");
    for name in ["CreateModelConfigRequest", "PatchModelConfigRequest"] {
        // The default config must be enabled (PATCH: 409 when only the stored config
        // contradicts the request).
        schemas[name]["not"] = json!({"required": ["is_default", "enabled"],
            "properties": {"is_default": {"const": true}, "enabled": {"const": false}}});
    }
    for name in ["CreateProviderRequest", "PatchProviderRequest"] {
        schemas[name]["properties"]["base_url"]["pattern"] =
            json!(chatd_shared::validate::base_url_pattern(true));
    }
    for name in ["CreateMcpServerRequest", "PatchMcpServerRequest"] {
        schemas[name]["properties"]["url"]["pattern"] =
            json!(chatd_shared::validate::base_url_pattern(true));
    }
    // `deny_unknown_fields` on tagged enums: each variant admits only its own fields.
    for name in ["UserPart", "ContentPart", "StreamPart", "McpAuthInput"] {
        if let Some(variants) = schemas[name]["oneOf"].as_array_mut() {
            for variant in variants {
                variant["additionalProperties"] = json!(false);
            }
        }
    }
    // Tool declarations: chatd's shape, or one of the vendors' (`chatd_shared::tool_decl`).
    schemas["DynamicTool"] = dynamic_tool_shapes(schemas["DynamicTool"].clone());
    // A multipart upload is one `file` field.
    schemas["FileUpload"]["additionalProperties"] = json!(false);
    // A user's file part names an uploaded file or carries base64 data: exactly one of them.
    if let Some(variants) = schemas["UserPart"]["oneOf"].as_array_mut() {
        for variant in variants {
            if variant["properties"]["type"]["enum"] == json!(["file"]) {
                variant["oneOf"] = json!([
                    {"required": ["file_id"], "properties": {
                        "file_id": {"type": "string"}, "data": {"type": "null"}}},
                    {"required": ["data"], "properties": {
                        "data": {"type": "string"}, "file_id": {"type": "null"}}},
                ]);
                variant["properties"]["data"]["pattern"] =
                    json!("^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$");
                variant["properties"]["data"]["minLength"] = json!(4);
                variant["properties"]["data"]["maxLength"] = json!(699_052);
            }
        }
    }
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (_, item) in paths.iter_mut() {
        for (_, operation) in item.as_object_mut().expect("path item").iter_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            decorate(operation);
        }
    }
    doc
}

fn decorate(operation: &mut Map<String, Value>) {
    // Query parameters and headers are absent or a string: never `null`.
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters {
            if let Some(types) = parameter["schema"]["type"].as_array() {
                let kept: Vec<Value> = types
                    .iter()
                    .filter(|kind| kind.as_str() != Some("null"))
                    .cloned()
                    .collect();
                parameter["schema"]["type"] = match kept.as_slice() {
                    [single] => single.clone(),
                    _ => Value::Array(kept),
                };
            }
        }
    }
    let id = operation["operationId"]
        .as_str()
        .expect("every operation has an operationId")
        .to_string();
    let statuses = ERRORS
        .iter()
        .find(|(op, _)| *op == id)
        .map(|(_, statuses)| *statuses)
        .unwrap_or_else(|| panic!("operation {id} is missing from openapi::ERRORS"));
    let responses = operation["responses"].as_object_mut().expect("responses");
    let mut all: Vec<u16> = statuses.to_vec();
    if id != "getOpenApi" {
        // Every authenticated request: a bad token, and the per-token rate limit.
        all.push(401);
        all.push(429);
    }
    all.push(503);
    all.sort_unstable();
    all.dedup();
    for status in all {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{}", response_name(status))}),
        );
    }
    match id.as_str() {
        "streamChat" => set_events(responses, events::CHAT_STREAM_EVENTS, true),
        "watchChats" => set_events(responses, events::WATCH_EVENTS, false),
        "uiStreamChat" | "uiStreamNewChat" | "resumeUiStream" => {
            // The AI SDK's format: `data:` lines only, each a UI message chunk or `[DONE]`.
            let ok = responses.get_mut("200").expect("SSE routes answer 200");
            ok["content"] = json!({"text/event-stream": {"schema": {"type": "object",
                "required": ["data"], "properties": {"data": {"type": "string",
                    "description": "A UI message chunk (JSON with its `type`), or `[DONE]`."}}}}});
        }
        _ => {}
    }
    for (status, link_set) in links(&id) {
        if let Some(response) = responses.get_mut(status) {
            response["links"] = link_set;
        }
    }
    if id == "getOpenApi" {
        operation.insert("security".into(), json!([]));
    }
}

fn response_name(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        415 => "UnsupportedMediaType",
        422 => "InvalidReference",
        429 => "TooManyRequests",
        503 => "Unavailable",
        other => panic!("no shared response for status {other}"),
    }
}

fn error_responses(config: &ApiConfig) -> Value {
    let error = |description: &str| {
        json!({"description": description, "content": {"application/json":
            {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    let retry_after = json!({"Retry-After": {"description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0}}});
    let mut too_many = error(&format!(
        "Too many requests with this token on this replica (at most {} per second, bursts \
         of {}; `rate_limited`), too many open streams for this user on this replica (at \
         most {}), the chat's queue is full (at most {} messages), or — for requests that \
         start a turn — the user's spend limit for the period is reached \
         (`spend_limit_exceeded`: `details` has `limit_micros`, `spent_micros`, `resets_at`; \
         `Retry-After` lasts until the period resets).",
        config.rate_limit_per_second,
        config.rate_limit_burst,
        config.max_streams_per_user,
        config.max_queue_len
    ));
    too_many["headers"] = retry_after.clone();
    let mut unavailable = error("The database is out of reach; retry later.");
    unavailable["headers"] = retry_after;
    json!({
        "BadRequest": error("A parameter, header or body field was refused (`details.field` \
            names it), the body is not JSON, or its Content-Type is not application/json."),
        "Unauthorized": error("Missing or invalid bearer token."),
        "Forbidden": error("Admin rights required."),
        "NotFound": error("Not found (other users' chats are not found either)."),
        "InvalidReference": error("A body field names something that does not exist or is \
            not usable (`details.field`), e.g. an unknown `model_config_id`."),
        "Conflict": error("The request contradicts the current state (e.g. the chat is \
            archived, not waiting for tool results, or the provider is still in use)."),
        "PayloadTooLarge": error(&format!(
            "The body exceeds {} bytes (an uploaded file: {} bytes).",
            config.max_body_bytes, config.max_file_bytes
        )),
        "UnsupportedMediaType": error(&format!(
            "A file of a type chatd does not accept: {}.",
            chatd_shared::files::ACCEPTED
        )),
        "TooManyRequests": too_many,
        "Unavailable": unavailable,
    })
}

/// The 200 response of an SSE route: one schema per event name, the JSON `data` as
/// `contentSchema`.
fn set_events(responses: &mut Map<String, Value>, names: &[(&str, &str)], with_id: bool) {
    let variants: Vec<Value> = names
        .iter()
        .map(|(event, schema)| {
            let mut properties = json!({
                "event": {"const": event},
                "data": {"type": "string", "contentMediaType": "application/json",
                    "contentSchema": {"$ref": format!("#/components/schemas/{schema}")}},
                "retry": {"type": "integer", "minimum": 0},
            });
            if with_id {
                properties["id"] = json!({"type": "string", "pattern": STREAM_CURSOR});
            }
            json!({"type": "object", "title": event, "required": ["event", "data"],
                "properties": properties})
        })
        .collect();
    let ok = responses.get_mut("200").expect("SSE routes answer 200");
    ok["content"] = json!({"text/event-stream": {"schema": {"oneOf": variants}}});
}

/// OpenAPI links: where the ids of the operations that take them come from.
fn links(operation_id: &str) -> Vec<(&'static str, Value)> {
    let to = |targets: &[&str], parameters: Value| -> Value {
        let mut links = Map::new();
        for target in targets {
            links.insert(
                target.to_string(),
                json!({"operationId": target, "parameters": parameters.clone()}),
            );
        }
        Value::Object(links)
    };
    match operation_id {
        "createChat" => vec![(
            "201",
            to(
                &[
                    "getChat",
                    "patchChat",
                    "listMessages",
                    "sendMessage",
                    "interruptChat",
                    "streamChat",
                    "submitToolResults",
                    "getChatCost",
                ],
                json!({"chat_id": "$response.body#/chat/id"}),
            ),
        )],
        "sendMessage" => vec![(
            "202",
            to(
                &["deleteQueuedMessage", "promoteQueuedMessage"],
                json!({"chat_id": "$request.path.chat_id",
                    "queued_id": "$response.body#/queued_message/id"}),
            ),
        )],
        "createProvider" => vec![(
            "201",
            to(
                &["getProvider", "patchProvider", "deleteProvider"],
                json!({"provider_id": "$response.body#/provider/id"}),
            ),
        )],
        "createMcpServer" => vec![(
            "201",
            to(
                &["getMcpServer", "patchMcpServer", "deleteMcpServer"],
                json!({"mcp_server_id": "$response.body#/mcp_server/id"}),
            ),
        )],
        "createModelConfig" => vec![(
            "201",
            to(
                &["getModelConfig", "patchModelConfig", "deleteModelConfig"],
                json!({"model_config_id": "$response.body#/model_config/id"}),
            ),
        )],
        _ => Vec::new(),
    }
}

fn description(config: &ApiConfig) -> String {
    let free_form: String = FREE_FORM
        .iter()
        .map(|place| format!("\n- {place}"))
        .collect();
    format!(
        "Horizontally scalable backend for AI agent chats. Health, readiness and metrics are \
         served outside /api/v1 at /healthz, /readyz and /metrics.\n\n\
         Limits of this replica: request bodies at most {body} bytes (413); a chat's queue at \
         most {queue} messages (429 with Retry-After); at most {streams} open streams (chat and watch) per user \
         on this replica (429 with Retry-After); at most {rate} requests per second per token \
         on this replica, in bursts of {burst} (429 `rate_limited` with Retry-After); a stream's \
         first snapshot sends at most {snapshot} messages (then `history_truncated`). Lengths \
         count characters. Rules no schema states: dynamic tool names are unique within a chat \
         and tool call ids within one submission; `from` is not after `to`; a token's \
         `expires_at` is in the future; only user messages can be edited; the AI SDK stream \
         reads only the last message, which must be a user message with a text or file part \
         (files as base64 `data:` URLs) or, on an existing chat, an assistant message with the \
         outputs of its pending tool calls; free-form JSON must not contain NUL in its strings \
         (except tool results, stored reversibly).\n\n\
         Free-form JSON (any value) appears only where the data is free-form by nature:\
         {free_form}",
        body = config.max_body_bytes,
        queue = config.max_queue_len,
        streams = config.max_streams_per_user,
        rate = config.rate_limit_per_second,
        burst = config.rate_limit_burst,
        snapshot = config.stream_snapshot_messages,
    )
}

#[cfg(test)]
mod tests;
