//! The worker process: acquire loop, heartbeat, recovery sweep, control channel, flusher and
//! graceful shutdown, all owned by `run`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dashmap::DashMap;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use chatd_shared::db::pool::{build_pool, Pooler};
use chatd_shared::domain::ChatStatus;
use chatd_shared::pubsub::{
    worker_channel, ControlKind, ControlNotice, Listener, ListenerEvent, WAKE_CHANNEL,
};

use crate::config::WorkerConfig;
use crate::flusher::StreamFlusher;
use crate::liveness::{self, Liveness, Suspects};
use crate::recovery;
use crate::store;
use crate::turn::control::{StopReason, TurnControl};
use crate::turn::{run_turn, TurnDeps};

/// A turn this worker is running.
struct RunningTurn {
    attempt: i32,
    /// `chats.version` when claimed: control notices older than this are late and ignored.
    claimed_version: i64,
    control: Arc<TurnControl>,
}

struct Shared {
    config: Arc<WorkerConfig>,
    /// Running turns by chat: read by every control notice and heartbeat, written by every
    /// claim and turn end, from different tasks — a sharded map.
    turns: DashMap<Uuid, RunningTurn>,
    wake: Notify,
    /// This worker's liveness lock; it claims nothing while the lock is not held.
    liveness: Liveness,
    /// Set when a running turn ends, so the acquire loop can use the freed capacity.
    capacity_freed: Notify,
}

/// Runs the worker until `shutdown` is cancelled, then drains: stop acquiring, let running
/// turns finish for `shutdown_grace`, release the rest to pending.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let config = Arc::new(config);
    let pooler = config.database_pooler;
    chatd_shared::db::pool::check_at_startup(&config.database_url, "chatd-worker", pooler).await?;
    if let Some(url) = &config.listen_database_url {
        chatd_shared::db::pool::check_at_startup(url, "chatd-worker-listener", Pooler::None)
            .await?;
    }
    chatd_shared::db::migrate::require_schema(
        &config.database_url,
        pooler,
        config.wait_for_migrations,
    )
    .await?;
    let pool = build_pool(
        &config.database_url,
        "chatd-worker",
        config.pool_size,
        pooler,
        config.session_database_url(),
    )?;
    // The batched commits' own connection (turns wait for it without holding one of `pool`).
    let committer = crate::store::commit_batch::CommitBatcher::spawn(build_pool(
        &config.database_url,
        "chatd-worker-committer",
        1,
        pooler,
        config.session_database_url(),
    )?);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // Reset by every chunk of the body (keep-alive comments and pings included): a provider
        // that goes silent mid-stream fails the read with a retryable timeout (I10).
        .read_timeout(config.stream_idle_timeout)
        .pool_max_idle_per_host(1024)
        .build()
        .context("build the http client")?;
    let builtin_tools =
        crate::tool::builtin_tools(&config.builtin_tools).map_err(anyhow::Error::msg)?;
    let mcp = Arc::new(
        crate::mcp::McpHub::new(
            pool.clone(),
            config.encryption_key,
            config.mcp_timeout,
            http.clone(),
        )
        .context("build the MCP client")?,
    );
    let background = CancellationToken::new();
    let flusher = StreamFlusher::new(pool.clone(), config.worker_id);
    let liveness = Liveness::spawn(
        config.session_database_url(),
        config.worker_id,
        background.clone(),
    )?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        turns: DashMap::new(),
        wake: Notify::new(),
        liveness,
        capacity_freed: Notify::new(),
    });
    let (sink, events) = mpsc::channel(4096);
    // Held for the worker's lifetime: dropping the last handle stops the listener task.
    let _listener = Listener::spawn(
        config.session_database_url(),
        "chatd-worker-listener",
        vec![
            WAKE_CHANNEL.to_string(),
            worker_channel(config.worker_id),
            chatd_shared::pubsub::CONFIG_CHANNEL.to_string(),
        ],
        sink,
        background.clone(),
    )?;
    let tracker = TaskTracker::new();
    tracker.spawn(
        flusher
            .clone()
            .run(config.stream_flush_interval, background.clone()),
    );
    let models: Arc<crate::turn::context::ModelCache> = Arc::default();
    let spend: Arc<chatd_shared::db::limits::SpendCache> = Arc::default();
    tracker.spawn(dispatch_notifications(
        shared.clone(),
        models.clone(),
        spend.clone(),
        mcp.clone(),
        events,
    ));
    tracker.spawn(heartbeat_loop(
        shared.clone(),
        pool.clone(),
        background.clone(),
    ));
    tracker.spawn(sweep_loop(shared.clone(), pool.clone(), background.clone()));
    tracker.spawn(liveness_loop(
        shared.clone(),
        pool.clone(),
        flusher.clone(),
        background.clone(),
    ));
    let turns = TaskTracker::new();
    let side_tasks = TaskTracker::new();
    let side_stop = CancellationToken::new();
    let deps = TurnDeps {
        config: config.clone(),
        pool: pool.clone(),
        committer,
        http,
        flusher,
        models,
        prompts: Arc::new(crate::turn::prompt_cache::PromptCache::new(
            config.prompt_cache_bytes,
        )),
        spend,
        builtin_tools: Arc::new(builtin_tools),
        mcp,
        side_tasks: side_tasks.clone(),
        side_stop: side_stop.clone(),
    };
    tracing::info!(worker_id = %config.worker_id, "worker started");
    acquire_loop(shared.clone(), pool.clone(), deps, &turns, shutdown.clone()).await;

    // Graceful shutdown: no more acquiring; running turns get the grace period.
    turns.close();
    let running = shared.turns.len();
    if running > 0 {
        tracing::info!(running, grace = ?config.shutdown_grace, "waiting for running turns");
    }
    if tokio::time::timeout(config.shutdown_grace, turns.wait())
        .await
        .is_err()
    {
        let controls: Vec<Arc<TurnControl>> = shared
            .turns
            .iter()
            .map(|turn| turn.control.clone())
            .collect();
        tracing::info!(count = controls.len(), "grace period over; releasing turns");
        for control in controls {
            control.stop(StopReason::Shutdown);
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), turns.wait()).await;
    }
    // Titles and other side tasks end before the flusher, which publishes their hints.
    side_stop.cancel();
    side_tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), side_tasks.wait()).await;
    background.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    tracing::info!("worker stopped");
    Ok(())
}

