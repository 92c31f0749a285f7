//! A worker whose only broker stops and starts again rejoins its group and
//! goes on handling commands: ready again, and every command issued after
//! the restart gets its result.
//! (Before `.cargo/config.toml` fixed the CMake build of librdkafka, the
//! all-brokers-down event this checks for was never raised.)

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shoal_integration_tests::*;
use shoal_protocol::messages::WireMessage;

fn is_ready(status: u16, body: &serde_json::Value) -> bool {
    status == 200 && body["ready"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_rejoins_its_group_after_its_broker_restarts() {
    let scope = Scope::logged("brokerrestart");
    // A port no other test uses (the shared broker is 9092/9093, the chaos
    // cluster 19092-19097, observability.rs's own broker 29092).
    let broker = tokio::task::block_in_place(|| OwnBroker::start(29192, &scope.dir.join("kafka")));
    shoal_kafka::ensure_topics(&broker.kafka_settings(), &scope.topics).await.unwrap();
    let mut worker = scope
        .worker("worker")
        .with("SHOAL__KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap())
        .with("RUST_LOG", "info,librdkafka=debug,rdkafka=debug")
        .with("SHOAL__KAFKA__OPTIONS__DEBUG", "cgrp,consumer")
        .id("restart-worker")
        .spawn();
    let address = http_address(&worker, Duration::from_secs(30)).await;
    wait_for_readyz(address, Duration::from_secs(90), "ready on the own broker", is_ready).await;

    let producer = producer_for(&broker.bootstrap());
    let mut issued = Vec::new();
    // Down only until the worker notices, then down past its session
    // timeout (10 s by default), so that its member is gone when the
    // broker is back.
    for (round, extra_down) in [(1, 0), (2, 15)] {
        tokio::task::block_in_place(|| broker.stop());
        wait_for_readyz(address, Duration::from_secs(60), "not ready while the broker is down", |s, b| {
            s == 503 && failing_checks(b).iter().any(|c| c == "worker.kafka")
        })
        .await;
        // librdkafka noticed that every broker is down (ALL_BROKERS_DOWN),
        // which is what makes it re-bootstrap when the broker is back. A
        // CMake build of librdkafka 2.12 never raised it (see
        // .cargo/config.toml) and the worker then stayed out of its group
        // for minutes.
        let down_events = usize::try_from(round).unwrap();
        eventually(Duration::from_secs(30), "librdkafka to report all brokers down", || {
            let n = worker.log_text().matches("brokers are down").count();
            async move { n >= down_events }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(extra_down)).await; // the fault: the broker stays down
        tokio::task::block_in_place(|| broker.start_again());
        wait_for_readyz(address, Duration::from_secs(90), "ready again after the broker restarted", is_ready).await;
        for k in 0..24 {
            let command = alert_command(&format!("key-{k}"), round);
            produce(&producer, &scope.topics.commands.name, &command.key, &command.encode()).await;
            issued.push(command.id);
        }
        let want = issued.len();
        // A reader of its own each round: a reader's consumer fails while
        // the broker is away.
        let mut results = TopicReader::new_at(&broker.bootstrap(), &scope.topics.results.name);
        results.read_until(Duration::from_secs(60), "a result per command", |m| m.len() >= want).await;
    }
    let mut results = TopicReader::new_at(&broker.bootstrap(), &scope.topics.results.name);
    results.read_to_end(Duration::from_secs(30)).await;
    assert_one_result_each(&decode_results(&results.messages), &issued);
    assert!(worker.running());
    worker.terminate(Duration::from_secs(30));
    tokio::task::block_in_place(|| drop(broker));
}
