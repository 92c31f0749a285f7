//! A client of the state query API (`GET /v1/...` with a bearer token).

use std::time::Duration;

use axum::http::{HeaderValue, Method};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tower::ServiceExt as _;
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
    /// The CA certificates for `https://` could not be used.
    #[error("TLS trust for the state API: {0}")]
    Trust(String),
    /// No answer (refused, timed out, cut).
    #[error("the state API at {url} did not answer: {detail}")]
    Unreachable {
        /// The request's URL.
        url: String,
        /// What failed.
        detail: String,
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
    #[error("the state API's answer to {url} is not JSON: {detail}")]
    Decode {
        /// The request's URL.
        url: String,
        /// What failed.
        detail: String,
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

/// Who a question is asked for: the MCP client's HTTP `Authorization`
/// (when it came over HTTP) and its name.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The `Authorization` header of the client's request (streamable HTTP).
    pub authorization: Option<HeaderValue>,
    /// The client's name and version, when it gave them.
    pub client: Option<String>,
}

impl Caller {
    /// The caller of an MCP request: its HTTP `Authorization` (streamable
    /// HTTP; none over stdio) and the client's name and version.
    pub fn of(ctx: &rmcp::service::RequestContext<rmcp::RoleServer>) -> Self {
        let authorization = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get(axum::http::header::AUTHORIZATION).cloned());
        let client = ctx.peer.peer_info().map(|info| {
            let client = &info.client_info;
            format!("{}/{}", client.name, client.version)
        });
        Self { authorization, client }
    }
}

/// Where the API is.
#[derive(Clone)]
enum Backend {
    /// Over HTTP, with this server's own token (stdio: one client, one token).
    Remote { http: Box<shoal_tls::HttpClient>, token: Option<SecretString> },
    /// In the same process: the API's router, called with the caller's own
    /// `Authorization` (streamable HTTP: each client brings its token).
    Local { router: axum::Router },
}

/// Largest answer read from the in-process API, bytes.
const MAX_ANSWER: usize = 32 << 20;

/// Reads the state API of one orchestrator.
#[derive(Clone)]
pub struct StateClient {
    backend: Backend,
    base: Url,
}

impl std::fmt::Debug for StateClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Remote { .. } => "remote",
            Backend::Local { .. } => "in-process",
        };
        f.debug_struct("StateClient").field("base", &self.base.as_str()).field("backend", &kind).finish()
    }
}

impl StateClient {
    /// A client of the API at `base` (`http://host:port`), sending `token`
    /// as a bearer token when given, each request bounded by `timeout`. An
    /// `https://` API is verified with the platform's root certificates.
    pub fn new(base: &str, token: Option<SecretString>, timeout: Duration) -> Result<Self, ClientError> {
        Self::trusting(base, token, timeout, None)
    }

    /// Like [`StateClient::new`], verifying an `https://` API with the CA
    /// certificates of the PEM file `ca_file` when given.
    pub fn trusting(
        base: &str,
        token: Option<SecretString>,
        timeout: Duration,
        ca_file: Option<&str>,
    ) -> Result<Self, ClientError> {
        let bad = |detail: String| ClientError::BadUrl { url: base.to_string(), detail };
        let mut url = Url::parse(base).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("not an http(s) URL with a host".into()));
        }
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let roots = match ca_file {
            Some(file) => shoal_tls::ca_roots(file).map_err(ClientError::Trust)?,
            // Without platform roots, plain http:// still works.
            None => shoal_tls::platform_roots("--ca-file").unwrap_or_else(|_| rustls::RootCertStore::empty()),
        };
        let tls = shoal_tls::client_config(roots).map_err(ClientError::Trust)?;
        let http = Box::new(shoal_tls::HttpClient::new(tls, timeout));
        Ok(Self { backend: Backend::Remote { http, token }, base: url })
    }

    /// A client of the API served by `router` in this process; each
    /// question carries its caller's `Authorization`, so the API's own
    /// tokens and roles apply.
    pub fn in_process(router: axum::Router) -> Self {
        #[allow(clippy::expect_used)]
        let base = Url::parse("http://in-process/").expect("a constant URL parses");
        Self { backend: Backend::Local { router }, base }
    }

    /// `GET <base>/<path>?<query>` for `caller`; parameters whose value is
    /// `None` are left out.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
        caller: &Caller,
    ) -> Result<Value, ClientError> {
        self.ask(Method::GET, path, query, None, caller).await
    }

    /// `POST <base>/<path>` with a JSON `body`, for `caller`.
    pub async fn post(&self, path: &str, body: &Value, caller: &Caller) -> Result<Value, ClientError> {
        self.ask(Method::POST, path, &[], Some(body), caller).await
    }

    async fn ask(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, Option<String>)],
        body: Option<&Value>,
        caller: &Caller,
    ) -> Result<Value, ClientError> {
        let url = self.url(path, query)?;
        let shown = url.to_string();
        let via = match &caller.client {
            Some(client) => format!("mcp; {client}"),
            None => "mcp".to_string(),
        };
        // One request for both backends: an absolute URL and this server's
        // token when remote; path and query and the caller's own
        // `Authorization` in process.
        let (target, authorization) = match &self.backend {
            Backend::Remote { token, .. } => {
                let bearer = token
                    .as_ref()
                    .map(|token| HeaderValue::try_from(format!("Bearer {}", token.expose_secret())))
                    .transpose()
                    .map_err(|e| ClientError::BadUrl { url: shown.clone(), detail: e.to_string() })?;
                (url.as_str().to_string(), bearer)
            }
            Backend::Local { .. } => {
                let target = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_string(),
                };
                (target, caller.authorization.clone())
            }
        };
        let mut request = axum::http::Request::builder().method(method).uri(target).header(VIA_HEADER, via);
        if let Some(authorization) = authorization {
            request = request.header(axum::http::header::AUTHORIZATION, authorization);
        }
        let body = match body {
            Some(body) => {
                request = request.header(axum::http::header::CONTENT_TYPE, "application/json");
                axum::body::Bytes::from(body.to_string())
            }
            None => axum::body::Bytes::new(),
        };
        let request =
            request.body(body).map_err(|e| ClientError::BadUrl { url: shown.clone(), detail: e.to_string() })?;
        let unreachable = |detail: String| ClientError::Unreachable { url: shown.clone(), detail };
        let (status, bytes) = match &self.backend {
            Backend::Remote { http, .. } => {
                let (status, bytes) = http.send(request, MAX_ANSWER).await.map_err(|e| unreachable(e.to_string()))?;
                (status.as_u16(), bytes)
            }
            Backend::Local { router } => {
                let answer = match router.clone().oneshot(request.map(axum::body::Body::from)).await {
                    Ok(answer) => answer,
                    Err(never) => match never {},
                };
                let status = answer.status().as_u16();
                let bytes = axum::body::to_bytes(answer.into_body(), MAX_ANSWER)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
                (status, bytes)
            }
        };
        let body: Value =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url: shown, detail: e.to_string() })?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error = &body["error"];
        Err(ClientError::Api {
            status,
            code: error["code"].as_str().unwrap_or("error").to_string(),
            message: error["message"].as_str().map_or_else(|| body.to_string(), str::to_string),
            parameter: error["parameter"].as_str().map(str::to_string),
        })
    }

    /// `<base>/<path>?<query>`.
    fn url(&self, path: &str, query: &[(&str, Option<String>)]) -> Result<Url, ClientError> {
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
        Ok(url)
    }
}

/// Header telling the API a request comes through MCP (and from which
/// client): the API's `x-shoal-via`.
const VIA_HEADER: &str = "x-shoal-via";
