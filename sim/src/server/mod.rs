//! The WebSocket server: accept loop, trade generator task ([`generator`]),
//! one task per client connection ([`connection`]), TLS first when
//! configured ([`handshake`]), and the `/control` endpoint that injects
//! faults ([`control`](mod@control)).

mod connection;
mod control;
mod generator;
mod handshake;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::exchange::Session;
use super::walk::{Market, Trade, WalkParams};
use super::wire::Format;
use super::{SimConfig, SimError};
use connection::{Connection, End};
use control::{Fault, control};
use generator::{BurstRequest, Feed, generate};
use handshake::{Route, handshake, secure};

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

/// Bounds of the broadcast channel capacity (trades buffered per client
/// before a slow client starts skipping).
const MIN_BROADCAST_CAPACITY: usize = 1024;
const MAX_BROADCAST_CAPACITY: usize = 65_536;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop
/// does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Server-wide counters, reported by the control endpoint's `stats`.
#[derive(Debug, Default)]
struct SimStats {
    accepted: AtomicU64,
    open: AtomicU64,
    subscribes: AtomicU64,
    unsubscribes: AtomicU64,
    client_closes: AtomicU64,
    rejected_handshakes: AtomicU64,
    tls_handshake_failures: AtomicU64,
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
    /// Present when serving `wss://`.
    tls: Option<crate::TlsIdentity>,
    stats: SimStats,
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
    let (shared, generator) = start(&config, &shutdown);
    tracing::info!(
        %local,
        symbols = ?config.symbols,
        rate_per_symbol = config.rate_per_symbol,
        seed = config.seed,
        format = config.format.name(),
        malformed_every = ?config.faults.malformed_every,
        required_header = ?config.required_header.as_ref().map(|(name, _)| name),
        tls_cert = ?config.tls.as_ref().map(|tls| tls.cert_file()),
        "simulator serving"
    );
    let connections = accept_until_shutdown(listener, &shared, &shutdown).await;
    close_connections(connections).await;
    if let Err(error) = generator.await {
        tracing::error!(%error, "trade generator task failed");
    }
    tracing::info!("simulator stopped");
    Ok(())
}

/// Spawns the trade generator and builds the state every connection
/// shares.
fn start(config: &SimConfig, shutdown: &CancellationToken) -> (Arc<Shared>, JoinHandle<()>) {
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
        tls: config.tls.clone(),
        stats: SimStats::default(),
    });
    (shared, generator)
}

/// Accepts connections, each in its own task, until `shutdown`; the
/// listener is closed on return.
async fn accept_until_shutdown(
    listener: TcpListener,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) -> JoinSet<()> {
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
                        handle_connection(stream, peer, Arc::clone(shared), shutdown.clone())
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
    connections
}

/// Waits up to [`SHUTDOWN_GRACE`] for the connections (each closing with a
/// close handshake), then drops the rest.
async fn close_connections(mut connections: JoinSet<()>) {
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
}

fn log_join_error(result: Result<(), tokio::task::JoinError>) {
    if let Err(error) = result
        && error.is_panic()
    {
        tracing::error!(%error, "client connection task panicked");
    }
}

async fn handle_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    let Some(stream) = secure(stream, &shared, &shutdown).await else { return };
    let Some((ws, (route, streams, combined))) = handshake(stream, &shared, &shutdown).await else { return };
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

    let mut connection = Connection::new(ws, Arc::clone(&shared), Session { format, combined }, streams);
    let end = connection.run(&shutdown).await;
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    if matches!(end, End::ClientClosed) {
        shared.stats.client_closes.fetch_add(1, Ordering::Relaxed);
    }
    connection.log_end(peer, &end);
}
