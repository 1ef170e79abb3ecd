//! One chat of the run: create it, subscribe, then send its turns one after another and time
//! what the subscribers see of each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;

use super::recorder::{Recorder, TurnSample};
use super::subscriber::{Observation, ObservationKind, Subscriber};
use crate::{error_message, ApiClient};

/// Everything one chat task needs.
pub struct ChatPlan {
    pub index: usize,
    /// Creates the chat and receives its messages.
    pub sender: ApiClient,
    /// One per subscriber, on the other replica(s) so tokens cross replicas.
    pub readers: Vec<ApiClient>,
    pub turns: usize,
    pub tokens: u64,
    pub tokens_per_second: f64,
    /// Bounds each turn (and the chat creation and stream opening before the first).
    pub turn_timeout: Duration,
    /// `--history`: where to write, and how many earlier messages.
    pub history: Option<(Arc<tokio_postgres::Client>, u32)>,
    /// `--warmup-turns`: turns run before the measured ones, shared by every chat.
    pub warmup: Option<Arc<Warmup>>,
}

/// Turns every chat runs before its measured ones (`--warmup-turns`): recorded apart (their
/// errors count, nothing else does), then every chat waits for all the others, `hook`
/// (`--after-warmup`) runs once, and the measured turns start.
pub struct Warmup {
    pub turns: usize,
    pub recorder: Arc<Recorder>,
    barrier: tokio::sync::Barrier,
    hook: Option<String>,
}

impl Warmup {
    /// For `chats` chats, all in flight at once.
    pub fn new(turns: usize, chats: usize, hook: Option<String>) -> Warmup {
        Warmup {
            turns,
            recorder: Arc::new(Recorder::new(0)),
            barrier: tokio::sync::Barrier::new(chats),
            hook,
        }
    }

    /// Waits until every chat finished its warm-up (or failed); the last to arrive runs the
    /// hook. A failed hook is an error of the run (`after_warmup`).
    async fn arrive(&self, recorder: &Recorder) {
        if !self.barrier.wait().await.is_leader() {
            return;
        }
        self.recorder.move_errors_to(recorder);
        let Some(hook) = &self.hook else { return };
        eprintln!("scaletest: every chat is warm; running {hook}");
        match tokio::process::Command::new("sh")
            .args(["-c", hook])
            .status()
            .await
        {
            Ok(status) if status.success() => {}
            Ok(status) => recorder.error("after_warmup", &format!("{hook}: {status}")),
            Err(error) => recorder.error("after_warmup", &format!("{hook}: {error}")),
        }
    }
}

/// Why a chat stopped early; `kind` is the error counter it lands in.
#[derive(Debug)]
struct Failure {
    kind: String,
    detail: String,
}

impl Failure {
    fn new(kind: impl Into<String>, detail: impl Into<String>) -> Failure {
        Failure {
            kind: kind.into(),
            detail: detail.into(),
        }
    }
}

/// What one subscriber has seen of the current turn.
#[derive(Debug, Default, Clone, Copy)]
struct SubscriberTurn {
    running_at: Option<Instant>,
    first_part_at: Option<Instant>,
    assistant_at: Option<Instant>,
    /// `status: waiting` arrived after `running` but before the assistant message.
    waiting_early: bool,
    /// `status: waiting` arrived after the turn's assistant message.
    done: bool,
}

/// Runs the chat to its end or first failure; failures are counted, never returned.
pub async fn drive_chat(plan: ChatPlan, recorder: Arc<Recorder>) {
    let index = plan.index;
    let warmup = plan.warmup.clone();
    let mut warm = false;
    if let Err(failure) = drive(plan, &recorder, &mut warm).await {
        recorder.error(&failure.kind, &format!("chat #{index}: {}", failure.detail));
    }
    // A chat that failed before the end of its warm-up must not hold the others back.
    if let (Some(warmup), false) = (warmup, warm) {
        warmup.arrive(&recorder).await;
    }
}

