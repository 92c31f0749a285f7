//! The HTTP server of `observability.listen`: `GET /metrics` (OpenMetrics
//! text, which Prometheus scrapes), `GET /healthz` (the process is alive:
//! always 200 while it serves) and `GET /readyz` (200 when every readiness
//! check passes, else 503 with a JSON body naming the failing checks).
//! It stops when the shutdown token is cancelled.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use axum::extract::State;

use crate::Telemetry;

/// Content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn get_metrics(State(telemetry): State<Telemetry>) -> impl IntoResponse {
    // Encoding reads atomics and formats text: quick, but off the async
    // threads' hot path is not needed at scrape rates.
    ([(header::CONTENT_TYPE, OPENMETRICS)], telemetry.metrics.encode())
}

async fn get_healthz() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok\n")
}

async fn get_readyz(State(telemetry): State<Telemetry>) -> impl IntoResponse {
    let (ready, checks) = telemetry.health.readiness();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let failing: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
    let body = serde_json::json!({ "ready": ready, "failing": failing, "checks": checks });
    (status, [(header::CONTENT_TYPE, "application/json")], format!("{body}\n"))
}

/// The routes, serving `telemetry`.
pub fn router(telemetry: Telemetry) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .with_state(telemetry)
}

/// Binds `listen` and serves until `shutdown` is cancelled. Returns the
/// bound address (useful with port 0) and the server task.
pub async fn serve(
    listen: SocketAddr,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router(telemetry)).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(error) = served {
            tracing::warn!(%error, "observability HTTP server stopped with an error");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok((bound, task))
}
