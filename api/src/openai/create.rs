//! `POST /v1/responses` and `POST /v1/chat/completions` underneath: a new chat, a continued one
//! (`previous_response_id` naming the chat's latest response) or a fork (naming an earlier
//! one), the input rows, the chat `pending`, and the `responses` row — in one transaction.

use chatd_shared::db::rows::{ChatRow, MessageRow};
use chatd_shared::db::sql::Sql;
use chatd_shared::domain::{encode_tool_result, ChatStatus, ContentPart, DynamicTool, Role};
use serde_json::{json, Value};
use uuid::Uuid;

use super::input::Item;
use super::store::{end_boundary, load, ResponseRow};
use crate::error::{ApiError, ApiResult};
use crate::store::chats::{insert_message, lock_chat};
use crate::store::{content, files, update_chat_sql, Transition};

/// A validated request.
pub struct NewResponse {
    pub owner_id: Uuid,
    pub model_config_id: Uuid,
    /// What the response echoes as `model`.
    pub model_name: String,
    pub instructions: Option<String>,
    pub items: Vec<Item>,
    /// `None`: the chat keeps its tools.
    pub tools: Option<Vec<DynamicTool>>,
    pub previous_response_id: Option<Uuid>,
    /// Continue this chat of the caller (the AI SDK stream), as naming the chat's latest
    /// response would.
    pub chat_id: Option<Uuid>,
    pub store: bool,
    pub background: bool,
    pub metadata: Value,
    /// Not listed (`GET /chats`).
    pub hidden: bool,
    /// An ephemeral chat: purged this long after it goes idle.
    pub purge_after_s: Option<i32>,
}

/// What an input item becomes, validated against the database before the transaction.
enum Row {
    System(String),
    User(Value),
    Assistant(Value),
    ToolOutput { call_id: String, output: String },
}

