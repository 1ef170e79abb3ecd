//! How a replica stops taking connections when it drains (SIGTERM), so that a proxy in front
//! of it (nginx with `proxy_next_upstream error`, a Kubernetes Service) never gets a request
//! dropped unanswered:
//!
//! 1. the listening socket is closed at once: new connections are refused, which a proxy
//!    retries on another replica — safe even for `POST`, as nothing was sent;
//! 2. connections already accepted keep being served for [`CONNECTION_GRACE`]: a request a
//!    proxy wrote on a connection accepted just before the close is answered, not cut;
//! 3. then the server's graceful shutdown: idle connections close, running requests finish.
//!
//! (Closing the socket and the accepted connections in the same instant, as a plain graceful
//! shutdown does, cut requests in flight on just-accepted connections: the proxy answered
//! them 502, and could not retry a `POST`.)

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::waiting::SharedListener;

/// How long accepted connections are still served after the socket closes.
pub const CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// The replica's listener: closes its socket when `draining` is cancelled.
pub struct DrainingListener {
    inner: Option<SharedListener>,
    address: SocketAddr,
    draining: CancellationToken,
}

impl DrainingListener {
    pub fn new(listener: SharedListener, draining: CancellationToken) -> std::io::Result<Self> {
        Ok(DrainingListener {
            address: listener.address()?,
            inner: Some(listener),
            draining,
        })
    }
}

impl axum::serve::Listener for DrainingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        if let Some(listener) = &mut self.inner {
            if !self.draining.is_cancelled() {
                tokio::select! {
                    biased;
                    accepted = listener.accept() => return accepted,
                    _ = self.draining.cancelled() => {}
                }
            }
            // Draining: first every connection the kernel has already queued (closing the
            // socket would reset them, with their requests perhaps sent), one per call.
            if let Some(accepted) = listener.try_accept() {
                return accepted;
            }
        }
        // Then the socket closes (the last handle is dropped) and nothing more is accepted.
        self.inner = None;
        std::future::pending().await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.address)
    }
}

/// When the server's own graceful shutdown starts: [`CONNECTION_GRACE`] after `draining`.
pub async fn connections_close(draining: CancellationToken) {
    draining.cancelled().await;
    tokio::time::sleep(CONNECTION_GRACE).await;
}
