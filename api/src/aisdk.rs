//! The Vercel AI SDK's UI message stream, so a Next.js app's `useChat` (default transport)
//! runs on chatd: `POST /chats/{id}/ui-stream` (and `POST /chats/ui-stream`, which creates the
//! chat) take what the transport sends — `{id, messages, trigger, messageId}`, of which only
//! the new last message is used — and answer the turn as a UI message stream; `GET
//! /chats/{id}/ui-stream` is `resumeStream`: 204 when no turn runs, else the running turn from
//! its `start`, then live, on any replica.
//!
//! Underneath, a turn is followed exactly as a `/v1` response is (`openai::stream`), and its
//! events become UI chunks: `start`, `start-step`, `text-*`, `reasoning-*`, `tool-input-*`,
//! `tool-output-*`, `finish-step`, `finish`, then `data: [DONE]`. A superseded attempt (a
//! retry, a worker's crash) becomes `reset-step`: the SDK drops the step's parts, and the
//! retried step follows — so the client's message ends as what is stored. Client tools end
//! the turn at `tool-input-available` (no output): the app answers them with
//! `POST /chats/{id}/tool-results`, or by sending the assistant message with the tool outputs
//! (`addToolResult` with `sendAutomaticallyWhen`), which this route reads. The stop button
//! calls `POST /chats/{id}/interrupt`.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::body::StrictJson;
use crate::cursor::parse_uuid;
use crate::dto::{MessageInput, UserPart};
use crate::error::{ApiError, ApiResult};
use crate::openai::ui::{self as v1, Item};
use crate::state::AppState;

/// What `useChat`'s default transport posts (other fields of a custom `body` are ignored).
#[derive(Debug, Deserialize, ToSchema)]
pub struct UiStreamRequest {
    /// The client's id for the chat (unused: the path names it).
    #[schema(max_length = 200)]
    pub id: Option<String>,
    /// The client's whole conversation; only the last message is read (a user message, or the
    /// assistant message carrying the outputs of client tool calls).
    #[schema(min_items = 1, max_items = 10000)]
    pub messages: Vec<UiMessage>,
    /// `submit-message` (the default). `regenerate-message` is refused (400): edit the user
    /// message with `PATCH /chats/{id}/messages/{message_id}` to rerun from it.
    #[schema(value_type = Option<String>, pattern = "^submit-message$")]
    pub trigger: Option<String>,
    #[serde(rename = "messageId")]
    #[schema(max_length = 200)]
    pub message_id: Option<String>,
}

/// An AI SDK `UIMessage`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UiMessage {
    #[schema(max_length = 200)]
    pub id: Option<String>,
    #[schema(value_type = String, pattern = "^(user|assistant|system)$")]
    pub role: String,
    /// `text` and `file` parts (files as `data:` URLs) of a user message; `tool-<name>` and
    /// `dynamic-tool` parts with `output-available` or `output-error` of an assistant message.
    /// Other parts are ignored.
    #[schema(value_type = Vec<Object>, max_items = 1000)]
    pub parts: Vec<Value>,
}

#[utoipa::path(post, path = "/chats/{chat_id}/ui-stream", operation_id = "uiStreamChat", tag = "streams",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")),
    request_body = UiStreamRequest,
    responses((status = 200, description = "The turn as an AI SDK UI message stream (`x-vercel-ai-ui-message-stream: v1`): SSE `data:` lines with UI message chunks, then `data: [DONE]`.", content_type = "text/event-stream", body = String)))]
pub async fn send(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
    StrictJson(request): StrictJson<UiStreamRequest>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    start(state, user, Some(chat_id), request).await
}

#[utoipa::path(post, path = "/chats/ui-stream", operation_id = "uiStreamNewChat", tag = "streams",
    request_body = UiStreamRequest,
    responses((status = 200, description = "A new chat with the last message, its turn as an AI SDK UI message stream; the chat's id is in the `x-chatd-chat-id` header and in the `start` chunk's `messageMetadata.chatId`.", content_type = "text/event-stream", body = String)))]
pub async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    StrictJson(request): StrictJson<UiStreamRequest>,
) -> ApiResult<Response> {
    start(state, user, None, request).await
}

