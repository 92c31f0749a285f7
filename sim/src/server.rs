//! The WebSocket server: accept loop, trade generator task, one task per
//! client connection, and the `/control` endpoint that injects faults.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::exchange::{CH_HEARTBEAT, CH_TRADE, KRAKEN_SNAPSHOT_TRADES, Session};
use super::walk::{Market, Trade, WalkParams};
use super::wire::{ClientRequest, Format, MalformedKind, ServerFrame, WILDCARD};
use super::{SimConfig, SimError};

/// Largest message or frame a client may send.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;

/// Interval between heartbeats to subscribed clients.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How long `serve` waits for clients to finish the close handshake on
/// shutdown before dropping their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Close code and reason sent to every client on shutdown.
pub const SHUTDOWN_CLOSE_REASON: &str = "simulator shutting down";

/// Path of the control endpoint (a WebSocket taking JSON commands).
pub const CONTROL_PATH: &str = "/control";

/// Largest burst one control command may ask for.
pub const MAX_BURST: u64 = 5_000_000;

/// How long a client may take to complete the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds of the broadcast channel capacity (trades buffered per client
/// before a slow client starts skipping).
const MIN_BROADCAST_CAPACITY: usize = 1024;
const MAX_BROADCAST_CAPACITY: usize = 65_536;

/// After a stall the generator catches up at most this much time's worth of
/// trades at once.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// At most one lag warning per client per this interval; skips in between
/// are summed into the next warning (or the next heartbeat tick's).
const LAG_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop
/// does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How long a burst command waits for every connection's report.
const BURST_REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the generator broadcasts to connections.
#[derive(Debug, Clone)]
enum Feed {
    Trade(Trade),
    /// Many trades at once, to be sent as fast as possible; each connection
    /// reports how fast it sent them.
    Burst(Arc<[Trade]>, mpsc::Sender<BurstReport>),
}

/// A fault injected through the control endpoint into every feed
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Drop the TCP connection without a close handshake.
    Disconnect,
    /// Neither read nor write for this long.
    Stall(Duration),
    /// Skip (do not send) the next n data frames; they still consume their
    /// sequence numbers and trade ids.
    Gap(u64),
    /// Replace the next n data frames with malformed ones.
    Malformed(u64),
}

/// How fast one connection sent a burst.
#[derive(Debug, Clone, Copy)]
struct BurstReport {
    frames: u64,
    elapsed: Duration,
}

struct BurstRequest {
    count: u64,
    reports: mpsc::Sender<BurstReport>,
    receivers: oneshot::Sender<usize>,
}

/// Server-wide counters, reported by the control endpoint's `stats`.
#[derive(Debug, Default)]
struct SimStats {
    accepted: AtomicU64,
    open: AtomicU64,
    subscribes: AtomicU64,
    client_closes: AtomicU64,
    rejected_handshakes: AtomicU64,
}

/// State shared by every connection.
#[derive(Debug)]
struct Shared {
    symbols: Arc<[Arc<str>]>,
    format: Format,
    malformed_every: Option<u64>,
    trades: broadcast::Sender<Feed>,
    faults: broadcast::Sender<Fault>,
    bursts: mpsc::Sender<BurstRequest>,
    /// The last trades of each symbol, oldest first (Kraken snapshots,
    /// Coinbase `last_match`).
    recent: Arc<[Mutex<VecDeque<Trade>>]>,
    required_header: Option<(String, String)>,
    stats: SimStats,
}

impl std::fmt::Debug for BurstRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurstRequest").field("count", &self.count).finish_non_exhaustive()
    }
}

