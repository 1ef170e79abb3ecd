//! The one dedicated LISTEN connection of a process.
//!
//! tokio-postgres delivers notifications only through `Connection::poll_message`; spawning the
//! connection future as-is silently drops them, so a driver task polls it and forwards every
//! notification. A ping every `PING_INTERVAL` (plus TCP keepalive) notices a half-open socket
//! in seconds. On every (re)connect the listener LISTENs all channels and then emits
//! `ListenerEvent::Reconnected`, after which consumers re-read state from the database before
//! trusting live notifications again (LISTEN → re-read → live).
//!
//! **Invariant:** no transaction is ever opened on this connection (an open transaction on a
//! listening session stops the notify queue from draining).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use crate::db::pool::connection_config;

const PING_INTERVAL: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the listener tells its consumer.
#[derive(Debug, Clone)]
pub enum ListenerEvent {
    Notification {
        channel: String,
        payload: String,
    },
    /// The connection was (re)established and every channel is LISTENed again. Notifications
    /// sent while disconnected are lost: re-read state from the database now.
    Reconnected,
    /// The connection was lost; a reconnect is under way.
    Disconnected,
}

enum Command {
    Listen(String, oneshot::Sender<()>),
    Unlisten(String),
}

/// Handle to the listener task. Cheap to clone.
#[derive(Clone)]
pub struct Listener {
    commands: mpsc::UnboundedSender<Command>,
    connected: Arc<AtomicBool>,
}

