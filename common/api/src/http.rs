//! The HTTP API: routes, auth layers and the server.
//!
//! Open routes: `GET /healthz`, `GET /readyz`, `GET /v1/openapi.json`.
//! Read role: `GET /v1/entities`, `GET /v1/state/{kind}/{key}`,
//! `GET /v1/commands`, `GET /v1/commands/{id}`, `GET /v1/alerts`,
//! `GET /v1/summary`, `GET /v1/approvals` and the
//! stream's routes. Admin role: `GET /v1/admin/shards`,
//! `GET /v1/admin/members`, `POST /v1/command-requests` (off unless
//! `api.issue_commands`), `POST /v1/approvals/{id}/approve|reject` (off
//! unless a command kind needs approval). Every answer is JSON, errors included (see
//! [`crate::error`]); the OpenAPI document ([`crate::openapi`]) describes
//! them all.

mod admin;
pub mod answer;
pub mod approvals;
mod cors;
mod entities;
mod lists;
pub mod requests;
pub mod summary;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::ApiContext;
use crate::auth::{require_admin, require_read};
use crate::error::{ApiError, no_route, wrong_method};
use crate::members::{FORWARD_TIMEOUT, HttpPeers};
use crate::params::Params;

/// How long [`serve`] waits, once shut down, for open connections (a
/// WebSocket subscriber, a slow reader) before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The API's routes, serving `ctx`.
pub fn router(ctx: ApiContext) -> Router {
    let read = Router::new()
        .route("/v1/entities", get(entities::list))
        .route("/v1/state/{kind}/{key}", get(entities::state))
        .route("/v1/commands", get(lists::commands))
        .route("/v1/commands/{id}", get(entities::command))
        .route("/v1/alerts", get(lists::alerts))
        .route("/v1/summary", get(summary::summary))
        .route("/v1/approvals", get(approvals::list))
        .merge(crate::stream::routes())
        .route_layer(from_fn_with_state(ctx.clone(), require_read));
    let admin = Router::new()
        .route("/v1/admin/shards", get(admin::shards))
        .route("/v1/admin/members", get(admin::members))
        .route("/v1/command-requests", post(requests::request))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/reject", post(approvals::reject))
        .route_layer(from_fn_with_state(ctx.clone(), require_admin));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .merge(crate::console::routes())
        .merge(read)
        .merge(admin)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(Extension(Arc::new(HttpPeers::trusting(FORWARD_TIMEOUT, &ctx.settings.tls_ca_file))));
    let app = match cors::Cors::new(&ctx.settings.cors_allowed_origins) {
        Some(cors) => app.layer(from_fn_with_state(cors, cors::layer)),
        None => app,
    };
    app.with_state(ctx)
}

/// `routes` (another protocol served beside the API, such as MCP) behind
/// the read routes' token check.
pub fn behind_read_token(ctx: &ApiContext, routes: Router) -> Router {
    routes.layer(from_fn_with_state(ctx.clone(), require_read))
}

/// Where the API is served: plain HTTP on a TCP listener, or HTTPS
/// (`api.tls_cert_file`) on a [`shoal_tls::TlsListener`].
#[derive(Debug)]
pub enum ApiListener {
    /// Plain HTTP.
    Plain(tokio::net::TcpListener),
    /// HTTPS.
    Tls(shoal_tls::TlsListener),
}

impl From<tokio::net::TcpListener> for ApiListener {
    fn from(listener: tokio::net::TcpListener) -> Self {
        Self::Plain(listener)
    }
}

impl ApiListener {
    /// HTTPS with `identity` on `listener` when given, else plain HTTP.
    pub fn new(listener: tokio::net::TcpListener, identity: Option<&shoal_tls::TlsIdentity>) -> std::io::Result<Self> {
        Ok(match identity {
            Some(identity) => Self::Tls(shoal_tls::TlsListener::new(listener, identity)?),
            None => Self::Plain(listener),
        })
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        use axum::serve::Listener as _;
        match self {
            Self::Plain(listener) => listener.local_addr(),
            Self::Tls(listener) => listener.local_addr(),
        }
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets
/// requests in flight finish (at most [`SHUTDOWN_GRACE`]).
pub async fn serve(
    ctx: ApiContext,
    listener: impl Into<ApiListener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(ctx.clone());
    serve_app(&ctx, app, listener, shutdown).await
}

/// Serves `app` (the API's [`router`], with whatever was added to it) like
/// [`serve`].
pub async fn serve_app(
    ctx: &ApiContext,
    app: Router,
    listener: impl Into<ApiListener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.into();
    let address = listener.local_addr()?;
    if ctx.tokens.is_open() {
        tracing::warn!(%address, "the state API serves without authentication (api.auth = \"none\")");
    }
    let scheme = if matches!(listener, ApiListener::Tls(_)) { "https" } else { "http" };
    tracing::info!(%address, scheme, advertised = %ctx.settings.advertised_url(), "serving the state API");
    // Upgraded WebSocket connections end with the shutdown too (axum's
    // graceful shutdown does not close them).
    let app = app.layer(axum::Extension(crate::stream::Shutdown(shutdown.clone())));
    match listener {
        ApiListener::Plain(listener) => serve_on(listener, app, address, shutdown).await,
        ApiListener::Tls(listener) => serve_on(listener, app, address, shutdown).await,
    }
}

async fn serve_on<L>(
    listener: L,
    app: Router,
    address: std::net::SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let late = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server.into_future() => served,
        () = late => {
            let grace = SHUTDOWN_GRACE;
            tracing::warn!(%address, ?grace, "state API connections still open after shutdown; closing them");
            Ok(())
        }
    }
}

/// `GET /healthz`: the process serves.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: always ready while serving. An instance that holds no
/// shard (yet, or after a rebalance) still answers by forwarding to its
/// peers, so holding shards is not a condition; the body says how many it
/// holds and the view's version (0 before the first publication).
async fn readyz(State(ctx): State<ApiContext>) -> Json<Value> {
    let view = ctx.hub.view();
    Json(json!({"status": "ok", "shards": view.shards.len(), "view_version": view.version}))
}

/// `GET /v1/openapi.json`.
async fn openapi(State(ctx): State<ApiContext>, params: Params) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    Ok(Json(crate::openapi::document(&ctx.settings)))
}
