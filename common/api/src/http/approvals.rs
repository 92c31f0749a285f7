//! Human approval of commands (`docs/approval.md`).
//!
//! - `GET /v1/approvals?status=&key=&limit=` (read role): the commands
//!   with an approval, their parts merged, pending ones by deadline first.
//! - `POST /v1/approvals/{id}/approve` and `/reject` (admin role), with an
//!   optional body `{"reason": "..."}`: checks that the command's approval
//!   is pending and its deadline not passed (404 for an unknown id, 409
//!   naming the current status otherwise), and writes an `approval
//!   decided` record to the approvals topic, naming who decided (the
//!   token's fingerprint, never the token). The orchestrator's decisions
//!   stage reads it and issues an approved command. Off unless the
//!   orchestrator installs [`Approvals`] (`rules.approval_kinds` not
//!   empty).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_protocol::approvals::{ApprovalChange, ApprovalEvent, Decision};
use shoal_protocol::messages::SCHEMA_VERSION;
use shoal_protocol::payloads::MAX_REASON;
use shoal_state::EntityKind;
use shoal_state::approvals::{Approval, ApprovalStatus};
use shoal_state::commands::Lifecycle;
use uuid::Uuid;

use super::answer::{EntityAnswer, Freshness};
use super::lists::by_key;
use crate::ApiContext;
use crate::error::{ApiError, quote};
use crate::hub::merge_docs;
use crate::members::{FORWARDED_HEADER, HttpPeers};
use crate::params::{Params, PathParams, parse_command_id};

/// Where decisions go: the orchestrator writes them to the approvals
/// topic (keyed by command id) and answers once Kafka acknowledged them.
pub trait ApprovalSink: Send + Sync + 'static {
    /// Writes `event`; the error says why it could not be.
    fn submit(&self, event: ApprovalEvent) -> BoxFuture<'static, Result<(), String>>;
}

/// What the decision routes need.
pub struct Approvals {
    sink: Arc<dyn ApprovalSink>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").finish_non_exhaustive()
    }
}

impl Approvals {
    /// Decisions written to `sink`.
    pub fn new(sink: Arc<dyn ApprovalSink>) -> Self {
        Self { sink }
    }
}

/// The answer of `GET /v1/approvals`.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalList {
    /// Command states (parts merged) with their `approval`.
    pub approvals: Vec<Value>,
    /// Whether more matched than listed.
    pub truncated: bool,
    /// Watermarks of every shard held here.
    pub freshness: Freshness,
    /// The instance that answered.
    pub served_by: String,
}

/// What the list and the checks read of a command's state.
#[derive(Debug, Deserialize)]
struct Head {
    id: Uuid,
    key: String,
    status: Lifecycle,
    approval: Option<Approval>,
}

/// `GET /v1/approvals?status=&key=&limit=`: pending ones first, by
/// deadline; then the others, most recently settled first.
pub async fn list(State(ctx): State<ApiContext>, params: Params) -> Result<Json<ApprovalList>, ApiError> {
    let params = params.only(&["status", "key", "limit"])?;
    let status = match params.get("status") {
        None => None,
        Some(text) => Some(ApprovalStatus::parse(text).ok_or_else(|| {
            let names: Vec<&str> = ApprovalStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::not_one_of("status", text, &names)
        })?),
    };
    let limit = params.limit(ctx.settings.max_list)?;
    let key = params.get("key");
    let view = ctx.hub.view();
    let mut found: Vec<(Head, Approval, Value)> = by_key(&view, EntityKind::Command)
        .into_values()
        .filter(|docs| docs.iter().any(|d| d.state.get("approval").is_some_and(|a| !a.is_null())))
        .filter_map(|docs| {
            let state = merge_docs(EntityKind::Command, &docs.iter().map(|d| d.state.clone()).collect::<Vec<_>>());
            let head = Head::deserialize(&state).ok()?;
            let approval = head.approval.clone()?;
            Some((head, approval, state))
        })
        .filter(|(head, a, _)| key.is_none_or(|k| head.key == k) && status.is_none_or(|s| a.status == s))
        .collect();
    let order = |a: &Approval| match a.status {
        ApprovalStatus::Pending => (0, a.deadline.timestamp_millis()),
        _ => (1, -a.updated.at.timestamp_millis()),
    };
    found.sort_by_key(|(head, a, _)| (order(a), head.id));
    let truncated = found.len() > limit;
    found.truncate(limit);
    Ok(Json(ApprovalList {
        approvals: found.into_iter().map(|(_, _, state)| state).collect(),
        truncated,
        freshness: Freshness::of_view(&view),
        served_by: ctx.instance,
    }))
}

