//! The LLM agent skill, kind `llm_decide`: the command and a summary of
//! Shoal's state go to an OpenAI-compatible chat-completions endpoint, which
//! may call Shoal's read tools (executed against the state API) for a
//! bounded number of rounds and must end with a JSON answer that satisfies
//! the configured schema. Off unless `[llm] enabled = true`; see
//! docs/llm-skill.md.
//!
//! - [`client`]: the endpoint's client (one round = one serialisable request).
//! - [`settings`]: the `[llm]` section.
//! - `agent`: the rounds, the tool calls and the answer's validation.
//! - `record`: what the result and the spans (`gen_ai.*`) keep.

mod agent;
pub mod client;
mod record;
pub mod settings;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use shoal_mcp::{ShoalTools, StateClient};
use shoal_protocol::messages::Command;

pub use settings::LlmSettings;

use self::client::{ChatClient, RetryBounds};
use super::{Handler, HandlerContext, HandlerError};
use crate::flow::{FlowStats, TokenBudget};

/// The skill's command kind.
pub const LLM_DECIDE: &str = "llm_decide";

/// Why the skill could not be set up; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum LlmSetupError {
    /// A secret file could not be read or holds no secret.
    #[error("`{key}`: cannot read {path}: {detail}")]
    SecretFile {
        /// The setting.
        key: &'static str,
        /// The file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// The answer schema is not usable.
    #[error("`llm.answer_schema_file`: {0} (expected a file holding a JSON schema)")]
    Schema(String),
    /// A URL or client could not be made.
    #[error("`{key}`: {detail}")]
    Client {
        /// The setting.
        key: &'static str,
        /// What failed.
        detail: String,
    },
}

/// The built-in final answer schema: a trading decision.
pub fn default_answer_schema() -> Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["action", "reason", "confidence"],
        "properties": {
            "action": {"type": "string", "enum": ["buy", "sell", "hold", "alert"]},
            "reason": {"type": "string", "minLength": 1, "maxLength": 2000},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1}
        }
    })
}

/// The `llm_decide` handler.
#[derive(Debug)]
pub struct LlmHandler {
    agent: agent::Agent,
}

impl LlmHandler {
    /// Builds the skill from its settings: reads the API key and the state
    /// API token (files or environment), the answer schema, and makes the
    /// clients. Nothing is called yet.
    pub fn new(settings: &LlmSettings) -> Result<Self, LlmSetupError> {
        let api_key = secret("llm.api_key_file", &settings.api_key_file, &settings.api_key_env, false)?;
        let token =
            secret("llm.state_api_token_file", &settings.state_api_token_file, &settings.state_api_token_env, true)?;
        let schema = match settings.answer_schema_file.trim() {
            "" => default_answer_schema(),
            path => {
                let text = std::fs::read_to_string(path).map_err(|e| LlmSetupError::Schema(format!("{path}: {e}")))?;
                serde_json::from_str(&text).map_err(|e| LlmSetupError::Schema(format!("{path}: {e}")))?
            }
        };
        let validator = jsonschema::validator_for(&schema).map_err(|e| LlmSetupError::Schema(e.to_string()))?;
        let endpoint = url::Url::parse(&settings.endpoint)
            .map_err(|e| LlmSetupError::Client { key: "llm.endpoint", detail: e.to_string() })?;
        let retry = RetryBounds {
            retries: settings.call_retries,
            initial: Duration::from_millis(settings.retry_initial_ms),
            max: Duration::from_millis(settings.retry_max_ms),
        };
        let lookup = match settings.lookup_url.trim() {
            "" => None,
            value => Some(
                url::Url::parse(value)
                    .map_err(|e| LlmSetupError::Client { key: "llm.lookup_url", detail: e.to_string() })?,
            ),
        };
        let client = ChatClient::new(&endpoint, api_key, Duration::from_millis(settings.call_timeout_ms), retry)
            .map_err(|e| LlmSetupError::Client { key: "llm.endpoint", detail: e.to_string() })?
            .with_lookup(lookup);
        let state = StateClient::new(&settings.state_api_url, token, Duration::from_millis(settings.tool_timeout_ms))
            .map_err(|e| LlmSetupError::Client { key: "llm.state_api_url", detail: e.to_string() })?;
        let agent = agent::Agent::new(settings, client, ShoalTools::new(state), schema, validator);
        Ok(Self { agent })
    }

    /// Holds each key to `budget` (`worker.flow.llm`), if any: a model call
    /// of a key whose budget is spent fails the command for good, and each
    /// call's tokens are charged to its key. Refusals are counted in
    /// `stats`.
    pub fn with_key_budget(mut self, budget: Option<Arc<TokenBudget>>, stats: Arc<FlowStats>) -> Self {
        self.agent.key_budget = budget.map(|budget| agent::KeyBudget { budget, stats });
        self
    }
}

#[async_trait::async_trait]
impl Handler for LlmHandler {
    async fn handle(&self, command: &Command, attempt: u32) -> Result<Value, HandlerError> {
        let payload: agent::Payload = super::payload(command)?;
        self.agent.run(command, &payload, attempt, None).await
    }

    /// What the worker calls: the summary, each model call and each tool
    /// call are journal steps (`summary`, `chat-<n>`, `tool-<n>-<i>`).
    async fn handle_with(&self, command: &Command, ctx: &HandlerContext<'_>) -> Result<Value, HandlerError> {
        let payload: agent::Payload = super::payload(command)?;
        self.agent.run(command, &payload, ctx.attempt, Some(ctx)).await
    }

    /// A model call (`chat-<n>`) started but not recorded is looked up at
    /// `llm.lookup_url` by its idempotency key; found, its answer is used
    /// instead of calling (and paying for) the model again.
    async fn reconcile(
        &self,
        _command: &Command,
        step: &str,
        idempotency_key: &str,
    ) -> Result<Option<Value>, HandlerError> {
        self.agent.look_up_call(step, idempotency_key).await
    }
}

/// A secret from `file` (first line that is not blank or a `#` comment),
/// else from the variable `env`; none when neither is set. With
/// `strip_role`, a `read:`/`admin:` prefix (the API's token format) is
/// dropped.
fn secret(key: &'static str, file: &str, env: &str, strip_role: bool) -> Result<Option<SecretString>, LlmSetupError> {
    let text = if file.trim().is_empty() {
        if env.trim().is_empty() {
            return Ok(None);
        }
        match std::env::var(env) {
            Ok(value) => value,
            Err(_) => return Ok(None),
        }
    } else {
        let fail = |detail: String| LlmSetupError::SecretFile { key, path: file.to_string(), detail };
        let text = std::fs::read_to_string(Path::new(file)).map_err(|e| fail(e.to_string()))?;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
        line.ok_or_else(|| fail("no secret in it (only blank lines or # comments)".into()))?.to_string()
    };
    let mut value = text.trim();
    if strip_role {
        value = value.strip_prefix("read:").or_else(|| value.strip_prefix("admin:")).unwrap_or(value);
    }
    Ok((!value.is_empty()).then(|| SecretString::from(value.to_string())))
}
