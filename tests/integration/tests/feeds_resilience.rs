//! Feed ingest through real-world trouble, injected on demand through the
//! simulator's control endpoint: abrupt drops, silent stalls, sequence gaps,
//! garbage, restarts, and a clean close on shutdown. Also TLS and handshake
//! headers. (The burst test has its own file, so it runs alone.)

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use shoal_integration_tests::*;
use shoal_orchestrator::feed::dedupe;
use shoal_orchestrator::feed::{self, ConnectError};
use shoal_orchestrator::settings::FeedSettings;
use shoal_protocol::messages::DataQualityKind;

const WAIT: Duration = Duration::from_secs(60);

/// [`feed_settings`] reconnecting quickly.
fn feed(format: &str, url: String, symbols: &[&str]) -> FeedSettings {
    FeedSettings { reconnect_initial_ms: 100, reconnect_max_ms: 500, ..feed_settings(format, url, symbols) }
}

/// What consecutive trade ids per symbol mean.
const EXACTLY_ONCE_EACH: &str = "every trade exactly once, no repeat, no hole";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_drop_reconnects_resubscribes_and_writes_no_trade_twice() {
    let sim_args = ["--format", "kraken", "--symbols", "BTC/USD,ETH/USD", "--rate", "10"];
    let (scope, _sim, url, mut control) = sim_with_control("feed-drop", &sim_args).await;
    let mut settings = feed("kraken", format!("{url}/v2"), &["BTC/USD", "ETH/USD"]);
    settings.channels = vec!["trade".into()];
    let ingest = Ingest::start_until(&scope, settings, WAIT, "20 trades", |i| i.count(|s| &s.ticks) >= 20).await;

    let reply = control.send(json!({"fault": "disconnect"})).await;
    assert_eq!(reply["connections"], 1, "{reply}");
    let before = ingest.count(|s| &s.ticks);
    ingest
        .wait_for(WAIT, "a reconnect, a second subscription and 20 more trades", |i| {
            i.count(|s| &s.reconnects) >= 1
                && i.count(|s| &s.subscriptions) >= 2
                && i.count(|s| &s.ticks) >= before + 20
        })
        .await;
    let stats = control.stats().await;
    assert!(stats["accepted"].as_u64().unwrap() >= 2, "the server saw a second connection: {stats}");
    assert!(stats["subscribes"].as_u64().unwrap() >= 2, "and a second subscribe: {stats}");
    // Kraken's snapshot after the resubscribe repeats trades already written.
    assert!(ingest.count(|s| &s.duplicates) >= 1, "the snapshot's repeats were dropped");
    let (_, records) = ingest.stop_and_read(&scope, WAIT).await;
    records.assert_consecutive(EXACTLY_ONCE_EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stall_is_detected_and_the_connection_replaced() {
    let (scope, _sim, url, mut control) = sim_with_control("feed-stall", &["--symbols", "ST-A", "--rate", "20"]).await;
    let settings =
        FeedSettings { ping_interval_ms: 200, stale_after_ms: 1_500, ..feed("shoal-sim", url.clone(), &["*"]) };
    let ingest = Ingest::start_until(&scope, settings, WAIT, "10 trades", |i| i.count(|s| &s.ticks) >= 10).await;

    control.send(json!({"fault": "stall", "ms": 20_000})).await;
    ingest
        .wait_for(WAIT, "the stall detected and the feed back", |i| {
            i.count(|s| &s.stale_reconnects) >= 1 && i.count(|s| &s.subscriptions) >= 2
        })
        .await;
    let before = ingest.count(|s| &s.ticks);
    ingest.wait_for(WAIT, "trades flowing again", |i| i.count(|s| &s.ticks) >= before + 10).await;
    let (_, records) = ingest.stop_and_read(&scope, WAIT).await;
    let stale: Vec<_> = records.quality.iter().filter(|q| q.kind == DataQualityKind::StaleFeed).collect();
    assert_eq!(stale.len(), 1, "one stale_feed event: {:?}", records.quality);
    assert_eq!(stale[0].symbol, "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_gap_is_counted_and_reported_as_a_data_quality_event() {
    let sim_args = ["--format", "binance", "--symbols", "BTCUSDT", "--rate", "50"];
    let (scope, _sim, url, mut control) = sim_with_control("feed-gap", &sim_args).await;
    let settings = feed("binance", format!("{url}/ws/btcusdt@trade"), &[]);
    let ingest = Ingest::start_until(&scope, settings, WAIT, "10 trades", |i| i.count(|s| &s.ticks) >= 10).await;

    control.send(json!({"fault": "gap", "count": 3})).await;
    ingest.wait_for(WAIT, "the gap noticed", |i| i.count(|s| &s.sequence_gaps) >= 1).await;
    let before = ingest.count(|s| &s.ticks);
    ingest.wait_for(WAIT, "10 more trades", |i| i.count(|s| &s.ticks) >= before + 10).await;
    assert_eq!(ingest.count(|s| &s.reconnects), 0, "a gap is not a reason to reconnect");
    let (stats, records) = ingest.stop_and_read(&scope, WAIT).await;
    assert_eq!(stats.sequence_gaps.load(std::sync::atomic::Ordering::Relaxed), 1);

    assert_eq!(records.quality.len(), 1, "{:?}", records.quality);
    let gap = &records.quality[0];
    assert_eq!((gap.kind, gap.symbol.as_str(), gap.missing), (DataQualityKind::SequenceGap, "BTCUSDT", Some(3)));
    let ids = &trade_ids_by_symbol(&records.ticks)["BTCUSDT"];
    let holes: Vec<_> = ids.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert_eq!(holes.len(), 1, "{ids:?}");
    assert_eq!(holes[0][1] - holes[0][0] - 1, 3, "three trades missing");
    assert_eq!(gap.expected, Some(holes[0][0] + 1));
    assert_eq!(gap.received, Some(holes[0][1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unexpected_frames_are_counted_and_skipped() {
    let sim_args = ["--format", "coinbase", "--symbols", "BTC-USD", "--rate", "20"];
    let (scope, _sim, url, mut control) = sim_with_control("feed-garbage", &sim_args).await;
    let settings = FeedSettings { channels: vec!["matches".into()], ..feed("coinbase", url.clone(), &["BTC-USD"]) };
    let ingest = Ingest::start_until(&scope, settings, WAIT, "10 trades", |i| i.count(|s| &s.ticks) >= 10).await;

    // Invalid JSON, an invalid price, an unknown type, binary garbage; twice.
    control.send(json!({"fault": "malformed", "count": 8})).await;
    ingest.wait_for(WAIT, "8 bad frames counted", |i| i.count(|s| &s.malformed) >= 8).await;
    let before = ingest.count(|s| &s.ticks);
    ingest.wait_for(WAIT, "10 more trades", |i| i.count(|s| &s.ticks) >= before + 10).await;
    assert_eq!(ingest.count(|s| &s.malformed), 8);
    assert_eq!(ingest.count(|s| &s.reconnects), 0, "garbage does not cost the connection");
    let (_, records) = ingest.stop_and_read(&scope, WAIT).await;
    assert!(records.ticks.iter().all(|t| t.price.scale() == 2), "only well-formed trades are written");
    // The garbled frames replaced trades: their ids are missing, and each
    // hole is reported.
    assert!(!records.quality.is_empty());
    assert!(records.quality.iter().all(|q| q.kind == DataQualityKind::SequenceGap && q.symbol == "BTC-USD"));
}

/// Stops ingest of `settings` once it has `what`, and checks that the
/// simulator saw, in order, `unsubscribes` unsubscribe requests and then the
/// client's close handshake.
async fn assert_clean_shutdown(scope: &Scope, control: &mut SimControl, settings: FeedSettings, unsubscribes: u64) {
    let ingest = Ingest::start_until(scope, settings, WAIT, "5 records", |i| {
        i.count(|s| &s.book_tops) + i.count(|s| &s.ticks) >= 5
    })
    .await;
    let stats = control.stats().await;
    assert_eq!((stats["client_closes"].as_u64(), stats["unsubscribes"].as_u64()), (Some(0), Some(0)), "{stats}");
    ingest.stop().await;
    let mut stats = control.stats().await;
    for _ in 0..100 {
        if stats["client_closes"] == 1 && stats["open"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        stats = control.stats().await;
    }
    assert_eq!(stats["client_closes"], 1, "the simulator saw the client's close handshake: {stats}");
    // Nothing can be sent after the close handshake: the unsubscribe came first.
    assert_eq!(stats["unsubscribes"], unsubscribes, "the simulator saw the unsubscribe: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_unsubscribes_then_closes_with_a_handshake_the_server_observes() {
    let sim_args = ["--format", "binance", "--symbols", "BTCUSDT", "--rate", "10"];
    let (scope, _sim, url, mut control) = sim_with_control("feed-close", &sim_args).await;
    // Subscribed with SUBSCRIBE: unsubscribed with UNSUBSCRIBE.
    let settings =
        FeedSettings { channels: vec!["bookTicker".into()], ..feed("binance", format!("{url}/ws"), &["BTCUSDT"]) };
    assert_clean_shutdown(&scope, &mut control, settings, 1).await;
    // Streams named by the URL end with the connection: nothing to undo.
    let (scope, _sim, url, mut control) = sim_with_control("feed-close-url", &sim_args).await;
    let settings = feed("binance", format!("{url}/ws/btcusdt@bookTicker"), &[]);
    assert_clean_shutdown(&scope, &mut control, settings, 0).await;
    // The simulator's own protocol.
    let sim_args = ["--symbols", "ST-A", "--rate", "10"];
    let (scope, _sim, url, mut control) = sim_with_control("feed-close-sim", &sim_args).await;
    assert_clean_shutdown(&scope, &mut control, feed("shoal-sim", url, &["*"]), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_recovers_the_last_trade_ids_and_writes_no_trade_twice() {
    let scope = Scope::with_topics("feed-restart").await;
    let (_sim, url) = start_sim(&["--format", "kraken", "--symbols", "BTC/USD,ETH/USD", "--rate", "8"], &scope.dir);
    let mut settings = feed("kraken", format!("{url}/v2"), &["BTC/USD", "ETH/USD"]);
    settings.channels = vec!["trade".into()];

    let first = Ingest::start_until(&scope, settings.clone(), WAIT, "20 trades", |i| i.count(|s| &s.ticks) >= 20).await;
    let first_stats = first.stop().await;
    let first_written = first_stats.ticks.load(std::sync::atomic::Ordering::Relaxed);

    // What `shoal-orchestrator` does at start-up: read the ticks topic's tail.
    let (kafka, topic) = (kafka_settings(), scope.topics.ticks.name.clone());
    let (state, report) =
        tokio::task::spawn_blocking(move || dedupe::recover(&kafka, &topic, 10_000, Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(report.ticks_read, first_written, "every tick written was read back");
    assert_eq!(report.keys, 2);

    let second = Ingest::start(&scope, settings, state);
    second
        .wait_for(WAIT, "20 new trades and the snapshot's repeats dropped", |i| {
            i.count(|s| &s.ticks) >= 20 && i.count(|s| &s.duplicates) >= 1
        })
        .await;
    let second_stats = second.stop().await;
    let total = first_written + second_stats.ticks.load(std::sync::atomic::Ordering::Relaxed);
    let records = FeedRecords::read(&scope, total, WAIT).await;
    assert_eq!(records.ticks.len() as u64, total);
    // The restart was short, so the snapshot covers it: one unbroken run of
    // ids per symbol across both processes, none twice.
    records.assert_consecutive(EXACTLY_ONCE_EACH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_urls_go_through_tls() {
    let scope = Scope::logged("feed-tls");
    let (_sim, url) = start_sim(&["--rate", "1"], &scope.dir);
    // The simulator speaks plain TCP: a TLS client must fail its handshake
    // (rather than, say, reject the scheme or connect in clear).
    let wss = url.replacen("ws://", "wss://", 1);
    let settings = FeedSettings { url: wss, ..FeedSettings::default() };
    match feed::connect(&settings).await {
        Err(ConnectError::WebSocket(tokio_tungstenite::tungstenite::Error::Tls(error))) => {
            tracing::info!(%error, "TLS handshake failed as expected");
        }
        Err(ConnectError::WebSocket(tokio_tungstenite::tungstenite::Error::Io(error))) => {
            tracing::info!(%error, "TLS handshake cut off as expected");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_headers_are_sent_and_never_logged() {
    let secret = "it-secret-7f3a9c";
    let sim_args = ["--symbols", "HD-A", "--rate", "20", "--require-header", &format!("X-Api-Key: {secret}")];
    let (scope, _sim, url, mut control) = sim_with_control("feed-headers", &sim_args).await;

    // Without the header the simulator refuses the handshake.
    let settings = feed("shoal-sim", url.clone(), &["*"]);
    let ingest =
        Ingest::start_until(&scope, settings, WAIT, "a refused handshake", |i| i.count(|s| &s.reconnects) >= 1).await;
    assert_eq!(ingest.count(|s| &s.subscriptions), 0);
    ingest.stop().await;
    let refused = control.stats().await["rejected_handshakes"].as_u64().unwrap();
    assert!(refused >= 1);

    // The orchestrator binary with the header from the environment.
    let launch = scope
        .orchestrator("orchestrator")
        .stages("ingest")
        .feed(&url)
        .with("SHOAL__FEED__HEADERS__X_API_KEY", secret)
        .with("RUST_LOG", "debug,librdkafka=warn,rdkafka=info");
    let printed = std::process::Command::new(bin("shoal-orchestrator"))
        .arg("--print-config")
        .envs(launch.env().iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("x_api_key") && !printed.contains(secret), "redacted: {printed}");
    let mut orchestrator = launch.spawn();
    eventually(WAIT, "a status line of the authenticated feed", || {
        let log = orchestrator.log_text();
        async move { log.contains("feed status connected=true") }
    })
    .await;
    orchestrator.stop_cleanly(Duration::from_secs(20));
    // Read once the stream has stopped (the reader drains while records keep coming).
    let mut reader = TopicReader::new(&scope.topics.ticks.name);
    reader.read_until(WAIT, "10 ticks through the authenticated feed", |m| m.len() >= 10).await;
    assert_eq!(control.stats().await["rejected_handshakes"], refused, "the orchestrator was not refused");
    let log = orchestrator.log_text();
    assert!(log.contains("feed status"), "status lines logged");
    assert!(!log.contains(secret), "the header value never reaches the log");
}
