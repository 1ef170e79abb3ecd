//! The soak's clients: each runs chats of a few turns each — streaming answers, tool calls,
//! queued messages, interrupts, a provider error far larger than a notification — through the
//! public API only, spread over the API replicas, riding out failed requests (without sending
//! anything twice) and dropped streams (resuming with `Last-Event-ID`). Each keeps its own
//! record of what it sent and received, for the final check.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use chatd_client::scaletest::integrity::{IntegrityCounts, StreamChecker};
use chatd_client::ApiClient;

/// What a turn was meant to do, for the final check.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// A plain answer of `tokens` tokens: exactly this text, once.
    Stream { tokens: usize },
    /// Two tool-calling steps, then an answer.
    Tools,
    /// Interrupted after about a second: at most one answer, a prefix of the full one.
    Interrupted { tokens: usize },
    /// The provider fails once with a 20 KB error, then answers `tokens` tokens.
    ProviderError { tokens: usize },
}

/// One user message a client had accepted (201 or 202).
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub chat_id: String,
    /// Unique text at the start of the message, to find it in the database.
    pub nonce: String,
    pub text: String,
    pub scenario: Scenario,
}

#[derive(Default)]
pub struct ClientRecord {
    pub sent: Vec<SentMessage>,
    pub integrity: IntegrityCounts,
    /// Same-attempt `attempt_reset`s seen (holes the server announced).
    pub holes: u64,
    pub reconnects: u64,
    /// Turns whose completion was seen by the client.
    pub turns: u64,
    /// Requests that failed and were retried or given up.
    pub request_errors: u64,
    /// (chat, what the client received) of every chat whose stream broke an invariant.
    pub transcripts: Vec<(String, String)>,
}

/// Runs `clients` clients until `stop`, then lets their last turns finish.
pub async fn run(
    apis: Vec<ApiClient>,
    stream_apis: Vec<ApiClient>,
    clients: usize,
    seed: u64,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<ClientRecord> {
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..clients {
        let apis = apis.clone();
        let stream_apis = stream_apis.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut rng: StdRng = rand::SeedableRng::seed_from_u64(seed.wrapping_add(index as u64));
            let mut record = ClientRecord::default();
            let mut number = 0;
            while !stop.is_cancelled() {
                chat_session(
                    &apis,
                    &stream_apis,
                    index,
                    &mut number,
                    &mut rng,
                    &mut record,
                    &stop,
                )
                .await;
            }
            record
        });
    }
    let mut records = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(record) = joined {
            records.push(record);
        }
    }
    records
}