#[utoipa::path(get, path = "/chats/{chat_id}/ui-stream", operation_id = "resumeUiStream", tag = "streams",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")),
    responses(
        (status = 200, description = "The running turn from its `start`, then live, as an AI SDK UI message stream.", content_type = "text/event-stream", body = String),
        (status = 204, description = "No turn is running.")))]
pub async fn resume(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let client = state.pool.get().await?;
    let chat = crate::store::reads::chat_for_owner(&client, chat_id, user.id)
        .await?
        .ok_or(ApiError::NotFound("chat"))?;
    if !chat.status.is_busy() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let turn = v1::current_turn(&client, &chat).await?;
    drop(client);
    stream(state, user.id, turn, None).await
}

async fn start(
    state: AppState,
    user: CurrentUser,
    chat_id: Option<Uuid>,
    request: UiStreamRequest,
) -> ApiResult<Response> {
    match request.trigger.as_deref() {
        None | Some("submit-message") => {}
        Some("regenerate-message") => {
            return Err(ApiError::field(
                "trigger",
                "trigger: regenerate-message is not supported; edit the user message (PATCH /chats/{id}/messages/{message_id}) to rerun from it",
            ))
        }
        Some(other) => {
            return Err(ApiError::field(
                "trigger",
                format!("trigger: `{other}` is not submit-message"),
            ))
        }
    }
    let last = request
        .messages
        .last()
        .ok_or_else(|| ApiError::field("messages", "messages must not be empty"))?;
    let field = format!("messages[{}]", request.messages.len() - 1);
    let items = match last.role.as_str() {
        "user" => vec![Item::User(user_message(&last.parts, &field)?)],
        "assistant" if chat_id.is_some() => tool_outputs(&last.parts, &field)?,
        _ => {
            return Err(ApiError::field(
                format!("{field}.role"),
                format!(
                    "{field}.role: the last message must be the user's new message{}",
                    if chat_id.is_some() {
                        " or the assistant message with tool outputs"
                    } else {
                        ""
                    }
                ),
            ))
        }
    };
    let mut client = state.pool.get().await?;
    let model_config_id = match chat_id {
        Some(chat_id) => {
            crate::store::reads::chat_for_owner(&client, chat_id, user.id)
                .await?
                .ok_or(ApiError::NotFound("chat"))?
                .model_config_id
        }
        None => None,
    };
    let entry =
        match v1::model_entry(&*client, model_config_id).await? {
            Some(entry) => entry,
            None => return Err(ApiError::Conflict(
                "no usable model: the chat's model config and the default are missing or disabled"
                    .into(),
            )),
        };
    crate::routes::limits::ensure_within_limit(&state, &client, user.id).await?;
    let (response, transition) = v1::create(
        &mut client,
        v1::NewResponse {
            owner_id: user.id,
            model_config_id: entry.config_id,
            model_name: entry.name,
            instructions: None,
            items,
            tools: None,
            previous_response_id: None,
            chat_id,
            store: true,
            background: false,
            metadata: json!({}),
            hidden: false,
            purge_after_s: None,
        },
    )
    .await?;
    transition.publish(&state.publisher, &client).await;
    drop(client);
    let created = chat_id.is_none().then_some(response.chat_id);
    stream(state, user.id, response, created).await
}

/// A user `UIMessage`'s text and file parts.
fn user_message(parts: &[Value], field: &str) -> ApiResult<MessageInput> {
    let mut out = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let part_field = format!("{field}.parts[{index}]");
        match part["type"].as_str() {
            Some("text") => {
                let text = part["text"].as_str().ok_or_else(|| {
                    ApiError::field(
                        format!("{part_field}.text"),
                        format!("{part_field}.text must be a string"),
                    )
                })?;
                out.push(UserPart::Text {
                    text: text.to_string(),
                });
            }
            Some("file") => {
                let url = part["url"].as_str().unwrap_or("");
                let data = url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .map(|(_, data)| data.to_string())
                    .ok_or_else(|| {
                        ApiError::field(
                            format!("{part_field}.url"),
                            format!("{part_field}.url: files are sent as base64 data: URLs"),
                        )
                    })?;
                out.push(UserPart::File {
                    media_type: None,
                    file_id: None,
                    data: Some(data),
                });
            }
            _ => {} // step markers, sources, data parts: not input
        }
    }
    if out.is_empty() {
        return Err(ApiError::field(
            format!("{field}.parts"),
            format!("{field}.parts: the message has no text or file part"),
        ));
    }
    Ok(MessageInput::Parts(out))
}

