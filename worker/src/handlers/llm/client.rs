//! A client of an OpenAI-compatible chat-completions endpoint (OpenAI,
//! vLLM, Ollama, llama.cpp's server): one round is one [`ChatClient::complete`]
//! call taking a serialisable [`ChatRequest`], retried with backoff on
//! transient failures, each try bounded by the call time-out.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most characters of an error answer's body kept in an error message.
const ERROR_BODY_CHARS: usize = 500;

/// One chat-completions request: everything one round sends. Serialisable,
/// so that a round can be journaled as one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation so far (OpenAI message objects).
    pub messages: Vec<Value>,
    /// Function tools offered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// The final answer's form (`json_schema`, `json_object`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Sampling temperature.
    pub temperature: f64,
    /// Most output tokens.
    pub max_tokens: u32,
}

/// Token usage of one call, as the server reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A tool call as the model wrote it; nothing in it is trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id (made up when the model gave none).
    pub id: String,
    /// The function's name (empty when the model gave none).
    pub name: String,
    /// The arguments as the model wrote them (meant to be a JSON object).
    pub arguments: String,
}

/// What one call answered: the first choice's message, decoded defensively.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    /// `id` of the completion.
    pub id: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Why generation stopped (`stop`, `tool_calls`, `length`, ...).
    pub finish_reason: Option<String>,
    /// Text content.
    pub content: Option<String>,
    /// Tool calls asked for.
    pub tool_calls: Vec<ToolCall>,
    /// Usage; zero when the server reported none.
    pub usage: Usage,
}

/// Why a call got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// No answer within the call time-out.
    #[error("the model endpoint did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or was cut.
    #[error("the model endpoint is unreachable: {0}")]
    Unreachable(String),
    /// An HTTP error status.
    #[error("the model endpoint answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the answer's body (the API key, if echoed, redacted).
        body: String,
    },
    /// The answer is not a chat completion.
    #[error("the model endpoint's answer is not a chat completion: {0}")]
    Malformed(String),
}

impl CallError {
    /// Whether another try may succeed: time-outs, connection failures,
    /// 408, 429, 5xx and garbled answers.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Unreachable(_) | Self::Malformed(_) => true,
            Self::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
            Self::Client(_) => false,
        }
    }
}

/// Retries of one call.
#[derive(Debug, Clone, Copy)]
pub struct RetryBounds {
    /// Retries after the first try.
    pub retries: u32,
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// The largest reply a model call may return.
const MAX_REPLY_BYTES: usize = 16 << 20;

/// The endpoint, its key and the bounds of a call.
pub struct ChatClient {
    http: shoal_tls::HttpClient,
    url: url::Url,
    api_key: Option<SecretString>,
    timeout: Duration,
    retry: RetryBounds,
    /// Where calls are looked up by idempotency key (`llm.lookup_url`).
    lookup_url: Option<url::Url>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("url", &self.url.as_str())
            .field("lookup_url", &self.lookup_url.as_ref().map(url::Url::as_str))
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ChatClient {
    /// A client of `<endpoint>/chat/completions`.
    pub fn new(
        endpoint: &url::Url,
        api_key: Option<SecretString>,
        timeout: Duration,
        retry: RetryBounds,
    ) -> Result<Self, CallError> {
        let mut url = endpoint.clone();
        let path = format!("{}/chat/completions", url.path().trim_end_matches('/'));
        url.set_path(&path);
        // https:// endpoints (a hosted model) are verified with the
        // platform's root certificates.
        let roots = shoal_tls::platform_roots("SSL_CERT_FILE").unwrap_or_else(|reason| {
            tracing::warn!(%reason, "no root certificates: only http:// model endpoints can be reached");
            rustls::RootCertStore::empty()
        });
        let tls = shoal_tls::client_config(roots).map_err(CallError::Client)?;
        let http = shoal_tls::HttpClient::new(tls, timeout);
        Ok(Self { http, url, api_key, timeout, retry, lookup_url: None })
    }

    /// Looks calls up at `lookup_url` ([`ChatClient::lookup`]).
    pub fn with_lookup(mut self, lookup_url: Option<url::Url>) -> Self {
        self.lookup_url = lookup_url;
        self
    }

    /// The URL requests go to.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// One round: sends `request`, retrying transient failures with
    /// exponential backoff (jittered) up to the configured retries. Every
    /// try carries `idempotency_key`, if given, as an `Idempotency-Key`
    /// header.
    pub async fn complete(&self, request: &ChatRequest, idempotency_key: Option<&str>) -> Result<ChatReply, CallError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.initial)
            .with_max_delay(self.retry.max)
            .with_max_times(self.retry.retries as usize)
            .with_jitter();
        (|| self.send_once(request, idempotency_key))
            .retry(backoff)
            .when(CallError::is_transient)
            .notify(|error, delay| tracing::warn!(%error, ?delay, "model call failed; retrying"))
            .await
    }

