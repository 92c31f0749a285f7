//! [`HttpClient`]: HTTP and HTTPS requests (hyper over rustls), for the
//! state API's peer forwarding and `shoal-mcp`. Its TLS configuration is
//! built here with *ring* ([`client_config`](crate::client_config)), so no
//! process-wide crypto provider is needed.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No complete answer within the client's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, the TLS handshake (an untrusted certificate, say) or
    /// the exchange failed; the causes, outermost first.
    #[error("{0}")]
    Failed(String),
    /// The answer's body is larger than the caller allows.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// A client for `http://` and `https://` URLs: one connection pool, each
/// request (connect, handshake, answer and body) bounded by a timeout.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client verifying `https://` servers with `tls`
    /// ([`client_config`](crate::client_config)); each request bounded by
    /// `timeout`.
    pub fn new(tls: rustls::ClientConfig, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self { client, timeout }
    }

    /// Sends `request`; its status and body (at most `max_body` bytes).
    pub async fn send(&self, request: Request<Bytes>, max_body: usize) -> Result<(StatusCode, Bytes), HttpError> {
        let request = request.map(Full::new);
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| HttpError::Failed(causes(&error)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), max_body).collect().await.map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    HttpError::TooLarge(max_body)
                } else {
                    HttpError::Failed(format!("reading the answer: {error}"))
                }
            })?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| HttpError::Timeout(self.timeout))?
    }
}

/// `error` and its sources, outermost first (hyper's own message is only
/// "client error (Connect)"; the cause, such as rustls' verdict on a
/// certificate, is further down).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_answers_and_a_refused_connection_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = axum::Router::new().route("/big", axum::routing::get(|| async { "x".repeat(100) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = crate::client_config(rustls::RootCertStore::empty()).expect("config");
        let client = HttpClient::new(config, Duration::from_secs(5));
        let get = |path: &str| Request::get(format!("http://{address}{path}")).body(Bytes::new()).expect("request");
        let (status, body) = client.send(get("/big"), 1_000).await.expect("answer");
        assert_eq!((status, body.len()), (StatusCode::OK, 100));
        assert_eq!(client.send(get("/big"), 10).await, Err(HttpError::TooLarge(10)));
        assert_eq!(client.send(get("/none"), 1_000).await.expect("answer").0, StatusCode::NOT_FOUND);

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gone = closed.local_addr().expect("address");
        drop(closed);
        let refused =
            client.send(Request::get(format!("http://{gone}/")).body(Bytes::new()).expect("request"), 10).await;
        assert!(matches!(refused, Err(HttpError::Failed(ref text)) if text.contains("onnect")), "{refused:?}");
    }
}
