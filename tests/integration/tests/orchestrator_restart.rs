//! A restarted orchestrator goes on numbering each key's commands from what
//! is committed in the commands topic, instead of starting again at 1.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use rdkafka::Message;
use shoal_integration_tests::*;
use shoal_protocol::messages::{Command, WireMessage};

fn decode_commands(reader: &TopicReader) -> Vec<Command> {
    reader.messages.iter().map(|m| Command::decode(m.payload().unwrap_or_default()).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_orchestrator_continues_each_keys_sequence() {
    init_logs();
    let scope = Scope::new("orch-restart");
    scope.create_topics().await;
    let (sim, url) = start_sim(&["--rate", "20", "--seed", "5", "--symbols", "RS-A,RS-B,RS-C"], &scope.dir);
    let mut env = scope.env();
    env.extend(
        [
            ("SHOAL__FEED__URL", url.as_str()),
            ("SHOAL__ORCHESTRATOR__STAGES", "ingest,decisions"),
            ("SHOAL__RULES__LEVEL_STEP", "0.20"),
            ("SHOAL__RULES__MOVE_THRESHOLD_BPS", "5"),
            ("SHOAL__RULES__MOVE_COOLDOWN_SECS", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut commands = TopicReader::new(&scope.topics.commands.name);
    let mut before = 0;
    for run in 1..=2 {
        let mut orchestrator =
            Proc::spawn(&format!("orchestrator-{run}"), &bin("shoal-orchestrator"), &[], &env, &scope.dir);
        let wanted = before + 15;
        commands.read_until(Duration::from_secs(90), "15 more commands", |m| m.len() >= wanted).await;
        orchestrator.signal(Signal::SIGTERM);
        let status = tokio::task::block_in_place(|| orchestrator.wait_exit(Duration::from_secs(20))).expect("exits");
        assert!(status.success(), "orchestrator exited with {status}; log:\n{}", orchestrator.log_text());
        commands.read_to_end(Duration::from_secs(30)).await;
        before = commands.messages.len();
        if run == 2 {
            assert!(
                orchestrator.log_text().contains("per-key sequence numbers recovered from the commands topic"),
                "the second run recovered its numbering"
            );
        }
    }
    sim.signal(Signal::SIGTERM);

    let issued = decode_commands(&commands);
    // Per key, 1, 2, 3, ... across both runs: no restart at 1, no gap.
    let keys: HashSet<&str> = issued.iter().map(|c| c.key.as_str()).collect();
    for key in keys {
        let seqs: Vec<u64> = issued.iter().filter(|c| c.key == key).map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence of key {key}");
    }
}
