//! Opening the feed's WebSocket (through TLS for `wss://`, trusting
//! `feed.ca_file` or the platform's root certificates), and closing it with
//! a close handshake.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rustls::CertificateError;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::FeedSettings;
use super::settings::ca_roots;
use shoal_tls::{client_config, platform_roots};

/// Bound on connecting (TCP, TLS and the WebSocket handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or a configured header is invalid (the value is never shown).
    #[error("invalid request: {0}")]
    Request(String),
    /// The server's TLS certificate does not verify against the trusted
    /// roots: signed by an unknown CA, issued for another host name,
    /// expired, ... `reason` starts with rustls' name for it
    /// (`UnknownIssuer`, `NotValidForName`, `Expired`, ...); `roots` says
    /// what was trusted (`ca_file=<path>` or the platform's roots).
    #[error("feed {url}: TLS certificate not trusted: {reason} ({roots})")]
    Untrusted {
        /// The feed's URL.
        url: String,
        /// Why the certificate was refused.
        reason: String,
        /// What was trusted.
        roots: String,
    },
    /// The roots to trust could not be loaded: `feed.ca_file` (checked at
    /// start-up, so changed since) or the platform's root certificates.
    #[error("feed {url}: cannot load the TLS roots: {reason}")]
    Roots {
        /// The feed's URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// TCP, TLS or the WebSocket handshake failed.
    #[error("connect failed: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// No answer in time.
    #[error("connect timed out")]
    Timeout,
}

/// A connected feed socket.
pub type FeedSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl ConnectError {
    /// Whether the server's certificate was refused (a trust problem to fix
    /// in the configuration or on the server, not a network one).
    pub fn is_untrusted(&self) -> bool {
        matches!(self, Self::Untrusted { .. })
    }
}

/// Opens the feed's WebSocket: `ws://` plain, `wss://` through rustls
/// trusting `feed.ca_file` when set (and then nothing else), else the
/// platform's root certificates; with the configured extra handshake headers
/// (marked sensitive, never logged).
pub async fn connect(feed: &FeedSettings) -> Result<FeedSocket, ConnectError> {
    install_crypto_provider();
    let mut request = feed.url.as_str().into_client_request().map_err(|e| ConnectError::Request(e.to_string()))?;
    for (key, value) in &feed.headers {
        let header = FeedSettings::header_name(key);
        let name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| ConnectError::Request(format!("invalid header name {header}")))?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| ConnectError::Request(format!("invalid value for header {header}")))?;
        value.set_sensitive(true);
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(feed.max_message_bytes))
        .max_frame_size(Some(feed.max_message_bytes));
    let connector = match request.uri().scheme_str() {
        Some("wss") => Some(tls_connector(feed)?),
        _ => None,
    };
    let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(error)) => Err(match refused_certificate(&error) {
            Some(refused) => ConnectError::Untrusted {
                url: feed.url.clone(),
                reason: certificate_reason(refused),
                roots: trusted_roots(feed),
            },
            None => ConnectError::WebSocket(error),
        }),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// What a `wss://` connection to `feed` trusts, for messages.
fn trusted_roots(feed: &FeedSettings) -> String {
    if feed.ca_file.is_empty() {
        "the platform's root certificates; set feed.ca_file for a private CA".to_owned()
    } else {
        format!("ca_file={}", feed.ca_file)
    }
}

/// The TLS client configuration of `feed`: its CA file's certificates as
/// the only roots when set, else the platform's. Built for each connection
/// attempt, so a replaced CA file is read on the next reconnect.
fn tls_connector(feed: &FeedSettings) -> Result<Connector, ConnectError> {
    let roots = if feed.ca_file.is_empty() { platform_roots("feed.ca_file") } else { ca_roots(&feed.ca_file) };
    let roots_error = |reason: String| ConnectError::Roots { url: feed.url.clone(), reason };
    let config = client_config(roots.map_err(roots_error)?).map_err(roots_error)?;
    Ok(Connector::Rustls(Arc::new(config)))
}

/// The certificate problem behind a failed connection, if that is what it
/// is: rustls' verdict, wrapped by tokio-rustls in an I/O error.
fn refused_certificate(error: &tungstenite::Error) -> Option<&CertificateError> {
    let tungstenite::Error::Io(io) = error else { return None };
    match io.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(refused) => Some(refused),
        _ => None,
    }
}

/// rustls' name for the problem, with its details where it has some.
fn certificate_reason(error: &CertificateError) -> String {
    match error {
        CertificateError::ExpiredContext { .. } => format!("Expired: {error}"),
        CertificateError::NotValidYetContext { .. } => format!("NotValidYet: {error}"),
        CertificateError::NotValidForNameContext { .. } => format!("NotValidForName: {error}"),
        other => format!("{other:?}"),
    }
}

/// rustls needs a crypto provider; the feed's own TLS configuration names
/// *ring*, and this installs it process-wide too, for any other `wss://`
/// client in the process built without one (tokio-tungstenite's defaults).
fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // An error only means another provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Sends a close frame and waits (bounded) for the server's answer, so the
/// server sees a clean close rather than a dropped connection.
pub(super) async fn close_gracefully<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame { code: CloseCode::Normal, reason: "orchestrator shutting down".into() };
    if let Err(error) = ws.close(Some(frame)).await {
        tracing::debug!(%error, "close frame not sent");
        return;
    }
    let drained =
        tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = ws.next().await {} }).await;
    match drained {
        Ok(()) => tracing::info!("feed closed with a close handshake"),
        Err(_) => tracing::warn!("feed did not answer the close frame in time"),
    }
}
