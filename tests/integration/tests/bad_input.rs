//! Bad input gets a clear error and nothing is lost: malformed WebSocket
//! frames are counted and skipped, undecodable Kafka records are counted and
//! dead-lettered with their origin, bad configuration names the key.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::Message;
use shoal_integration_tests::*;
use shoal_kafka::dlq;
use shoal_kafka::offsets::OffsetTracker;
use shoal_kafka::producer::TrackedProducer;
use shoal_orchestrator::feed::{self, FeedStats, TickSink};
use shoal_orchestrator::settings::FeedSettings;
use shoal_protocol::messages::{MarketTick, ResultStatus, WireMessage};
use shoal_worker::handlers::Registry;
use shoal_worker::processor::WorkerStats;
use shoal_worker::settings::WorkerSettings;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_websocket_frames_are_counted_and_skipped() {
    let scope = Scope::with_topics("wsbad").await;
    let (mut sim, url) = start_sim(&["--rate", "50", "--malformed-every", "5", "--symbols", "BAD-A,BAD-B"], &scope.dir);

    let producer = TrackedProducer::new(&kafka_settings(), "it-ingest", Arc::new(OffsetTracker::new())).unwrap();
    let sink = TickSink {
        producer: producer.clone(),
        topic: scope.topics.ticks.name.clone(),
        producer_id: "it".into(),
        sampler: Arc::new(shoal_kafka::trace::Sampler::off()),
    };
    let stats = Arc::new(FeedStats::default());
    let shutdown = CancellationToken::new();
    let feed_settings = FeedSettings { url, ..FeedSettings::default() };
    let ingest = tokio::spawn(feed::run(feed_settings, sink, shutdown.clone(), stats.clone()));

    eventually(Duration::from_secs(30), "8 malformed frames and 40 ticks", || {
        let (malformed, ticks) = (stats.malformed.load(Ordering::Relaxed), stats.ticks.load(Ordering::Relaxed));
        async move { malformed >= 8 && ticks >= 40 }
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), ingest).await.expect("ingest stops").unwrap();
    producer.flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(stats.reconnects.load(Ordering::Relaxed), 0, "garbage must not cost the connection");
    assert_eq!(stats.sequence_gaps.load(Ordering::Relaxed), 0, "malformed frames consume their sequence number");

    // Every tick on the topic is well formed, and none was lost.
    let mut reader = TopicReader::new(&scope.topics.ticks.name);
    let written = stats.ticks.load(Ordering::Relaxed) as usize;
    reader.read_until(Duration::from_secs(30), "all ticks", |m| m.len() >= written).await;
    assert_eq!(reader.messages.len(), written);
    for m in &reader.messages {
        let tick = MarketTick::decode(m.payload().unwrap()).unwrap();
        assert_eq!(m.key(), Some(tick.symbol.as_bytes()), "ticks are keyed by symbol");
        assert_eq!(tick.price.scale(), 2, "exact decimal price {}", tick.price);
    }
    sim.stop_cleanly(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_commands_are_dead_lettered_with_their_origin_and_the_worker_goes_on() {
    let scope = Scope::with_topics("dlq").await;
    let mut settings =
        WorkerSettings { kafka: kafka_settings(), topics: scope.topics.clone(), ..WorkerSettings::default() };
    settings.worker.id = "it-worker".into();
    settings.worker.group_id = scope.workers_group();
    settings.delivery.transactional_id_prefix = format!("it.{}", scope.id);
    let stats = Arc::new(WorkerStats::default());
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(shoal_worker::run(
        settings,
        Registry::with_builtin(),
        shutdown.clone(),
        stats.clone(),
        shoal_telemetry::Telemetry::untraced(),
    ));

    let producer = producer();
    let topic = &scope.topics.commands.name;
    produce(&producer, topic, "k1", b"\x00\x01 definitely not json").await;
    let mut future_version = serde_json::to_value(alert_command("k1", 1)).unwrap();
    future_version["schema_version"] = 99.into();
    produce(&producer, topic, "k1", &serde_json::to_vec(&future_version).unwrap()).await;
    let mut unknown_kind = alert_command("k1", 2);
    unknown_kind.kind = "launch_rocket".into();
    produce(&producer, topic, "k1", &unknown_kind.encode()).await;
    let good = alert_command("k1", 3);
    produce(&producer, topic, "k1", &good.encode()).await;

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(60), "two results", |m| m.len() >= 2).await;
    let decoded = decode_results(&results.messages);
    assert_eq!(decoded[0].command_id, unknown_kind.id);
    assert_eq!(decoded[0].status, ResultStatus::Unsupported);
    assert_eq!(decoded[1].command_id, good.id);
    assert_eq!(decoded[1].status, ResultStatus::Succeeded);

    let mut dead = TopicReader::new(&scope.topics.dlq.name);
    dead.read_until(Duration::from_secs(30), "three dead letters", |m| m.len() >= 3).await;
    let reasons: Vec<String> = dead.messages.iter().map(|m| header(m, dlq::REASON).unwrap()).collect();
    assert_eq!(reasons, ["malformed", "unsupported_schema_version", "unsupported_kind"]);
    for (i, m) in dead.messages.iter().enumerate() {
        assert_eq!(header(m, dlq::ORIGIN_TOPIC).as_deref(), Some(topic.as_str()));
        assert_eq!(header(m, dlq::ORIGIN_OFFSET), Some(i.to_string()), "offsets 0, 1, 2 of the key's partition");
        assert!(header(m, dlq::ORIGIN_PARTITION).is_some());
        assert_eq!(header(m, dlq::STAGE).as_deref(), Some("worker"));
        assert!(!header(m, dlq::ERROR).unwrap().is_empty());
        assert_eq!(m.key(), Some(&b"k1"[..]), "original key kept");
    }
    assert_eq!(dead.messages[0].payload(), Some(&b"\x00\x01 definitely not json"[..]), "original bytes kept");
    assert_eq!(stats.undecodable.load(Ordering::Relaxed), 2);
    assert_eq!(stats.dead_lettered.load(Ordering::Relaxed), 3);

    // Per-key sequence checks: 3 -> 10 skips ahead, 10 -> 5 goes back.
    produce(&producer, topic, "k1", &alert_command("k1", 10).encode()).await;
    produce(&producer, topic, "k1", &alert_command("k1", 5).encode()).await;
    results.read_until(Duration::from_secs(60), "two more results", |m| m.len() >= 4).await;
    assert_eq!(stats.sequence_gaps.load(Ordering::Relaxed), 1);
    assert_eq!(stats.sequence_regressions.load(Ordering::Relaxed), 1);
    assert_eq!(stats.unsupported.load(Ordering::Relaxed), 1);

    shutdown.cancel();
    let report = worker.await.unwrap().unwrap();
    assert!(report.clean(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_dead_letters_what_it_cannot_decode_and_keeps_running() {
    let scope = Scope::with_topics("orchdlq").await;
    let mut orchestrator = scope.orchestrator("orchestrator").stages("decisions,results").spawn();

    let producer = producer();
    produce(&producer, &scope.topics.ticks.name, "X", b"{\"schema_version\":1,\"symbol\":").await;
    produce(&producer, &scope.topics.events.name, "acct-1", b"{\"schema_version\":7}").await;
    let card = serde_json::json!({
        "schema_version": 1, "id": uuid::Uuid::new_v4(), "event_type": "card_transaction", "key": "acct-1",
        "occurred_at": "2026-11-25T00:00:00Z", "attributes": {"amount": "not money"}
    });
    produce(&producer, &scope.topics.events.name, "acct-1", card.to_string().as_bytes()).await;
    produce(&producer, &scope.topics.results.name, "X", b"[]").await;
    // Decodes, but the state cannot apply a trade at a negative price.
    let negative = serde_json::json!({
        "schema_version": 1, "source": "sim", "symbol": "NEG", "price": "-1", "size": "1",
        "exchange_ts": "2026-11-25T00:00:00Z", "received_at": "2026-11-25T00:00:00Z"
    });
    produce(&producer, &scope.topics.ticks.name, "NEG", negative.to_string().as_bytes()).await;

    let mut dead = TopicReader::new(&scope.topics.dlq.name);
    dead.read_until(Duration::from_secs(60), "five dead letters", |m| m.len() >= 5).await;
    let mut seen: Vec<(String, String)> =
        dead.messages.iter().map(|m| (header(m, dlq::STAGE).unwrap(), header(m, dlq::REASON).unwrap())).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("decisions".to_string(), "invalid_event_attributes".to_string()),
            ("decisions".into(), "invalid_state_input".into()),
            ("decisions".into(), "malformed".into()),
            ("decisions".into(), "unsupported_schema_version".into()),
            ("results".into(), "malformed".into()),
        ]
    );
    assert!(orchestrator.running(), "orchestrator crashed; log:\n{}", orchestrator.log_text());

    // A valid event after the garbage is still turned into a command.
    let good = serde_json::json!({
        "schema_version": 1, "id": uuid::Uuid::new_v4(), "event_type": "card_transaction", "key": "acct-2",
        "occurred_at": "2026-11-25T00:00:00Z",
        "attributes": {"amount": "12.00", "currency": "EUR", "country": "DE", "card_present": true}
    });
    produce(&producer, &scope.topics.events.name, "acct-2", good.to_string().as_bytes()).await;
    let mut commands = TopicReader::new(&scope.topics.commands.name);
    commands.read_until(Duration::from_secs(30), "one command", |m| !m.is_empty()).await;
    let command = &decode_commands(&commands.messages)[0];
    assert_eq!((command.kind.as_str(), command.key.as_str(), command.seq), ("score_transaction", "acct-2", 1));

    orchestrator.stop_cleanly(Duration::from_secs(20));
    let log = orchestrator.log_text();
    assert!(log.contains("dead_lettered=4") && log.contains("dead_lettered=1"), "counted in status lines:\n{log}");
}

#[test]
fn a_bad_configuration_value_fails_start_up_naming_the_key() {
    let cases: [(&str, &str, &str, &str); 5] = [
        ("shoal-worker", "SHOAL__WORKER__COMMIT_INTERVAL_MS", "soon", "commit_interval_ms"),
        ("shoal-worker", "SHOAL__KAFKA__BOOTSTRAP_SERVERS", "no-port-here", "kafka.bootstrap_servers"),
        ("shoal-worker", "SHOAL__KAFKA__BOOTSTRAP_SERVER", "127.0.0.1:9092", "bootstrap_server"),
        ("shoal-orchestrator", "SHOAL__FEED__URL", "http://example.invalid", "feed.url"),
        ("shoal-orchestrator", "SHOAL__TOPICS__COMMANDS__PARTITIONS", "0", "topics.commands.partitions"),
    ];
    for (program, var, value, key) in cases {
        let output = std::process::Command::new(bin(program)).env(var, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{program} with {var}={value}: {stderr}");
        assert!(stderr.contains(key), "{program} with {var}={value}: {stderr:?} does not name {key}");
    }
}
