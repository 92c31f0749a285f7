//! The derived state survives a SIGKILL and an aborted transaction: after
//! either, every entity the decisions stage serves equals, byte for byte
//! (canonical JSON), the state rebuilt by replaying its input partition
//! from offset 0 through the same rules, and the commands issued are
//! exactly those of that replay (none twice, none missing).

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_integration_tests::*;
use shoal_orchestrator::settings::OrchestratorSettings;

/// The decisions stage alone, checkpointing often.
fn decisions(scope: &Scope, name: &str, extra: &[(&str, &str)]) -> Launch {
    scope
        .orchestrator(name)
        .stages("decisions")
        .lively_rules()
        .with("SHOAL__STATE__CHECKPOINT_INTERVAL_MS", "300")
        .with_all(extra.iter().copied())
}

/// What the replay of every ticks partition gives: canonical JSON per
/// symbol, the watermark per partition, and the commands decided (sorted).
struct Replayed {
    symbols: BTreeMap<String, Vec<u8>>,
    watermarks: BTreeMap<i32, i64>,
    commands: Vec<Decided>,
}

fn replay_ticks(settings: &OrchestratorSettings) -> Replayed {
    let topic = settings.topics.ticks.name.as_str();
    let replayed = replay_topics(settings, &[topic], Duration::from_secs(60)).unwrap();
    let watermarks = replayed.shards.iter().map(|s| (s.partition, s.watermark)).collect();
    Replayed { symbols: replayed.symbols(), watermarks, commands: replayed.commands }
}

/// Waits until the API serves every replayed symbol at the replay's
/// watermark, then compares them byte for byte.
async fn assert_served_equals_replay(api: SocketAddr, replayed: &Replayed) {
    assert!(!replayed.symbols.is_empty(), "the replay found symbols");
    for (symbol, expected) in &replayed.symbols {
        let path = format!("/v1/state/symbol/{symbol}");
        let served = wait_for(Duration::from_secs(60), &format!("{symbol} served at the replay's watermark"), || {
            let path = path.clone();
            async move {
                let (status, body) = api_get(api, &path, Some(READ_TOKEN)).await.map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("{status} {body}"));
                }
                let shard = body["provenance"]["partition"].as_i64().unwrap_or(-1) as i32;
                let at = body["freshness"]["watermarks"]
                    .as_array()
                    .and_then(|w| w.iter().find(|w| w["partition"].as_i64() == Some(i64::from(shard))))
                    .and_then(|w| w["offset"].as_i64())
                    .unwrap_or(-2);
                if replayed.watermarks.get(&shard) == Some(&at) { Ok(body) } else { Err(format!("at {at}")) }
            }
        })
        .await;
        let served = serde_json::to_vec(&served["state"]).unwrap();
        assert!(
            served == *expected,
            "{symbol}: served state differs from the replay\nserved:   {}\nreplayed: {}",
            String::from_utf8_lossy(&served),
            String::from_utf8_lossy(expected)
        );
    }
}

/// Runs ingest and decisions over the simulator's feed, disturbs the
/// decisions stage with `disturb`, lets the stream end, and checks the
/// state and the commands against a replay.
async fn restore_case(test: &str, extra: &[(&str, &str)], kill: bool) -> String {
    let scope = Scope::with_topics(test).await;
    let (sim, url) = start_sim(&["--rate", "40", "--seed", "11", "--symbols", "ST-A,ST-B,ST-C,ST-D"], &scope.dir);
    let mut ingest = scope.orchestrator("ingest").stages("ingest").feed(&url).spawn();
    let mut commands = TopicReader::new(&scope.topics.commands.name);
    let mut stage = decisions(&scope, "decisions-1", extra).spawn();
    commands.read_until(Duration::from_secs(90), "first commands", |m| m.len() >= 20).await;
    let mut logs = String::new();
    if kill {
        // Killed after a checkpoint and some inputs past it, so the restart
        // restores from the changelog and catches up.
        let mut changelog = TopicReader::new(&format!("{}.changelog", scope.topics.ticks.name));
        changelog.read_until(Duration::from_secs(60), "a checkpoint", |m| !m.is_empty()).await;
        let wanted = commands.messages.len() + 10;
        commands.read_until(Duration::from_secs(60), "commands after a checkpoint", |m| m.len() >= wanted).await;
        stage.signal(Signal::SIGKILL);
        stage.expect_exit(Duration::from_secs(10));
        logs.push_str(&stage.log_text());
        stage = decisions(&scope, "decisions-2", extra).spawn();
        let wanted = commands.messages.len() + 20;
        commands.read_until(Duration::from_secs(90), "commands after the restart", |m| m.len() >= wanted).await;
    } else {
        let wanted = commands.messages.len() + 40;
        commands.read_until(Duration::from_secs(120), "more commands", |m| m.len() >= wanted).await;
    }
    // End the stream: what the stage serves must then reach the replay.
    ingest.stop_cleanly(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
    let settings: OrchestratorSettings =
        shoal_config::load_from(None, decisions(&scope, "replay", extra).env().iter().cloned()).unwrap();
    let replayed = tokio::task::block_in_place(|| replay_ticks(&settings));
    let api = api_address(&stage, Duration::from_secs(30)).await;
    assert_served_equals_replay(api, &replayed).await;
    // Every command the replay decides was issued once, and no other. The
    // API serves an input's effect on the state before the transaction
    // with its commands commits: wait for them, then for any extra.
    let decided = replayed.commands.len();
    commands.read_until(Duration::from_secs(60), "the replay's commands", |m| m.len() >= decided).await;
    commands.read_to_end(Duration::from_secs(30)).await;
    let mut issued: Vec<Decided> =
        decode_commands(&commands.messages).into_iter().map(|c| (c.kind, c.key, c.payload)).collect();
    sort_decided(&mut issued);
    assert_eq!(issued.len(), replayed.commands.len(), "commands issued vs decided by the replay");
    assert!(issued == replayed.commands, "the commands issued are exactly the replay's");
    stage.stop_cleanly(Duration::from_secs(20));
    logs.push_str(&stage.log_text());
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_after_sigkill_equals_a_replay_from_offset_zero() {
    let logs = restore_case("state-sigkill", &[], true).await;
    let restored = logs.lines().filter(|l| l.contains("state shard restored")).collect::<Vec<_>>();
    assert!(
        restored.iter().any(|l| !l.contains("changelog_records=0")),
        "the restarted stage restored from the changelog: {restored:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_after_an_aborted_transaction_equals_a_replay_from_offset_zero() {
    let logs = restore_case("state-abort", &[("SHOAL__DELIVERY__INJECT_ABORT_EVERY", "4")], false).await;
    assert!(logs.contains("injected fault"), "transactions were aborted");
    let restores = logs.lines().filter(|l| l.contains("state shard restored")).count();
    assert!(restores > 3, "shards were restored after the aborts ({restores} restores)");
}
