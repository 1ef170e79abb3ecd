//! `chatd mock-llm`: a deterministic, scriptable model server speaking the three protocols of
//! the provider layer over real sockets. It is the default model of `chatd dev`, the load driver
//! of `chatd scaletest` and the fault injector of the tests (the LLM is the one
//! thing replaced, and only by this server).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/chat/completions` | OpenAI Chat Completions, streaming (`data:` chunks, `[DONE]`; a usage chunk with `stream_options.include_usage`) or one JSON answer |
//! | `POST /v1/responses` | OpenAI Responses, streaming (`event:` + `data:` with `type` and `sequence_number`) or one JSON answer; `store` (default `true`) and `previous_response_id` |
//! | `POST /v1/messages` | Anthropic Messages, streaming or one JSON answer; `max_tokens` required, empty or whitespace-only text blocks rejected with 400 `text content blocks must be non-empty` |
//! | `GET /healthz` | `ok` |
//! | `GET /mock/stats` | `{"requests": {"chat", "responses", "responses_chained", "messages"}, "open_streams", "stored_responses"}`: requests per route since start; `responses_chained` counts requests whose `previous_response_id` was found; `open_streams` counts streamed answers still being sent (a client that goes away closes its stream) |
//! | `POST /mock/forget` | forgets every stored response (`{"forgotten": n}`), so chained requests get "not found" |
//!
//! `Authorization: Bearer …`, `x-api-key` and `anthropic-version` are accepted, never required.
//!
//! The mock reads the **last user message** (in Anthropic, a user message holding only tool
//! results does not count). Without directives it replies with [`reply_text`]`(message, 12)`:
//! words picked by FNV-1a of the whole message text, one word per streamed chunk. A line
//! `@mock {json}` changes the behaviour (several lines merge, later keys win; unknown keys or bad
//! JSON get HTTP 400 naming the problem). Every key works in every protocol:
//!
//! | key | default | effect |
//! |---|---|---|
//! | `tokens` | 12 | reply length in tokens (one word per chunk; [`reply_text`] predicts it) |
//! | `tokens_per_second` | 0 | pace of content chunks; 0 = as fast as possible |
//! | `ttft_ms` | 0 | delay before the first chunk |
//! | `error_status` | – | answer with this HTTP status (400-599) and the protocol's error body (OpenAI `{"error":{"message","type","code"}}`; Anthropic `{"type":"error","error":{"type","message"}}` with 429 `rate_limit_error`, 503/529 `overloaded_error`) |
//! | `retry_after_s` | – | with an error: send `Retry-After: <s>` |
//! | `fail_times` | – | fail only the first N identical requests (same body), then answer normally; the failure is `error_status`, else the `cut_after` cut, else the `stream_error_after` error, else the `stall_ms` stall, else HTTP 500 |
//! | `cut_after` | – | end the stream after N content chunks with no terminal event (no finish chunk and `[DONE]`, no `response.completed`, no `message_stop`) |
//! | `stream_error_after` | – | after N content chunks send the protocol's in-stream error and end the stream: Chat `data: {"error":{…}}` (no `[DONE]`); Responses `event: error` `{"code","message"}` then `response.failed`; Anthropic `event: error` `{"type":"error","error":{…}}` |
//! | `stream_error_type` | `overloaded` | with `stream_error_after`: `overloaded`, `rate_limit`, `server_error` or `invalid_request` (OpenAI code `server_overloaded`, `rate_limit_exceeded`, `server_error`, `invalid_request_error`; Anthropic type `overloaded_error`, `rate_limit_error`, `api_error`, `invalid_request_error`) |
//! | `stall_ms` | 0 | pause this long mid-stream (before content chunk ⌊total/2⌋); with `fail_times` and no `error_status`/`cut_after`/`stream_error_after`, only the first N identical requests stall (the stall is their failure) and later ones stream normally |
//! | `error_message_bytes` | – | with an injected error status: pad the error message to this many bytes (at most 1 MiB) |
//! | `tool_calls` | – | `[{"name", "arguments"}]`: call these tools, in parallel when several (ids `call_<n>`, Anthropic `toolu_<n>`, numbered after the calls already in the conversation; arguments JSON in 2-3 fragments) |
//! | `tool_steps` | 1 | with `tool_calls`: keep calling them for N consecutive model steps (tool-calling steps since the last user message) before answering |
//! | `tool_script` | – | `[[calls of step 1], [calls of step 2], …]`: other calls at each step (instead of `tool_calls`/`tool_steps`), then the answer; an argument string `$result.<field>` (or `$result[<i>].<field>`) becomes that field of a tool result the request ends with (the first that has it, or the i-th) |
//! | `reasoning_tokens` | 0 | reason this many tokens before the answer (Chat `delta.reasoning_content`; Responses a `reasoning` item with `response.reasoning_summary_text.delta`; Anthropic a `thinking` block signed `sig-<hash>`) |
//! | `cached_tokens` | 0 | report N of the prompt tokens (at most all) as cache reads (Chat `prompt_tokens_details.cached_tokens`, Responses `input_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens` with `input_tokens` excluding them) |
//! | `forget_responses` | false | Responses: clear the stored responses and do not store this one, so a request chaining onto it gets the not-found error |
//!
//! `tool_calls` apply only when the request offers tools (a model cannot call tools it was not
//! given) and ends with a user message, or with tool results while fewer than `tool_steps`
//! tool-calling steps followed the last user message. Otherwise a request ending with tool
//! results is answered with [`tool_results_reply`] (`Tool results: <name>: <content>; …`), so a
//! turn always ends.
//!
//! Usage, in every protocol: prompt (input) tokens = whitespace-separated words of all text in
//! the conversation (system prompt or instructions, messages, tool results; for a chained
//! Responses request the stored history too), output tokens = content chunks sent (reasoning +
//! text tokens, or tool-call header and argument chunks). The request's output limit
//! (`max_tokens`, `max_completion_tokens`, `max_output_tokens`) caps reasoning + text tokens and
//! then ends the answer with `length` / `response.incomplete` / `max_tokens`.
//!
//! Non-streaming answers honour only `ttft_ms` and `error_status`/`fail_times`.
//!
//! Responses with `store` are kept in memory (the last [`state::MAX_STORED_RESPONSES`]), each
//! with its input and output items; `previous_response_id` continues from one, and an unknown id
//! gets HTTP 400 `{"error":{"message":"Previous response with id '…' not found.","type":
//! "invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}`.
//! Failed (cut, errored) responses are not stored.

pub mod conversation;
pub mod directives;
pub mod plan;
pub mod render;
pub mod reply;
mod routes;
pub mod state;

use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use reply::{reply_text, tool_results_reply};
use state::MockState;

/// Prompts of long agent chats are large; the mock must accept whatever a worker sends.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The mock's routes, with fresh state (failure counters, stored responses, stats) inside.
pub fn router() -> Router {
    let state = Arc::new(MockState::default());
    Router::new()
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/responses", post(routes::responses))
        .route("/v1/messages", post(routes::messages))
        .route("/healthz", get(|| async { "ok" }))
        .route("/mock/stats", get(routes::stats))
        .route("/mock/forget", post(routes::forget))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Serves the mock on `listener` until `shutdown` is cancelled, then lets open requests finish.
pub async fn run(listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    use axum::serve::ListenerExt as _;
    // Paced chunks are small writes; Nagle would delay them and distort TTFT measurements.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "mock-llm could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serve mock llm")
}