async fn acquire_loop(
    shared: Arc<Shared>,
    pool: deadpool_postgres::Pool,
    deps: TurnDeps,
    turns: &TaskTracker,
    shutdown: CancellationToken,
) {
    let config = shared.config.clone();
    let mut ticker = tokio::time::interval(config.acquire_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When chats left to their last worker (affinity) become claimable here.
    let mut deferred: Option<tokio::time::Instant> = None;
    loop {
        let free = config
            .max_concurrent_turns
            .saturating_sub(shared.turns.len());
        let mut claimed_full_batch = false;
        let live = shared.liveness.held();
        if free > 0 && live {
            let limit = free.min(config.acquire_batch) as i64;
            match claim(&shared, &pool, &deps, turns, limit).await {
                Ok((count, wait)) => {
                    claimed_full_batch = count as i64 == limit;
                    // A millisecond past the grace, so the chat is claimable by then.
                    deferred = wait
                        .map(|wait| tokio::time::Instant::now() + wait + Duration::from_millis(1));
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "claim pending chats");
                }
            }
        }
        if claimed_full_batch {
            continue; // more may be waiting
        }
        let until_deferred =
            deferred.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(until_deferred), if deferred.is_some() => {
                deferred = None;
            }
            _ = shared.wake.notified() => {}
            _ = shared.capacity_freed.notified(), if free == 0 => {}
            // Until the liveness lock is held nothing is claimed; look again soon (a wake that
            // came meanwhile must not wait for the poll).
            _ = tokio::time::sleep(Duration::from_millis(50)), if !live => {}
        }
    }
}

