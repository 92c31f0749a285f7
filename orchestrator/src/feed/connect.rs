//! Opening the feed's WebSocket, and closing it with a close handshake.

use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::FeedSettings;

/// Bound on connecting (TCP, TLS and the WebSocket handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or a configured header is invalid (the value is never shown).
    #[error("invalid request: {0}")]
    Request(String),
    /// TCP, TLS or the WebSocket handshake failed.
    #[error("connect failed: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// No answer in time.
    #[error("connect timed out")]
    Timeout,
}

/// A connected feed socket.
pub type FeedSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens the feed's WebSocket: `ws://` plain, `wss://` through rustls with
/// the platform's root certificates, with the configured extra handshake
/// headers (marked sensitive, never logged).
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
    let connecting = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(error)) => Err(ConnectError::WebSocket(error)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// rustls needs a process-wide crypto provider; tokio-tungstenite builds it
/// without one, so without this every `wss://` connect would panic.
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