    /// The answer the endpoint (or a gateway before it) gave to the call
    /// sent with `idempotency_key`: `GET <lookup_url>?idempotency_key=<key>`
    /// answers the chat completion it returned (2xx) or 404 when it has
    /// none. `None` without a lookup URL (the call is made again). One try:
    /// a failure is transient, and the journal asks again on the next
    /// attempt.
    pub async fn lookup(&self, idempotency_key: &str) -> Result<Option<ChatReply>, CallError> {
        let Some(lookup) = &self.lookup_url else { return Ok(None) };
        let mut url = lookup.clone();
        url.query_pairs_mut().append_pair("idempotency_key", idempotency_key);
        let builder = axum::http::Request::get(url.as_str());
        match self.exchange(builder, Vec::new()).await {
            Ok(value) => parse_reply(&value).map(Some),
            Err(CallError::Status { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn send_once(&self, request: &ChatRequest, idempotency_key: Option<&str>) -> Result<ChatReply, CallError> {
        let body = serde_json::to_vec(request).map_err(|e| CallError::Client(format!("encoding the request: {e}")))?;
        let mut builder =
            axum::http::Request::post(self.url.as_str()).header(axum::http::header::CONTENT_TYPE, "application/json");
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        parse_reply(&self.exchange(builder, body).await?)
    }

    /// Sends a request (with the API key) and decodes a 2xx answer's JSON.
    async fn exchange(&self, mut builder: axum::http::request::Builder, body: Vec<u8>) -> Result<Value, CallError> {
        if let Some(key) = &self.api_key {
            builder = builder.header(axum::http::header::AUTHORIZATION, format!("Bearer {}", key.expose_secret()));
        }
        let request = builder.body(body.into()).map_err(|e| CallError::Client(format!("building the request: {e}")))?;
        let (status, body) = self.http.send(request, MAX_REPLY_BYTES).await.map_err(|e| self.transport(e))?;
        let body = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(CallError::Status { status: status.as_u16(), body: self.redact(&body) });
        }
        serde_json::from_str(&body).map_err(|e| CallError::Malformed(format!("{e}: {}", self.redact(&body))))
    }

    fn transport(&self, error: shoal_tls::HttpError) -> CallError {
        match error {
            shoal_tls::HttpError::Timeout(_) => CallError::Timeout(self.timeout),
            // The causes name no header (the key is never in them).
            other => CallError::Unreachable(other.to_string()),
        }
    }

    /// The start of `body`, with the API key replaced if the server echoed it.
    fn redact(&self, body: &str) -> String {
        let mut text = clip(body, ERROR_BODY_CHARS);
        if let Some(key) = &self.api_key
            && !key.expose_secret().is_empty()
        {
            text = text.replace(key.expose_secret(), "<redacted>");
        }
        text
    }
}

/// Decodes a chat completion's first choice; tool calls are taken as
/// written (their checks are the agent's, answered to the model).
pub fn parse_reply(value: &Value) -> Result<ChatReply, CallError> {
    let choice = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| CallError::Malformed("no choices[0]".into()))?;
    let message = choice.get("message").ok_or_else(|| CallError::Malformed("no choices[0].message".into()))?;
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let tool_calls = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(|calls| {
            calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let function = call.get("function");
                    let arguments = match function.and_then(|f| f.get("arguments")) {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    ToolCall {
                        id: text(call.get("id")).unwrap_or_else(|| format!("call_{i}")),
                        name: text(function.and_then(|f| f.get("name"))).unwrap_or_default(),
                        arguments,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let usage = value.get("usage");
    let count = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_u64).unwrap_or(0);
    Ok(ChatReply {
        id: text(value.get("id")),
        model: text(value.get("model")),
        finish_reason: text(choice.get("finish_reason")),
        content: text(message.get("content")),
        tool_calls,
        usage: Usage { input_tokens: count("prompt_tokens"), output_tokens: count("completion_tokens") },
    })
}

/// The first `max` characters of `text`, with a marker when cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…[{} more bytes]", &text[..at], text.len() - at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_defensively() {
        let v = serde_json::json!({
            "id": "c1", "model": "m",
            "choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "a", "type": "function", "function": {"name": "summarize", "arguments": "{\"max_tokens\": 60}"}},
                               {"function": {"arguments": {"x": 1}}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}
        });
        let r = parse_reply(&v).unwrap();
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[0].name, "summarize");
        assert_eq!(r.tool_calls[1].id, "call_1");
        assert_eq!(r.tool_calls[1].name, "");
        assert_eq!(r.tool_calls[1].arguments, "{\"x\":1}");
        assert_eq!(r.usage.total(), 15);
        assert!(parse_reply(&serde_json::json!({"choices": []})).is_err());
        assert!(parse_reply(&serde_json::json!("nope")).is_err());
    }

    #[test]
    fn clip_cuts_on_characters_and_says_how_much() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("ééé", 1), "é…[4 more bytes]");
    }

    #[test]
    fn transient_errors_are_time_outs_rate_limits_and_server_errors() {
        assert!(CallError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(CallError::Status { status: 429, body: String::new() }.is_transient());
        assert!(CallError::Status { status: 503, body: String::new() }.is_transient());
        assert!(!CallError::Status { status: 401, body: String::new() }.is_transient());
        assert!(!CallError::Status { status: 400, body: String::new() }.is_transient());
    }
}
