//! `/metrics` (Prometheus text) and `/healthz` for a standalone worker: what Kubernetes
//! probes and Prometheus scrape (`chatd worker --metrics-addr`).

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves until `shutdown`; a failure is logged (the worker goes on without its metrics).
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    use axum::routing::get;
    let handle = chatd_shared::telemetry::metrics_handle();
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { handle.render() }));
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(error = %error, "worker metrics server stopped");
    }
}