async fn drive(plan: ChatPlan, recorder: &Arc<Recorder>, warm: &mut bool) -> Result<(), Failure> {
    let chat_id = create_chat(&plan, recorder).await?;
    let prefilled = match &plan.history {
        Some((client, count)) => prefill(client, &chat_id, *count).await?,
        None => 0,
    };
    let (observations_tx, mut observations) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let mut subscribers = Vec::with_capacity(plan.readers.len());
    let mut ready = Vec::with_capacity(plan.readers.len());
    for (index, client) in plan.readers.iter().enumerate() {
        let (ready_tx, ready_rx) = oneshot::channel();
        let subscriber = Subscriber {
            index,
            client: client.clone(),
            chat_id: chat_id.clone(),
            observations: observations_tx.clone(),
            ready: ready_tx,
            stop: stop.clone(),
        };
        let recorder = Arc::clone(recorder);
        subscribers.push(tokio::spawn(async move { subscriber.run(&recorder).await }));
        ready.push(ready_rx);
    }
    drop(observations_tx);
    let result = async {
        // Subscribe, then send: every stream is open before the first message.
        let deadline = Instant::now() + plan.turn_timeout;
        for ready_rx in ready {
            match timeout_at(deadline.into(), ready_rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => return Err(Failure::new("stream_open", error)),
                Ok(Err(_)) => return Err(Failure::new("stream_open", "the subscriber stopped")),
                Err(_) => return Err(Failure::new("timeout", "open the streams")),
            }
        }
        let mut last_assistant_id = prefilled;
        let mut first_measured = 1;
        if let Some(warmup) = &plan.warmup {
            let result = run_turns(
                &plan,
                &chat_id,
                1..warmup.turns + 1,
                &mut observations,
                &mut last_assistant_id,
                &warmup.recorder,
            )
            .await;
            *warm = true;
            warmup.arrive(recorder).await;
            result?;
            first_measured += warmup.turns;
        }
        run_turns(
            &plan,
            &chat_id,
            first_measured..first_measured + plan.turns,
            &mut observations,
            &mut last_assistant_id,
            recorder,
        )
        .await?;
        Ok(())
    }
    .await;
    stop.cancel();
    for subscriber in subscribers {
        // Subscribers stop promptly on cancellation and flush their relay samples.
        let _ = subscriber.await;
    }
    result
}

/// The answer of a POST and when its last attempt was sent.
type Paced = (anyhow::Result<(u16, serde_json::Value)>, Instant);

/// POSTs until the answer is not a 429 `rate_limited`, waiting `Retry-After` in between as a
/// well-behaved client does (each wait counted as `throttled`), within `deadline`.
async fn post_paced(
    sender: &ApiClient,
    path: &str,
    body: &serde_json::Value,
    deadline: Instant,
    recorder: &Recorder,
) -> Result<Paced, tokio::time::error::Elapsed> {
    loop {
        let sent_at = Instant::now();
        let answer = timeout_at(deadline.into(), sender.post(path, body)).await?;
        match &answer {
            Ok((429, body)) if body["error"]["code"] == "rate_limited" => {
                recorder.throttled();
                let wait = body["error"]["details"]["retry_after_s"]
                    .as_u64()
                    .unwrap_or(1)
                    .max(1);
                tokio::time::timeout_at(
                    deadline.into(),
                    tokio::time::sleep(Duration::from_secs(wait)),
                )
                .await?;
            }
            _ => return Ok((answer, sent_at)),
        }
    }
}

async fn create_chat(plan: &ChatPlan, recorder: &Recorder) -> Result<String, Failure> {
    let deadline = Instant::now() + plan.turn_timeout;
    let (status, body) =
        match post_paced(&plan.sender, "/chats", &json!({}), deadline, recorder).await {
            Err(_) => return Err(Failure::new("timeout", "create the chat")),
            Ok((Err(error), _)) => return Err(Failure::new("request", format!("{error:#}"))),
            Ok((Ok(answer), _)) => answer,
        };
    if status != 201 {
        return Err(Failure::new(
            format!("http_{status}"),
            format!("create the chat: {}", error_message(status, &body)),
        ));
    }
    body["chat"]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            Failure::new(
                "bad_response",
                format!("create the chat: no chat id in {body}"),
            )
        })
}