/// The optional body of a decision.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/approvals/{id}/approve`.
pub async fn approve(
    state: State<ApiContext>,
    peers: Extension<Arc<HttpPeers>>,
    approvals: Option<Extension<Arc<Approvals>>>,
    id: PathParams<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    decide(state, peers, approvals, id, headers, body, Decision::Approve).await
}

/// `POST /v1/approvals/{id}/reject`.
pub async fn reject(
    state: State<ApiContext>,
    peers: Extension<Arc<HttpPeers>>,
    approvals: Option<Extension<Arc<Approvals>>>,
    id: PathParams<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    decide(state, peers, approvals, id, headers, body, Decision::Reject).await
}

async fn decide(
    State(ctx): State<ApiContext>,
    Extension(peers): Extension<Arc<HttpPeers>>,
    approvals: Option<Extension<Arc<Approvals>>>,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
    body: Bytes,
    decision: Decision,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(Extension(approvals)) = approvals else {
        return Err(ApiError::Forbidden(
            "approvals are off on this instance (no command kind needs one: rules.approval_kinds is empty)".into(),
        ));
    };
    let id = parse_command_id(&id)?;
    let body = parse_body(&body)?;
    let head = find(&ctx, &peers, &id, &headers).await?;
    let now = Utc::now();
    check_pending(&id, &head, now)?;
    let by = super::requests::requester(&headers);
    let command_id = head.id;
    let event = ApprovalEvent {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        command_id,
        at: now,
        change: ApprovalChange::Decided { decision, by: by.clone(), reason: body.reason.clone() },
    };
    if let Err(error) = approvals.sink.submit(event).await {
        tracing::error!(%error, %command_id, decision = decision.as_str(), "approval decision not written");
        return Err(ApiError::Unavailable(format!("the decision could not be written to Kafka: {error}")));
    }
    tracing::info!(
        %command_id, decision = decision.as_str(), key = %head.key, via = %by.via,
        token_id = by.token_id.as_deref().unwrap_or("-"), "approval decided"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "command_id": command_id,
            "decision": decision.as_str(),
            "status": "decided",
            "key": head.key,
            "decided_by": by,
            "reason": body.reason,
            "next": format!("GET /v1/commands/{command_id} shows the approval settled, then the command issued if approved"),
        })),
    ))
}

fn parse_body(body: &Bytes) -> Result<Body, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body::default());
    }
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_parameter("body", format!("the body is not a decision: {e} (expected JSON {{\"reason\"?}})"))
    })?;
    if body.reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ApiError::bad_parameter("reason", format!("`reason`: longer than {MAX_REASON} characters")));
    }
    Ok(body)
}

