//! The `responses` rows and the reads `/v1` needs: a response, its chat, and the rows it owns.

use chatd_shared::db::rows::{ChatRow, MessageRow};
use chatd_shared::db::sql::Sql;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ApiResult;

#[derive(Debug, Clone)]
pub struct ResponseRow {
    pub id: Uuid,
    pub chat_id: Uuid,
    pub owner_id: Uuid,
    pub previous_response_id: Option<Uuid>,
    pub input_first_id: i64,
    pub input_last_id: i64,
    pub start_attempt: i32,
    pub model: String,
    pub instructions: Option<String>,
    pub metadata: Value,
    pub tools: Value,
    pub store: bool,
    pub background: bool,
    pub cancelled: bool,
    pub created_at: OffsetDateTime,
}

impl ResponseRow {
    pub const COLUMNS: &'static str = "r.id, r.chat_id, r.owner_id, r.previous_response_id, \
        r.input_first_id, r.input_last_id, r.start_attempt, r.model, r.instructions, r.metadata, \
        r.tools, r.store, r.background, r.cancelled, r.created_at";

    pub fn from_row(row: &tokio_postgres::Row) -> ResponseRow {
        ResponseRow {
            id: row.get(0),
            chat_id: row.get(1),
            owner_id: row.get(2),
            previous_response_id: row.get(3),
            input_first_id: row.get(4),
            input_last_id: row.get(5),
            start_attempt: row.get(6),
            model: row.get(7),
            instructions: row.get(8),
            metadata: row.get(9),
            tools: row.get(10),
            store: row.get(11),
            background: row.get(12),
            cancelled: row.get(13),
            created_at: row.get(14),
        }
    }
}

/// The caller's response (`None` also when its chat was deleted or purged).
pub async fn load(client: &impl Sql, id: Uuid, owner_id: Uuid) -> ApiResult<Option<ResponseRow>> {
    let sql = format!(
        "SELECT {} FROM responses r JOIN chats c ON c.id = r.chat_id \
         WHERE r.id = $1 AND r.owner_id = $2 AND NOT c.deleted",
        ResponseRow::COLUMNS
    );
    let row = client.row_opt(&sql, &[&id, &owner_id]).await?;
    Ok(row.as_ref().map(ResponseRow::from_row))
}

