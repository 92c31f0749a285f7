//! `POST /v1/command-requests` (admin role): a request that the
//! orchestrator issue a command.
//!
//! Off unless the orchestrator installs [`Requests`] (`api.issue_commands
//! = true`). A request is checked (the kind's payload type, the key, the
//! reason's length), rate-limited (`api.issue_rate_per_minute`, one limit
//! for the instance), and written to Kafka as a `command_requested` event
//! that names who asked (the token's fingerprint, never the token). The
//! decisions stage turns the event into the command, with the key's next
//! `seq`, so a requested command keeps the key's order like any other. The
//! answer (202) carries the request's id; the command shows up in
//! `GET /v1/commands?key=...` once issued.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::{HeaderMap, StatusCode, header};
use chrono::Utc;
use futures::future::BoxFuture;
use governor::clock::DefaultClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use shoal_protocol::messages::{Event, SCHEMA_VERSION};
use shoal_protocol::payloads::{
    COMMAND_REQUESTED, CommandRequest, MAX_KEY, MAX_REASON, REQUESTABLE, Requester, check_payload,
};
use uuid::Uuid;

use crate::error::{ApiError, quote};

/// Header an MCP server sets on requests it makes for its client:
/// `mcp` and the client's name/version (`mcp; claude-desktop/1.2`).
pub const VIA_HEADER: &str = "x-shoal-via";

/// Where accepted requests go: the orchestrator writes them to the events
/// topic (keyed by `event.key`) and answers once Kafka acknowledged them.
pub trait RequestSink: Send + Sync + 'static {
    /// Writes `event`; the error says why it could not be.
    fn submit(&self, event: Event) -> BoxFuture<'static, Result<(), String>>;
}

/// What the route needs: the sink and the instance's rate limit.
pub struct Requests {
    sink: Arc<dyn RequestSink>,
    limiter: RateLimiter<NotKeyed, InMemoryState, DefaultClock, NoOpMiddleware>,
    per_minute: NonZeroU32,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests").field("per_minute", &self.per_minute).finish_non_exhaustive()
    }
}

impl Requests {
    /// Requests written to `sink`, at most `per_minute` a minute (in bursts
    /// of up to that many).
    pub fn new(sink: Arc<dyn RequestSink>, per_minute: NonZeroU32) -> Self {
        Self { sink, limiter: RateLimiter::direct(Quota::per_minute(per_minute)), per_minute }
    }
}

/// The request's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    kind: String,
    key: String,
    payload: Value,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/command-requests` with `{kind, key, payload, reason?}`.
pub async fn request(
    requests: Option<Extension<Arc<Requests>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(Extension(requests)) = requests else {
        return Err(ApiError::Forbidden(
            "issuing commands is off on this instance (set api.issue_commands = true to allow it)".into(),
        ));
    };
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_parameter(
            "body",
            format!("the body is not a request: {e} (expected JSON {{\"kind\", \"key\", \"payload\", \"reason\"?}})"),
        )
    })?;
    let request = check(&body, requester(&headers))?;
    if requests.limiter.check().is_err() {
        tracing::warn!(kind = %body.kind, key = %body.key, per_minute = requests.per_minute, "command request refused: rate limit");
        return Err(ApiError::TooManyRequests(format!(
            "at most {} command requests a minute (api.issue_rate_per_minute); try again later",
            requests.per_minute
        )));
    }
    let event = Event {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        event_type: COMMAND_REQUESTED.into(),
        key: body.key.clone(),
        occurred_at: Utc::now(),
        attributes: serde_json::to_value(&request).map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    let id = event.id;
    let who = &request.requested_by;
    if let Err(error) = requests.sink.submit(event).await {
        tracing::error!(%error, request_id = %id, kind = %body.kind, key = %body.key, "command request not written");
        return Err(ApiError::Unavailable(format!("the request could not be written to Kafka: {error}")));
    }
    tracing::info!(
        request_id = %id, kind = %body.kind, key = %body.key, via = %who.via,
        token_id = who.token_id.as_deref().unwrap_or("-"), client = who.client.as_deref().unwrap_or("-"),
        "command requested"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "request_id": id,
            "status": "requested",
            "kind": body.kind,
            "key": body.key,
            "requested_by": request.requested_by,
            "next": format!("the command is issued with the key's next seq; find it with GET /v1/commands?key={}", body.key),
        })),
    ))
}

/// The checked request, or the field at fault.
fn check(body: &Body, requested_by: Requester) -> Result<CommandRequest, ApiError> {
    if !REQUESTABLE.contains(&body.kind.as_str()) {
        return Err(ApiError::not_one_of("kind", &body.kind, &REQUESTABLE));
    }
    let key = body.key.trim();
    if key.is_empty() || key.len() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(ApiError::bad_parameter(
            "key",
            format!("`key`: {} is not valid (expected 1 to {MAX_KEY} bytes without control characters)", quote(key)),
        ));
    }
    let payload = check_payload(&body.kind, &body.payload).map_err(|e| ApiError::bad_parameter("payload", e))?;
    if body.reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ApiError::bad_parameter("reason", format!("`reason`: longer than {MAX_REASON} characters")));
    }
    Ok(CommandRequest { kind: body.kind.clone(), payload, requested_by, reason: body.reason.clone() })
}

/// Who is asking: the token's fingerprint, how, and the client.
pub(crate) fn requester(headers: &HeaderMap) -> Requester {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty());
    let token_id = token.map(|t| Sha256::digest(t.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect());
    let text =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(200).collect::<String>());
    let (via, client) = match text(VIA_HEADER) {
        Some(via) => match via.split_once(';') {
            Some((via, client)) => (via.trim().to_string(), Some(client.trim().to_string())),
            None => (via.trim().to_string(), None),
        },
        None => ("api".to_string(), text(header::USER_AGENT.as_str())),
    };
    Requester { via, role: "admin".into(), token_id, client: client.filter(|c| !c.is_empty()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: &str, key: &str, payload: Value) -> Body {
        Body { kind: kind.into(), key: key.into(), payload, reason: None }
    }

    fn nobody() -> Requester {
        Requester { via: "api".into(), role: "admin".into(), token_id: None, client: None }
    }

    #[test]
    fn a_request_names_the_field_at_fault() {
        let alert = json!({"symbol": "A", "level": "1", "previous_price": "0.9", "price": "1.1"});
        let field = |b: Body| match check(&b, nobody()) {
            Err(ApiError::BadParameter { parameter, .. }) => parameter,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(body("launch", "A", alert.clone())), "kind");
        assert_eq!(field(body("raise_alert", " ", alert.clone())), "key");
        assert_eq!(field(body("raise_alert", "A", json!({"symbol": "A"}))), "payload");
        let mut long = body("raise_alert", "A", alert.clone());
        long.reason = Some("x".repeat(MAX_REASON + 1));
        assert_eq!(field(long), "reason");
        let ok = check(&body("raise_alert", "A", alert), nobody()).unwrap();
        assert_eq!(ok.kind, "raise_alert");
    }

    #[test]
    fn the_requester_is_a_fingerprint_never_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer admin-token-0123456789".parse().unwrap());
        headers.insert(VIA_HEADER, "mcp; inspector/0.3".parse().unwrap());
        let who = requester(&headers);
        assert_eq!(who.via, "mcp");
        assert_eq!(who.client.as_deref(), Some("inspector/0.3"));
        let id = who.token_id.unwrap();
        assert_eq!(id.len(), 12);
        assert!(!id.contains("admin-token"));
        assert_eq!(requester(&HeaderMap::new()).via, "api");
    }
}