pub async fn create(
    client: &mut deadpool_postgres::Client,
    new: NewResponse,
) -> ApiResult<(ResponseRow, Transition)> {
    if new.items.is_empty() {
        return Err(ApiError::field(
            "input",
            "input: at least one item is required",
        ));
    }
    let tools = new
        .tools
        .as_ref()
        .map(|tools| content::dynamic_tools(tools, "tools"))
        .transpose()?;
    if let Some(instructions) = &new.instructions {
        content::plain_field(instructions, "instructions", 64 * 1024)?;
    }
    let mut rows = Vec::with_capacity(new.items.len());
    let mut file_ids = Vec::new();
    for (index, item) in new.items.iter().enumerate() {
        let field = format!("input[{index}]");
        rows.push(match item {
            Item::System(text) => {
                content::plain_field(text, &field, 64 * 1024)?;
                Row::System(text.clone())
            }
            Item::User(message) => {
                let mut stored = content::user_content(message.clone(), &field)?;
                let attachments = files::check_message(
                    &**client,
                    new.owner_id,
                    &mut stored,
                    &field,
                    Some(new.model_config_id),
                    None,
                )
                .await?;
                file_ids.extend(attachments.file_ids);
                Row::User(stored)
            }
            Item::Assistant(parts) => {
                let value = serde_json::to_value(parts).map_err(anyhow::Error::from)?;
                if chatd_shared::domain::contains_nul(&value) {
                    return Err(ApiError::field(
                        &field,
                        format!("{field}: NUL characters are not allowed"),
                    ));
                }
                Row::Assistant(value)
            }
            Item::ToolOutput { call_id, output } => {
                if output.contains('\0') {
                    return Err(ApiError::field(
                        &field,
                        format!("{field}.output: NUL characters are not allowed"),
                    ));
                }
                Row::ToolOutput {
                    call_id: call_id.clone(),
                    output: output.clone(),
                }
            }
        });
    }
    match rows.iter().rev().find(|row| !matches!(row, Row::System(_))) {
        Some(Row::User(_)) | Some(Row::ToolOutput { .. }) => {}
        _ => {
            return Err(ApiError::field(
                "input",
                "input: the last item must be a user message or a function_call_output (something for the model to answer)",
            ))
        }
    }
    let mut system: Vec<String> = new.instructions.iter().cloned().collect();
    system.extend(rows.iter().filter_map(|row| match row {
        Row::System(text) => Some(text.clone()),
        _ => None,
    }));
    let system = (!system.is_empty()).then(|| system.join("\n\n"));

    let transaction = client.transaction().await?;
    let (chat, created) = match (new.previous_response_id, new.chat_id) {
        (None, Some(chat_id)) => {
            let locked = lock_chat(&transaction, chat_id, new.owner_id).await?;
            let busy = "the chat's turn is still running: wait for it to end, or interrupt it";
            (continue_chat(locked, busy)?, false)
        }
        (None, None) => (
            insert_chat(&transaction, &new, tools.as_ref(), None).await?,
            true,
        ),
        (Some(previous_id), _) => {
            let previous = load(&transaction, previous_id, new.owner_id)
                .await?
                .ok_or_else(|| {
                    ApiError::field(
                        "previous_response_id",
                        "previous_response_id: no such response",
                    )
                })?;
            let locked = lock_chat(&transaction, previous.chat_id, new.owner_id).await?;
            match end_boundary(&transaction, &previous).await? {
                None => {
                    let busy = format!(
                        "previous response {} is still in progress: wait for it to end, or cancel it",
                        super::response_id(previous.id)
                    );
                    (continue_chat(locked, &busy)?, false)
                }
                Some(boundary) => {
                    let chat =
                        insert_chat(&transaction, &new, tools.as_ref(), Some(&locked.chat)).await?;
                    copy_history(&transaction, previous.chat_id, chat.id, boundary).await?;
                    (chat, true)
                }
            }
        }
    };
    if !created {
        // The request's model runs this and later turns; its tools (when given) replace the
        // chat's client tools.
        transaction
            .exec(
                "UPDATE chats SET model_config_id = $2, \
                 dynamic_tools = coalesce($3, dynamic_tools) WHERE id = $1",
                &[&chat.id, &new.model_config_id, &tools],
            )
            .await?;
    }
    if let Some(system) = &system {
        set_system_prompt(&transaction, chat.id, new.owner_id, system).await?;
    }
    let inserted = insert_rows(&transaction, &chat, &new, rows).await?;
    let chat = ChatRow::from_row(
        &transaction
            .row(
                &update_chat_sql(
                    "status = 'pending', action_deadline_at = NULL, last_error = NULL",
                ),
                &[&chat.id],
            )
            .await?,
    );
    let first = inserted.first().map(|row| row.id).unwrap_or_default();
    let last = inserted.last().map(|row| row.id).unwrap_or_default();
    let sql = format!(
        "INSERT INTO responses AS r (chat_id, owner_id, previous_response_id, input_first_id, \
         input_last_id, start_attempt, model, instructions, metadata, tools, store, background) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {}",
        ResponseRow::COLUMNS
    );
    let response_tools = tools.clone().unwrap_or_else(|| json!([]));
    let response = ResponseRow::from_row(
        &transaction
            .row(
                &sql,
                &[
                    &chat.id,
                    &new.owner_id,
                    &new.previous_response_id,
                    &first,
                    &last,
                    &chat.attempt,
                    &new.model_name,
                    &new.instructions,
                    &new.metadata,
                    &response_tools,
                    &new.store,
                    &new.background,
                ],
            )
            .await?,
    );
    files::link(&transaction, chat.id, &file_ids).await?;
    transaction.commit().await?;
    let mut transition = Transition::new(chat);
    transition.change.messages = true;
    transition.change.new_messages = inserted;
    if created {
        transition.change.owner_event = chatd_shared::pubsub::OwnerEventKind::Created;
    }
    Ok((response, transition))
}

/// The locked chat, if a new turn may start on it (idle, or waiting for tool output).
fn continue_chat(locked: crate::store::chats::LockedChat, busy: &str) -> ApiResult<ChatRow> {
    let chat = locked.chat;
    if chat.archived {
        return Err(ApiError::Conflict(
            "the chat is archived: unarchive it first".into(),
        ));
    }
    if matches!(
        chat.status,
        ChatStatus::Pending
            | ChatStatus::Running
            | ChatStatus::Interrupting
            | ChatStatus::AwaitingAgents
    ) || locked.queue_len > 0
    {
        return Err(ApiError::Conflict(busy.to_string()));
    }
    Ok(chat)
}

