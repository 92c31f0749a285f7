//! The trade generator: one task producing every symbol's trades at the
//! configured rate (and bursts on request), broadcast to every connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::exchange::KRAKEN_SNAPSHOT_TRADES;
use crate::walk::{Market, Trade};

/// After a stall the generator catches up at most this much time's worth of
/// trades at once.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// What the generator broadcasts to connections.
#[derive(Debug, Clone)]
pub(super) enum Feed {
    Trade(Trade),
    /// Many trades at once, to be sent as fast as possible; each connection
    /// reports how fast it sent them.
    Burst(Arc<[Trade]>, mpsc::Sender<BurstReport>),
}

/// How fast one connection sent a burst.
#[derive(Debug, Clone, Copy)]
pub(super) struct BurstReport {
    pub(super) frames: u64,
    pub(super) elapsed: Duration,
}

pub(super) struct BurstRequest {
    pub(super) count: u64,
    pub(super) reports: mpsc::Sender<BurstReport>,
    pub(super) receivers: oneshot::Sender<usize>,
}

impl std::fmt::Debug for BurstRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurstRequest").field("count", &self.count).finish_non_exhaustive()
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
pub(super) async fn generate(
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