/// One chat of a few turns, read by one resuming stream.
async fn chat_session(
    apis: &[ApiClient],
    stream_apis: &[ApiClient],
    client: usize,
    number: &mut u64,
    rng: &mut StdRng,
    record: &mut ClientRecord,
    stop: &tokio_util::sync::CancellationToken,
) {
    let (first_text, first_scenario, first_nonce) = next_message(client, number, rng);
    let chat_id = match create_chat(apis, rng, &first_text, &first_nonce, record).await {
        Some(chat_id) => chat_id,
        None => return,
    };
    record.sent.push(SentMessage {
        chat_id: chat_id.clone(),
        nonce: first_nonce,
        text: first_text,
        scenario: first_scenario.clone(),
    });
    let reader = Arc::new(Mutex::new(StreamState::default()));
    let reading = tokio::spawn(read_stream(
        stream_apis.to_vec(),
        chat_id.clone(),
        reader.clone(),
    ));
    let mut scenario = first_scenario;
    let turns = rng.gen_range(2..5);
    for turn in 0..turns {
        if turn > 0 {
            if stop.is_cancelled() {
                break;
            }
            let (text, next, nonce) = next_message(client, number, rng);
            if !send(apis, rng, &chat_id, &text, &nonce, record).await {
                break;
            }
            record.sent.push(SentMessage {
                chat_id: chat_id.clone(),
                nonce,
                text,
                scenario: next.clone(),
            });
            scenario = next;
            // Sometimes a second message right away: it queues behind the running turn (not
            // behind a turn about to be interrupted: the interrupt could hit it instead).
            let interrupting = matches!(scenario, Scenario::Interrupted { .. });
            if !interrupting && rng.gen_bool(0.25) {
                let (text, queued, nonce) = next_message(client, number, rng);
                let queued = match queued {
                    Scenario::Interrupted { tokens } => Scenario::Stream { tokens },
                    other => other,
                };
                if send(apis, rng, &chat_id, &text, &nonce, record).await {
                    record.sent.push(SentMessage {
                        chat_id: chat_id.clone(),
                        nonce,
                        text,
                        scenario: queued,
                    });
                }
            }
        }
        if let Scenario::Interrupted { .. } = scenario {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(500..1500))).await;
            let _ = post_retrying(
                apis,
                rng,
                &format!("/chats/{chat_id}/interrupt"),
                json!({}),
                record,
            )
            .await;
        }
        if !wait_idle(apis, rng, &chat_id).await {
            record.request_errors += 1;
            break;
        }
        record.turns += 1;
    }
    // Let the stream catch up with the end of the chat, then stop reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reading.abort();
    let state = reader.lock().await;
    let mut checker = state.checker.lock().await;
    let counts = checker.take_counts();
    if !counts.is_zero() {
        record
            .transcripts
            .push((chat_id.clone(), state.transcript.join("\n")));
    }
    record.integrity.gaps += counts.gaps;
    record.integrity.duplicates += counts.duplicates;
    record.integrity.out_of_order += counts.out_of_order;
    record.integrity.text_mismatches += counts.text_mismatches;
    record.holes += checker.holes();
    record.reconnects += state.reconnects;
}

/// A new user message: its text (with a unique nonce first), its scenario and the nonce.
fn next_message(client: usize, number: &mut u64, rng: &mut StdRng) -> (String, Scenario, String) {
    *number += 1;
    let nonce = format!("[chaos {client}-{number}-{}]", rng.gen::<u32>());
    let pick = rng.gen_range(0..100);
    let (scenario, directive) = if pick < 50 {
        let tokens = rng.gen_range(20..150);
        let rate = rng.gen_range(20..80);
        (
            Scenario::Stream { tokens },
            json!({"tokens": tokens, "tokens_per_second": rate}),
        )
    } else if pick < 70 {
        (
            Scenario::Tools,
            json!({"tool_calls": [{"name": "current_time", "arguments": {}}], "tool_steps": 2,
                   "tokens_per_second": 50}),
        )
    } else if pick < 90 {
        let tokens = rng.gen_range(100..300);
        (
            Scenario::Interrupted { tokens },
            json!({"tokens": tokens, "tokens_per_second": 40}),
        )
    } else {
        let tokens = rng.gen_range(20..80);
        (
            Scenario::ProviderError { tokens },
            json!({"tokens": tokens, "tokens_per_second": 50, "error_status": 503,
                   "fail_times": 1, "error_message_bytes": 20000}),
        )
    };
    (
        format!("{nonce} chaos turn\n@mock {directive}"),
        scenario,
        nonce,
    )
}

fn api<'a>(apis: &'a [ApiClient], rng: &mut StdRng) -> &'a ApiClient {
    &apis[rng.gen_range(0..apis.len())]
}

