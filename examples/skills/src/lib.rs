//! A user-defined skill, written against `shoal_worker::handlers::Skill`
//! only: `open_ticket` opens a maintenance ticket in an external ticket
//! system when a device reading is over its threshold.
//!
//! The ticket is an effect outside Kafka, so it goes through
//! [`HandlerContext::effect`]: the ticket system receives the journal's
//! idempotency key (`<command id>/ticket`) as the ticket's external id, a
//! command run again after a crash or a rebalance reuses the recorded
//! ticket instead of opening a second one, and a step started but not
//! recorded is looked up by that id ([`Skill::reconcile`]) before it is
//! made again.
//!
//! The ticket system's API (any service with these two routes will do):
//! - `POST {base}/tickets` with `{"external_id", "device", "site", "summary"}`
//!   answers `{"id": ..., ...}`;
//! - `GET {base}/tickets?external_id=<id>` answers the ticket, or 404.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_protocol::messages::Command;
use shoal_worker::handlers::{HandlerContext, HandlerError, Skill};

/// The command's payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketRequest {
    /// The device that reported.
    pub device: String,
    /// Its site.
    pub site: String,
    /// The reading.
    pub reading: f64,
    /// The threshold the reading is checked against.
    pub threshold: f64,
}

/// The result's output.
#[derive(Debug, Clone, Serialize)]
pub struct TicketOutcome {
    /// Whether a ticket was opened (or had been, on a re-run).
    pub opened: bool,
    /// The ticket system's answer, when one was opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<serde_json::Value>,
    /// Why.
    pub reason: String,
}

/// The skill: the ticket system's base URL and an HTTP client.
#[derive(Debug, Clone)]
pub struct OpenTicket {
    base: String,
    http: reqwest::Client,
}

impl OpenTicket {
    /// A skill calling the ticket system at `base` (e.g.
    /// `http://tickets.internal:8080`), each call bounded by `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), http })
    }
}

/// A failed call: transient (the worker retries with backoff), naming the
/// URL.
fn unavailable(url: &str, error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Retryable(format!("ticket system at {url}: {error}"))
}

#[async_trait::async_trait]
impl Skill for OpenTicket {
    const KIND: &'static str = "open_ticket";
    type Payload = TicketRequest;
    type Output = TicketOutcome;

    async fn run(
        &self,
        p: TicketRequest,
        _command: &Command,
        ctx: &HandlerContext<'_>,
    ) -> Result<TicketOutcome, HandlerError> {
        if !p.reading.is_finite() || !p.threshold.is_finite() {
            return Err(HandlerError::Rejected("reading and threshold must be finite numbers".into()));
        }
        if p.reading <= p.threshold {
            let reason = format!("{} reads {} ≤ threshold {}: no ticket", p.device, p.reading, p.threshold);
            return Ok(TicketOutcome { opened: false, ticket: None, reason });
        }
        let summary = format!("{} at {} reads {} > threshold {}", p.device, p.site, p.reading, p.threshold);
        let args = serde_json::json!({ "device": p.device, "site": p.site, "summary": summary });
        let url = format!("{}/tickets", self.base);
        let mut body = args.clone();
        let ticket = ctx
            .effect("ticket", &args, |external_id| async move {
                body["external_id"] = serde_json::Value::String(external_id);
                let response = self.http.post(&url).json(&body).send().await.map_err(|e| unavailable(&url, e))?;
                let response = response.error_for_status().map_err(|e| unavailable(&url, e))?;
                response.json::<serde_json::Value>().await.map_err(|e| unavailable(&url, e))
            })
            .await?;
        Ok(TicketOutcome { opened: true, ticket: Some(ticket), reason: summary })
    }

    async fn reconcile(
        &self,
        _command: &Command,
        _step: &str,
        idempotency_key: &str,
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let url = format!("{}/tickets", self.base);
        let response = self
            .http
            .get(&url)
            .query(&[("external_id", idempotency_key)])
            .send()
            .await
            .map_err(|e| unavailable(&url, e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response.error_for_status().map_err(|e| unavailable(&url, e))?;
        Ok(Some(response.json().await.map_err(|e| unavailable(&url, e))?))
    }
}
