//! The `notify_webhook` skill: delivers notifications by HTTP POST to a
//! configured URL, each one an effect step journalled through
//! [`HandlerContext::effect`], so a command run again does not deliver them
//! twice (`docs/journal.md`). Registered only when `worker.webhook.url` is
//! set.
//!
//! Payload: `{"notifications": [<any JSON>, ...]}` (1 to 64). Notification
//! `i` is POSTed as the JSON body, in order, as step `post/<i>`, with an
//! `Idempotency-Key: <command id>/post/<i>` header. The output lists each
//! delivery's status and answer. When `worker.webhook.lookup_url` is set, a
//! step started but not recorded is looked up with
//! `GET <lookup_url>?idempotency_key=<key>`: `200` means delivered (its body
//! is the outcome), `404` means not delivered (POSTed again).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, in_range};
use shoal_protocol::messages::Command;

use super::{Handler, HandlerContext, HandlerError, payload};

/// The command kind.
pub const KIND: &str = "notify_webhook";

/// Most notifications per command.
pub const MAX_NOTIFICATIONS: usize = 64;

/// Longest answer body kept in an outcome, bytes.
const MAX_BODY: usize = 4_096;

/// The `[worker.webhook]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Where notifications are POSTed (`http://`). Empty: the
    /// `notify_webhook` kind is not registered.
    pub url: String,
    /// Where a delivery is looked up by idempotency key (`http://`), for
    /// steps started but not recorded. Empty: such a step is POSTed again.
    pub lookup_url: String,
    /// Time-out of one request, milliseconds.
    pub timeout_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self { url: String::new(), lookup_url: String::new(), timeout_ms: 5_000 }
    }
}

impl WebhookSettings {
    /// Checks the section, naming keys under `worker.webhook.`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (key, value) in [("worker.webhook.url", &self.url), ("worker.webhook.lookup_url", &self.lookup_url)] {
            if !value.is_empty() && !is_http_url(value) {
                return Err(SettingsError::invalid(
                    key,
                    format!("{value:?} is not an http:// URL"),
                    "an http:// URL with a host, e.g. http://127.0.0.1:8090/hook (https is not built in), or empty",
                ));
            }
        }
        if self.url.is_empty() && !self.lookup_url.is_empty() {
            return Err(SettingsError::invalid(
                "worker.webhook.lookup_url",
                "set without worker.webhook.url".to_string(),
                "empty, or set together with worker.webhook.url",
            ));
        }
        in_range("worker.webhook.timeout_ms", self.timeout_ms, 1..=60_000, "milliseconds")
    }
}

fn is_http_url(value: &str) -> bool {
    reqwest::Url::parse(value).is_ok_and(|u| u.scheme() == "http" && u.host_str().is_some_and(|h| !h.is_empty()))
}

/// The typed payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyPayload {
    notifications: Vec<serde_json::Value>,
}

/// The `notify_webhook` handler.
#[derive(Debug, Clone)]
pub struct WebhookHandler {
    client: reqwest::Client,
    url: reqwest::Url,
    lookup_url: Option<reqwest::Url>,
}

impl WebhookHandler {
    /// A handler for `settings` (validated); `None` when no URL is set.
    pub fn from_settings(settings: &WebhookSettings) -> Result<Option<Self>, SettingsError> {
        if settings.url.is_empty() {
            return Ok(None);
        }
        let parse = |key: &str, value: &str| {
            reqwest::Url::parse(value).map_err(|e| SettingsError::invalid(key, e.to_string(), "an http:// URL"))
        };
        let url = parse("worker.webhook.url", &settings.url)?;
        let lookup_url = match settings.lookup_url.as_str() {
            "" => None,
            value => Some(parse("worker.webhook.lookup_url", value)?),
        };
        let timeout = Duration::from_millis(settings.timeout_ms);
        let client =
            reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build().map_err(|e| {
                SettingsError::invalid("worker.webhook", e.to_string(), "settings an HTTP client accepts")
            })?;
        Ok(Some(Self { client, url, lookup_url }))
    }

    async fn post(&self, body: &serde_json::Value, idempotency_key: &str) -> Result<serde_json::Value, HandlerError> {
        let answer = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
            .map_err(|e| HandlerError::Retryable(format!("webhook POST {}: {e}", self.url)))?;
        outcome(answer, "POST", &self.url).await
    }
}

/// A delivery's outcome from the answer: `{status, body}`; 429 and 5xx are
/// transient, other non-2xx answers final.
async fn outcome(
    answer: reqwest::Response,
    method: &str,
    url: &reqwest::Url,
) -> Result<serde_json::Value, HandlerError> {
    let status = answer.status();
    let text = answer.text().await.map_err(|e| HandlerError::Retryable(format!("webhook {method} {url}: {e}")))?;
    let mut end = text.len().min(MAX_BODY);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let body = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text[..end].to_string()));
    if status.is_success() {
        Ok(serde_json::json!({"status": status.as_u16(), "body": body}))
    } else if status.as_u16() == 429 || status.is_server_error() {
        Err(HandlerError::Retryable(format!("webhook {method} {url} answered {status}")))
    } else {
        Err(HandlerError::Rejected(format!("webhook {method} {url} answered {status}: {}", &text[..end])))
    }
}

#[async_trait::async_trait]
impl Handler for WebhookHandler {
    async fn handle(&self, _command: &Command, _attempt: u32) -> Result<serde_json::Value, HandlerError> {
        Err(HandlerError::Rejected(format!("{KIND} runs through the side-effect journal (handle_with) only")))
    }

    async fn handle_with(
        &self,
        command: &Command,
        ctx: &HandlerContext<'_>,
    ) -> Result<serde_json::Value, HandlerError> {
        let p: NotifyPayload = payload(command)?;
        if p.notifications.is_empty() || p.notifications.len() > MAX_NOTIFICATIONS {
            return Err(HandlerError::Rejected(format!(
                "notifications: {} given, 1 to {MAX_NOTIFICATIONS} accepted",
                p.notifications.len()
            )));
        }
        let mut deliveries = Vec::with_capacity(p.notifications.len());
        for (i, body) in p.notifications.iter().enumerate() {
            let step = format!("post/{i}");
            let args = serde_json::json!({"url": self.url.as_str(), "body": body});
            let delivered = ctx.effect(&step, &args, |key| async move { self.post(body, &key).await }).await?;
            deliveries.push(delivered);
        }
        Ok(serde_json::json!({"url": self.url.as_str(), "deliveries": deliveries}))
    }

    async fn reconcile(
        &self,
        _command: &Command,
        _step: &str,
        idempotency_key: &str,
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let Some(lookup) = &self.lookup_url else { return Ok(None) };
        let answer = self
            .client
            .get(lookup.clone())
            .query(&[("idempotency_key", idempotency_key)])
            .send()
            .await
            .map_err(|e| HandlerError::Retryable(format!("webhook lookup GET {lookup}: {e}")))?;
        if answer.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        outcome(answer, "lookup GET", lookup).await.map(Some)
    }
}