/// Writes `count` earlier messages into the chat, in groups of four as an agent's history
/// holds them — a question, a tool call, its result, an answer — about 20 words each, and
/// points the chat's `last_reply_id` at the newest answer as chatd's own commits do; returns
/// the newest row's id.
async fn prefill(
    client: &tokio_postgres::Client,
    chat_id: &str,
    count: u32,
) -> Result<i64, Failure> {
    let chat_id: uuid::Uuid = chat_id
        .parse()
        .map_err(|_| Failure::new("bad_response", format!("chat id {chat_id}")))?;
    let words = "an earlier message of about twenty words as long chats hold them: leases, \
                 fencing tokens, heartbeats and the recovery sweep";
    let row = client
        .query_one(
            "WITH rows AS ( \
             INSERT INTO chat_messages (chat_id, role, content, attempt) \
             SELECT $1, (ARRAY['user', 'assistant', 'tool', 'assistant'])[(k % 4 + 1)::int], \
               CASE k % 4 \
                 WHEN 0 THEN jsonb_build_array(jsonb_build_object('type', 'text', 'text', $3::text)) \
                 WHEN 1 THEN jsonb_build_array(jsonb_build_object('type', 'tool-call', \
                   'tool_call_id', 'call_h' || k, 'tool_name', 'lookup', \
                   'args', jsonb_build_object('q', 'fencing'))) \
                 WHEN 2 THEN jsonb_build_array(jsonb_build_object('type', 'tool-result', \
                   'tool_call_id', 'call_h' || (k - 1), 'tool_name', 'lookup', \
                   'result', $3::text, 'is_error', false)) \
                 ELSE jsonb_build_array(jsonb_build_object('type', 'text', 'text', $3::text)) \
               END, CASE WHEN k % 4 = 0 THEN NULL ELSE 0 END \
             FROM generate_series(0, $2 - 1) k ORDER BY k RETURNING id, role), \
             reply AS ( \
             UPDATE chats SET last_reply_id = (SELECT max(id) FROM rows WHERE role = 'assistant') \
             WHERE id = $1) \
             SELECT coalesce(max(id), 0) FROM rows",
            &[&chat_id, &i32::try_from(count).unwrap_or(i32::MAX), &words],
        )
        .await
        .map_err(|error| Failure::new("history", format!("write the history: {error}")))?;
    Ok(row.get(0))
}

/// Runs `turns` (their numbers) one after another, recorded in `recorder`; stops at the first
/// failure.
async fn run_turns(
    plan: &ChatPlan,
    chat_id: &str,
    turns: std::ops::Range<usize>,
    observations: &mut mpsc::UnboundedReceiver<Observation>,
    last_assistant_id: &mut i64,
    recorder: &Recorder,
) -> Result<(), Failure> {
    for turn in turns {
        run_turn(
            plan,
            chat_id,
            turn,
            observations,
            last_assistant_id,
            recorder,
        )
        .await?;
    }
    Ok(())
}

