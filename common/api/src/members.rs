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

/// Forwards queries to peers over HTTP (their advertised `api_url`).
#[derive(Debug, Clone)]
pub struct HttpPeers {
    client: Option<reqwest::Client>,
}

impl Default for HttpPeers {
    fn default() -> Self {
        Self::new(FORWARD_TIMEOUT)
    }
}

impl HttpPeers {
    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: std::time::Duration) -> Self {
        let client = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build();
        match client {
            Ok(client) => Self { client: Some(client) },
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
                let mut request = client.get(url).header(FORWARDED_HEADER, from.clone());
                if let Some(auth) = authorization {
                    request = request.header(axum::http::header::AUTHORIZATION, auth.clone());
                }
                ask_one(request, &peer.instance)
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

async fn ask_one(request: reqwest::RequestBuilder, instance: &str) -> Option<PeerAnswer> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(peer = instance, %error, "forwarded query failed");
            return None;
        }
    };
    if response.status() != reqwest::StatusCode::OK {
        tracing::debug!(peer = instance, status = %response.status(), "peer did not answer the forwarded query");
        return None;
    }
    match response.bytes().await {
        Ok(body) => Some(PeerAnswer { instance: instance.to_string(), body }),
        Err(error) => {
            tracing::debug!(peer = instance, %error, "cannot read a peer's answer");
            None
        }
    }
}
