//! Whether a stalled WebSocket subscriber slows the state's ingest: the
//! ingest thread of the state phase (applying trades and publishing the
//! changed symbols to a [`Hub`] every 50 ms, as a stage's shards do) with
//! the query API over that hub, measured in trades applied per second over
//! a [`WINDOW`]:
//!
//! - **without** a subscriber;
//! - **stalled**: a WebSocket client (receive buffer 4 KiB) subscribed to
//!   every symbol that never reads while the window runs;
//! - **reading**: a subscriber to every symbol that reads everything (what
//!   any subscriber costs the process, for comparison);
//! - **control**: without a subscriber again, so that the spread of two
//!   identical runs is measured beside the difference.
//!
//! [`ROUNDS`] rounds, the order of the four rotating from round to round;
//! reported as the geometric mean of the per-round ratios (each over
//! without) with a 95% interval. After the window
//! the stalled client reads what waits for it and must be told it missed
//! updates (`missed` above zero, or an `overflow` frame), or the phase
//! fails: a subscriber that was never stalled would prove nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{SinkExt as _, StreamExt as _};
use shoal_api::Hub;
use tokio_tungstenite::tungstenite::Message;

use super::state::{Ingest, serve_api};
use super::stats::ratio_interval;

/// Rounds of the four runs.
const ROUNDS: usize = 4;
const WITHOUT: usize = 0;
const STALLED: usize = 1;
const READING: usize = 2;
const CONTROL: usize = 3;
/// How long each run's rate is measured.
const WINDOW: Duration = Duration::from_secs(2);

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// What the stalled subscriber was told once it read again.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Told {
    /// Updates coalesced away, summed over the frames read.
    pub(crate) missed: u64,
    /// `overflow` frames.
    pub(crate) overflows: u64,
}

/// The stall figures.
#[derive(Debug, Clone)]
pub(crate) struct StallFigures {
    /// Trades/s without a subscriber, per round.
    pub(crate) without: Vec<f64>,
    /// With the stalled subscriber, per round.
    pub(crate) stalled: Vec<f64>,
    /// With a subscriber that reads everything, per round.
    pub(crate) reading: Vec<f64>,
    /// Without again, per round.
    pub(crate) control: Vec<f64>,
    /// What the stalled subscriber was told, summed over rounds.
    pub(crate) told: Told,
}

/// Runs the rounds; fails when a stalled subscriber was not told it missed
/// updates.
pub(crate) async fn measure() -> anyhow::Result<StallFigures> {
    let mut figures = StallFigures {
        without: Vec::new(),
        stalled: Vec::new(),
        reading: Vec::new(),
        control: Vec::new(),
        told: Told::default(),
    };
    for round in 0..ROUNDS {
        let mut order = [WITHOUT, STALLED, READING, CONTROL];
        order.rotate_left(round % 4);
        let mut rates = [0.0; 4];
        for case in order {
            let (rate, told) = run(case).await?;
            rates[case] = rate;
            if let Some(told) = told {
                if told.missed == 0 && told.overflows == 0 {
                    bail!("round {round}: the stalled subscriber was not told it missed any update");
                }
                figures.told.missed += told.missed;
                figures.told.overflows += told.overflows;
            }
        }
        println!(
            "bench: state: stalled subscriber round {}: {:.0} trades/s without, {:.0} stalled, {:.0} reading, {:.0} control",
            round + 1,
            rates[WITHOUT],
            rates[STALLED],
            rates[READING],
            rates[CONTROL]
        );
        figures.without.push(rates[WITHOUT]);
        figures.stalled.push(rates[STALLED]);
        figures.reading.push(rates[READING]);
        figures.control.push(rates[CONTROL]);
    }
    Ok(figures)
}

/// One run of `case`: the ingest rate over the window, and (stalled) what
/// the subscriber was told afterwards.
async fn run(case: usize) -> anyhow::Result<(f64, Option<Told>)> {
    let hub = Arc::new(Hub::new());
    let (address, server) = serve_api(hub.clone()).await?;
    let ingest = Ingest::start(hub);
    let outcome = async {
        ingest.ready().await;
        let socket = if case == STALLED { Some(subscribe(address).await?) } else { None };
        let reader = if case == READING {
            let mut socket = subscribe(address).await?;
            Some(tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} }))
        } else {
            None
        };
        let (first, started) = (ingest.applied.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(WINDOW).await;
        let rate = (ingest.applied.load(Ordering::Relaxed) - first) as f64 / started.elapsed().as_secs_f64();
        if let Some(reader) = reader {
            reader.abort();
        }
        anyhow::Ok((rate, socket))
    }
    .await;
    ingest.stop().await;
    let (rate, socket) = match outcome {
        Ok(measured) => measured,
        Err(error) => {
            server.abort();
            return Err(error);
        }
    };
    let told = match socket {
        Some(socket) => Some(read_what_was_missed(socket).await),
        None => None,
    };
    server.abort();
    Ok((rate, told))
}

/// Connects with a small receive buffer and subscribes to every symbol.
async fn subscribe(address: std::net::SocketAddr) -> anyhow::Result<Socket> {
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.set_recv_buffer_size(4096)?;
    let stream = tcp.connect(address).await.context("connecting the subscriber")?;
    let (mut socket, _) = tokio_tungstenite::client_async(format!("ws://{address}/v1/stream"), stream)
        .await
        .context("opening the WebSocket")?;
    socket.send(Message::Text(r#"{"op":"subscribe","entities":[{"kind":"symbol"}]}"#.into())).await?;
    Ok(socket)
}

/// Reads for up to 5 s (ingest has stopped, so what waits is finite),
/// adding up `missed` and `overflow` frames.
async fn read_what_was_missed(mut socket: Socket) -> Told {
    let mut told = Told::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, socket.next()).await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        match frame["type"].as_str() {
            Some("update") => told.missed += frame["missed"].as_u64().unwrap_or(0),
            Some("overflow") => told.overflows += 1,
            _ => {}
        }
        if told.missed > 0 || told.overflows > 0 {
            break;
        }
    }
    told
}

/// Prints the figures.
pub(crate) fn report(f: &StallFigures) {
    let ratios = |of: &[f64]| -> Vec<f64> { of.iter().zip(&f.without).map(|(x, base)| x / base).collect() };
    let describe = |ratios: &[f64]| match ratio_interval(ratios) {
        Some((mean, low, high)) => format!("{mean:.2} (95% interval {low:.2}-{high:.2})"),
        None => "n/a".to_string(),
    };
    println!(
        "bench: state: the stalled subscriber was told it missed {} updates ({} overflow frames) over {ROUNDS} rounds",
        f.told.missed, f.told.overflows
    );
    println!(
        "state: stalled_subscriber_ingest_ratio={} reading_subscriber_ingest_ratio={} control_ratio={} rounds={ROUNDS}",
        describe(&ratios(&f.stalled)),
        describe(&ratios(&f.reading)),
        describe(&ratios(&f.control))
    );
}
