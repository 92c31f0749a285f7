//! `probe`: a diagnostic handler whose behaviour the command chooses, for
//! rehearsing failures end to end (retries, permanent failures, slow
//! handlers) against a real deployment. Registered only when
//! `worker.probe_handler = true`.

use std::time::Duration;

use serde::Deserialize;
use shoal_protocol::messages::Command;

use super::{Handler, HandlerError, payload};

/// The command kind this handler serves.
pub const PROBE_KIND: &str = "probe";

/// Handler for `probe`.
#[derive(Debug, Clone, Copy)]
pub struct ProbeHandler;

/// What a probe command asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbePayload {
    /// Fail with a retryable error on the first `fail_attempts` attempts.
    #[serde(default)]
    pub fail_attempts: u32,
    /// Fail permanently instead.
    #[serde(default)]
    pub permanent: bool,
    /// Work this long before answering, milliseconds.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail with a retryable error until this file exists (an outage that
    /// ends when the operator, or a test, says so).
    #[serde(default)]
    pub fail_until_exists: Option<std::path::PathBuf>,
}

#[async_trait::async_trait]
impl Handler for ProbeHandler {
    async fn handle(&self, command: &Command, attempt: u32) -> Result<serde_json::Value, HandlerError> {
        let p: ProbePayload = payload(command)?;
        if p.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(p.sleep_ms)).await;
        }
        if p.permanent {
            return Err(HandlerError::Rejected("probe asked for a permanent failure".into()));
        }
        if let Some(path) = &p.fail_until_exists
            && !path.exists()
        {
            return Err(HandlerError::Retryable(format!("probe waits for {}", path.display())));
        }
        if attempt <= p.fail_attempts {
            return Err(HandlerError::Retryable(format!("probe failure {attempt} of {}", p.fail_attempts)));
        }
        Ok(serde_json::json!({"attempt": attempt}))
    }
}