/// The command's state, from here or (when not held here, or held without
/// its approval) from the peers.
async fn find(ctx: &ApiContext, peers: &HttpPeers, id: &str, headers: &HeaderMap) -> Result<Head, ApiError> {
    let local = EntityAnswer::local(&ctx.hub.view(), EntityKind::Command, id, &ctx.instance);
    let mut heads: Vec<Head> = local.iter().filter_map(|a| Head::deserialize(&a.state).ok()).collect();
    let members = if headers.contains_key(FORWARDED_HEADER) { Vec::new() } else { ctx.directory.peers() };
    if heads.iter().all(|h| h.approval.is_none()) && !members.is_empty() {
        let path = format!("/v1/commands/{id}");
        let auth = headers.get(header::AUTHORIZATION);
        for peer in peers.ask(&members, &path, auth, &ctx.instance, false).await {
            if let Ok(answer) = serde_json::from_slice::<EntityAnswer>(&peer.body)
                && let Ok(head) = Head::deserialize(&answer.state)
            {
                heads.push(head);
            }
        }
    }
    let best = heads
        .into_iter()
        .max_by_key(|h| h.approval.as_ref().map(|a| (a.status != ApprovalStatus::Pending, a.updated.clone())));
    best.ok_or_else(|| ApiError::NotFound(format!("no command {} is known here (nor awaiting approval)", quote(id))))
}

/// 409 unless the approval is pending and its deadline not passed.
fn check_pending(id: &str, head: &Head, now: DateTime<Utc>) -> Result<(), ApiError> {
    let Some(approval) = &head.approval else {
        return Err(ApiError::Conflict(format!(
            "command {id} needs no approval: its status is {}",
            head.status.as_str()
        )));
    };
    if approval.status != ApprovalStatus::Pending {
        let how = approval.settled.as_ref().map_or(String::new(), |s| match (&s.decision, &s.by) {
            (Some(d), Some(by)) => {
                format!(" ({} by token {} at {})", d.as_str(), by.token_id.as_deref().unwrap_or("-"), s.stamp.at)
            }
            _ => format!(" (at {})", s.stamp.at),
        });
        return Err(ApiError::Conflict(format!(
            "command {id} is not pending approval: its approval is {}{how}; command status {}",
            approval.status.as_str(),
            head.status.as_str()
        )));
    }
    if approval.deadline <= now {
        return Err(ApiError::Conflict(format!(
            "command {id} is not pending approval: its approval is expired (deadline {})",
            approval.deadline
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: Option<ApprovalStatus>, deadline_secs: i64) -> Head {
        let approval = status.map(|status| {
            let stamp = shoal_state::Stamp::new(DateTime::UNIX_EPOCH, shoal_state::Provenance::new("a", 0, 0));
            Approval {
                status,
                command: shoal_protocol::approvals::HeldCommand {
                    id: Uuid::from_u128(1),
                    kind: "raise_alert".into(),
                    key: "K".into(),
                    decided_at: DateTime::UNIX_EPOCH,
                    deadline: None,
                    payload: json!({}),
                },
                deadline: DateTime::from_timestamp(deadline_secs, 0).unwrap_or_default(),
                requested_by: None,
                requested: stamp.clone(),
                settled: None,
                ignored: 0,
                updated: stamp,
            }
        });
        Head { id: Uuid::from_u128(1), key: "K".into(), status: Lifecycle::Issued, approval }
    }

    #[test]
    fn only_a_pending_approval_before_its_deadline_is_decided() {
        let now = DateTime::from_timestamp(100, 0).unwrap();
        assert!(check_pending("c", &head(Some(ApprovalStatus::Pending), 101), now).is_ok());
        let conflict = |h: Head| match check_pending("c-1", &h, now) {
            Err(ApiError::Conflict(message)) => message,
            other => panic!("{other:?}"),
        };
        assert!(conflict(head(Some(ApprovalStatus::Pending), 100)).contains("expired"));
        let twice = conflict(head(Some(ApprovalStatus::Approved), 200));
        assert!(twice.contains("c-1") && twice.contains("approved"), "{twice}");
        assert!(conflict(head(None, 0)).contains("needs no approval"));
    }

    #[test]
    fn the_body_is_optional_and_checked() {
        assert_eq!(parse_body(&Bytes::new()).unwrap().reason, None);
        assert_eq!(parse_body(&Bytes::from_static(br#"{"reason":"ok"}"#)).unwrap().reason.as_deref(), Some("ok"));
        assert!(matches!(parse_body(&Bytes::from_static(br#"{"why":1}"#)), Err(ApiError::BadParameter { .. })));
    }
}
