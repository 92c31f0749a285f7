//! Business event streams: IoT sensor readings on the events topic become
//! `raise_alert` commands when they cross their threshold, next to card
//! transactions becoming `score_transaction`, or `check_device` commands
//! checked against the device's baseline; a worker handles them.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shoal_integration_tests::*;
use shoal_protocol::messages::{Command, ResultStatus};

fn reading(device: &str, value: &str) -> Vec<u8> {
    serde_json::json!({
        "schema_version": 1, "id": uuid::Uuid::new_v4(), "event_type": "sensor_reading", "key": device,
        "occurred_at": "2026-11-25T00:00:00Z",
        "attributes": {"metric": "temperature", "value": value, "threshold": "80.0"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_readings_that_cross_their_threshold_raise_alerts() {
    let scope = Scope::with_topics("events-iot").await;
    let mut orchestrator = scope.orchestrator("orchestrator").stages("decisions,results").spawn();
    let mut worker = scope.worker("worker").spawn();

    let producer = producer();
    let topic = &scope.topics.events.name;
    // boiler-1: below, crosses up, stays above, crosses down: two alerts.
    for value in ["75.5", "80.25", "91", "79.0"] {
        produce(&producer, topic, "boiler-1", &reading("boiler-1", value)).await;
    }
    // boiler-2 never reaches the threshold: no alert.
    for value in ["20", "21.5"] {
        produce(&producer, topic, "boiler-2", &reading("boiler-2", value)).await;
    }
    let card = serde_json::json!({
        "schema_version": 1, "id": uuid::Uuid::new_v4(), "event_type": "card_transaction", "key": "acct-9",
        "occurred_at": "2026-11-25T00:00:00Z",
        "attributes": {"amount": "12.00", "currency": "EUR", "country": "DE", "card_present": true}
    });
    produce(&producer, topic, "acct-9", card.to_string().as_bytes()).await;

    let mut commands = TopicReader::new(&scope.topics.commands.name);
    commands.read_until(Duration::from_secs(60), "three commands", |m| m.len() >= 3).await;
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(60), "three results", |m| m.len() >= 3).await;
    commands.read_to_end(Duration::from_secs(30)).await;
    let issued = decode_commands(&commands.messages);
    assert_eq!(issued.len(), 3, "{issued:?}");
    let alerts: Vec<&Command> = issued.iter().filter(|c| c.kind == "raise_alert").collect();
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().all(|c| c.key == "boiler-1"), "keyed by device");
    assert_eq!(alerts.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        alerts[0].payload,
        serde_json::json!({"symbol": "boiler-1/temperature", "level": "80.0", "previous_price": "75.5", "price": "80.25"})
    );
    assert_eq!(alerts[1].payload["price"], "79.0");
    assert!(issued.iter().any(|c| c.kind == "score_transaction" && c.key == "acct-9"));

    let decoded = decode_results(&results.messages);
    assert!(decoded.iter().all(|r| r.status == ResultStatus::Succeeded), "{decoded:?}");
    let up = decoded.iter().find(|r| r.command_id == alerts[0].id).expect("result of the first alert");
    assert_eq!(up.output["direction"], "up");

    for p in [&mut orchestrator, &mut worker] {
        p.stop_cleanly(Duration::from_secs(20));
    }
}

fn vibration(device: &str, value: f64, secs: i64) -> Vec<u8> {
    let at = chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap();
    serde_json::json!({
        "schema_version": 1, "id": uuid::Uuid::new_v4(), "event_type": "vibration", "key": device,
        "occurred_at": at, "attributes": {"metric": "rms", "value": format!("{value}"), "site": "plant-1"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_readings_are_checked_against_the_devices_baseline() {
    let scope = Scope::with_topics("events-device").await;
    let mut orchestrator = scope
        .orchestrator("orchestrator")
        .stages("decisions,results")
        .with("SHOAL__RULES__EVENTS__VIBRATION", "check_device")
        .spawn();
    let mut worker = scope.worker("worker").with("SHOAL__WORKER__IOT__MAX_RATE_PER_S", "0.2").spawn();

    let producer = producer();
    let topic = &scope.topics.events.name;
    // pump-1: 15 readings wobbling around 2.0, one every 10 s, then a spike.
    for i in 0..15 {
        let value = if i % 2 == 0 { 2.05 } else { 1.95 };
        produce(&producer, topic, "pump-1", &vibration("pump-1", value, i * 10)).await;
    }
    produce(&producer, topic, "pump-1", &vibration("pump-1", 6.0, 150)).await;

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(60), "16 results", |m| m.len() >= 16).await;
    results.read_to_end(Duration::from_secs(10)).await;
    let decoded = decode_results(&results.messages);
    assert_eq!(decoded.len(), 16, "one check per reading: {decoded:?}");
    assert!(decoded.iter().all(|r| r.status == ResultStatus::Succeeded), "{decoded:?}");
    let alerting: Vec<_> = decoded.iter().filter(|r| r.output["alert"] == true).collect();
    assert_eq!(alerting.len(), 1, "only the spike alerts: {alerting:?}");
    let spike = &alerting[0].output;
    assert_eq!(spike["value"], 6.0);
    let fired: Vec<&str> = spike["anomalies"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(fired, ["z_score", "rate_of_change"], "{spike}");
    assert_eq!(spike["baseline"]["count"], 15, "the baseline learnt from the state's 15 earlier readings");
    assert_eq!(spike["site"], "plant-1");

    for p in [&mut orchestrator, &mut worker] {
        p.stop_cleanly(Duration::from_secs(20));
    }
}
