//! MCP over streamable HTTP, served by the orchestrator beside its state
//! API (`/mcp`). Every MCP request carries the client's bearer token; the
//! API's auth layer checks it before the request reaches MCP, and the tools
//! ask the API in process with that same token, so read tokens read and
//! only admin tokens may `issue_command`.

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::client::StateClient;
use crate::tools::ShoalTools;

/// Where MCP is served, relative to the API's root.
pub const PATH: &str = "/mcp";

/// How `/mcp` is served.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Host` values accepted (against DNS rebinding): `host` or `host:port`.
    pub allowed_hosts: Vec<String>,
    /// How often subscribed resources are checked for changes.
    pub poll: Duration,
}

/// The `/mcp` route: tools and resources answering from `api` (the state
/// API's router, called in process). Sessions end when `shutdown` is
/// cancelled. Put it behind the API's read-token layer.
pub fn routes(api: axum::Router, options: HttpOptions, shutdown: CancellationToken) -> axum::Router {
    let client = StateClient::in_process(api);
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(options.allowed_hosts)
        .with_cancellation_token(shutdown);
    let poll = options.poll;
    let service = StreamableHttpService::new(
        move || Ok(ShoalTools::new(client.clone()).with_poll(poll)),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new().route_service(PATH, service)
}