/// One acquire statement; spawns a task per claimed chat. Returns how many were claimed and,
/// when chats were left to their last worker, when to look again.
async fn claim(
    shared: &Arc<Shared>,
    pool: &deadpool_postgres::Pool,
    deps: &TurnDeps,
    turns: &TaskTracker,
    limit: i64,
) -> anyhow::Result<(usize, Option<Duration>)> {
    let client = pool.get().await.context("get a connection")?;
    let store::Claimed { claims, deferred } = store::acquire(
        &client,
        shared.config.worker_id,
        limit,
        shared.config.max_running_chats_per_user,
        shared.config.affinity_grace,
    )
    .await
    .context("claim pending chats")?;
    if claims.is_empty() {
        return Ok((0, deferred));
    }
    let mut notices = Vec::with_capacity(claims.len() * 2);
    for claim in &claims {
        metrics::histogram!("chatd_acquire_latency_seconds").record(claim.pending_seconds);
        notices.extend(
            chatd_shared::pubsub::ChatChange::status_only(
                claim.chat_id,
                claim.owner_id,
                claim.version,
                ChatStatus::Running,
                claim.attempt,
            )
            .notices(),
        );
    }
    drop(client);
    deps.flusher.publish_soon(notices);
    for claim in claims.iter().cloned() {
        let control = Arc::new(TurnControl::default());
        let replaced = shared.turns.insert(
            claim.chat_id,
            RunningTurn {
                attempt: claim.attempt,
                claimed_version: claim.version,
                control: control.clone(),
            },
        );
        if let Some(old) = replaced {
            // This worker lost the chat (its lease was recovered) and claimed it again: the
            // old turn must stop now, not run on (and spend) until its next fenced write.
            tracing::warn!(chat_id = %claim.chat_id, old_attempt = old.attempt,
                "re-claimed a chat whose old turn still ran; stopping the old turn");
            old.control.stop(StopReason::LeaseLost);
        }
        let shared = shared.clone();
        let deps = deps.clone();
        turns.spawn(async move {
            let chat_id = claim.chat_id;
            let attempt = claim.attempt;
            // A panic in a turn must not take the worker down; the lease then expires.
            let outcome = tokio::spawn(run_turn(deps, claim, control)).await;
            if let Err(error) = outcome {
                tracing::error!(%chat_id, error = %error, "turn task panicked");
            }
            // Unless this worker re-claimed the chat meanwhile (a newer attempt's entry).
            shared
                .turns
                .remove_if(&chat_id, |_, turn| turn.attempt <= attempt);
            shared.capacity_freed.notify_one();
        });
    }
    Ok((claims.len(), deferred))
}

async fn dispatch_notifications(
    shared: Arc<Shared>,
    models: Arc<crate::turn::context::ModelCache>,
    spend: Arc<chatd_shared::db::limits::SpendCache>,
    mcp: Arc<crate::mcp::McpHub>,
    mut events: mpsc::Receiver<ListenerEvent>,
) {
    let control_channel = worker_channel(shared.config.worker_id);
    while let Some(event) = events.recv().await {
        match event {
            ListenerEvent::Notification { channel, payload } => {
                if channel == WAKE_CHANNEL {
                    shared.wake.notify_one();
                } else if channel == chatd_shared::pubsub::CONFIG_CHANNEL {
                    // A provider, model, prompt or limit changed: read afresh (any payload
                    // will do).
                    models.clear();
                    spend.clear();
                    mcp.clear();
                } else if channel == control_channel {
                    match serde_json::from_str::<ControlNotice>(&payload) {
                        Ok(notice) => control(&shared, notice),
                        Err(error) => tracing::warn!(error = %error, "unreadable control notice"),
                    }
                }
            }
            // Notifications may have been missed: poll now (heartbeat repairs control), and
            // forget models whose change notice may be lost.
            ListenerEvent::Reconnected => {
                models.clear();
                spend.clear();
                mcp.clear();
                shared.wake.notify_one();
            }
            ListenerEvent::Disconnected => {}
        }
    }
}

fn control(shared: &Shared, notice: ControlNotice) {
    let Some(turn) = shared.turns.get(&notice.chat_id) else {
        return; // late or for a turn that already ended: nothing to do
    };
    if notice.version <= turn.claimed_version {
        // Published before this turn was claimed (e.g. for the previous turn): ignore.
        tracing::info!(chat_id = %notice.chat_id, version = notice.version, "ignored a late control notice");
        return;
    }
    match notice.kind {
        ControlKind::Interrupt => turn.control.stop(StopReason::Interrupt),
        ControlKind::Cancel => turn.control.stop(StopReason::LeaseLost),
    }
}

/// One heartbeat statement, given up at `deadline`. A statement given up on is still running
/// on its connection (waiting for a row lock, or on a hung network), and whoever got that
/// connection from the pool next would wait behind it: the connection leaves the pool instead
/// (closed; the server ends the statement's backend when it next writes to it).
async fn heartbeat_by(
    pool: &deadpool_postgres::Pool,
    worker_id: Uuid,
    chat_ids: &[Uuid],
    deadline: tokio::time::Instant,
) -> anyhow::Result<Vec<store::LeaseState>> {
    let timed_out = || anyhow::anyhow!("the heartbeat timed out");
    let client = tokio::time::timeout_at(deadline, pool.get())
        .await
        .map_err(|_| timed_out())??;
    match tokio::time::timeout_at(deadline, store::heartbeat(&client, worker_id, chat_ids)).await {
        Ok(leases) => Ok(leases?),
        Err(_) => {
            drop(deadpool_postgres::Client::take(client));
            Err(timed_out())
        }
    }
}

