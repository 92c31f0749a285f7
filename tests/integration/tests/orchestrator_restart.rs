//! A restarted orchestrator goes on numbering each key's commands from what
//! is committed in the commands topic, instead of starting again at 1.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_orchestrator_continues_each_keys_sequence() {
    let scope = Scope::with_topics("orch-restart").await;
    let (sim, url) = start_sim(&["--rate", "20", "--seed", "5", "--symbols", "RS-A,RS-B,RS-C"], &scope.dir);
    let mut commands = TopicReader::new(&scope.topics.commands.name);
    let mut before = 0;
    for run in 1..=2 {
        let mut orchestrator = scope
            .orchestrator(&format!("orchestrator-{run}"))
            .feed(&url)
            .stages("ingest,decisions")
            .lively_rules()
            .spawn();
        let wanted = before + 15;
        commands.read_until(Duration::from_secs(90), "15 more commands", |m| m.len() >= wanted).await;
        orchestrator.stop_cleanly(Duration::from_secs(20));
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

    let issued = decode_commands(&commands.messages);
    // Per key, 1, 2, 3, ... across both runs: no restart at 1, no gap.
    let keys: HashSet<&str> = issued.iter().map(|c| c.key.as_str()).collect();
    for key in keys {
        let seqs: Vec<u64> = issued.iter().filter(|c| c.key == key).map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence of key {key}");
    }
}