/// Serves the simulated feed on `listener` until `shutdown` is cancelled.
///
/// Validates `config` first ([`SimError::Config`] if invalid). Then one task
/// generates trades for all symbols at `rate_per_symbol` each and broadcasts
/// them; every accepted connection runs in its own task. On cancellation the
/// server stops accepting, sends every client a Close frame (1001, "simulator
/// shutting down"), waits up to [`SHUTDOWN_GRACE`] for the close handshakes,
/// drops whatever connections remain and returns `Ok(())`.
pub async fn serve(listener: TcpListener, config: SimConfig, shutdown: CancellationToken) -> Result<(), SimError> {
    config.validate()?;
    let local = listener.local_addr().map_err(SimError::LocalAddr)?;

    let symbols: Arc<[Arc<str>]> = config.symbols.iter().map(|s| Arc::from(s.as_str())).collect();
    let total_rate = config.rate_per_symbol * symbols.len() as f64;
    // Two seconds of trades, within fixed bounds; the cast saturates.
    let capacity = ((total_rate * 2.0) as usize).clamp(MIN_BROADCAST_CAPACITY, MAX_BROADCAST_CAPACITY);
    let (trades, _) = broadcast::channel(capacity);
    let (faults, _) = broadcast::channel(64);
    let (bursts, burst_requests) = mpsc::channel(4);
    let recent: Arc<[Mutex<VecDeque<Trade>>]> = symbols.iter().map(|_| Mutex::new(VecDeque::new())).collect();

    let market = Market::new(
        &symbols,
        config.seed,
        &WalkParams {
            start_price: config.start_price,
            volatility_bps: config.volatility_bps,
            jump_probability: config.jump_probability,
            jump_bps: config.jump_bps,
            first_trade_id: config.first_trade_id,
        },
    );
    let generator = tokio::spawn(
        generate(market, trades.clone(), Arc::clone(&recent), burst_requests, total_rate, shutdown.clone())
            .instrument(tracing::info_span!("sim_generator")),
    );

    let shared = Arc::new(Shared {
        symbols,
        format: config.format,
        malformed_every: config.faults.malformed_every,
        trades,
        faults,
        bursts,
        recent,
        required_header: config.required_header.clone(),
        stats: SimStats::default(),
    });
    tracing::info!(
        %local,
        symbols = ?config.symbols,
        rate_per_symbol = config.rate_per_symbol,
        seed = config.seed,
        format = config.format.name(),
        malformed_every = ?config.faults.malformed_every,
        required_header = ?config.required_header.as_ref().map(|(name, _)| name),
        "simulator serving"
    );

    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set stays small.
        while let Some(result) = connections.try_join_next() {
            log_join_error(result);
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::info_span!("sim_client", %peer);
                    connections.spawn(
                        handle_connection(stream, peer, Arc::clone(&shared), shutdown.clone())
                            .instrument(span),
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                    }
                }
            },
        }
    }
    drop(listener);

    while let Some(result) = connections.try_join_next() {
        log_join_error(result);
    }
    let open = connections.len();
    tracing::info!(open_connections = open, "simulator shutting down: closing client connections");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(result) = connections.join_next().await {
            log_join_error(result);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            grace = ?SHUTDOWN_GRACE,
            "clients did not finish the close handshake in time; dropping them"
        );
        connections.shutdown().await;
    }
    if let Err(error) = generator.await {
        tracing::error!(%error, "trade generator task failed");
    }
    tracing::info!("simulator stopped");
    Ok(())
}

fn log_join_error(result: Result<(), tokio::task::JoinError>) {
    if let Err(error) = result
        && error.is_panic()
    {
        tracing::error!(%error, "client connection task panicked");
    }
}

fn remember(recent: &[Mutex<VecDeque<Trade>>], trade: &Trade) {
    if let Some(slot) = recent.get(trade.symbol_index)
        && let Ok(mut history) = slot.lock()
    {
        if history.len() >= KRAKEN_SNAPSHOT_TRADES {
            history.pop_front();
        }
        history.push_back(trade.clone());
    }
}