/// Creates the chat (labelled with the nonce, so a retry after a lost reply finds it instead
/// of creating a second one).
async fn create_chat(
    apis: &[ApiClient],
    rng: &mut StdRng,
    text: &str,
    nonce: &str,
    record: &mut ClientRecord,
) -> Option<String> {
    let label = nonce
        .trim_matches(|c| c == '[' || c == ']')
        .replace(' ', "_");
    for _ in 0..60 {
        match api(apis, rng)
            .post(
                "/chats",
                &json!({"message": text, "labels": {"chaos": label}}),
            )
            .await
        {
            Ok((201, body)) => return body["chat"]["id"].as_str().map(str::to_owned),
            Ok((status, _)) if status < 500 && status != 429 => return None,
            _ => record.request_errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Did the failed request get through?
        if let Ok((200, body)) = api(apis, rng)
            .get(&format!("/chats?label=chaos:{label}"))
            .await
        {
            if let Some(id) = body["items"][0]["id"].as_str() {
                return Some(id.to_owned());
            }
        }
    }
    None
}

/// Sends a message; after a failed request, looks for it (in the history and the queue)
/// before sending again, so nothing is sent twice.
async fn send(
    apis: &[ApiClient],
    rng: &mut StdRng,
    chat_id: &str,
    text: &str,
    nonce: &str,
    record: &mut ClientRecord,
) -> bool {
    for _ in 0..60 {
        match api(apis, rng)
            .post(
                &format!("/chats/{chat_id}/messages"),
                &json!({"content": text}),
            )
            .await
        {
            Ok((201 | 202, _)) => return true,
            Ok((429, _)) => {}
            Ok((status, _)) if status < 500 => return false,
            _ => record.request_errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        loop {
            match api(apis, rng)
                .get(&format!("/chats/{chat_id}/messages?limit=20"))
                .await
            {
                Ok((200, body)) => {
                    let mentions = |items: &Value| {
                        items.as_array().is_some_and(|items| {
                            items.iter().any(|item| item.to_string().contains(nonce))
                        })
                    };
                    if mentions(&body["items"]) || mentions(&body["queued"]) {
                        return true;
                    }
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    false
}

async fn post_retrying(
    apis: &[ApiClient],
    rng: &mut StdRng,
    path: &str,
    body: Value,
    record: &mut ClientRecord,
) -> bool {
    for _ in 0..20 {
        match api(apis, rng).post(path, &body).await {
            Ok((status, _)) if status < 500 => return status < 300,
            _ => record.request_errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Waits until the chat is idle (`waiting` or `error`, empty queue); false after 5 minutes.
async fn wait_idle(apis: &[ApiClient], rng: &mut StdRng, chat_id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Ok((200, chat)) = api(apis, rng).get(&format!("/chats/{chat_id}")).await else {
            continue;
        };
        let status = chat["chat"]["status"].as_str().unwrap_or_default();
        if status != "waiting" && status != "error" {
            continue;
        }
        if let Ok((200, page)) = api(apis, rng)
            .get(&format!("/chats/{chat_id}/messages?limit=1"))
            .await
        {
            if page["queued"].as_array().is_none_or(Vec::is_empty) {
                return true;
            }
        }
    }
    false
}

#[derive(Default)]
struct StreamState {
    checker: Arc<Mutex<StreamChecker>>,
    reconnects: u64,
    /// What this client received, one line per event (kept for the report of a violation).
    transcript: Vec<String>,
}

/// Reads the chat's stream for as long as the chat session lasts, resuming on any replica
/// with the last event id whenever a connection ends.
async fn read_stream(apis: Vec<ApiClient>, chat_id: String, state: Arc<Mutex<StreamState>>) {
    let checker = state.lock().await.checker.clone();
    // The stream opens after the chat was created, possibly after its first turn ended: a
    // client joining late is sent durable messages without their previews.
    checker.lock().await.note_reconnect();
    let mut last_id: Option<String> = Some("0-0-0".to_owned());
    let mut attempt = 0usize;
    loop {
        let api = &apis[attempt % apis.len()];
        attempt += 1;
        match api.stream(&chat_id, last_id.as_deref()).await {
            Ok(mut events) => {
                while let Some(Ok(event)) = events.next().await {
                    if !event.id.is_empty() {
                        last_id = Some(event.id.clone());
                    }
                    checker.lock().await.observe(&event.event, &event.data);
                    let line = match event.event.as_str() {
                        "message" => format!(
                            "message {} {} {:?}",
                            event.id,
                            event.data["role"],
                            chatd_client::content_text(&event.data["content"])
                        ),
                        "message_part" => format!(
                            "part {} {:?}",
                            event.id,
                            event.data["part"]["text"].as_str().unwrap_or("")
                        ),
                        other => format!("{other} {} {}", event.id, event.data),
                    };
                    state.lock().await.transcript.push(line);
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
        let mut locked = state.lock().await;
        locked.reconnects += 1;
        locked.transcript.push("-- reconnect".to_owned());
        checker.lock().await.note_reconnect();
        drop(locked);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
