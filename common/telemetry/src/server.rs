//! The HTTP server of `observability.listen`: `GET /metrics` (OpenMetrics
//! text, which Prometheus scrapes), `GET /healthz` (the process is alive:
//! always 200 while it serves) and `GET /readyz` (200 when every readiness
//! check passes, else 503 with a JSON body naming the failing checks).
//! It stops when the shutdown token is cancelled.
//!
//! Optionally ([`ServeOptions`]): `/metrics` behind a bearer token
//! (`observability.metrics_token_file` / `_env`; the probes stay open), and
//! HTTPS (`observability.tls_cert_file` / `tls_key_file`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

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

/// What the server needs beyond its address: both optional.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// The bearer token `/metrics` requires.
    pub metrics_token: Option<SecretString>,
    /// Serve HTTPS with this identity instead of plain HTTP.
    pub tls: Option<shoal_tls::TlsIdentity>,
}

/// `/metrics` only with `Authorization: Bearer <token>` (compared in
/// constant time); 401 otherwise.
async fn require_metrics_token(
    State(token): State<Arc<SecretString>>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(offered.as_bytes().ct_eq(token.expose_secret().as_bytes())) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "/metrics needs Authorization: Bearer <observability metrics token>\n",
    )
        .into_response()
}

/// The routes, serving `telemetry`; `/metrics` behind `metrics_token`
/// when given.
pub fn router(telemetry: Telemetry, metrics_token: Option<SecretString>) -> Router {
    let metrics = Router::new().route("/metrics", get(get_metrics));
    let metrics = match metrics_token {
        Some(token) => metrics.route_layer(from_fn_with_state(Arc::new(token), require_metrics_token)),
        None => metrics,
    };
    Router::new()
        .merge(metrics)
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .with_state(telemetry)
}

/// Binds `listen` and serves until `shutdown` is cancelled. Returns the
/// bound address (useful with port 0) and the server task.
pub async fn serve(
    listen: SocketAddr,
    telemetry: Telemetry,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let protected = options.metrics_token.is_some();
    let app = router(telemetry, options.metrics_token);
    let scheme = if options.tls.is_some() { "https" } else { "http" };
    let task = match options.tls {
        Some(identity) => spawn_server(shoal_tls::TlsListener::new(listener, &identity)?, app, scheme, shutdown),
        None => spawn_server(listener, app, scheme, shutdown),
    };
    tracing::info!(address = %bound, scheme, metrics_token = protected, "serving /metrics, /healthz and /readyz");
    Ok((bound, task))
}

/// Serves `app` on `listener` in a task until `shutdown` is cancelled.
fn spawn_server<L>(listener: L, app: Router, scheme: &'static str, shutdown: CancellationToken) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(error) = served {
            tracing::warn!(%error, scheme, "observability server stopped with an error");
        }
    })
}