impl Listener {
    /// Starts the listener task. It runs until `shutdown` is cancelled or the last handle is
    /// dropped, so keep a handle for as long as notifications are wanted.
    /// `initial_channels` are LISTENed for the whole lifetime;
    /// events go to `sink` (bounded: a slow consumer slows the listener, never loses events
    /// silently — PostgreSQL buffers them meanwhile).
    pub fn spawn(
        database_url: &str,
        application_name: &str,
        initial_channels: Vec<String>,
        sink: mpsc::Sender<ListenerEvent>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Listener> {
        let config = connection_config(database_url, application_name)?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let connected = Arc::new(AtomicBool::new(false));
        let task = ListenerTask {
            config,
            channels: initial_channels.into_iter().collect(),
            sink,
            connected: connected.clone(),
        };
        tokio::spawn(task.run(command_rx, shutdown));
        Ok(Listener {
            commands,
            connected,
        })
    }

    /// LISTENs `channel`; returns once the LISTEN has been executed (or, while disconnected,
    /// once it is recorded — the next connect LISTENs it and emits `Reconnected`, which makes
    /// consumers re-read, so nothing is missed either way).
    pub async fn listen(&self, channel: String) {
        let (ack, acked) = oneshot::channel();
        if self.commands.send(Command::Listen(channel, ack)).is_ok() {
            let _ = acked.await;
        }
    }

    /// Queues a LISTEN of `channel` now and returns a future that completes once it ran (see
    /// `listen`). Queuing synchronously lets callers order it against `unlisten` calls.
    pub fn listen_queued(&self, channel: String) -> impl std::future::Future<Output = ()> {
        let (ack, acked) = oneshot::channel();
        let queued = self.commands.send(Command::Listen(channel, ack)).is_ok();
        async move {
            if queued {
                let _ = acked.await;
            }
        }
    }

    /// UNLISTENs `channel` (fire and forget).
    pub fn unlisten(&self, channel: String) {
        let _ = self.commands.send(Command::Unlisten(channel));
    }

    /// Whether the connection is up (readiness).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

struct ListenerTask {
    config: crate::db::pool::PgConnect,
    channels: HashSet<String>,
    sink: mpsc::Sender<ListenerEvent>,
    connected: Arc<AtomicBool>,
}

impl ListenerTask {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            match self.session(&mut commands, &shutdown).await {
                Ok(()) => return, // shutdown or every handle dropped
                Err(error) => {
                    self.connected.store(false, Ordering::Relaxed);
                    if first {
                        tracing::warn!(error = format!("{error:#}"), "listener connection failed");
                    } else {
                        tracing::warn!(error = format!("{error:#}"), "listener connection lost");
                    }
                    metrics::counter!("chatd_listener_reconnects_total").increment(1);
                    let _ = self.sink.send(ListenerEvent::Disconnected).await;
                }
            }
            first = false;
            // While waiting, keep accepting commands so `listen` callers are not blocked.
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = shutdown.cancelled() => return,
                    command = commands.recv() => match command {
                        None => return,
                        Some(command) => self.record(command),
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Applies a command to the channel set without a connection.
    fn record(&mut self, command: Command) {
        match command {
            Command::Listen(channel, ack) => {
                self.channels.insert(channel);
                let _ = ack.send(());
            }
            Command::Unlisten(channel) => {
                self.channels.remove(&channel);
            }
        }
    }

    /// One connection's lifetime. `Ok` means stop for good; `Err` means reconnect.
    async fn session(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (client, mut connection) = self
            .config
            .config
            .connect(self.config.tls.clone())
            .await
            .with_context(|| format!("connect the listener to {}", self.config.redacted))?;
        let (closed_tx, mut closed_rx) = oneshot::channel::<String>();
        let sink = self.sink.clone();
        let driver = tokio::spawn(async move {
            loop {
                let message = futures::future::poll_fn(|cx| connection.poll_message(cx)).await;
                match message {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        let event = ListenerEvent::Notification {
                            channel: notification.channel().to_string(),
                            payload: notification.payload().to_string(),
                        };
                        if sink.send(event).await.is_err() {
                            let _ = closed_tx.send("consumer gone".into());
                            return;
                        }
                    }
                    Some(Ok(_notice)) => {}
                    Some(Err(error)) => {
                        let _ = closed_tx.send(error.to_string());
                        return;
                    }
                    None => {
                        let _ = closed_tx.send("connection closed".into());
                        return;
                    }
                }
            }
        });
        let result = self
            .serve(&client, commands, shutdown, &mut closed_rx)
            .await;
        drop(client);
        driver.abort();
        result
    }

    async fn serve(
        &mut self,
        client: &tokio_postgres::Client,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        shutdown: &CancellationToken,
        closed: &mut oneshot::Receiver<String>,
    ) -> anyhow::Result<()> {
        if !self.channels.is_empty() {
            let sql: String = self
                .channels
                .iter()
                .map(|channel| format!("LISTEN {};", quote_identifier(channel)))
                .collect();
            client.batch_execute(&sql).await.context("listen")?;
        }
        self.connected.store(true, Ordering::Relaxed);
        if self.sink.send(ListenerEvent::Reconnected).await.is_err() {
            return Ok(());
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                reason = &mut *closed => {
                    anyhow::bail!("listener connection ended: {}", reason.unwrap_or_default());
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await;
                    match answered {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Err(error).context("ping the listener connection"),
                        Err(_) => anyhow::bail!("listener ping timed out after {PING_TIMEOUT:?}"),
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { return Ok(()) };
                    self.execute(client, command).await?;
                    // Drain what else is queued without waiting, batching LISTENs.
                    while let Some(command) = commands.recv().now_or_never().flatten() {
                        self.execute(client, command).await?;
                    }
                }
            }
        }
    }

    async fn execute(
        &mut self,
        client: &tokio_postgres::Client,
        command: Command,
    ) -> anyhow::Result<()> {
        match command {
            Command::Listen(channel, ack) => {
                let sql = format!("LISTEN {}", quote_identifier(&channel));
                self.channels.insert(channel);
                client.batch_execute(&sql).await.context("listen")?;
                let _ = ack.send(());
            }
            Command::Unlisten(channel) => {
                if self.channels.remove(&channel) {
                    let sql = format!("UNLISTEN {}", quote_identifier(&channel));
                    client.batch_execute(&sql).await.context("unlisten")?;
                }
            }
        }
        Ok(())
    }
}

/// Quotes a channel name as an SQL identifier. Channel names are built from fixed prefixes
/// and UUIDs, but quoting keeps that an assumption rather than a requirement.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
