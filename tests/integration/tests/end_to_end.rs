//! The whole pipeline as users run it: simulator → orchestrator (all stages)
//! → Kafka → two workers → Kafka → orchestrator, all real processes.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::Message;
use shoal_integration_tests::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_issued_command_gets_exactly_one_result_recorded_against_it() {
    let scope = Scope::with_topics("e2e").await;
    let (mut sim, url) = start_sim(&["--rate", "20", "--seed", "11", "--symbols", "E2E-A,E2E-B,E2E-C"], &scope.dir);

    let mut workers = scope.start_workers(2, |i, worker| worker.id(format!("e2e-worker-{i}")));
    let record = scope.dir.join("outcomes.jsonl");
    let mut orchestrator = scope.orchestrator("orchestrator").feed(&url).record_to(&record).lively_rules().spawn();

    wait_for_lines(&record, 40, Duration::from_secs(90), "40 outcomes recorded by the orchestrator").await;
    assert!(orchestrator.running(), "orchestrator died; log:\n{}", orchestrator.log_text());

    // Stop issuing, then check the topics: everything issued has exactly one result.
    orchestrator.stop_cleanly(Duration::from_secs(20));
    let orchestrator_log = orchestrator.log_text();
    assert!(orchestrator_log.contains("feed closed with a close handshake"), "feed closed cleanly");

    let mut commands = TopicReader::new(&scope.topics.commands.name);
    commands.read_to_end(Duration::from_secs(30)).await;
    let issued = decode_commands(&commands.messages);
    assert!(issued.len() >= 40, "only {} commands issued", issued.len());
    let issued_ids: Vec<Uuid> = issued.iter().map(|c| c.id).collect();
    assert_eq!(issued_ids.iter().collect::<HashSet<_>>().len(), issued.len(), "command ids are unique");
    let kinds: HashSet<&str> = issued.iter().map(|c| c.kind.as_str()).collect();
    assert!(kinds.contains("raise_alert") && kinds.contains("evaluate_strategy"), "both market rules fired: {kinds:?}");
    // Per key, sequence numbers are 1, 2, 3, ... in topic order.
    for key in issued.iter().map(|c| c.key.as_str()).collect::<HashSet<_>>() {
        let seqs: Vec<u64> = issued.iter().filter(|c| c.key == key).map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence of key {key}");
    }

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(60), "a result for every issued command", |m| m.len() >= issued.len()).await;
    assert_one_result_each(&decode_results(&results.messages), &issued_ids);

    // Nothing exports spans here, so no process makes trace context, and a
    // result carries on exactly what its command carried (see
    // observability.rs for traces, and for a command that has a context).
    for (command_msg, command) in commands.messages.iter().zip(&issued) {
        let result_msg = results
            .messages
            .iter()
            .find(|m| header(m, "shoal-command-id").as_deref() == Some(command.id.to_string().as_str()))
            .expect("result carries the command id header");
        assert_eq!(header(result_msg, "traceparent"), header(command_msg, "traceparent"), "trace context passed on");
        assert_eq!(result_msg.key(), command_msg.key(), "results are keyed like their command");
    }

    // The orchestrator recorded outcomes against their commands, each once.
    let recorded = read_json_lines(&record);
    let recorded_ids = counts(recorded.iter().map(|o| o["command_id"].as_str().unwrap().parse::<Uuid>().unwrap()));
    assert!(recorded_ids.values().all(|n| *n == 1), "an outcome recorded twice");
    assert!(recorded_ids.keys().all(|id| issued_ids.contains(id)), "outcome for an unknown command");
    for outcome in &recorded {
        let id: Uuid = outcome["command_id"].as_str().unwrap().parse().unwrap();
        let command = issued.iter().find(|c| c.id == id).unwrap();
        assert_eq!(outcome["kind"], command.kind.as_str());
        assert_eq!(outcome["key"], command.key.as_str());
    }

    stop_all_cleanly(&mut workers, Duration::from_secs(20));
    sim.stop_cleanly(Duration::from_secs(10));
}
