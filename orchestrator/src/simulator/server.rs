//! The WebSocket server: accept loop, trade generator task and one task per
//! client connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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

/// State shared by every connection.
#[derive(Debug)]
struct Shared {
    symbols: Arc<[Arc<str>]>,
    format: Format,
    malformed_every: Option<u64>,
    trades: broadcast::Sender<Trade>,
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

    let market = Market::new(
        &symbols,
        config.seed,
        &WalkParams {
            start_price: config.start_price,
            volatility_bps: config.volatility_bps,
            jump_probability: config.jump_probability,
            jump_bps: config.jump_bps,
        },
    );
    let generator = tokio::spawn(
        generate(market, trades.clone(), total_rate, shutdown.clone()).instrument(tracing::info_span!("sim_generator")),
    );

    let shared =
        Arc::new(Shared { symbols, format: config.format, malformed_every: config.faults.malformed_every, trades });
    tracing::info!(
        %local,
        symbols = ?config.symbols,
        rate_per_symbol = config.rate_per_symbol,
        seed = config.seed,
        format = ?config.format,
        malformed_every = ?config.faults.malformed_every,
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

/// Generates trades at `total_rate` per second (round-robin over symbols)
/// until `shutdown` is cancelled.
///
/// The interval period is one trade (at most 1 s, at least 1 ms); the number
/// of trades emitted per tick follows the time actually elapsed, so rates
/// above 1000/s emit several per tick and a late tick catches up (bounded by
/// [`MAX_CATCH_UP`]) instead of slowing the feed. Missed ticks are skipped
/// since the elapsed-time accounting already covers them.
async fn generate(mut market: Market, trades: broadcast::Sender<Trade>, total_rate: f64, shutdown: CancellationToken) {
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
            _ = interval.tick() => {}
        }
        let now = Instant::now();
        due = (due + total_rate * now.duration_since(last).as_secs_f64()).min(max_burst);
        last = now;
        let whole = due.floor();
        due -= whole;
        // `whole` is a non-negative integer no larger than `max_burst`.
        for _ in 0..whole as u64 {
            // An error only means nobody is subscribed right now.
            let _ = trades.send(market.next_trade(Utc::now()));
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
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    ServerShutdown,
    ClientClosed,
    Error(tungstenite::Error),
}

async fn handle_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE_BYTES));
    let handshake =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::accept_async_with_config(stream, Some(config)));
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
    tracing::info!(%peer, "client connected");

    let mut connection = Connection {
        subscribed: vec![false; shared.symbols.len()],
        ws,
        shared,
        trades: None,
        seq: 0,
        stats: Stats::default(),
        lag: LagReport::default(),
    };
    let end = connection.run(&shutdown).await;
    let stats = &connection.stats;
    let reason = match &end {
        End::ServerShutdown => "server shutdown".to_owned(),
        End::ClientClosed => "client closed".to_owned(),
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
        "client disconnected"
    );
}

/// A data frame before encoding.
#[derive(Debug, Clone, Copy)]
enum Data<'a> {
    Trade(&'a Trade),
    Heartbeat,
}

struct Connection {
    ws: WebSocketStream<TcpStream>,
    shared: Arc<Shared>,
    /// `subscribed[i]`: whether symbol `i` is streamed to this client.
    subscribed: Vec<bool>,
    /// Present while at least one symbol is subscribed.
    trades: Option<broadcast::Receiver<Trade>>,
    /// Sequence number of the last data frame sent.
    seq: u64,
    stats: Stats,
    lag: LagReport,
}

/// Rate-limits lag warnings for a persistently slow client.
#[derive(Debug, Default)]
struct LagReport {
    /// Trades skipped but not yet logged.
    pending: u64,
    last_logged: Option<Instant>,
}