/// A new chat for the response (a fork takes over the forked chat's settings).
async fn insert_chat(
    transaction: &deadpool_postgres::Transaction<'_>,
    new: &NewResponse,
    tools: Option<&Value>,
    forked: Option<&ChatRow>,
) -> ApiResult<ChatRow> {
    let mcp_server_ids: Vec<Uuid> = match forked {
        Some(chat) => transaction
            .row(
                "SELECT mcp_server_ids FROM chats WHERE id = $1",
                &[&chat.id],
            )
            .await?
            .get(0),
        None => chatd_shared::db::mcp::pick_for_chat(transaction, None).await?,
    };
    let tools = match (tools, forked) {
        (Some(tools), _) => tools.clone(),
        (None, Some(chat)) => transaction
            .row("SELECT dynamic_tools FROM chats WHERE id = $1", &[&chat.id])
            .await?
            .get(0),
        (None, None) => json!([]),
    };
    let labels = forked
        .map(|chat| chat.labels.clone())
        .unwrap_or_else(|| json!({}));
    // A hidden chat is never listed: it is titled from its first message rather than by the
    // model (a title is a billed model call — it would double a Chat Completions request's).
    let title = if new.hidden {
        hidden_title(&new.items)
    } else {
        String::new()
    };
    let sql = format!(
        "INSERT INTO chats AS c (owner_id, title, status, model_config_id, labels, dynamic_tools, \
         mcp_server_ids, hidden, purge_after_s) \
         VALUES ($1, $8, 'waiting', $2, $3, $4, $5, $6, $7) RETURNING {}",
        ChatRow::COLUMNS
    );
    let row = transaction
        .row(
            &sql,
            &[
                &new.owner_id,
                &new.model_config_id,
                &labels,
                &tools,
                &mcp_server_ids,
                &new.hidden,
                &new.purge_after_s,
                &title,
            ],
        )
        .await?;
    Ok(ChatRow::from_row(&row))
}

