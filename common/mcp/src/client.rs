//! A client of the state query API (`GET /v1/...` with a bearer token).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

/// Why a question to the state API got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an `http://` or `https://` URL.
    #[error("state API URL {url:?} is not valid: {detail} (expected http://host:port)")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why it is refused.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// No answer (refused, timed out, cut).
    #[error("the state API at {url} did not answer: {source}")]
    Unreachable {
        /// The request's URL.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error (`{"error": {"code", "message", "parameter"?}}`).
    #[error("the state API refused the request ({status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The answer's error code (`bad_request`, `not_found`, ...).
        code: String,
        /// The answer's message.
        message: String,
        /// The parameter at fault, when the API names one.
        parameter: Option<String>,
    },
    /// The answer is not JSON.
    #[error("the state API's answer to {url} is not JSON: {source}")]
    Decode {
        /// The request's URL.
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
}

impl ClientError {
    /// The error as a JSON object a model can read and act on.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Api { status, code, message, parameter } => serde_json::json!({
                "error": {"status": status, "code": code, "message": message, "parameter": parameter}
            }),
            other => serde_json::json!({"error": {"code": "unavailable", "message": other.to_string()}}),
        }
    }
}

/// Reads the state API of one orchestrator.
#[derive(Debug, Clone)]
pub struct StateClient {
    http: reqwest::Client,
    base: Url,
    token: Option<SecretString>,
}

impl StateClient {
    /// A client of the API at `base` (`http://host:port`), sending `token`
    /// as a bearer token when given, each request bounded by `timeout`.
    pub fn new(base: &str, token: Option<SecretString>, timeout: Duration) -> Result<Self, ClientError> {
        let bad = |detail: String| ClientError::BadUrl { url: base.to_string(), detail };
        let mut url = Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("not an http(s) URL with a host".into()));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(ClientError::Client)?;
        Ok(Self { http, base: url, token })
    }

    /// `GET <base>/<path>?<query>`; parameters whose value is `None` are
    /// left out.
    pub async fn get(&self, path: &str, query: &[(&str, Option<String>)]) -> Result<Value, ClientError> {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ClientError::BadUrl { url: format!("{}{path}", self.base), detail: e.to_string() })?;
        {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                if let Some(value) = value {
                    pairs.append_pair(name, value);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut request = self.http.get(url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let shown = url.to_string();
        let answer = request.send().await.map_err(|source| ClientError::Unreachable { url: shown.clone(), source })?;
        let status = answer.status();
        let body: Value = answer.json().await.map_err(|source| ClientError::Decode { url: shown, source })?;
        if status.is_success() {
            return Ok(body);
        }
        let error = &body["error"];
        Err(ClientError::Api {
            status: status.as_u16(),
            code: error["code"].as_str().unwrap_or("error").to_string(),
            message: error["message"].as_str().map_or_else(|| body.to_string(), str::to_string),
            parameter: error["parameter"].as_str().map(str::to_string),
        })
    }
}
