//! `POST /v1/chat/completions`: a stateless shim for UIs that only speak Chat Completions. Each
//! request runs as a chat of its own — hidden from the chat list and purged ten minutes after
//! it ends — holding the request's messages; the answer is the turn's text (the worker's own
//! tools run inside it) and the calls of the request's `tools`, streamed as
//! `chat.completion.chunk`s or returned whole.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use super::create::{create as create_response, NewResponse};
use super::responses::EPHEMERAL_RETENTION_S;
use super::{input, models, openai_error, stream, unix_seconds};
use crate::auth::CurrentUser;
use crate::body::StrictJson;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    StrictJson(body): StrictJson<Value>,
) -> ApiResult<Response> {
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    let streaming = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(value)) => *value,
        Some(_) => return Err(ApiError::field("stream", "stream must be a boolean")),
    };
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let items = input::chat_messages(body.get("messages").unwrap_or(&Value::Null))?;
    let tools = match body.get("tools") {
        None | Some(Value::Null) => None,
        Some(value) => Some(input::tools(value, "tools")?),
    };
    let model = input::model(&body)?;
    let mut client = state.pool.get().await?;
    let entry = match models::resolve(&*client, model).await? {
        Ok(entry) => entry,
        Err(response) => return Ok(response),
    };
    crate::routes::limits::ensure_within_limit(&state, &client, user.id).await?;
    let model_name = model.map(str::to_owned).unwrap_or(entry.name);
    let (response, transition) = create_response(
        &mut client,
        NewResponse {
            owner_id: user.id,
            model_config_id: entry.config_id,
            model_name: model_name.clone(),
            instructions: None,
            items,
            tools,
            previous_response_id: None,
            chat_id: None,
            store: false,
            background: false,
            metadata: json!({}),
            hidden: true,
            purge_after_s: Some(EPHEMERAL_RETENTION_S),
        },
    )
    .await?;
    transition.publish(&state.publisher, &client).await;
    drop(client);
    let id = format!("chatcmpl-{}", response.id.simple());
    let created = unix_seconds(response.created_at);
    if !streaming {
        let object = stream::wait_final(&state, &response).await?;
        return Ok(completion(&object, &id, created, &model_name));
    }
    let keep_alive = state.config.keep_alive;
    let events = stream::follow(state, user.id, response, -1).await?;
    let mut chunks = Chunker {
        id,
        created,
        model: model_name,
        include_usage,
        calls: Vec::new(),
        started: false,
    };
    let body = events.flat_map(move |batch| {
        let mut out = Vec::new();
        for event in batch {
            chunks.translate(&event, &mut out);
        }
        futures::stream::iter(
            out.into_iter()
                .map(|data| Ok::<Event, Infallible>(Event::default().data(data))),
        )
    });
    Ok(Sse::new(body)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response())
}

/// The final response as one `chat.completion` (a failed turn is an error status).
fn completion(object: &Value, id: &str, created: i64, model: &str) -> Response {
    if object["status"] == "failed" {
        let message = object["error"]["message"]
            .as_str()
            .unwrap_or("the turn failed");
        return openai_error(StatusCode::BAD_GATEWAY, message, None, "upstream_error");
    }
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in object["output"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    text.push_str(part["text"].as_str().unwrap_or(""));
                }
            }
            Some("function_call") => calls.push(json!({"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]}})),
            _ => {}
        }
    }
    let finish_reason = finish_reason(object, !calls.is_empty());
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = json!(calls);
    }
    axum::Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
        "usage": usage(object),
    }))
    .into_response()
}

fn finish_reason(object: &Value, called: bool) -> &'static str {
    if called {
        "tool_calls"
    } else if object["status"] == "completed" {
        "stop"
    } else {
        "length"
    }
}

fn usage(object: &Value) -> Value {
    let usage = &object["usage"];
    let prompt = usage["input_tokens"].as_i64().unwrap_or(0);
    let completion = usage["output_tokens"].as_i64().unwrap_or(0);
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage["input_tokens_details"]["cached_tokens"]},
        "completion_tokens_details": {"reasoning_tokens": usage["output_tokens_details"]["reasoning_tokens"]}})
}

/// Responses events → `chat.completion.chunk`s.
struct Chunker {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    /// Function call item ids, by their `tool_calls` index.
    calls: Vec<String>,
    started: bool,
}

impl Chunker {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "delta": delta,
                "finish_reason": finish_reason, "logprobs": null}]})
        .to_string()
    }

    fn translate(&mut self, event: &Value, out: &mut Vec<String>) {
        if !self.started {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        match event["type"].as_str().unwrap_or("") {
            "response.output_text.delta" => {
                out.push(self.chunk(json!({"content": event["delta"]}), None))
            }
            "response.reasoning_text.delta" => {
                out.push(self.chunk(json!({"reasoning_content": event["delta"]}), None))
            }
            "response.output_item.added" if event["item"]["type"] == "function_call" => {
                let item = &event["item"];
                self.calls
                    .push(item["id"].as_str().unwrap_or("").to_string());
                out.push(self.chunk(
                    json!({"tool_calls": [{"index": self.calls.len() - 1, "id": item["call_id"],
                        "type": "function", "function": {"name": item["name"], "arguments": ""}}]}),
                    None,
                ));
            }
            "response.function_call_arguments.delta" => {
                if let Some(index) = self
                    .calls
                    .iter()
                    .position(|id| event["item_id"] == id.as_str())
                {
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": event["delta"]}}]}),
                        None,
                    ));
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let object = &event["response"];
                if object["status"] == "failed" {
                    let message = object["error"]["message"]
                        .as_str()
                        .unwrap_or("the turn failed");
                    out.push(
                        json!({"error": {"message": message, "type": "server_error", "param": null,
                        "code": "upstream_error"}})
                        .to_string(),
                    );
                } else {
                    out.push(self.chunk(
                        json!({}),
                        Some(finish_reason(object, !self.calls.is_empty())),
                    ));
                    if self.include_usage {
                        out.push(
                            json!({"id": self.id, "object": "chat.completion.chunk",
                            "created": self.created, "model": self.model, "choices": [],
                            "usage": usage(object)})
                            .to_string(),
                        );
                    }
                }
                out.push("[DONE]".to_string());
            }
            _ => {}
        }
    }
}
