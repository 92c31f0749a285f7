//! One feed connection: streams the subscribed trades and heartbeats in its
//! format, applies injected faults, answers requests, and closes cleanly.

mod shoal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::control::Fault;
use super::generator::{BurstReport, Feed};
use super::handshake::ClientStream;
use super::{HEARTBEAT_INTERVAL, SHUTDOWN_CLOSE_REASON, SHUTDOWN_GRACE, Shared};
use crate::exchange::{CH_HEARTBEAT, Session};
use crate::walk::Trade;
use crate::wire::{Format, MalformedKind, ServerFrame};

/// At most one lag warning per client per this interval; skips in between
/// are summed into the next warning (or the next heartbeat tick's).
const LAG_LOG_INTERVAL: Duration = Duration::from_secs(1);

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
pub(super) enum End {
    ServerShutdown,
    ClientClosed,
    Dropped,
    Error(tungstenite::Error),
}

pub(super) struct Connection {
    ws: WebSocketStream<ClientStream>,
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
    /// A connection speaking `session`'s format, already streaming
    /// `streams` (Binance streams named in the URL).
    pub(super) fn new(
        ws: WebSocketStream<ClientStream>,
        shared: Arc<Shared>,
        session: Session,
        streams: Vec<(usize, u8)>,
    ) -> Self {
        let mut connection = Connection {
            subscribed: vec![0; shared.symbols.len()],
            last_ids: vec![0; shared.symbols.len()],
            ws,
            session,
            faults: shared.faults.subscribe(),
            shared,
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
        connection
    }

    fn format(&self) -> Format {
        self.session.format
    }

    /// Logs why the connection ended and what it sent.
    pub(super) fn log_end(&self, peer: SocketAddr, end: &End) {
        let stats = &self.stats;
        let reason = match end {
            End::ServerShutdown => "server shutdown".to_owned(),
            End::ClientClosed => "client closed".to_owned(),
            End::Dropped => "dropped by a disconnect fault".to_owned(),
            End::Error(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => "client dropped the connection without a close handshake".to_owned(),
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

    pub(super) async fn run(&mut self, shutdown: &CancellationToken) -> End {
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
            Message::Text(text) if self.format() == Format::Shoal => self.on_shoal_request(text.as_str()).await,
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
        if !outcome.remove.is_empty() {
            self.shared.stats.unsubscribes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(request = %text, "client unsubscribed");
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
