//! The results stage's state, served by the query API of real processes:
//! each command's lifecycle (issued, its result, its dead letter), the
//! outcomes per key and the alerts; and, after the results stage is
//! SIGKILLed and restarted, every command, outcome and alert entity equal
//! byte for byte to what a replay of the commands, results and dead-letter
//! partitions from offset 0 gives.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use shoal_integration_tests::*;
use shoal_orchestrator::settings::OrchestratorSettings;
use shoal_protocol::messages::{Command, SCHEMA_VERSION, WireMessage};
use shoal_state::{EntityKind, EntityRef};

fn reading(device: &str, value: &str) -> Vec<u8> {
    json!({
        "schema_version": 1, "id": uuid::Uuid::new_v4(), "event_type": "sensor_reading", "key": device,
        "occurred_at": "2026-11-25T00:00:00Z",
        "attributes": {"metric": "temperature", "value": value, "threshold": "80.0"}
    })
    .to_string()
    .into_bytes()
}

/// Waits until `path` answers 200 and `ready` accepts the body.
async fn served(api: SocketAddr, path: String, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let ready = &ready;
    wait_for(Duration::from_secs(60), what, || {
        let path = path.clone();
        async move {
            let (status, body) = api_get(api, &path, Some(READ_TOKEN)).await.map_err(|e| e.to_string())?;
            if status == 200 && ready(&body) { Ok(body) } else { Err(format!("{status} {body}")) }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_lifecycles_outcomes_and_alerts_are_served() {
    let scope = Scope::with_topics("state-commands").await;
    let mut orchestrator = scope.orchestrator("orchestrator").stages("decisions,results").spawn();
    let mut worker = scope.worker("worker").spawn();
    let api = api_address(&orchestrator, Duration::from_secs(60)).await;

    // Two alerts for boiler-1 (crosses up, then down).
    let producer = producer();
    for value in ["75.5", "80.25", "91", "79.0"] {
        produce(&producer, &scope.topics.events.name, "boiler-1", &reading("boiler-1", value)).await;
    }
    // A command no worker skill handles: answered `unsupported` and
    // dead-lettered.
    let odd = Command {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        kind: "no_such_skill".into(),
        key: "odd-1".into(),
        seq: 1,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: json!({}),
    };
    let (id, body) = (odd.id.to_string(), odd.encode());
    let headers = OwnedHeaders::new()
        .insert(Header { key: "shoal-message-type", value: Some("command") })
        .insert(Header { key: "shoal-command-id", value: Some(id.as_str()) });
    let record = FutureRecord::to(&scope.topics.commands.name).key("odd-1").payload(&body).headers(headers);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();

    let mut commands = TopicReader::new(&scope.topics.commands.name);
    commands.read_until(Duration::from_secs(60), "three commands", |m| m.len() >= 3).await;
    let alerts: Vec<Command> =
        decode_commands(&commands.messages).into_iter().filter(|c| c.kind == "raise_alert").collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");

    // Each alert command: issued, then succeeded, with its timings.
    for alert in &alerts {
        let body = served(api, format!("/v1/commands/{}", alert.id), "the alert command succeeded", |b| {
            b["state"]["status"] == "succeeded"
        })
        .await;
        let state = &body["state"];
        assert_eq!((state["kind"].as_str(), state["key"].as_str()), (Some("raise_alert"), Some("boiler-1")), "{body}");
        assert_eq!(state["seq"].as_u64(), Some(alert.seq), "{body}");
        assert_eq!(state["issued"]["id"], json!(alert.id.to_string()), "{body}");
        assert_eq!(state["result"]["status"], "succeeded", "{body}");
        assert!(state["timings"]["end_to_end_ms"].as_i64().is_some_and(|ms| ms >= 0), "{body}");
        // Its parts came from two partitions (the command's and the result's).
        let topics: Vec<&str> =
            body["parts"].as_array().unwrap().iter().filter_map(|p| p["shard"]["topic"].as_str()).collect();
        assert!(topics.contains(&scope.topics.commands.name.as_str()), "{body}");
        assert!(topics.contains(&scope.topics.results.name.as_str()), "{body}");
    }
    // The unhandled command: its result and its dead letter.
    let body = served(api, format!("/v1/commands/{id}"), "the odd command dead-lettered", |b| {
        !b["state"]["dead_letter"].is_null() && !b["state"]["result"].is_null()
    })
    .await;
    assert_eq!(body["state"]["status"], "unsupported", "{body}");
    assert_eq!(body["state"]["dead_letter"]["reason"], "unsupported_kind", "{body}");
    assert_eq!(body["state"]["dead_letter"]["stage"], "worker", "{body}");

    // By key and status.
    let list = served(api, "/v1/commands?key=boiler-1".into(), "boiler-1's commands", |b| {
        b["commands"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    assert!(list["commands"].as_array().unwrap().iter().all(|c| c["key"] == "boiler-1"), "{list}");
    let failed = served(api, "/v1/commands?status=unsupported".into(), "unsupported commands", |b| {
        b["commands"].as_array().is_some_and(|c| !c.is_empty())
    })
    .await;
    assert!(failed["commands"].as_array().unwrap().iter().all(|c| c["status"] == "unsupported"), "{failed}");
    // The key's recent outcomes, completed from the commands.
    let outcomes = served(api, "/v1/state/outcomes/boiler-1".into(), "boiler-1's outcomes", |b| {
        b["state"]["recent"].as_array().is_some_and(|r| r.len() == 2)
    })
    .await;
    let recent = outcomes["state"]["recent"].as_array().unwrap();
    assert!(recent.iter().all(|o| o["status"] == "succeeded" && o["kind"] == "raise_alert"), "{outcomes}");
    // The alerts, with the severity the worker gave them.
    let listed =
        served(api, "/v1/alerts".into(), "two alerts", |b| b["alerts"].as_array().is_some_and(|a| a.len() == 2)).await;
    for alert in listed["alerts"].as_array().unwrap() {
        assert_eq!(alert["entity"], "boiler-1", "{listed}");
        assert_eq!(alert["subject"], "boiler-1/temperature", "{listed}");
        assert!(alert["severity"].is_string(), "{listed}");
        assert_eq!(alert["provenance"]["topic"], json!(scope.topics.results.name), "{listed}");
    }
    let severity = listed["alerts"][0]["severity"].as_str().unwrap().to_string();
    let some = served(api, format!("/v1/alerts?severity={severity}"), "alerts by severity", |_| true).await;
    assert!(some["alerts"].as_array().unwrap().iter().all(|a| a["severity"] == severity.as_str()), "{some}");

    // The audit tool rebuilds the same history from the log alone.
    let audit = |kind: &str, key: &str| {
        let output = std::process::Command::new(bin("shoal-state"))
            .args(["audit", "--kind", kind, "--key", key, "--timeout-secs", "30"])
            .envs(scope.orchestrator("audit").env().iter().cloned())
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "audit {kind} {key}: {stderr}");
        let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (lines, stderr.into_owned())
    };
    let (lines, summary) = audit("device", "boiler-1");
    assert_eq!(lines.len(), 4, "one change per reading: {lines:?}");
    assert!(summary.contains("4 changes"), "{summary}");
    assert_eq!(lines.iter().map(|l| l["commands"].as_array().unwrap().len()).sum::<usize>(), 2, "{lines:?}");
    let (lines, _) = audit("command", &alerts[0].id.to_string());
    let topics: Vec<&str> = lines.iter().filter_map(|l| l["provenance"]["topic"].as_str()).collect();
    assert_eq!(topics, [&scope.topics.commands.name, &scope.topics.results.name], "issued, then answered: {lines:?}");
    assert_eq!(lines.last().unwrap()["merged"]["status"], "succeeded", "{lines:?}");
    let (lines, _) = audit("command", &id);
    assert_eq!(lines.last().unwrap()["merged"]["dead_letter"]["reason"], "unsupported_kind", "{lines:?}");

    for p in [&mut orchestrator, &mut worker] {
        p.stop_cleanly(Duration::from_secs(20));
    }
}

/// The results stage alone, checkpointing often.
fn results_stage(scope: &Scope, name: &str) -> Launch {
    scope.orchestrator(name).stages("results").with("SHOAL__STATE__CHECKPOINT_INTERVAL_MS", "300")
}

/// The replay of the results stage's inputs (commands, results and dead
/// letters), every partition from offset 0.
fn replay_all(settings: &OrchestratorSettings) -> Replayed {
    let t = &settings.topics;
    let inputs = [t.commands.name.as_str(), t.results.name.as_str(), t.dlq.name.as_str()];
    replay_topics(settings, &inputs, Duration::from_secs(60)).unwrap()
}

/// Runs the pipeline with the results stage in its own process, disturbs
/// it (a SIGKILL and a restart, or `extra` settings such as injected
/// aborts), ends the stream, and compares every entity it serves with a
/// replay. Returns the stage's logs.
async fn results_case(test: &str, extra: &[(&str, &str)], kill: bool) -> String {
    let scope = Scope::with_topics(test).await;
    let (sim, url) = start_sim(&["--rate", "40", "--seed", "13", "--symbols", "SR-A,SR-B,SR-C,SR-D"], &scope.dir);
    let mut front = scope.orchestrator("front").stages("ingest,decisions").feed(&url).lively_rules().spawn();
    let mut worker = scope.worker("worker").spawn();
    let launch = |name: &str| results_stage(&scope, name).with_all(extra.iter().copied());
    let mut stage = launch("results-1").spawn();
    let mut results = TopicReader::new(&scope.topics.results.name);
    results.read_until(Duration::from_secs(90), "first results", |m| m.len() >= 20).await;
    let mut logs = String::new();
    if kill {
        // Killed after a checkpoint and some inputs past it, so the restart
        // restores from the changelog and catches up.
        let mut changelog = TopicReader::new(&format!("{}.changelog", scope.topics.results.name));
        changelog.read_until(Duration::from_secs(60), "a checkpoint", |m| !m.is_empty()).await;
        let wanted = results.messages.len() + 10;
        results.read_until(Duration::from_secs(60), "results after a checkpoint", |m| m.len() >= wanted).await;
        stage.signal(Signal::SIGKILL);
        stage.expect_exit(Duration::from_secs(10));
        logs.push_str(&stage.log_text());
        stage = launch("results-2").spawn();
    }
    let wanted = results.messages.len() + 20;
    results.read_until(Duration::from_secs(90), "more results", |m| m.len() >= wanted).await;

    // End the stream; every command answered.
    front.stop_cleanly(Duration::from_secs(20));
    sim.signal(Signal::SIGTERM);
    let mut commands = TopicReader::new(&scope.topics.commands.name);
    commands.read_to_end(Duration::from_secs(30)).await;
    let issued = commands.messages.len();
    results.read_until(Duration::from_secs(90), "a result for every command", |m| m.len() >= issued).await;

    let settings: OrchestratorSettings = shoal_config::load_from(None, launch("replay").env().iter().cloned()).unwrap();
    let replayed = tokio::task::block_in_place(|| replay_all(&settings));
    let api = api_address(&stage, Duration::from_secs(30)).await;
    replayed.wait_for_watermarks(api, Duration::from_secs(60)).await.unwrap();

    let mut entities: Vec<EntityRef> = replayed.shards.iter().flat_map(|s| s.state.entity_refs()).collect();
    entities.sort();
    entities.dedup();
    let count = |kind| entities.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(EntityKind::Command), issued, "the replay holds every command");
    assert!(count(EntityKind::Outcomes) >= 4 && count(EntityKind::Alerts) >= 1, "{entities:?}");
    for entity in &entities {
        let path = match entity.kind {
            EntityKind::Command => format!("/v1/commands/{}", entity.key),
            kind => format!("/v1/state/{}/{}", kind.as_str(), entity.key),
        };
        let (status, body) = api_get(api, &path, Some(READ_TOKEN)).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let served = serde_json::to_vec(&body["state"]).unwrap();
        let replayed = serde_json::to_vec(&replayed.expected(entity).unwrap()).unwrap();
        assert!(
            served == replayed,
            "{path}: served state differs from the replay\nserved:   {}\nreplayed: {}",
            String::from_utf8_lossy(&served),
            String::from_utf8_lossy(&replayed)
        );
    }
    eprintln!("{test}: the results state equals the replay: {} entities ({} commands)", entities.len(), issued);
    stage.stop_cleanly(Duration::from_secs(20));
    logs.push_str(&stage.log_text());
    worker.stop_cleanly(Duration::from_secs(20));
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_state_after_sigkill_equals_a_replay_from_offset_zero() {
    let logs = results_case("state-results-kill", &[], true).await;
    let restored = logs.lines().filter(|l| l.contains("state shard restored")).collect::<Vec<_>>();
    assert!(
        restored.iter().any(|l| !l.contains("changelog_records=0")),
        "the restarted stage restored from the changelog: {restored:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_state_after_aborted_transactions_equals_a_replay_from_offset_zero() {
    let logs = results_case("state-results-abort", &[("SHOAL__DELIVERY__INJECT_ABORT_EVERY", "4")], false).await;
    assert!(logs.contains("injected fault"), "transactions were aborted");
    let restores = logs.lines().filter(|l| l.contains("state shard restored")).count();
    assert!(restores > 3, "shards were restored after the aborts ({restores} restores)");
}