/// The outputs of client tool calls an assistant `UIMessage` carries (`addToolResult`).
fn tool_outputs(parts: &[Value], field: &str) -> ApiResult<Vec<Item>> {
    let mut items = Vec::new();
    for part in parts {
        let kind = part["type"].as_str().unwrap_or("");
        if !(kind.starts_with("tool-") || kind == "dynamic-tool") {
            continue;
        }
        let Some(call_id) = part["toolCallId"].as_str() else {
            continue;
        };
        let output = match part["state"].as_str() {
            Some("output-available") => match &part["output"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            },
            Some("output-error") => format!(
                "error: {}",
                part["errorText"].as_str().unwrap_or("the tool failed")
            ),
            _ => continue,
        };
        items.push(Item::ToolOutput {
            call_id: call_id.to_string(),
            output,
        });
    }
    if items.is_empty() {
        return Err(ApiError::field(
            format!("{field}.parts"),
            format!("{field}.parts: an assistant message is only read for tool outputs (state output-available or output-error), and it has none"),
        ));
    }
    Ok(items)
}

async fn stream(
    state: AppState,
    user_id: Uuid,
    response: v1::ResponseRow,
    created: Option<Uuid>,
) -> ApiResult<Response> {
    let keep_alive = state.config.keep_alive;
    let events = v1::follow(state, user_id, response.clone(), -1).await?;
    let mut chunker = Chunker {
        message_id: v1::response_id(response.id),
        created,
        step_open: false,
        step_committed: false,
        calls: Vec::new(),
        voided: false,
        client_calls: 0,
    };
    let body = events.flat_map(move |batch| {
        let mut out = Vec::new();
        for event in batch {
            chunker.translate(&event, &mut out);
        }
        futures::stream::iter(
            out.into_iter()
                .map(|data| Ok::<Event, Infallible>(Event::default().data(data))),
        )
    });
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        "x-vercel-ai-ui-message-stream",
        HeaderValue::from_static("v1"),
    );
    if let Some(chat_id) = created {
        if let Ok(value) = HeaderValue::from_str(&chat_id.to_string()) {
            headers.insert("x-chatd-chat-id", value);
        }
    }
    Ok(response)
}

/// Response events → UI message chunks.
struct Chunker {
    message_id: String,
    created: Option<Uuid>,
    step_open: bool,
    /// The open step's assistant row was committed: the next content starts another step.
    step_committed: bool,
    /// Function call item ids and their call ids.
    calls: Vec<(String, String, String)>,
    /// Items of a superseded attempt are being closed: not sent (`reset-step` dropped them).
    voided: bool,
    client_calls: usize,
}

impl Chunker {
    fn push(out: &mut Vec<String>, chunk: Value) {
        out.push(chunk.to_string());
    }

    fn content(&mut self, out: &mut Vec<String>) {
        if self.step_open && self.step_committed {
            Self::push(out, json!({"type": "finish-step"}));
            self.step_open = false;
        }
        if !self.step_open {
            Self::push(out, json!({"type": "start-step"}));
            self.step_open = true;
            self.step_committed = false;
        }
        self.voided = false;
    }