/// Generates trades at `total_rate` per second (round-robin over symbols)
/// until `shutdown` is cancelled, and bursts on request.
///
/// The interval period is one trade (at most 1 s, at least 1 ms); the number
/// of trades emitted per tick follows the time actually elapsed, so rates
/// above 1000/s emit several per tick and a late tick catches up (bounded by
/// [`MAX_CATCH_UP`]) instead of slowing the feed. Missed ticks are skipped
/// since the elapsed-time accounting already covers them.
async fn generate(
    mut market: Market,
    trades: broadcast::Sender<Feed>,
    recent: Arc<[Mutex<VecDeque<Trade>>]>,
    mut burst_requests: mpsc::Receiver<BurstRequest>,
    total_rate: f64,
    shutdown: CancellationToken,
) {
    let period = Duration::from_secs_f64((1.0 / total_rate).clamp(0.001, 1.0));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let max_burst = (total_rate * MAX_CATCH_UP.as_secs_f64()).ceil().max(1.0);
    let mut last = Instant::now();
    let mut due = 0.0_f64;
    let mut generated: u64 = 0;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(request) = burst_requests.recv() => {
                let now = Utc::now();
                let burst: Arc<[Trade]> = (0..request.count).map(|_| market.next_trade(now)).collect();
                for trade in burst.iter() {
                    remember(&recent, trade);
                }
                generated += request.count;
                let receivers = trades.send(Feed::Burst(burst, request.reports)).unwrap_or(0);
                let _ = request.receivers.send(receivers);
                continue;
            }
            _ = interval.tick() => {}
        }
        let now = Instant::now();
        due = (due + total_rate * now.duration_since(last).as_secs_f64()).min(max_burst);
        last = now;
        let whole = due.floor();
        due -= whole;
        // `whole` is a non-negative integer no larger than `max_burst`.
        for _ in 0..whole as u64 {
            let trade = market.next_trade(Utc::now());
            remember(&recent, &trade);
            // An error only means nobody is subscribed right now.
            let _ = trades.send(Feed::Trade(trade));
            generated += 1;
        }
    }
    tracing::debug!(generated, "trade generator stopped");
}

/// Per-connection counters, logged on disconnect.
#[derive(Debug, Default)]
struct Stats {
    frames_sent: u64,
    trades_sent: u64,
    heartbeats_sent: u64,
    malformed_sent: u64,
    trades_skipped: u64,
    trades_gapped: u64,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    ServerShutdown,
    ClientClosed,
    Dropped,
    Error(tungstenite::Error),
}

/// Where a handshake's request path sends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
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
type Routed = (Route, Vec<(usize, u8)>, bool);

fn reject(status: StatusCode, message: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message.to_owned()));
    *response.status_mut() = status;
    response
}

async fn handle_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
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
        () = shutdown.cancelled() => return,
        result = handshake => match result {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => {
                tracing::info!(%error, "WebSocket handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(timeout = ?HANDSHAKE_TIMEOUT, "WebSocket handshake timed out");
                return;
            }
        },
    };
    let Some((route, streams, combined)) = routed else { return };
    let format = match route {
        Route::Control => {
            tracing::info!(%peer, "control client connected");
            control(ws, &shared, &shutdown).await;
            return;
        }
        Route::Feed { format, .. } => format,
    };
    tracing::info!(%peer, format = format.name(), "client connected");
    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    shared.stats.open.fetch_add(1, Ordering::Relaxed);

    let mut connection = Connection {
        subscribed: vec![0; shared.symbols.len()],
        last_ids: vec![0; shared.symbols.len()],
        ws,
        session: Session { format, combined },
        faults: shared.faults.subscribe(),
        shared: Arc::clone(&shared),
        trades: None,
        seq: 0,
        stats: Stats::default(),
        lag: LagReport::default(),
        skip_next: 0,
        malformed_next: 0,
        malformed_occurrences: 0,
    };
    for (index, channels) in streams {
        connection.subscribed[index] |= channels;
    }
    connection.update_receiver();
    let end = connection.run(&shutdown).await;
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    if matches!(end, End::ClientClosed) {
        shared.stats.client_closes.fetch_add(1, Ordering::Relaxed);
    }
    let stats = &connection.stats;
    let reason = match &end {
        End::ServerShutdown => "server shutdown".to_owned(),
        End::ClientClosed => "client closed".to_owned(),
        End::Dropped => "dropped by a disconnect fault".to_owned(),
        End::Error(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)) => {
            "client dropped the connection without a close handshake".to_owned()
        }
        End::Error(error) => format!("error: {error}"),
    };
    tracing::info!(
        %peer,
        reason,
        frames_sent = stats.frames_sent,
        trades_sent = stats.trades_sent,
        heartbeats_sent = stats.heartbeats_sent,
        malformed_sent = stats.malformed_sent,
        trades_skipped = stats.trades_skipped,
        trades_gapped = stats.trades_gapped,
        "client disconnected"
    );
}