/// One batched heartbeat per interval. Turns missing from the result (or whose attempt
/// changed) lost their lease; `interrupting` ones are interrupted (fallback for a lost
/// control notification).
async fn heartbeat_loop(
    shared: Arc<Shared>,
    pool: deadpool_postgres::Pool,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(shared.config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Process clock, used only to give up early: a worker that could not renew its leases for
    // `stale_after` must assume others took them (a partition, a hung connection) and stop
    // its turns rather than spend on them; fencing would refuse their writes anyway.
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let owned: Vec<(Uuid, i32)> = shared
            .turns
            .iter()
            .map(|turn| (*turn.key(), turn.attempt))
            .collect();
        if owned.is_empty() {
            last_renewed = tokio::time::Instant::now();
            continue;
        }
        let chat_ids: Vec<Uuid> = owned.iter().map(|(chat_id, _)| *chat_id).collect();
        // Bounded: a connection that hangs (a black-holed network) or a row another
        // transaction holds must not stop the loop.
        let deadline = tokio::time::Instant::now()
            + shared.config.heartbeat_interval.max(Duration::from_secs(1));
        let result = heartbeat_by(&pool, shared.config.worker_id, &chat_ids, deadline).await;
        let leases = match result {
            Ok(leases) => {
                last_renewed = tokio::time::Instant::now();
                leases
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "heartbeat failed");
                if last_renewed.elapsed() > shared.config.stale_after {
                    tracing::warn!(turns = owned.len(),
                        "leases not renewed for stale_after; stopping the turns (others may own them now)");
                    for turn in shared.turns.iter() {
                        turn.control.stop(StopReason::LeaseLost);
                    }
                }
                continue;
            }
        };
        let by_chat: HashMap<Uuid, &store::LeaseState> =
            leases.iter().map(|lease| (lease.chat_id, lease)).collect();
        for (chat_id, _) in owned {
            let Some(turn) = shared.turns.get(&chat_id) else {
                continue;
            };
            match by_chat.get(&chat_id) {
                // Renewed attempts (step restarts) are newer than the claim's: still ours.
                Some(lease) if lease.attempt >= turn.attempt => {
                    if lease.status == ChatStatus::Interrupting {
                        turn.control.stop(StopReason::Interrupt);
                    }
                }
                _ => {
                    tracing::warn!(%chat_id, "lease lost; stopping the turn");
                    turn.control.stop(StopReason::LeaseLost);
                }
            }
        }
    }
}

/// Releases the chats of workers whose PostgreSQL session ended (see `liveness`).
async fn liveness_loop(
    shared: Arc<Shared>,
    pool: deadpool_postgres::Pool,
    flusher: Arc<StreamFlusher>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(shared.config.liveness_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut suspects = Suspects::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = async {
            let client = pool.get().await?;
            let free = liveness::free_holders(&client, shared.config.worker_id).await?;
            let dead = suspects.observe(&free);
            if dead.is_empty() {
                return anyhow::Ok(0);
            }
            let notices = liveness::release_dead(&client, &dead).await?;
            // Two hints per chat, plus a wake when it went back to pending.
            let released = notices.len();
            flusher.publish_soon(notices);
            anyhow::Ok(released)
        }
        .await;
        match result {
            Ok(released) if released > 0 => shared.wake.notify_one(),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "liveness check failed"),
        }
    }
}

async fn sweep_loop(
    shared: Arc<Shared>,
    pool: deadpool_postgres::Pool,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(shared.config.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        round += 1;
        let result = async {
            let mut client = pool.get().await?;
            let recovered = recovery::sweep(
                &mut client,
                shared.config.stale_after,
                round.is_multiple_of(6),
            )
            .await?;
            let purged = crate::retention::purge_ephemeral(&client).await?;
            chatd_shared::pubsub::publish(&client, &purged).await?;
            let days = shared.config.archive_inactive_after_days;
            if days > 0 {
                let notices = crate::retention::archive_inactive(&mut client, days).await?;
                chatd_shared::pubsub::publish(&client, &notices).await?;
            }
            anyhow::Ok(recovered)
        }
        .await;
        match result {
            Ok(recovered) if recovered > 0 => shared.wake.notify_one(),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = format!("{error:#}"), "recovery sweep failed"),
        }
    }
}
