//! The API replica: stateless HTTP + SSE in front of PostgreSQL.
//!
//! **Invariant:** this crate is the only one that knows the public API (routes, JSON DTOs,
//! SSE). It never depends on `chatd-worker`.

pub mod aisdk;
pub mod auth;
pub mod body;
pub mod config;
pub mod cursor;
pub mod drain;
pub mod dto;
pub mod error;
pub mod hub;
pub mod openai;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod store;
pub mod ui;
pub(crate) mod waiting;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use chatd_shared::db::pool::{build_pool, Pooler};
use chatd_shared::pubsub::Listener;

pub use config::ApiConfig;

/// Runs one API replica on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    config: ApiConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let pooler = config.database_pooler;
    chatd_shared::db::pool::check_at_startup(&config.database_url, "chatd-api", pooler).await?;
    if let Some(url) = &config.listen_database_url {
        chatd_shared::db::pool::check_at_startup(url, "chatd-api-listener", Pooler::None).await?;
    }
    let listener = waiting::SharedListener::new(listener);
    waiting::until_schema(&listener, &config).await?;
    let pool = build_pool(
        &config.database_url,
        "chatd-api",
        config.pool_size,
        pooler,
        config.session_database_url(),
    )?;
    let publisher = chatd_shared::pubsub::Publisher::spawn(build_pool(
        &config.database_url,
        "chatd-api-publisher",
        1,
        pooler,
        config.session_database_url(),
    )?);
    let sender = store::send_batch::SendBatcher::spawn(build_pool(
        &config.database_url,
        "chatd-api-sender",
        1,
        pooler,
        config.session_database_url(),
    )?);
    let (sink, events) = tokio::sync::mpsc::channel(65_536);
    let pubsub = Listener::spawn(
        config.session_database_url(),
        "chatd-api-listener",
        vec![chatd_shared::pubsub::CONFIG_CHANNEL.to_string()],
        sink,
        shutdown.child_token(),
    )?;
    let (config_events, _) = tokio::sync::broadcast::channel(1024);
    let hubs = hub::Hubs::new(
        pool.clone(),
        pubsub.clone(),
        config.hub_buffer,
        config_events.clone(),
    );
    let tokens = Arc::new(auth::TokenCache::default());
    let spend = Arc::new(chatd_shared::db::limits::SpendCache::default());
    tokio::spawn(drop_stale_caches(
        config_events.subscribe(),
        tokens.clone(),
        spend.clone(),
    ));
    tokio::spawn(hubs.clone().dispatch(events));
    tokio::spawn(
        hubs.clone()
            .audit(config.hub_audit_interval, shutdown.child_token()),
    );
    let state = state::AppState {
        config: Arc::new(config),
        pool,
        publisher,
        sender,
        listener: pubsub,
        hubs,
        tokens,
        rate_limits: Arc::default(),
        spend,
        config_events,
        metrics: chatd_shared::telemetry::metrics_handle(),
        streams: Arc::default(),
        draining: shutdown.clone(),
    };
    let address = listener.address().context("read the listen address")?;
    tracing::info!(%address, "api listening");
    // Small SSE writes must leave at once: no Nagle delay (40 ms with delayed ACKs).
    let listener = drain::DrainingListener::new(listener, shutdown.clone())
        .context("read the listen address")?;
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "set TCP_NODELAY");
        }
    });
    // `into_make_service`: serving the `Router` itself would have axum deep-copy every route
    // for each connection (`Router::with_state` on a shared router, ≈30 KB per connection
    // with this API's routes: 5,000 open streams held ≈150 MB of copies); the make-service
    // hands each connection a clone of the router's `Arc`, whose routes already carry the
    // state.
    axum::serve(listener, routes::router(state).into_make_service())
        .with_graceful_shutdown(drain::connections_close(shutdown))
        .await
        .context("serve http")
}

/// Evicts what a `chatd_config` notice made stale: a user's verified tokens (their access
/// changed), every spend status (limits changed), everything after a listener reconnect.
async fn drop_stale_caches(
    mut events: tokio::sync::broadcast::Receiver<state::ConfigEvent>,
    tokens: Arc<auth::TokenCache>,
    spend: Arc<chatd_shared::db::limits::SpendCache>,
) {
    use chatd_shared::pubsub::ConfigKind;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(state::ConfigEvent::Changed(notice)) => match notice.kind {
                ConfigKind::Auth => tokens.evict_user(notice.id),
                ConfigKind::Limits => spend.clear(),
                _ => {}
            },
            Ok(state::ConfigEvent::Reconnected) | Err(RecvError::Lagged(_)) => {
                tokens.clear();
                spend.clear();
            }
            Err(RecvError::Closed) => return,
        }
    }
}