#[derive(Deserialize)]
struct ControlRequest {
    fault: Option<String>,
    cmd: Option<String>,
    ms: Option<u64>,
    count: Option<u64>,
}

/// The control endpoint: one JSON command per text message, one JSON reply.
async fn control(mut ws: WebSocketStream<TcpStream>, shared: &Shared, shutdown: &CancellationToken) {
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => {
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, ws.close(None)).await;
                return;
            }
            message = ws.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        };
        let reply = control_command(text.as_str(), shared).await;
        if ws.send(Message::text(reply.to_string())).await.is_err() {
            return;
        }
    }
}

async fn control_command(text: &str, shared: &Shared) -> serde_json::Value {
    let request: ControlRequest = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(error) => return json!({"ok": false, "error": format!("invalid command: {error}")}),
    };
    if request.cmd.as_deref() == Some("stats") {
        let s = &shared.stats;
        return json!({
            "ok": true,
            "accepted": s.accepted.load(Ordering::Relaxed),
            "open": s.open.load(Ordering::Relaxed),
            "subscribes": s.subscribes.load(Ordering::Relaxed),
            "client_closes": s.client_closes.load(Ordering::Relaxed),
            "rejected_handshakes": s.rejected_handshakes.load(Ordering::Relaxed),
        });
    }
    let Some(name) = request.fault.as_deref() else {
        return json!({"ok": false, "error": "expected {\"fault\": ...} or {\"cmd\": \"stats\"}"});
    };
    let count = request.count.unwrap_or(1);
    let fault = match name {
        "disconnect" => Fault::Disconnect,
        "stall" => Fault::Stall(Duration::from_millis(request.ms.unwrap_or(5_000))),
        "gap" => Fault::Gap(count),
        "malformed" => Fault::Malformed(count),
        "burst" => return burst(shared, count.min(MAX_BURST)).await,
        other => {
            return json!({
                "ok": false,
                "error": format!("unknown fault {other:?} (disconnect, stall, gap, malformed, burst)")
            });
        }
    };
    let connections = shared.faults.send(fault).unwrap_or(0);
    tracing::info!(?fault, connections, "fault injected");
    json!({"ok": true, "fault": name, "connections": connections})
}

async fn burst(shared: &Shared, count: u64) -> serde_json::Value {
    let (reports_tx, mut reports) = mpsc::channel(64);
    let (receivers_tx, receivers) = oneshot::channel();
    let request = BurstRequest { count, reports: reports_tx, receivers: receivers_tx };
    if shared.bursts.send(request).await.is_err() {
        return json!({"ok": false, "error": "the generator has stopped"});
    }
    let Ok(expected) = receivers.await else {
        return json!({"ok": false, "error": "the generator has stopped"});
    };
    let mut sent = Vec::new();
    let deadline = tokio::time::sleep(BURST_REPORT_TIMEOUT);
    tokio::pin!(deadline);
    while sent.len() < expected {
        tokio::select! {
            () = &mut deadline => break,
            report = reports.recv() => match report {
                Some(report) => sent.push(report),
                None => break,
            },
        }
    }
    let reports: Vec<serde_json::Value> = sent
        .iter()
        .map(|r| {
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            json!({
                "frames": r.frames,
                "elapsed_us": u64::try_from(r.elapsed.as_micros()).unwrap_or(u64::MAX),
                "per_second": (r.frames as f64 / secs).round(),
            })
        })
        .collect();
    tracing::info!(count, connections = expected, ?reports, "burst sent");
    json!({"ok": true, "fault": "burst", "trades": count, "connections": expected, "reports": reports})
}

