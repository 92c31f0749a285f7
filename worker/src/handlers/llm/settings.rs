//! The `[llm]` section: the agent skill's endpoint, model, credentials and
//! bounds (see docs/llm-skill.md and the configuration reference).

use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, in_range, initial_delay, non_empty, one_of};

/// How the final answer's form is asked of the server.
/// `json_schema`: OpenAI's structured outputs (OpenAI, vLLM, llama.cpp's
/// llama-server); `json_object_schema`: `{"type": "json_object", "schema": ...}`
/// (llama-cpp-python's server, llama-server); `json_object`: JSON mode
/// without a schema; `none`: no `response_format`.
pub const RESPONSE_FORMATS: &[&str] = &["json_schema", "json_object_schema", "json_object", "none"];

/// The `[llm]` section. Secrets are never held here, only where they are
/// read from (`api_key_file`, `api_key_env`, `state_api_token_*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// Register the `llm_decide` kind.
    pub enabled: bool,
    /// Base URL of an OpenAI-compatible API (`.../v1`); requests go to
    /// `<endpoint>/chat/completions`.
    pub endpoint: String,
    /// Model name sent with each request.
    pub model: String,
    /// `gen_ai.provider.name` of the spans (`openai`, or e.g. `vllm`).
    pub provider: String,
    /// File holding the API key (first line that is not blank or a `#`
    /// comment). Empty: none.
    pub api_key_file: String,
    /// Environment variable holding the API key, read when no file is given.
    pub api_key_env: String,
    /// Where a model call started before a crash is looked up by its
    /// idempotency key before it is made again (`GET
    /// <lookup_url>?idempotency_key=<key>`: the chat completion given for
    /// that key, or 404), for endpoints or gateways that keep answers by the
    /// `Idempotency-Key` header each call carries. Empty: no lookup, such a
    /// call is made again (docs/journal.md).
    pub lookup_url: String,
    /// Model calls per command, at most (tool rounds and re-prompts included).
    pub max_rounds: u32,
    /// One model call's time-out, milliseconds.
    pub call_timeout_ms: u64,
    /// Retries of one model call after a time-out, a refused connection, a
    /// 429 or a 5xx answer.
    pub call_retries: u32,
    /// First retry delay, milliseconds; doubles, with jitter.
    pub retry_initial_ms: u64,
    /// Largest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// Tokens (input plus output, summed over rounds) one command may use.
    pub max_tokens_per_command: u64,
    /// `max_tokens` of each request (the most output tokens per call).
    pub max_tokens_per_call: u32,
    /// Sampling temperature, 0.0–2.0.
    pub temperature: f64,
    /// Offer Shoal's read tools to the model as function tools.
    pub tools: bool,
    /// What `response_format` the requests carry (see [`RESPONSE_FORMATS`]).
    pub response_format: String,
    /// JSON schema file of the final answer. Empty: the built-in decision
    /// schema.
    pub answer_schema_file: String,
    /// Base URL of the orchestrator's state API the tools ask.
    pub state_api_url: String,
    /// File holding the state API token. Empty: none.
    pub state_api_token_file: String,
    /// Environment variable holding the state API token.
    pub state_api_token_env: String,
    /// One state API question's time-out, milliseconds.
    pub tool_timeout_ms: u64,
    /// `max_tokens` of the state summary put into the first prompt.
    pub summary_max_tokens: u32,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:8080/v1".into(),
            model: String::new(),
            provider: "openai".into(),
            api_key_file: String::new(),
            api_key_env: "SHOAL_LLM_API_KEY".into(),
            lookup_url: String::new(),
            max_rounds: 6,
            call_timeout_ms: 30_000,
            call_retries: 2,
            retry_initial_ms: 500,
            retry_max_ms: 5_000,
            max_tokens_per_command: 20_000,
            max_tokens_per_call: 1_024,
            temperature: 0.0,
            tools: true,
            response_format: "json_schema".into(),
            answer_schema_file: String::new(),
            state_api_url: "http://127.0.0.1:8780".into(),
            state_api_token_file: String::new(),
            state_api_token_env: "SHOAL_LLM_STATE_API_TOKEN".into(),
            tool_timeout_ms: 5_000,
            summary_max_tokens: 1_000,
        }
    }
}

impl LlmSettings {
    /// Checks the section; the endpoint and model only when it is enabled.
    pub fn validate(&self) -> Result<(), SettingsError> {
        in_range("llm.max_rounds", self.max_rounds, 1..=50, "an integer")?;
        in_range("llm.call_timeout_ms", self.call_timeout_ms, 10..=600_000, "milliseconds")?;
        in_range("llm.call_retries", self.call_retries, 0..=10, "an integer")?;
        initial_delay("llm.retry_initial_ms", self.retry_initial_ms, "llm.retry_max_ms", self.retry_max_ms)?;
        in_range("llm.max_tokens_per_command", self.max_tokens_per_command, 100..=10_000_000, "tokens")?;
        in_range("llm.max_tokens_per_call", self.max_tokens_per_call, 16..=1_000_000, "tokens")?;
        in_range("llm.temperature", self.temperature, 0.0..=2.0, "a number")?;
        one_of("llm.response_format", &self.response_format, RESPONSE_FORMATS)?;
        in_range("llm.tool_timeout_ms", self.tool_timeout_ms, 10..=600_000, "milliseconds")?;
        in_range("llm.summary_max_tokens", self.summary_max_tokens, 50..=32_000, "tokens")?;
        if !self.enabled {
            return Ok(());
        }
        http_url("llm.endpoint", &self.endpoint)?;
        if !self.lookup_url.is_empty() {
            http_url("llm.lookup_url", &self.lookup_url)?;
        }
        non_empty("llm.model", &self.model, "the model name the endpoint serves, e.g. gpt-4o-mini")?;
        non_empty("llm.provider", &self.provider, "a gen_ai.provider.name, e.g. openai")?;
        http_url("llm.state_api_url", &self.state_api_url)
    }
}

fn http_url(key: &str, value: &str) -> Result<(), SettingsError> {
    let expected = "an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/v1";
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(()),
        Ok(_) => Err(SettingsError::invalid(key, format!("{value:?} is not an http(s) URL"), expected)),
        Err(e) => Err(SettingsError::invalid(key, format!("{value:?}: {e}"), expected)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_off_and_enabling_needs_a_model() {
        let s = LlmSettings::default();
        assert!(!s.enabled);
        assert!(s.validate().is_ok());
        let on = LlmSettings { enabled: true, ..LlmSettings::default() };
        let error = on.validate().unwrap_err().to_string();
        assert!(error.contains("llm.model"), "{error}");
        let bad =
            LlmSettings { enabled: true, model: "m".into(), endpoint: "ftp://x".into(), ..LlmSettings::default() };
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("llm.endpoint") && error.contains("http"), "{error}");
        let rounds = LlmSettings { max_rounds: 0, ..LlmSettings::default() };
        assert!(rounds.validate().unwrap_err().to_string().contains("llm.max_rounds"));
        let lookup =
            LlmSettings { enabled: true, model: "m".into(), lookup_url: "lookup".into(), ..LlmSettings::default() };
        let error = lookup.validate().unwrap_err().to_string();
        assert!(error.contains("llm.lookup_url"), "{error}");
        let format = LlmSettings { response_format: "xml".into(), ..LlmSettings::default() };
        assert!(format.validate().unwrap_err().to_string().contains("json_schema"));
    }
}
