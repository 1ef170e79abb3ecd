//! `POST /chats/{id}/tool-results`: the client's results for the dynamic tool calls a chat in
//! `requires_action` waits for. Any worker then resumes the turn.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::CurrentUser;
use crate::body::StrictJson;
use crate::cursor::parse_uuid;
use crate::dto::{Chat, ChatResponse};
use crate::error::{ApiError, ApiResult};
use crate::routes::json_response;
use crate::state::AppState;
use crate::store::tool_results::{self, ClientResult};

/// Most results in one submission (a step rarely makes more than a handful of calls).
const MAX_RESULTS: usize = 128;
/// Longest tool call id accepted (characters).
const MAX_CALL_ID_CHARS: usize = 256;

/// One result per pending call; tool call ids unique.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolResultsRequest {
    #[schema(min_items = 1, max_items = 128)]
    pub results: Vec<ToolResultInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolResultInput {
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\u0000]*$")]
    pub tool_call_id: String,
    /// Any JSON; strings may contain NUL (stored reversibly encoded).
    pub output: Value,
    #[serde(default)]
    pub is_error: bool,
}

/// 200 with the chat (now `pending`).
#[utoipa::path(post, path = "/chats/{chat_id}/tool-results", operation_id = "submitToolResults", tag = "chats",
    params(("chat_id" = Uuid, Path, description = "A chat of the caller")), request_body = ToolResultsRequest,
    responses((status = 200, description = "Accepted: the chat is `pending` again (409 unless it is `requires_action` and the ids are exactly its pending calls)", body = ChatResponse)))]
pub async fn submit(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(chat_id): Path<String>,
    StrictJson(request): StrictJson<ToolResultsRequest>,
) -> ApiResult<Response> {
    let chat_id = parse_uuid(&chat_id, "chat_id")?;
    let results = validate(request)?;
    let mut client = state.pool.get().await?;
    crate::routes::limits::ensure_within_limit(&state, &client, user.id).await?;
    let transition = tool_results::submit(&mut client, chat_id, user.id, results).await?;
    transition.publish(&state.publisher, &client).await;
    Ok(json_response(
        StatusCode::OK,
        ChatResponse {
            chat: Chat::from(&transition.chat),
        },
    ))
}

/// Shape checks that need no database: ids present, unique, NUL-free (ids are structured
/// fields; only `output` may carry NUL).
fn validate(request: ToolResultsRequest) -> ApiResult<Vec<ClientResult>> {
    if request.results.is_empty() {
        return Err(ApiError::field("results", "results must not be empty"));
    }
    if request.results.len() > MAX_RESULTS {
        return Err(ApiError::field(
            "results",
            format!("results: at most {MAX_RESULTS} entries"),
        ));
    }
    let mut out: Vec<ClientResult> = Vec::with_capacity(request.results.len());
    for (index, result) in request.results.into_iter().enumerate() {
        let field = format!("results[{index}].tool_call_id");
        let id = &result.tool_call_id;
        if id.is_empty()
            || chatd_shared::validate::longer_than(id, MAX_CALL_ID_CHARS)
            || id.contains('\0')
        {
            return Err(ApiError::field(
                &field,
                format!("{field} must be 1 to {MAX_CALL_ID_CHARS} characters without NUL"),
            ));
        }
        if out.iter().any(|seen| &seen.tool_call_id == id) {
            return Err(ApiError::field(
                &field,
                format!("{field}: `{id}` appears more than once"),
            ));
        }
        out.push(ClientResult {
            tool_call_id: result.tool_call_id,
            output: result.output,
            is_error: result.is_error,
        });
    }
    Ok(out)
}
