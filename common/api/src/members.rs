//! Which instance owns which shard and where its API listens. The
//! orchestrator keeps this from a small compacted membership topic (each
//! instance writes one record, keyed by its id, when its shards change);
//! the API uses it to forward a query for a key it does not hold.

use serde::{Deserialize, Serialize};

use crate::hub::ShardId;

/// One instance and the shards it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Instance id.
    pub instance: String,
    /// Base URL of its API (`http://host:port`), as it advertises it.
    pub api_url: String,
    /// Shards it owns.
    pub shards: Vec<ShardId>,
}

/// The current members, as known to this instance.
pub trait Directory: Send + Sync {
    /// Every known member except this instance.
    fn peers(&self) -> Vec<Member>;
}

/// A directory with no peers: a single instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPeers;

impl Directory for NoPeers {
    fn peers(&self) -> Vec<Member> {
        Vec::new()
    }
}

/// Header of a query one instance forwards to another; an instance never
/// forwards a query that carries it (no loops). Its value is the
/// forwarding instance.
pub const FORWARDED_HEADER: &str = "x-shoal-forwarded";

/// How long a peer has to answer a forwarded query.
pub const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A peer's `200` answer to a forwarded query.
#[derive(Debug, Clone)]
pub struct PeerAnswer {
    /// The peer.
    pub instance: String,
    /// Its body, as it sent it (JSON).
    pub body: axum::body::Bytes,
}

/// Forwards queries to peers over HTTP or HTTPS (their advertised
/// `api_url`).
#[derive(Debug, Clone)]
pub struct HttpPeers {
    client: Option<shoal_tls::HttpClient>,
}

impl Default for HttpPeers {
    fn default() -> Self {
        Self::new(FORWARD_TIMEOUT)
    }
}

impl HttpPeers {
    /// A client whose requests give up after `timeout`; `https://` peers
    /// are verified with the platform's root certificates.
    pub fn new(timeout: std::time::Duration) -> Self {
        Self::trusting(timeout, "")
    }

    /// Like [`HttpPeers::new`], verifying `https://` peers with the CA
    /// certificates in `ca_file` (PEM, `api.tls_ca_file`) instead when it
    /// is not empty. Without usable roots only `http://` peers are asked.
    pub fn trusting(timeout: std::time::Duration, ca_file: &str) -> Self {
        let roots = if ca_file.is_empty() {
            shoal_tls::platform_roots("api.tls_ca_file")
        } else {
            shoal_tls::ca_roots(ca_file)
        };
        let roots = roots.unwrap_or_else(|reason| {
            tracing::warn!(%reason, "no TLS trust for peers: queries are forwarded to http:// peers only");
            rustls::RootCertStore::empty()
        });
        match shoal_tls::client_config(roots) {
            Ok(config) => Self { client: Some(shoal_tls::HttpClient::new(config, timeout)) },
            Err(error) => {
                tracing::warn!(%error, "cannot build the HTTP client: queries will not be forwarded to peers");
                Self { client: None }
            }
        }
    }

    /// Asks every peer for `path_and_query` at once, with the caller's
    /// `authorization` and [`FORWARDED_HEADER`] set to `from`; returns
    /// their `200` answers as they come (only the first when `first_only`).
    /// Peers that fail, time out or answer anything else are skipped.
    pub async fn ask(
        &self,
        peers: &[Member],
        path_and_query: &str,
        authorization: Option<&axum::http::HeaderValue>,
        from: &str,
        first_only: bool,
    ) -> Vec<PeerAnswer> {
        use futures::StreamExt;

        let Some(client) = &self.client else { return Vec::new() };
        let from = axum::http::HeaderValue::from_str(from)
            .unwrap_or_else(|_| axum::http::HeaderValue::from_static("unnamed-instance"));
        let mut pending: futures::stream::FuturesUnordered<_> = peers
            .iter()
            .filter(|p| !p.api_url.is_empty())
            .map(|peer| {
                let url = format!("{}{path_and_query}", peer.api_url.trim_end_matches('/'));
                let mut request = axum::http::Request::get(url).header(FORWARDED_HEADER, from.clone());
                if let Some(auth) = authorization {
                    request = request.header(axum::http::header::AUTHORIZATION, auth.clone());
                }
                ask_one(client, request.body(axum::body::Bytes::new()), &peer.instance)
            })
            .collect();
        let mut answers = Vec::new();
        while let Some(answer) = pending.next().await {
            if let Some(answer) = answer {
                answers.push(answer);
                if first_only {
                    break;
                }
            }
        }
        answers
    }
}

/// The most a peer's answer may hold.
const MAX_PEER_ANSWER: usize = 64 * 1024 * 1024;

async fn ask_one(
    client: &shoal_tls::HttpClient,
    request: Result<axum::http::Request<axum::body::Bytes>, axum::http::Error>,
    instance: &str,
) -> Option<PeerAnswer> {
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(peer = instance, %error, "cannot forward to this peer's URL");
            return None;
        }
    };
    match client.send(request, MAX_PEER_ANSWER).await {
        Ok((axum::http::StatusCode::OK, body)) => Some(PeerAnswer { instance: instance.to_string(), body }),
        Ok((status, _)) => {
            tracing::debug!(peer = instance, %status, "peer did not answer the forwarded query");
            None
        }
        Err(error) => {
            tracing::debug!(peer = instance, %error, "forwarded query failed");
            None
        }
    }
}