/// The first user text of `items`, cut to 60 characters (never empty).
fn hidden_title(items: &[Item]) -> String {
    let text = items.iter().find_map(|item| match item {
        Item::User(crate::dto::MessageInput::Text(text)) => Some(text.as_str()),
        Item::User(crate::dto::MessageInput::Parts(parts)) => {
            parts.iter().find_map(|part| match part {
                crate::dto::UserPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
        }
        _ => None,
    });
    let title: String = text
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(60)
        .collect();
    if title.is_empty() {
        "(request)".into()
    } else {
        title
    }
}

/// Copies the visible history of `from` before row `boundary` into `to` (without usage, so
/// spend is not counted twice), and links the files it uses.
async fn copy_history(
    transaction: &deadpool_postgres::Transaction<'_>,
    from: Uuid,
    to: Uuid,
    boundary: i64,
) -> ApiResult<()> {
    transaction
        .exec(
            "INSERT INTO chat_messages (chat_id, role, content, visibility, created_by, \
             model_config_id, compressed) \
             SELECT $2, role, content, visibility, created_by, model_config_id, compressed \
             FROM chat_messages WHERE chat_id = $1 AND id < $3 AND NOT deleted ORDER BY id",
            &[&from, &to, &boundary],
        )
        .await?;
    transaction
        .exec(
            "INSERT INTO chat_files (chat_id, file_id) SELECT $2, file_id FROM chat_files \
             WHERE chat_id = $1 ON CONFLICT DO NOTHING",
            &[&from, &to],
        )
        .await?;
    Ok(())
}

/// The chat's system prompt becomes `text` (its first system row, or a new one).
async fn set_system_prompt(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    owner_id: Uuid,
    text: &str,
) -> ApiResult<()> {
    let content = json!([{"type": "text", "text": text}]);
    // Rewriting a row the prompt already holds bumps `history_epoch`: workers' prompt caches
    // (and streams) then read the history afresh. Unchanged instructions change nothing.
    let existing = transaction
        .row_opt(
            "SELECT id, content = $2 FROM chat_messages \
             WHERE chat_id = $1 AND role = 'system' AND visibility = 'model' AND NOT deleted \
             ORDER BY id LIMIT 1",
            &[&chat_id, &content],
        )
        .await?;
    if let Some(row) = existing {
        if !row.get::<_, bool>(1) {
            let id: i64 = row.get(0);
            transaction
                .exec(
                    "WITH updated AS (UPDATE chat_messages SET content = $2 WHERE id = $3) \
                     UPDATE chats SET history_epoch = history_epoch + 1 WHERE id = $1",
                    &[&chat_id, &content, &id],
                )
                .await?;
        }
    } else {
        insert_message(
            transaction,
            chat_id,
            Role::System,
            &content,
            "model",
            Some(owner_id),
            None,
        )
        .await?;
    }
    Ok(())
}

/// Stores the function outputs gathered so far as one `tool` message (none when there are
/// none), as the worker stores a step's tool results.
async fn flush_tool_results(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat_id: Uuid,
    owner_id: Uuid,
    results: &mut Vec<ContentPart>,
) -> ApiResult<Option<MessageRow>> {
    if results.is_empty() {
        return Ok(None);
    }
    let content = serde_json::to_value(std::mem::take(results)).expect("parts serialize");
    let row = insert_message(
        transaction,
        chat_id,
        Role::Tool,
        &content,
        "both",
        Some(owner_id),
        None,
    )
    .await?;
    Ok(Some(row))
}

/// Inserts the input rows. Function outputs answer the chat's pending client calls (exactly
/// them, as `POST /tool-results`) or, in a new conversation, calls given earlier in the input.
async fn insert_rows(
    transaction: &deadpool_postgres::Transaction<'_>,
    chat: &ChatRow,
    new: &NewResponse,
    rows: Vec<Row>,
) -> ApiResult<Vec<MessageRow>> {
    let pending = if chat.status == ChatStatus::RequiresAction {
        chatd_shared::db::tool_calls::load_pending(transaction, chat.id).await?
    } else {
        Vec::new()
    };
    let outputs: Vec<&str> = rows
        .iter()
        .filter_map(|row| match row {
            Row::ToolOutput { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
        .collect();
    let missing: Vec<&str> = pending
        .iter()
        .map(|call| call.tool_call_id.as_str())
        .filter(|id| !outputs.contains(id))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::field(
            "input",
            format!(
                "input: the previous response waits for function_call_output items for: {}",
                missing.join(", ")
            ),
        ));
    }
    // Calls named by assistant items of this input (a conversation given whole).
    let mut declared: Vec<(String, String)> = pending
        .iter()
        .map(|call| (call.tool_call_id.clone(), call.tool_name.clone()))
        .collect();
    let mut inserted = Vec::with_capacity(rows.len());
    let mut results: Vec<ContentPart> = Vec::new();
    for (index, row) in rows.into_iter().enumerate() {
        if !matches!(row, Row::ToolOutput { .. }) {
            inserted.extend(
                flush_tool_results(transaction, chat.id, new.owner_id, &mut results).await?,
            );
        }
        match row {
            Row::System(_) => {}
            Row::User(content) => inserted.push(
                insert_message(
                    transaction,
                    chat.id,
                    Role::User,
                    &content,
                    "both",
                    Some(new.owner_id),
                    Some(new.model_config_id),
                )
                .await?,
            ),
            Row::Assistant(content) => {
                let parts: Vec<ContentPart> =
                    serde_json::from_value(content.clone()).unwrap_or_default();
                for part in parts {
                    if let ContentPart::ToolCall {
                        tool_call_id,
                        tool_name,
                        ..
                    } = part
                    {
                        declared.push((tool_call_id, tool_name));
                    }
                }
                inserted.push(
                    insert_message(
                        transaction,
                        chat.id,
                        Role::Assistant,
                        &content,
                        "both",
                        Some(new.owner_id),
                        None,
                    )
                    .await?,
                );
            }
            Row::ToolOutput { call_id, output } => {
                let Some((_, tool_name)) = declared.iter().find(|(id, _)| *id == call_id) else {
                    return Err(ApiError::field(
                        format!("input[{index}].call_id"),
                        format!("input[{index}].call_id: `{call_id}` names no function call waiting for output"),
                    ));
                };
                results.push(ContentPart::ToolResult {
                    tool_call_id: call_id.clone(),
                    tool_name: tool_name.clone(),
                    result: encode_tool_result(Value::String(output)),
                    is_error: false,
                });
                declared.retain(|(id, _)| *id != call_id);
            }
        }
    }
    inserted.extend(flush_tool_results(transaction, chat.id, new.owner_id, &mut results).await?);
    if inserted.is_empty() {
        return Err(ApiError::field(
            "input",
            "input: at least one message or function_call_output is required",
        ));
    }
    Ok(inserted)
}