struct Connection {
    ws: WebSocketStream<TcpStream>,
    shared: Arc<Shared>,
    session: Session,
    /// `subscribed[i]`: channel bits streamed to this client for symbol `i`
    /// (the Shoal format uses `CH_TRADE` only).
    subscribed: Vec<u8>,
    /// Last trade id seen per symbol (Coinbase heartbeats report it).
    last_ids: Vec<u64>,
    /// Present while at least one symbol is subscribed.
    trades: Option<broadcast::Receiver<Feed>>,
    faults: broadcast::Receiver<Fault>,
    /// Sequence number of the last data frame sent (Shoal), or count of
    /// trade frames (exchange formats, for `malformed_every`).
    seq: u64,
    stats: Stats,
    lag: LagReport,
    /// Fault state: data frames still to skip, and to garble.
    skip_next: u64,
    malformed_next: u64,
    malformed_occurrences: u64,
}

/// Rate-limits lag warnings for a persistently slow client.
#[derive(Debug, Default)]
struct LagReport {
    /// Trades skipped but not yet logged.
    pending: u64,
    last_logged: Option<Instant>,
}

/// A data frame before encoding.
#[derive(Debug, Clone, Copy)]
enum Data<'a> {
    Trade(&'a Trade),
    Heartbeat,
}