    fn translate(&mut self, event: &Value, out: &mut Vec<String>) {
        let item = &event["item"];
        match event["type"].as_str().unwrap_or("") {
            "response.created" => {
                let mut start = json!({"type": "start", "messageId": self.message_id});
                if let Some(chat_id) = self.created {
                    start["messageMetadata"] = json!({"chatId": chat_id});
                }
                Self::push(out, start);
            }
            crate::openai::events::ATTEMPT_RESET => {
                if self.step_open {
                    Self::push(out, json!({"type": "reset-step"}));
                }
                self.voided = true;
                self.calls.clear();
            }
            crate::openai::events::STEP_COMMITTED => self.step_committed = true,
            "response.output_item.added" => {
                self.content(out);
                let id = item["id"].as_str().unwrap_or("").to_string();
                match item["type"].as_str() {
                    Some("message") => Self::push(out, json!({"type": "text-start", "id": id})),
                    Some("reasoning") => {
                        Self::push(out, json!({"type": "reasoning-start", "id": id}))
                    }
                    Some("function_call") => {
                        let call_id = item["call_id"].as_str().unwrap_or("").to_string();
                        let name = item["name"].as_str().unwrap_or("").to_string();
                        Self::push(
                            out,
                            json!({"type": "tool-input-start", "toolCallId": call_id, "toolName": name}),
                        );
                        self.calls.push((id, call_id, name));
                    }
                    _ => {} // a worker tool run: sent whole when it is done
                }
            }
            "response.output_text.delta" => Self::push(
                out,
                json!({"type": "text-delta", "id": event["item_id"], "delta": event["delta"]}),
            ),
            "response.reasoning_text.delta" => Self::push(
                out,
                json!({"type": "reasoning-delta", "id": event["item_id"], "delta": event["delta"]}),
            ),
            "response.function_call_arguments.delta" => {
                if let Some((_, call_id, _)) = self
                    .calls
                    .iter()
                    .find(|(id, _, _)| event["item_id"] == id.as_str())
                {
                    Self::push(
                        out,
                        json!({"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": event["delta"]}),
                    );
                }
            }
            "response.output_item.done" if !self.voided || item["status"] == "completed" => {
                let id = &item["id"];
                match item["type"].as_str() {
                    Some("message") => Self::push(out, json!({"type": "text-end", "id": id})),
                    Some("reasoning") => {
                        Self::push(out, json!({"type": "reasoning-end", "id": id}))
                    }
                    Some("function_call") => {
                        let input =
                            serde_json::from_str::<Value>(item["arguments"].as_str().unwrap_or(""))
                                .unwrap_or_else(|_| item["arguments"].clone());
                        Self::push(
                            out,
                            json!({"type": "tool-input-available", "toolCallId": item["call_id"], "toolName": item["name"], "input": input}),
                        );
                        self.client_calls += 1;
                    }
                    Some("mcp_call") => {
                        self.content(out);
                        let name = match item["server_label"].as_str() {
                            Some("chatd") | None => item["name"].as_str().unwrap_or("").to_string(),
                            Some(server) => {
                                format!("{server}__{}", item["name"].as_str().unwrap_or(""))
                            }
                        };
                        let call_id = &item["call_id"];
                        let input =
                            serde_json::from_str::<Value>(item["arguments"].as_str().unwrap_or(""))
                                .unwrap_or(Value::Null);
                        Self::push(
                            out,
                            json!({"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": input, "dynamic": true}),
                        );
                        if item["error"].is_null() {
                            let output = serde_json::from_str::<Value>(
                                item["output"].as_str().unwrap_or(""),
                            )
                            .unwrap_or_else(|_| item["output"].clone());
                            Self::push(
                                out,
                                json!({"type": "tool-output-available", "toolCallId": call_id, "output": output, "dynamic": true}),
                            );
                        } else {
                            Self::push(
                                out,
                                json!({"type": "tool-output-error", "toolCallId": call_id, "errorText": item["error"], "dynamic": true}),
                            );
                        }
                    }
                    _ => {}
                }
            }
            kind @ ("response.completed" | "response.incomplete" | "response.failed") => {
                let response = &event["response"];
                if kind == "response.failed" {
                    let message = response["error"]["message"]
                        .as_str()
                        .unwrap_or("the turn failed");
                    Self::push(out, json!({"type": "error", "errorText": message}));
                }
                if self.step_open {
                    Self::push(out, json!({"type": "finish-step"}));
                    self.step_open = false;
                }
                let reason = match (response["status"].as_str(), self.client_calls > 0) {
                    (Some("failed"), _) => "error",
                    (Some("cancelled"), _) => "interrupted",
                    (_, true) => "tool-calls",
                    (Some("completed"), false) => "stop",
                    _ => "other",
                };
                Self::push(out, json!({"type": "finish", "finishReason": reason}));
                out.push("[DONE]".to_string());
            }
            _ => {}
        }
    }
}