/// Sends one message and waits until every subscriber saw its assistant message followed by
/// `status: waiting`.
async fn run_turn(
    plan: &ChatPlan,
    chat_id: &str,
    turn: usize,
    observations: &mut mpsc::UnboundedReceiver<Observation>,
    last_assistant_id: &mut i64,
    recorder: &Recorder,
) -> Result<(), Failure> {
    // Whatever arrived since the previous turn ended (titles, queue events) is not this turn's.
    while observations.try_recv().is_ok() {}
    let content = format!(
        "scaletest turn {turn}\n@mock {}",
        json!({"tokens": plan.tokens, "tokens_per_second": plan.tokens_per_second})
    );
    let deadline = Instant::now() + plan.turn_timeout;
    let path = format!("/chats/{chat_id}/messages");
    let paced = post_paced(
        &plan.sender,
        &path,
        &json!({"content": content}),
        deadline,
        recorder,
    )
    .await;
    // Latencies count from the send that was answered (not from waits the rate limit asked
    // for).
    let posted_at = paced
        .as_ref()
        .map_or_else(|_| Instant::now(), |(_, at)| *at);
    recorder.post_sent(posted_at);
    let answer = paced.map(|(answer, _)| answer);
    // The turn's reply is the first assistant message newer than this.
    let reply_after_id = match answer {
        Err(_) => {
            return Err(Failure::new(
                "timeout",
                format!("turn {turn}: send the message"),
            ))
        }
        Ok(Err(error)) => return Err(Failure::new("request", format!("turn {turn}: {error:#}"))),
        Ok(Ok((201, body))) => body["message"]["id"].as_i64().ok_or_else(|| {
            Failure::new(
                "bad_response",
                format!("turn {turn}: no message id in {body}"),
            )
        })?,
        Ok(Ok((202, _))) => {
            // The chat was still busy although it had reported `waiting`: counted, and the
            // queued message's reply is awaited.
            recorder.error(
                "http_202",
                &format!("chat {chat_id} turn {turn}: message queued"),
            );
            *last_assistant_id
        }
        Ok(Ok((status, body))) => {
            return Err(Failure::new(
                format!("http_{status}"),
                format!("turn {turn}: {}", error_message(status, &body)),
            ))
        }
    };
    let mut seen = vec![SubscriberTurn::default(); plan.readers.len()];
    while !seen.iter().all(|subscriber| subscriber.done) {
        let observation = match timeout_at(deadline.into(), observations.recv()).await {
            Err(_) => {
                return Err(Failure::new(
                    "timeout",
                    format!(
                        "chat {chat_id} turn {turn}: no reply within {:?}",
                        plan.turn_timeout
                    ),
                ))
            }
            Ok(None) => return Err(Failure::new("stream_closed", "every subscriber stopped")),
            Ok(Some(observation)) => observation,
        };
        let Some(subscriber) = seen.get_mut(observation.subscriber) else {
            continue;
        };
        let at = observation.received_at;
        match observation.kind {
            ObservationKind::Status { status, last_error } => match status.as_str() {
                "running" => {
                    subscriber.running_at.get_or_insert(at);
                }
                "waiting" if subscriber.assistant_at.is_some() => subscriber.done = true,
                "waiting" if subscriber.running_at.is_some() => subscriber.waiting_early = true,
                "error" => {
                    return Err(Failure::new(
                        "status_error",
                        format!(
                            "chat {chat_id} turn {turn}: {}",
                            last_error.unwrap_or_else(|| "no details".into())
                        ),
                    ))
                }
                "requires_action" => {
                    return Err(Failure::new(
                        "status_requires_action",
                        format!("chat {chat_id} turn {turn}"),
                    ))
                }
                _ => {}
            },
            ObservationKind::Part => {
                subscriber.first_part_at.get_or_insert(at);
            }
            ObservationKind::Message { role, id } if role == "assistant" && id > reply_after_id => {
                subscriber.assistant_at.get_or_insert(at);
                *last_assistant_id = (*last_assistant_id).max(id);
                if subscriber.waiting_early && !subscriber.done {
                    // Out of order for a client, but the turn did finish: count it and go on
                    // rather than wait for a `waiting` that already came.
                    recorder.error(
                        "waiting_before_message",
                        &format!(
                            "chat {chat_id} turn {turn}: subscriber {}",
                            observation.subscriber
                        ),
                    );
                    subscriber.done = true;
                }
            }
            ObservationKind::Message { .. } => {}
        }
    }
    let completed_at = Instant::now();
    let since_post = |at: Instant| at.saturating_duration_since(posted_at).as_secs_f64() * 1000.0;
    let samples: Vec<TurnSample> = seen
        .iter()
        .map(|subscriber| TurnSample {
            acquire_ms: subscriber.running_at.map(since_post),
            ttft_ms: subscriber.first_part_at.map(since_post),
            turn_ms: subscriber.assistant_at.map(since_post).unwrap_or_default(),
        })
        .collect();
    recorder.turn_completed(completed_at, &samples);
    Ok(())
}