impl Connection {
    async fn run(&mut self, shutdown: &CancellationToken) -> End {
        let hello = self.shared.format.encode(&ServerFrame::Hello { symbols: &self.shared.symbols });
        if let Err(error) = self.send(hello).await {
            return End::Error(error);
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
                    Ok(trade) => {
                        if self.subscribed.get(trade.symbol_index).copied().unwrap_or(false) {
                            self.send_data(Data::Trade(&trade)).await
                        } else {
                            Ok(())
                        }
                    }
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
                    if self.subscribed.iter().any(|on| *on) {
                        self.send_data(Data::Heartbeat).await
                    } else {
                        Ok(())
                    }
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
            Message::Text(text) => match self.shared.format.parse_request(text.as_str()) {
                Ok(ClientRequest::Subscribe { symbols }) => self.subscribe(&symbols).await,
                Ok(ClientRequest::Unsubscribe { symbols }) => self.unsubscribe(&symbols).await,
                Err(message) => {
                    tracing::debug!(%message, "invalid client request");
                    self.send_error(&message).await
                }
            },
            Message::Binary(_) => self.send_error("binary frames are not supported; send JSON text frames").await,
            // tungstenite answers pings itself; pongs and raw frames need
            // nothing; Close is handled by the caller.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => Ok(()),
        }
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

    async fn subscribe(&mut self, requested: &[String]) -> Result<(), tungstenite::Error> {
        let selected = self.resolve(requested).await?;
        self.subscribed = selected;
        self.update_receiver();
        let names = self.names(&self.subscribed);
        tracing::info!(symbols = ?names, "client subscribed");
        self.send(self.shared.format.encode(&ServerFrame::Subscribed { symbols: &names })).await
    }

    async fn unsubscribe(&mut self, requested: &[String]) -> Result<(), tungstenite::Error> {
        let selected = self.resolve(requested).await?;
        for (on, remove) in self.subscribed.iter_mut().zip(&selected) {
            *on &= !*remove;
        }
        self.update_receiver();
        let names = self.names(&selected);
        tracing::info!(symbols = ?names, remaining = ?self.names(&self.subscribed), "client unsubscribed");
        self.send(self.shared.format.encode(&ServerFrame::Unsubscribed { symbols: &names })).await
    }

    /// Holds a broadcast receiver exactly while something is subscribed, so
    /// idle clients neither buffer nor lag.
    fn update_receiver(&mut self) {
        let any = self.subscribed.iter().any(|on| *on);
        match (any, self.trades.is_some()) {
            (true, false) => self.trades = Some(self.shared.trades.subscribe()),
            (false, true) => self.trades = None,
            _ => {}
        }
    }

    async fn send_error(&mut self, message: &str) -> Result<(), tungstenite::Error> {
        self.send(self.shared.format.encode(&ServerFrame::Error { message })).await
    }

    /// Sends a data frame with the next sequence number, replaced by a
    /// malformed frame when the fault says so.
    async fn send_data(&mut self, data: Data<'_>) -> Result<(), tungstenite::Error> {
        self.seq += 1;
        let seq = self.seq;
        let ts = Utc::now();
        let frame = match data {
            Data::Trade(trade) => ServerFrame::Trade { seq, trade },
            Data::Heartbeat => ServerFrame::Heartbeat { seq, ts },
        };
        let format = self.shared.format;
        let message = match self.shared.malformed_every {
            Some(every) if every > 0 && seq.is_multiple_of(every) => {
                let kind = MalformedKind::for_occurrence(seq / every);
                let fallback = self
                    .shared
                    .symbols
                    .iter()
                    .zip(&self.subscribed)
                    .find(|(_, on)| **on)
                    .or_else(|| self.shared.symbols.iter().zip(&self.subscribed).next())
                    .map_or("", |(symbol, _)| &**symbol);
                self.stats.malformed_sent += 1;
                tracing::debug!(seq, ?kind, "sending malformed frame");
                format.encode_malformed(kind, &frame, fallback)
            }
            _ => {
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
    receiver: &mut Option<broadcast::Receiver<Trade>>,
) -> Result<Trade, broadcast::error::RecvError> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
