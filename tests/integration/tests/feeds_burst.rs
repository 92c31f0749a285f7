//! A burst of 200,000 trades, sent far faster than an ingest whose Kafka
//! publishing is throttled can publish them: memory stays bounded because
//! the queue coalesces per symbol. Alone in its file so no other test
//! competes for the CPU while the simulator sends.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use shoal_integration_tests::*;
use shoal_orchestrator::settings::FeedSettings;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_a_throttled_ingest_keeps_memory_bounded_by_coalescing() {
    let sim_args = ["--format", "binance", "--symbols", "BTCUSDT", "--rate", "1"];
    let (scope, _sim, url, mut control) = sim_with_control("feed-burst", &sim_args).await;
    let publish_per_sec = 2_000;
    let settings = FeedSettings {
        channels: vec!["trade".into()],
        max_publish_per_sec: publish_per_sec,
        queue_capacity: 500,
        ..feed_settings("binance", format!("{url}/ws"), &["BTCUSDT"])
    };
    let ingest =
        Ingest::start_until(&scope, settings, WAIT, "subscribed", |i| i.count(|s| &s.subscriptions) >= 1).await;

    let burst = 200_000;
    let reply = control.send(json!({"fault": "burst", "count": burst})).await;
    let report = &reply["reports"][0];
    assert_eq!(report["frames"], burst, "{reply}");
    // The set-up, not a speed test: the burst must outrun the throttled
    // publisher by far for the queue to fill (any machine sends it tens of
    // thousands of frames a second; an earlier fixed 100,000/s floor failed
    // on a slower one at 92,063/s).
    let rate = report["per_second"].as_f64().unwrap();
    assert!(
        rate >= 10.0 * publish_per_sec as f64,
        "the burst ({rate} msg/s) outruns the publisher ({publish_per_sec}/s) tenfold"
    );
    ingest.wait_for(WAIT, "the whole burst read", |i| i.count(|s| &s.frames) >= burst).await;

    let coalesced = ingest.count(|s| &s.coalesced);
    let high_water = ingest.count(|s| &s.queue_high_water);
    assert!(coalesced > 0, "the throttled publisher fell behind and ticks were coalesced");
    // 500 in order plus one latest tick per (symbol, kind) in the overflow.
    assert!(high_water <= 500 + 2, "queue bounded: high water {high_water}");
    assert!(ingest.count(|s| &s.ticks) < burst, "far fewer written than received");
    let stats = ingest.stop().await;
    let written = stats.ticks.load(std::sync::atomic::Ordering::Relaxed);
    let mut reader = TopicReader::new(&scope.topics.ticks.name);
    reader.read_until(WAIT, "every tick ingest wrote", |m| m.len() as u64 >= written).await;
    let records = decode_feed(&reader.messages);
    let ids = &trade_ids_by_symbol(&records.ticks)["BTCUSDT"];
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "coalescing keeps each symbol's order");
    assert!(*ids.last().unwrap() >= burst, "the latest trade of the burst is kept: {}", ids.last().unwrap());
}
