//! The whole pipeline as users run it: simulator → orchestrator (all stages)
//! → Kafka → two workers → Kafka → orchestrator, all real processes.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use rdkafka::Message;
use shoal_integration_tests::*;
use shoal_protocol::messages::{Command, WireMessage};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_issued_command_gets_exactly_one_result_recorded_against_it() {
    init_logs();
    let scope = Scope::new("e2e");
    scope.create_topics().await;
    let (mut sim, url) = start_sim(&["--rate", "20", "--seed", "11", "--symbols", "E2E-A,E2E-B,E2E-C"], &scope.dir);

    let mut workers: Vec<Proc> = (1..=2)
        .map(|i| {
            let mut env = scope.env();
            env.push(("SHOAL__WORKER__ID".into(), format!("e2e-worker-{i}")));
            Proc::spawn(&format!("worker-{i}"), &bin("shoal-worker"), &[], &env, &scope.dir)
        })
        .collect();
    let record = scope.dir.join("outcomes.jsonl");
    let mut env = scope.env();
    env.extend([
        ("SHOAL__FEED__URL".to_string(), url),
        ("SHOAL__RESULTS__RECORD_PATH".to_string(), record.display().to_string()),
        // Small steps and thresholds so the rules fire often on the walk.
        ("SHOAL__RULES__LEVEL_STEP".to_string(), "0.20".to_string()),
        ("SHOAL__RULES__MOVE_THRESHOLD_BPS".to_string(), "5".to_string()),
        ("SHOAL__RULES__MOVE_COOLDOWN_SECS".to_string(), "1".to_string()),
    ]);
    let mut orchestrator = Proc::spawn("orchestrator", &bin("shoal-orchestrator"), &[], &env, &scope.dir);

    let recorded_lines = || std::fs::read_to_string(&record).unwrap_or_default().lines().count();
    eventually(Duration::from_secs(90), "40 outcomes recorded by the orchestrator", || {
        let n = recorded_lines();
        async move { n >= 40 }
    })
    .await;
    assert!(orchestrator.running(), "orchestrator died; log:\n{}", orchestrator.log_text());

    // Stop issuing, then check the topics: everything issued has exactly one result.
    orchestrator.signal(Signal::SIGTERM);
    let status =
        tokio::task::block_in_place(|| orchestrator.wait_exit(Duration::from_secs(20))).expect("orchestrator exits");
    assert!(status.success(), "orchestrator exited with {status}; log:\n{}", orchestrator.log_text());
    let orchestrator_log = orchestrator.log_text();
    assert!(orchestrator_log.contains("feed closed with a close handshake"), "feed closed cleanly");

    let mut commands = TopicReader::new(&scope.topics.commands.name);
    commands.read_to_end(Duration::from_secs(30)).await;
    let issued: Vec<Command> =
        commands.messages.iter().map(|m| Command::decode(m.payload().unwrap_or_default()).unwrap()).collect();
    assert!(issued.len() >= 40, "only {} commands issued", issued.len());
    let issued_ids: HashSet<Uuid> = issued.iter().map(|c| c.id).collect();
    assert_eq!(issued_ids.len(), issued.len(), "command ids are unique");
    let kinds: HashSet<&str> = issued.iter().map(|c| c.kind.as_str()).collect();
    assert!(kinds.contains("raise_alert") && kinds.contains("evaluate_strategy"), "both market rules fired: {kinds:?}");
    // Per key, sequence numbers are 1, 2, 3, ... in topic order.
    for key in issued.iter().map(|c| c.key.as_str()).collect::<HashSet<_>>() {
        let seqs: Vec<u64> = issued.iter().filter(|c| c.key == key).map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence of key {key}");
    }

    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(60), "a result for every issued command", |m| m.len() >= issued.len()).await;
    let decoded = decode_results(&results.messages);
    let per_command = counts(decoded.iter().map(|r| r.command_id));
    assert!(
        issued_ids.iter().all(|id| per_command.get(id) == Some(&1)),
        "exactly one result per command: {per_command:?}"
    );
    assert_eq!(per_command.len(), issued_ids.len(), "no result for a command that was never issued");

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
    let recorded: Vec<serde_json::Value> =
        std::fs::read_to_string(&record).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let recorded_ids = counts(recorded.iter().map(|o| o["command_id"].as_str().unwrap().parse::<Uuid>().unwrap()));
    assert!(recorded_ids.values().all(|n| *n == 1), "an outcome recorded twice");
    assert!(recorded_ids.keys().all(|id| issued_ids.contains(id)), "outcome for an unknown command");
    for outcome in &recorded {
        let id: Uuid = outcome["command_id"].as_str().unwrap().parse().unwrap();
        let command = issued.iter().find(|c| c.id == id).unwrap();
        assert_eq!(outcome["kind"], command.kind.as_str());
        assert_eq!(outcome["key"], command.key.as_str());
    }

    for w in &workers {
        w.signal(Signal::SIGTERM);
    }
    for w in &mut workers {
        let status = tokio::task::block_in_place(|| w.wait_exit(Duration::from_secs(20))).expect("worker exits");
        assert!(status.success(), "{} exited with {status}", w.name);
    }
    sim.signal(Signal::SIGTERM);
    let sim_status = tokio::task::block_in_place(|| sim.wait_exit(Duration::from_secs(10))).expect("simulator exits");
    assert!(sim_status.success(), "simulator exited with {sim_status}");
}
