//! Two orchestrator instances share the decisions stage's partitions: each
//! owns its shards' state, and a query to either answers for any key (the
//! other's keys are forwarded to their owner). After one is killed, the
//! other takes its partitions over, loads their state from the changelog
//! on assignment and serves every key within the session timeout plus the
//! load.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shoal_integration_tests::*;
use shoal_orchestrator::state::log::LogReader;

const SYMBOLS: [&str; 6] = ["SC-A", "SC-B", "SC-C", "SC-D", "SC-E", "SC-F"];

async fn serves_every_symbol(api: std::net::SocketAddr, timeout: Duration, what: &str) {
    for symbol in SYMBOLS {
        let path = format!("/v1/state/symbol/{symbol}");
        wait_for(timeout, &format!("{what}: {symbol}"), || {
            let path = path.clone();
            async move {
                match api_get(api, &path, Some(READ_TOKEN)).await {
                    Ok((200, body)) if body["key"] == symbol => Ok(()),
                    Ok((status, body)) => Err(format!("{status} {body}")),
                    Err(error) => Err(error.to_string()),
                }
            }
        })
        .await;
    }
}

/// The shards an instance owns whose topic name ends with `suffix` (`""`:
/// all).
async fn owned_shards(api: std::net::SocketAddr, suffix: &str) -> usize {
    match api_get(api, "/v1/admin/shards", Some(ADMIN_TOKEN)).await {
        Ok((200, body)) => body["shards"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| s["topic"].as_str().is_some_and(|t| t.ends_with(suffix))).count()),
        _ => 0,
    }
}

/// Whether the last assignment an instance logged holds any partition.
fn holds_partitions(log: &str) -> bool {
    log.lines()
        .rev()
        .find(|l| l.contains("partitions assigned"))
        .and_then(|l| l.rsplit("total=").next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| n > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_instance_answers_for_any_key_and_one_survives_the_other() {
    let scope = Scope::with_topics("state-scale").await;
    let symbols = SYMBOLS.join(",");
    let (sim, url) = start_sim(&["--rate", "30", "--seed", "3", "--symbols", &symbols], &scope.dir);
    let mut ingest = scope.orchestrator("ingest").stages("ingest").feed(&url).spawn();
    let instance = |id: &str| {
        scope
            .orchestrator(id)
            .stages("decisions")
            .with("SHOAL__ORCHESTRATOR__ID", id)
            .with("SHOAL__STATE__CHECKPOINT_INTERVAL_MS", "500")
            .spawn()
    };
    let a = instance("decisions-a");
    let b = instance("decisions-b");
    let (api_a, api_b) =
        (api_address(&a, Duration::from_secs(60)).await, api_address(&b, Duration::from_secs(60)).await);
    // Both hold part of the partitions once the group has settled (each
    // loads its shards' checkpoints on assignment, the events partitions'
    // too, though only the ticks carry records here).
    eventually(Duration::from_secs(90), "both instances to hold partitions", || {
        let held = [&a, &b].map(|p| holds_partitions(&p.log_text()));
        async move { held == [true, true] }
    })
    .await;
    serves_every_symbol(api_a, Duration::from_secs(60), "instance a").await;
    serves_every_symbol(api_b, Duration::from_secs(60), "instance b").await;
    // Every ticks partition with records has a committed checkpoint, so
    // that what is handed over can be served from it. (Read with the
    // state's bounded reader: the topics never go quiet here.)
    let settings: shoal_orchestrator::settings::OrchestratorSettings =
        shoal_config::load_from(None, scope.orchestrator("check").env().iter().cloned()).unwrap();
    let reader = LogReader::new(&settings.kafka, "it-scale-checkpoints").unwrap();
    let changelog = format!("{}.changelog", scope.topics.ticks.name);
    let (reader, changelog) = (&reader, &changelog);
    eventually(Duration::from_secs(60), "a checkpoint of every ticks partition with records", || async move {
        let mut busy = Vec::new();
        for api in [api_a, api_b] {
            if let Ok((200, body)) = api_get(api, "/v1/admin/shards", Some(ADMIN_TOKEN)).await {
                for shard in body["shards"].as_array().into_iter().flatten() {
                    let ticks = shard["topic"].as_str().is_some_and(|t| t.ends_with(".ticks"));
                    if ticks && shard["watermark"]["offset"].as_i64().is_some_and(|o| o >= 0) {
                        busy.push(shard["partition"].as_i64().unwrap_or(-1) as i32);
                    }
                }
            }
        }
        let bound = Duration::from_secs(5);
        let checkpointed = |p: i32| {
            tokio::task::block_in_place(|| reader.read(changelog, p, None, None, bound, |_| {}))
                .is_ok_and(|r| r.records > 0)
        };
        !busy.is_empty() && busy.into_iter().all(checkpointed)
    })
    .await;
    // The instance with more ticks shards (the ones with records, hence
    // checkpoints) dies; the other takes them over.
    let all = owned_shards(api_a, "").await + owned_shards(api_b, "").await;
    let ticks = |api| owned_shards(api, ".ticks");
    let (mut victim, mut b, api_b) =
        if ticks(api_a).await >= ticks(api_b).await { (a, b, api_b) } else { (b, a, api_a) };
    victim.signal(Signal::SIGKILL);
    victim.expect_exit(Duration::from_secs(10));
    let killed = Instant::now();
    // The session timeout, then a restore of the shards handed over.
    eventually(Duration::from_secs(120), "the survivor to own every shard", || async move {
        owned_shards(api_b, "").await >= all
    })
    .await;
    let owned_all = killed.elapsed();
    serves_every_symbol(api_b, Duration::from_secs(60), "the survivor alone").await;
    let took = killed.elapsed();
    // The session timeout (10 s) plus the rebalance and the checkpoints'
    // load; not the dead instance's transaction timeout (30 s) on top.
    assert!(took < Duration::from_secs(25), "served every key {took:?} after the kill");
    let log = b.log_text();
    // Served from the checkpoints loaded on assignment, before the dead
    // instance's open transaction times out and its records flow again.
    let loaded = log.lines().filter(|l| l.contains("state shard loaded from its checkpoint"));
    assert!(
        loaded.filter(|l| l.contains(".ticks/")).any(|l| !l.contains("changelog_records=0")),
        "the survivor loaded the ticks shards handed over from their changelog:\n{log}"
    );
    eprintln!(
        "the survivor owned all {all} shards {owned_all:?} and served every key {took:?} after the other was killed"
    );

    b.stop_cleanly(Duration::from_secs(20));
    ingest.stop_cleanly(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
}