impl Connection {
    fn format(&self) -> Format {
        self.session.format
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> End {
        let greeting = match self.format() {
            Format::Shoal => vec![self.format().encode(&ServerFrame::Hello { symbols: &self.shared.symbols })],
            _ => self.session.greeting(),
        };
        for frame in greeting {
            if let Err(error) = self.send(frame).await {
                return End::Error(error);
            }
        }
        let start = Instant::now() + HEARTBEAT_INTERVAL;
        let mut heartbeat = tokio::time::interval_at(start, HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.close_going_away().await;
                    return End::ServerShutdown;
                }
                fault = self.faults.recv() => match fault {
                    Ok(Fault::Disconnect) => return End::Dropped,
                    Ok(Fault::Stall(duration)) => {
                        tracing::info!(?duration, "stalling: neither reading nor writing");
                        tokio::select! {
                            () = shutdown.cancelled() => return End::ServerShutdown,
                            () = tokio::time::sleep(duration) => {}
                        }
                        Ok(())
                    }
                    Ok(Fault::Gap(n)) => {
                        self.skip_next += n;
                        Ok(())
                    }
                    Ok(Fault::Malformed(n)) => {
                        self.malformed_next += n;
                        Ok(())
                    }
                    Err(_) => Ok(()),
                },
                incoming = self.ws.next() => match incoming {
                    None => return End::ClientClosed,
                    Some(Ok(Message::Close(frame))) => {
                        tracing::debug!(?frame, "client sent Close");
                        self.finish_client_close().await;
                        return End::ClientClosed;
                    }
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                        return End::ClientClosed;
                    }
                    Some(Err(tungstenite::Error::Capacity(error))) => {
                        tracing::info!(%error, "client message too large; closing");
                        let frame = CloseFrame { code: CloseCode::Size, reason: "message too large".into() };
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.ws.close(Some(frame))).await;
                        return End::Error(tungstenite::Error::Capacity(error));
                    }
                    Some(Err(error)) => return End::Error(error),
                },
                received = recv_if_subscribed(&mut self.trades) => match received {
                    Ok(Feed::Trade(trade)) => self.on_trade(&trade).await,
                    Ok(Feed::Burst(trades, reports)) => self.on_burst(&trades, &reports).await,
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        self.stats.trades_skipped += skipped;
                        self.lag.pending += skipped;
                        if self.lag.last_logged.is_none_or(|at| at.elapsed() >= LAG_LOG_INTERVAL) {
                            self.log_lag();
                        }
                        Ok(())
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.trades = None;
                        Ok(())
                    }
                },
                _ = heartbeat.tick() => {
                    if self.lag.pending > 0 {
                        self.log_lag();
                    }
                    self.heartbeat().await
                }
            };
            if let Err(error) = step {
                return match error {
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => End::ClientClosed,
                    other => End::Error(other),
                };
            }
        }
    }

    async fn heartbeat(&mut self) -> Result<(), tungstenite::Error> {
        if self.format() == Format::Shoal {
            return if self.subscribed.iter().any(|on| *on != 0) {
                self.send_data(Data::Heartbeat).await
            } else {
                Ok(())
            };
        }
        let mut frames = Vec::new();
        self.session.heartbeats(&self.shared.symbols, &self.subscribed, &self.last_ids, &mut frames);
        for frame in frames {
            self.send(frame).await?;
            self.stats.heartbeats_sent += 1;
        }
        Ok(())
    }

    async fn on_trade(&mut self, trade: &Trade) -> Result<(), tungstenite::Error> {
        if let Some(last) = self.last_ids.get_mut(trade.symbol_index) {
            *last = trade.trade_id;
        }
        let channels = self.subscribed.get(trade.symbol_index).copied().unwrap_or(0) & !CH_HEARTBEAT;
        if channels == 0 {
            return Ok(());
        }
        if self.format() == Format::Shoal {
            return self.send_data(Data::Trade(trade)).await;
        }
        self.seq += 1;
        if self.skip_next > 0 {
            self.skip_next -= 1;
            self.stats.trades_gapped += 1;
            return Ok(());
        }
        if let Some(kind) = self.malformed_now() {
            let frame = self.session.malformed(kind, trade);
            self.stats.malformed_sent += 1;
            return self.send(frame).await;
        }
        let mut frames = Vec::with_capacity(3);
        self.session.trade_frames(trade, channels, &mut frames);
        for frame in frames {
            self.send(frame).await?;
        }
        self.stats.trades_sent += 1;
        Ok(())
    }

    /// Sends a burst's trades as fast as the socket takes them (encoded
    /// first, then written without a flush per frame) and reports the rate.
    async fn on_burst(
        &mut self,
        trades: &[Trade],
        reports: &mpsc::Sender<BurstReport>,
    ) -> Result<(), tungstenite::Error> {
        let mut frames = Vec::with_capacity(trades.len());
        for trade in trades {
            if let Some(last) = self.last_ids.get_mut(trade.symbol_index) {
                *last = trade.trade_id;
            }
            let channels = self.subscribed.get(trade.symbol_index).copied().unwrap_or(0) & !CH_HEARTBEAT;
            if channels == 0 {
                continue;
            }
            self.seq += 1;
            match self.format() {
                Format::Shoal => frames.push(self.format().encode(&ServerFrame::Trade { seq: self.seq, trade })),
                _ => self.session.trade_frames(trade, channels, &mut frames),
            }
        }
        let count = frames.len() as u64;
        let started = Instant::now();
        for frame in frames {
            self.ws.feed(frame).await?;
        }
        self.ws.flush().await?;
        let elapsed = started.elapsed();
        self.stats.frames_sent += count;
        self.stats.trades_sent += count;
        let _ = reports.try_send(BurstReport { frames: count, elapsed });
        Ok(())
    }

    /// Whether the next data frame is to be malformed, and how.
    fn malformed_now(&mut self) -> Option<MalformedKind> {
        let scheduled = self.shared.malformed_every.is_some_and(|every| every > 0 && self.seq.is_multiple_of(every));
        let on_demand = self.malformed_next > 0;
        if !(scheduled || on_demand) {
            return None;
        }
        if on_demand && !scheduled {
            self.malformed_next -= 1;
        }
        self.malformed_occurrences += 1;
        Some(match (scheduled, self.shared.malformed_every) {
            (true, Some(every)) => MalformedKind::for_occurrence(self.seq / every),
            _ => MalformedKind::for_occurrence(self.malformed_occurrences),
        })
    }

    /// Logs (at warn) the trades skipped since the last lag report.
    fn log_lag(&mut self) {
        tracing::warn!(
            skipped = self.lag.pending,
            total_skipped = self.stats.trades_skipped,
            "client is lagging behind the feed; skipped trades"
        );
        self.lag.pending = 0;
        self.lag.last_logged = Some(Instant::now());
    }

    /// Sends Close (1001) and waits, bounded, for the client's Close reply.
    async fn close_going_away(&mut self) {
        let frame = CloseFrame { code: CloseCode::Away, reason: SHUTDOWN_CLOSE_REASON.into() };
        let handshake = async {
            if let Err(error) = self.ws.close(Some(frame)).await {
                tracing::debug!(%error, "cannot send Close");
                return;
            }
            // Reading on completes the handshake: the client's Close arrives,
            // then the stream ends.
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, handshake).await.is_err() {
            tracing::debug!("client did not complete the close handshake in time");
        }
    }

    /// Completes a client-initiated close: tungstenite queued the Close
    /// reply when it read the client's Close; reading on flushes it and then
    /// ends the stream. Nothing else may be sent in between.
    async fn finish_client_close(&mut self) {
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::debug!("client did not end the connection after the close handshake");
        }
    }

    async fn on_message(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        match message {
            Message::Text(text) if self.format() == Format::Shoal => match self.format().parse_request(text.as_str()) {
                Ok(ClientRequest::Subscribe { symbols }) => self.subscribe(&symbols).await,
                Ok(ClientRequest::Unsubscribe { symbols }) => self.unsubscribe(&symbols).await,
                Err(message) => {
                    tracing::debug!(%message, "invalid client request");
                    self.send_error(&message).await
                }
            },
            Message::Text(text) => self.on_exchange_request(text.as_str()).await,
            Message::Binary(_) if self.format() == Format::Shoal => {
                self.send_error("binary frames are not supported; send JSON text frames").await
            }
            // Exchanges ignore binary requests; tungstenite answers pings
            // itself; pongs and raw frames need nothing; Close is handled by
            // the caller.
            Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => Ok(()),
        }
    }

    async fn on_exchange_request(&mut self, text: &str) -> Result<(), tungstenite::Error> {
        let outcome = self.session.on_request(text, &self.shared.symbols, &self.subscribed);
        for (index, bits) in &outcome.add {
            self.subscribed[*index] |= bits;
        }
        for (index, bits) in &outcome.remove {
            self.subscribed[*index] &= !bits;
        }
        if outcome.subscribed {
            self.shared.stats.subscribes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(request = %text, "client subscribed");
        }
        self.update_receiver();
        for reply in outcome.replies {
            self.send(reply).await?;
        }
        for (index, channel) in outcome.snapshots {
            let recent: Vec<Trade> = match self.shared.recent.get(index).map(|m| m.lock()) {
                Some(Ok(history)) => history.iter().cloned().collect(),
                _ => Vec::new(),
            };
            if let Some(frame) = self.session.snapshot(channel, &recent) {
                self.send(frame).await?;
            }
        }
        Ok(())
    }

    /// Resolves requested names to symbol indices, sending an error for each
    /// unknown one. `*` means every symbol.
    async fn resolve(&mut self, requested: &[String]) -> Result<Vec<bool>, tungstenite::Error> {
        let mut selected = vec![false; self.shared.symbols.len()];
        for name in requested {
            if name == WILDCARD {
                selected.fill(true);
            } else if let Some(index) = self.shared.symbols.iter().position(|s| **s == **name) {
                selected[index] = true;
            } else {
                self.send_error(&format!("unknown symbol: {name}")).await?;
            }
        }
        Ok(selected)
    }

    fn names(&self, selected: &[bool]) -> Vec<Arc<str>> {
        self.shared.symbols.iter().zip(selected).filter(|(_, on)| **on).map(|(symbol, _)| Arc::clone(symbol)).collect()
    }

    fn subscribed_flags(&self) -> Vec<bool> {
        self.subscribed.iter().map(|c| *c != 0).collect()
    }

    async fn subscribe(&mut self, requested: &[String]) -> Result<(), tungstenite::Error> {
        let selected = self.resolve(requested).await?;
        self.subscribed = selected.iter().map(|on| if *on { CH_TRADE } else { 0 }).collect();
        self.update_receiver();
        self.shared.stats.subscribes.fetch_add(1, Ordering::Relaxed);
        let names = self.names(&self.subscribed_flags());
        tracing::info!(symbols = ?names, "client subscribed");
        self.send(self.format().encode(&ServerFrame::Subscribed { symbols: &names })).await
    }

    async fn unsubscribe(&mut self, requested: &[String]) -> Result<(), tungstenite::Error> {
        let selected = self.resolve(requested).await?;
        for (on, remove) in self.subscribed.iter_mut().zip(&selected) {
            if *remove {
                *on = 0;
            }
        }
        self.update_receiver();
        let names = self.names(&selected);
        tracing::info!(symbols = ?names, remaining = ?self.names(&self.subscribed_flags()), "client unsubscribed");
        self.send(self.format().encode(&ServerFrame::Unsubscribed { symbols: &names })).await
    }

    /// Holds a broadcast receiver exactly while something is subscribed, so
    /// idle clients neither buffer nor lag.
    fn update_receiver(&mut self) {
        let any = self.subscribed.iter().any(|on| *on & !CH_HEARTBEAT != 0);
        match (any, self.trades.is_some()) {
            (true, false) => self.trades = Some(self.shared.trades.subscribe()),
            (false, true) => self.trades = None,
            _ => {}
        }
    }

    async fn send_error(&mut self, message: &str) -> Result<(), tungstenite::Error> {
        self.send(self.format().encode(&ServerFrame::Error { message })).await
    }

    /// Sends a Shoal data frame with the next sequence number, skipped or
    /// replaced by a malformed frame when a fault says so.
    async fn send_data(&mut self, data: Data<'_>) -> Result<(), tungstenite::Error> {
        self.seq += 1;
        let seq = self.seq;
        if self.skip_next > 0 {
            self.skip_next -= 1;
            self.stats.trades_gapped += 1;
            return Ok(());
        }
        let ts = Utc::now();
        let frame = match data {
            Data::Trade(trade) => ServerFrame::Trade { seq, trade },
            Data::Heartbeat => ServerFrame::Heartbeat { seq, ts },
        };
        let format = self.format();
        let message = match self.malformed_now() {
            Some(kind) => {
                let flags = self.subscribed_flags();
                let fallback = self
                    .shared
                    .symbols
                    .iter()
                    .zip(&flags)
                    .find(|(_, on)| **on)
                    .or_else(|| self.shared.symbols.iter().zip(&flags).next())
                    .map_or("", |(symbol, _)| &**symbol);
                self.stats.malformed_sent += 1;
                tracing::debug!(seq, ?kind, "sending malformed frame");
                format.encode_malformed(kind, &frame, fallback)
            }
            None => {
                match data {
                    Data::Trade(_) => self.stats.trades_sent += 1,
                    Data::Heartbeat => self.stats.heartbeats_sent += 1,
                }
                format.encode(&frame)
            }
        };
        self.send(message).await
    }

    async fn send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(message).await?;
        self.stats.frames_sent += 1;
        Ok(())
    }
}

/// Receives the next trade, or never completes while not subscribed.
async fn recv_if_subscribed(
    receiver: &mut Option<broadcast::Receiver<Feed>>,
) -> Result<Feed, broadcast::error::RecvError> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod route_tests {
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