/// The first row id that is no longer this response's: the next response's first input row,
/// or the next user row (a turn started another way), whichever comes first. `None`: the
/// response is the chat's latest.
pub async fn end_boundary(client: &impl Sql, response: &ResponseRow) -> ApiResult<Option<i64>> {
    let row = client
        .row(
            "SELECT least( \
                 (SELECT min(input_first_id) FROM responses \
                  WHERE chat_id = $1 AND input_first_id > $2), \
                 (SELECT min(id) FROM chat_messages \
                  WHERE chat_id = $1 AND id > $3 AND role = 'user' AND NOT deleted))",
            &[
                &response.chat_id,
                &response.input_first_id,
                &response.input_last_id,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// The response's chat, its visible output rows (assistant and worker tool rows, oldest
/// first) and whether it has ended for lack of being the latest.
pub struct Snapshot {
    pub chat: ChatRow,
    pub output: Vec<MessageRow>,
    /// A later turn began: this response is over whatever the chat's status says.
    pub superseded: bool,
}

/// Reads the chat first, then the rows: a turn's last rows commit with its final status, so
/// rows read after a final status are all there.
pub async fn snapshot(
    client: &deadpool_postgres::ClientWrapper,
    response: &ResponseRow,
) -> ApiResult<Option<Snapshot>> {
    let Some(chat) =
        crate::store::reads::chat_for_owner(client, response.chat_id, response.owner_id).await?
    else {
        return Ok(None);
    };
    let boundary = end_boundary(client, response).await?;
    let output = output_rows(client, response, 0, boundary).await?;
    Ok(Some(Snapshot {
        chat,
        output,
        superseded: boundary.is_some(),
    }))
}

/// The response's output rows after `after_id` (and before `boundary`).
pub async fn output_rows(
    client: &impl Sql,
    response: &ResponseRow,
    after_id: i64,
    boundary: Option<i64>,
) -> ApiResult<Vec<MessageRow>> {
    let sql = format!(
        "SELECT {} FROM chat_messages m WHERE m.chat_id = $1 AND m.id > $2 AND m.id < $3 \
         AND NOT m.deleted AND m.visibility <> 'model' AND m.role IN ('assistant', 'tool') \
         AND m.attempt IS NOT NULL ORDER BY m.id",
        MessageRow::COLUMNS
    );
    let after = after_id.max(response.input_last_id);
    let rows = client
        .rows(
            &sql,
            &[&response.chat_id, &after, &boundary.unwrap_or(i64::MAX)],
        )
        .await?;
    Ok(rows.iter().map(MessageRow::from_row).collect())
}

/// The response's input rows (user rows and client tool results), oldest first.
pub async fn input_rows(client: &impl Sql, response: &ResponseRow) -> ApiResult<Vec<MessageRow>> {
    let sql = format!(
        "SELECT {} FROM chat_messages m WHERE m.chat_id = $1 AND m.id BETWEEN $2 AND $3 \
         AND NOT m.deleted AND m.visibility <> 'model' ORDER BY m.id",
        MessageRow::COLUMNS
    );
    let rows = client
        .rows(
            &sql,
            &[
                &response.chat_id,
                &response.input_first_id,
                &response.input_last_id,
            ],
        )
        .await?;
    Ok(rows.iter().map(MessageRow::from_row).collect())
}

/// The names of the chat's client tools (their calls are `function_call` items; the worker's
/// own tools' calls are `mcp_call` items).
pub async fn client_tool_names(client: &impl Sql, chat_id: Uuid) -> ApiResult<Vec<String>> {
    let row = client
        .row_opt("SELECT dynamic_tools FROM chats WHERE id = $1", &[&chat_id])
        .await?;
    let tools: Value = row.map(|row| row.get(0)).unwrap_or(Value::Null);
    Ok(tools
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|tool| tool["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The running turn of `chat` as a response: its latest response when that has not ended, else
/// (a turn started through `/api/v1`) one made up from the rows — its input the newest rows a
/// client wrote, its attempts those after the last row a worker wrote before them.
pub async fn current_turn(
    client: &deadpool_postgres::ClientWrapper,
    chat: &ChatRow,
) -> ApiResult<ResponseRow> {
    let sql = format!(
        "SELECT {} FROM responses r WHERE r.chat_id = $1 ORDER BY r.input_first_id DESC LIMIT 1",
        ResponseRow::COLUMNS
    );
    if let Some(row) = client.row_opt(&sql, &[&chat.id]).await? {
        let response = ResponseRow::from_row(&row);
        if end_boundary(client, &response).await?.is_none() {
            return Ok(response);
        }
    }
    let row = client
        .row(
            "WITH input AS (SELECT coalesce(max(id), 0) AS id FROM chat_messages \
                 WHERE chat_id = $1 AND attempt IS NULL AND role IN ('user', 'tool') \
                 AND NOT deleted AND visibility <> 'model') \
             SELECT input.id, coalesce((SELECT max(attempt) FROM chat_messages \
                 WHERE chat_id = $1 AND id < input.id AND NOT deleted), 0) FROM input",
            &[&chat.id],
        )
        .await?;
    let input: i64 = row.get(0);
    Ok(ResponseRow {
        id: chat.id,
        chat_id: chat.id,
        owner_id: chat.owner_id,
        previous_response_id: None,
        input_first_id: input,
        input_last_id: input,
        start_attempt: row.get(1),
        model: String::new(),
        instructions: None,
        metadata: serde_json::json!({}),
        tools: serde_json::json!([]),
        store: true,
        background: false,
        cancelled: false,
        created_at: chat.updated_at,
    })
}

/// Re-reads what can change on a response row (`cancelled`, set by an interrupt).
pub async fn refresh(client: &impl Sql, response: &mut ResponseRow) -> ApiResult<()> {
    if let Some(row) = client
        .row_opt(
            "SELECT cancelled FROM responses WHERE id = $1",
            &[&response.id],
        )
        .await?
    {
        response.cancelled = row.get(0);
    }
    Ok(())
}
