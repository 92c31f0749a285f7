//! The TLS handshake when serving `wss://`, then the WebSocket handshake:
//! the request path picks the control endpoint or a feed format (and, for
//! Binance, the streams), a required header is checked.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use super::{CONTROL_PATH, MAX_CLIENT_MESSAGE_BYTES, Shared};
use crate::exchange::Session;
use crate::wire::Format;

/// How long a client may take to complete the TLS handshake, and then the
/// WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's connection: plain TCP (`ws://`) or TLS over TCP (`wss://`).
pub(super) type ClientStream = Either<TcpStream, TlsStream<TcpStream>>;

/// Sets `TCP_NODELAY` and, when serving `wss://`, completes the TLS
/// handshake; `None` when it failed (logged and counted), timed out, or the
/// server is shutting down.
pub(super) async fn secure(stream: TcpStream, shared: &Shared, shutdown: &CancellationToken) -> Option<ClientStream> {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let Some(tls) = &shared.tls else { return Some(Either::Left(stream)) };
    let accepting = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream));
    let failure = tokio::select! {
        biased;
        () = shutdown.cancelled() => return None,
        result = accepting => match result {
            Ok(Ok(tls)) => return Some(Either::Right(tls)),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("timed out after {HANDSHAKE_TIMEOUT:?}"),
        },
    };
    shared.stats.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    tracing::info!(error = %failure, "TLS handshake failed");
    None
}

/// Where a handshake's request path sends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    Control,
    Feed { format: Format, path: String },
}

/// `/control` is the control endpoint; `/binance...`, `/coinbase...`,
/// `/kraken...` and `/shoal...` select a format for this connection (the
/// rest of the path is the exchange's own, e.g. `/binance/ws/btcusdt@trade`);
/// any other path uses the configured format.
fn route(path: &str, default: Format) -> Route {
    if path == CONTROL_PATH {
        return Route::Control;
    }
    for format in Format::ALL {
        let prefix = format!("/{}", format.name());
        if let Some(rest) = path.strip_prefix(&prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return Route::Feed { format, path: rest.to_owned() };
        }
    }
    Route::Feed { format: default, path: path.to_owned() }
}

/// A handshake's route, the Binance streams named in its URL, and whether
/// they are combined streams.
pub(super) type Routed = (Route, Vec<(usize, u8)>, bool);

fn reject(status: StatusCode, message: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message.to_owned()));
    *response.status_mut() = status;
    response
}

/// Completes the WebSocket handshake of `stream`, routing it by path and
/// checking the required header; `None` when the handshake failed or timed
/// out, or the server is shutting down.
pub(super) async fn handshake(
    stream: ClientStream,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Option<(WebSocketStream<ClientStream>, Routed)> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE_BYTES));
    let mut routed: Option<Routed> = None;
    // The callback's error type is fixed by tungstenite.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let path = request.uri().path();
        let route = route(path, shared.format);
        if let (Some((name, value)), Route::Feed { .. }) = (&shared.required_header, &route) {
            let given = request.headers().get(name.as_str()).and_then(|v| v.to_str().ok());
            if given != Some(value.as_str()) {
                shared.stats.rejected_handshakes.fetch_add(1, Ordering::Relaxed);
                // Never log the value expected or given: it is a credential.
                tracing::info!(header = %name, present = given.is_some(), "handshake rejected: required header missing or wrong");
                return Err(reject(StatusCode::UNAUTHORIZED, "missing or wrong required header"));
            }
        }
        let mut streams = Vec::new();
        let mut combined = false;
        if let Route::Feed { format: Format::Binance, path } = &route {
            let path = if path.is_empty() || path == "/" { "/ws" } else { path.as_str() };
            let mut session = Session { format: Format::Binance, combined: false };
            match session.binance_url_streams(path, request.uri().query(), &shared.symbols) {
                Ok(found) => streams = found,
                Err(message) => return Err(reject(StatusCode::BAD_REQUEST, &message)),
            }
            combined = session.combined;
        }
        routed = Some((route, streams, combined));
        Ok(response)
    };
    let handshake = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)),
    );
    let ws = tokio::select! {
        biased;
        () = shutdown.cancelled() => return None,
        result = handshake => match result {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => {
                tracing::info!(%error, "WebSocket handshake failed");
                return None;
            }
            Err(_) => {
                tracing::info!(timeout = ?HANDSHAKE_TIMEOUT, "WebSocket handshake timed out");
                return None;
            }
        },
    };
    Some((ws, routed?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_select_the_format() {
        assert_eq!(route("/control", Format::Shoal), Route::Control);
        assert_eq!(
            route("/binance/ws/btcusdt@trade", Format::Shoal),
            Route::Feed { format: Format::Binance, path: "/ws/btcusdt@trade".into() }
        );
        assert_eq!(route("/kraken/v2", Format::Shoal), Route::Feed { format: Format::Kraken, path: "/v2".into() });
        assert_eq!(route("/coinbase", Format::Shoal), Route::Feed { format: Format::Coinbase, path: String::new() });
        assert_eq!(
            route("/krakenish", Format::Coinbase),
            Route::Feed { format: Format::Coinbase, path: "/krakenish".into() }
        );
        assert_eq!(route("/", Format::Kraken), Route::Feed { format: Format::Kraken, path: "/".into() });
    }
}
