//! Before the replica serves: the schema check, and while `--wait-for-migrations` waits for
//! `chatd migrate`, a stand-in server on the same port — `/healthz` answers 200 (the process
//! is alive, so a liveness probe does not restart it), `/readyz` and everything else 503 — so
//! a pod that waits longer than its liveness threshold is not killed for waiting.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::ApiConfig;

/// One bound socket served first by the stand-in, then by the replica.
#[derive(Clone)]
pub struct SharedListener(Arc<TcpListener>);

impl SharedListener {
    pub fn new(listener: TcpListener) -> SharedListener {
        SharedListener(Arc::new(listener))
    }

    pub fn address(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// A connection the kernel has already queued, without waiting (`None`: none, or the
    /// accept failed).
    pub fn try_accept(&self) -> Option<(TcpStream, SocketAddr)> {
        let (socket, address) = socket2::SockRef::from(&*self.0).accept().ok()?;
        socket.set_nonblocking(true).ok()?;
        let stream = TcpStream::from_std(std::net::TcpStream::from(socket)).ok()?;
        Some((stream, address.as_socket()?))
    }
}

impl axum::serve::Listener for SharedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                // Out of file descriptors and the like: wait instead of spinning.
                Err(error) => {
                    tracing::warn!(%error, "accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Returns once the schema is one this build runs against (`migrate::require_schema`),
/// serving the stand-in on `listener` meanwhile when the replica waits for migrations.
pub async fn until_schema(listener: &SharedListener, config: &ApiConfig) -> anyhow::Result<()> {
    let check = chatd_shared::db::migrate::require_schema(
        &config.database_url,
        config.database_pooler,
        config.wait_for_migrations,
    );
    if !config.wait_for_migrations {
        return check.await;
    }
    let done = CancellationToken::new();
    let stand_in = tokio::spawn(std::future::IntoFuture::into_future(
        axum::serve(listener.clone(), router())
            .with_graceful_shutdown(done.clone().cancelled_owned()),
    ));
    let result = check.await;
    done.cancel();
    let _ = stand_in.await;
    result
}

fn router() -> axum::Router {
    use axum::routing::get;
    let waiting = || async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            axum::Json(json!({"error": {
                "code": "unavailable",
                "message": "waiting for `chatd migrate` (--wait-for-migrations)",
                "details": {},
            }})),
        )
            .into_response()
    };
    axum::Router::new()
        .route("/healthz", get(crate::routes::health::healthz))
        .route(
            "/readyz",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(json!({"waiting_for_migrations": true})),
                )
            }),
        )
        .fallback(waiting)
}
