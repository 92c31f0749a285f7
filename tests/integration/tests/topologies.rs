//! The fraud and IoT example topologies (`examples/topologies/`) end to
//! end on the real broker, each from its bundled recording: business
//! events → the orchestrator (state, rules) → a first worker level → a
//! stateful middle level whose state is restored from its results topic →
//! an upper level, each level on its own topics and group, with one trace
//! per decision across every level, checked through a real OTLP receiver.
//! (The trading topology runs in `levels.rs`.)

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use shoal_integration_tests::otlp::{ReceivedSpan, Receiver};
use shoal_integration_tests::*;
use shoal_protocol::messages::{CommandResult, ResultStatus};

const FRAUD: &str = include_str!("../../../examples/topologies/fraud/events.jsonl");
const IOT: &str = include_str!("../../../examples/topologies/iot/events.jsonl");

/// A recording's events: (key, the line).
fn recording(text: &str) -> Vec<(String, serde_json::Value)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let event: serde_json::Value = serde_json::from_str(l).unwrap();
            (event["key"].as_str().unwrap().to_string(), event)
        })
        .collect()
}

/// A worker of one level: its commands, results and group from `level`,
/// `next` its next level's commands topic (if any), traced to `receiver`.
fn level_worker(level: &Scope, name: &str, next: Option<&Scope>, receiver: &Receiver) -> Launch {
    let mut launch = level
        .worker(name)
        .id(name)
        .with("SHOAL__TOPICS__COMMANDS__NAME", level.topics.commands.name.clone())
        .with("SHOAL__TOPICS__RESULTS__NAME", level.topics.results.name.clone())
        .with("SHOAL__WORKER__GROUP_ID", level.workers_group())
        .with("SHOAL__WORKER__COMMIT_INTERVAL_MS", "200")
        .otlp("http/protobuf", receiver.http_endpoint());
    if let Some(next) = next {
        launch = launch.with("SHOAL__WORKER__NEXT_TOPIC", next.topics.commands.name.clone());
    }
    launch
}

/// A scripted OpenAI-compatible model (real HTTP) for the LLM skill at
/// the IoT topology's top level: it answers every triage at once with a
/// valid decision naming the first device in the task; `/v1/summary` and
/// any state read answer with a fixed summary.
async fn scripted_model() -> String {
    use axum::response::IntoResponse as _;
    async fn chat(body: String) -> axum::response::Response {
        let request: serde_json::Value = serde_json::from_str(&body).unwrap();
        let prompt = request["messages"][1]["content"].as_str().unwrap_or_default().to_string();
        let first = prompt.split("with anomalies: ").nth(1).and_then(|r| r.split([',', ')']).next()).unwrap_or("?");
        let content =
            serde_json::json!({"action": "alert", "reason": format!("inspect {first} first"), "confidence": 0.7});
        let reply = serde_json::json!({
            "id": "chatcmpl-topology", "object": "chat.completion", "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 90, "completion_tokens": 12, "total_tokens": 102},
        });
        ([(axum::http::header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response()
    }
    async fn state() -> axum::response::Response {
        let summary = serde_json::json!({"summary": "plant-1: pumps 1-3 vibrating (fresh)", "tokens": 9});
        ([(axum::http::header::CONTENT_TYPE, "application/json")], summary.to_string()).into_response()
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).fallback(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn results_of(scope: &Scope) -> Vec<CommandResult> {
    let mut reader = TopicReader::new(&scope.topics.results.name);
    reader.read_to_end(Duration::from_secs(30)).await;
    decode_results(&reader.messages)
}

/// Each of `top`'s results is one trace from the orchestrator's "evaluate
/// rules" through every level: the span chain, named per level, is
/// `expected` from the top down.
fn assert_one_trace_each(top: &[CommandResult], receiver: &Receiver, expected: &[(&str, &str, Option<&str>)]) {
    let spans = receiver.spans();
    let index: HashMap<&str, &ReceivedSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for result in top {
        let id = result.command_id.to_string();
        let mut span: &ReceivedSpan = spans
            .iter()
            .find(|s| s.name == "process command" && s.attr("command.id") == Some(id.as_str()))
            .unwrap_or_else(|| panic!("the top level's span of command {id}"));
        let trace_id = span.trace_id.clone();
        let mut chain = vec![span];
        while !span.parent_span_id.is_empty() {
            span = *index.get(span.parent_span_id.as_str()).unwrap_or_else(|| {
                panic!("parent {:?} of {:?} ({}) was not exported", span.parent_span_id, span.name, span.service)
            });
            assert_eq!(span.trace_id, trace_id, "{} is in the decision's trace", span.name);
            chain.push(span);
        }
        let named: Vec<(&str, &str, Option<&str>)> =
            chain.iter().map(|s| (s.name.as_str(), s.service.as_str(), s.attr("command.kind"))).collect();
        assert_eq!(named, expected, "the span chain of {id}, top down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fraud_topology_scores_builds_cases_across_accounts_and_blocks() {
    let receiver = Receiver::start(true).await.unwrap();
    let scoring = Scope::with_topics("topo-fraud").await;
    let cases = Scope::with_topics("topo-fraud-cases").await;
    let actions = Scope::with_topics("topo-fraud-actions").await;
    let mut orchestrator = scoring
        .orchestrator("orchestrator")
        .stages("decisions,results")
        .otlp("http/protobuf", receiver.http_endpoint())
        .spawn();
    let mut level1 = level_worker(&scoring, "scoring-1", Some(&cases), &receiver)
        .with("SHOAL__WORKER__FRAUD__CASE_KEY", "cases-eu")
        .spawn();
    let mut level2 = level_worker(&cases, "cases-1", Some(&actions), &receiver)
        .with("SHOAL__WORKER__CASES__ENABLED", "true")
        .spawn();
    let mut level3 =
        level_worker(&actions, "actions-1", None, &receiver).with("SHOAL__WORKER__CASES__ENABLED", "true").spawn();

    // One transaction at a time through the case level, so the builder sees
    // them in the recording's order (the accounts' keys spread over
    // partitions of the level below).
    let producer = producer();
    let mut built = TopicReader::new(&cases.topics.results.name);
    let events = recording(FRAUD);
    for (i, (key, event)) in events.iter().enumerate() {
        produce(&producer, &scoring.topics.events.name, key, event.to_string().as_bytes()).await;
        built.read_until(Duration::from_secs(60), &format!("{} case results", i + 1), |m| m.len() > i).await;
    }
    let mut decided = TopicReader::new(&actions.topics.results.name);
    decided.read_until(Duration::from_secs(60), "2 case decisions", |m| m.len() >= 2).await;
    for p in [&mut orchestrator, &mut level1, &mut level2, &mut level3] {
        p.stop_cleanly(Duration::from_secs(20));
    }

    let scores = results_of(&scoring).await;
    assert_eq!(scores.len(), events.len(), "one score per transaction: {scores:?}");
    let declined: Vec<&str> =
        scores.iter().filter(|r| r.output["decision"] == "decline").map(|r| r.key.as_str()).collect();
    assert_eq!(declined, ["acct-2"], "the remote 7,500 gambling payment is declined");
    let built = results_of(&cases).await;
    assert_eq!(built.len(), events.len());
    assert!(built.iter().all(|r| r.status == ResultStatus::Succeeded && r.key == "cases-eu"), "{built:?}");
    let versions: Vec<u64> = built.iter().map(|r| r.output["state"]["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5], "one builder saw every transaction once");
    let with_case: Vec<(&str, usize)> = built
        .iter()
        .filter(|r| !r.output["case"].is_null())
        .map(|r| (r.output["account"].as_str().unwrap(), r.output["case"]["accounts"].as_array().unwrap().len()))
        .collect();
    assert_eq!(with_case, [("acct-2", 2), ("acct-3", 3)], "acct-2 opens the dev-A case, acct-3 joins it");

    let decisions = results_of(&actions).await;
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    for d in &decisions {
        assert_eq!((d.kind.as_str(), d.status), ("decide_case", ResultStatus::Succeeded));
        assert_eq!(d.output["action"], "block", "{}", d.output);
        assert_eq!(d.output["devices"], serde_json::json!(["dev-A"]));
    }
    assert_eq!(decisions[1].output["accounts"], serde_json::json!(["acct-1", "acct-2", "acct-3"]));
    assert_one_trace_each(
        &decisions,
        &receiver,
        &[
            ("process command", "shoal-worker", Some("decide_case")),
            ("publish command", "shoal-worker", Some("decide_case")),
            ("process command", "shoal-worker", Some("build_case")),
            ("publish command", "shoal-worker", Some("build_case")),
            ("process command", "shoal-worker", Some("score_transaction")),
            ("publish command", "shoal-orchestrator", Some("score_transaction")),
            ("evaluate rules", "shoal-orchestrator", None),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iot_topology_correlates_devices_of_a_site_across_a_restart_of_its_middle_level() {
    let receiver = Receiver::start(true).await.unwrap();
    let devices = Scope::with_topics("topo-iot").await;
    let sites = Scope::with_topics("topo-iot-sites").await;
    let notices = Scope::with_topics("topo-iot-notify").await;
    let mut orchestrator = devices
        .orchestrator("orchestrator")
        .stages("decisions,results")
        .with("SHOAL__RULES__EVENTS__VIBRATION", "check_device")
        .otlp("http/protobuf", receiver.http_endpoint())
        .spawn();
    let mut level1 = level_worker(&devices, "devices-1", Some(&sites), &receiver)
        .with("SHOAL__WORKER__IOT__CORRELATE", "true")
        .with("SHOAL__WORKER__IOT__MAX_RATE_PER_S", "0.2")
        .spawn();
    let site_level = |name: &str| {
        level_worker(&sites, name, Some(&notices), &receiver)
            .with("SHOAL__WORKER__INCIDENTS__ENABLED", "true")
            .with("SHOAL__WORKER__INCIDENTS__MIN_DEVICES", "3")
            .with("SHOAL__WORKER__INCIDENTS__LLM_TRIAGE", "true")
    };
    let mut level2 = site_level("sites-1").spawn();
    // The top level notifies, and triages with the LLM skill.
    let model = scripted_model().await;
    let key_file = notices.dir.join("llm-key");
    std::fs::write(&key_file, "sk-topology-test\n").unwrap();
    let mut level3 = level_worker(&notices, "notify-1", None, &receiver)
        .with("SHOAL__WORKER__INCIDENTS__ENABLED", "true")
        .with("SHOAL__LLM__ENABLED", "true")
        .with("SHOAL__LLM__MODEL", "scripted")
        .with("SHOAL__LLM__ENDPOINT", format!("{model}/v1"))
        .with("SHOAL__LLM__STATE_API_URL", format!("{model}/api"))
        .with("SHOAL__LLM__API_KEY_FILE", key_file.display().to_string())
        .with("SHOAL__WORKER__HANDLER_TIMEOUT_MS", "30000")
        .spawn();

    // The recording: 15 quiet readings per device, then one spike each
    // (pump-1, pump-2 of plant-1, fan-9 of plant-2, then pump-3 of plant-1).
    // The site level restarts before pump-3's spike: the incident it opens
    // needs the two earlier devices, which only the restored state holds.
    let events = recording(IOT);
    let spike = |e: &serde_json::Value| e["attributes"]["value"] == "6.0";
    let split = events.iter().position(|(key, e)| key == "pump-3" && spike(e)).unwrap();
    let producer = producer();
    for (key, event) in &events[..split] {
        produce(&producer, &devices.topics.events.name, key, event.to_string().as_bytes()).await;
    }
    let mut correlated = TopicReader::new(&sites.topics.results.name);
    correlated.read_until(Duration::from_secs(90), "3 correlations", |m| m.len() >= 3).await;
    level2.stop_cleanly(Duration::from_secs(20));
    let mut level2 = site_level("sites-2").spawn();
    for (key, event) in &events[split..] {
        produce(&producer, &devices.topics.events.name, key, event.to_string().as_bytes()).await;
    }
    let mut notified = TopicReader::new(&notices.topics.results.name);
    notified.read_until(Duration::from_secs(90), "a notification and a triage", |m| m.len() >= 2).await;
    for p in [&mut orchestrator, &mut level1, &mut level2, &mut level3] {
        p.stop_cleanly(Duration::from_secs(20));
    }

    let checks = results_of(&devices).await;
    assert_eq!(checks.len(), events.len(), "one check per reading");
    let alerting: HashSet<&str> = checks.iter().filter(|r| r.output["alert"] == true).map(|r| r.key.as_str()).collect();
    assert_eq!(alerting, HashSet::from(["pump-1", "pump-2", "pump-3", "fan-9"]), "only the spikes alert");
    let correlations = results_of(&sites).await;
    assert_eq!(correlations.len(), 4, "one correlation per alerting check: {correlations:?}");
    let pump3 = correlations
        .iter()
        .find(|r| r.worker_id == "sites-2" && r.key == "plant-1")
        .expect("pump-3's, after the restart");
    assert_eq!(pump3.output["state"]["version"], 3, "the restarted level went on from the restored state");
    assert_eq!(pump3.output["changes"][0]["change"], "opened");
    assert_eq!(pump3.output["changes"][0]["incident"]["devices"], serde_json::json!(["pump-1", "pump-2", "pump-3"]));
    assert!(correlations.iter().filter(|r| r.key == "plant-2").all(|r| r.output["changes"] == serde_json::json!([])));

    let top = results_of(&notices).await;
    assert_eq!(top.len(), 2, "one incident, opened once, notified and triaged: {top:?}");
    let (notifications, triages): (Vec<CommandResult>, Vec<CommandResult>) =
        top.into_iter().partition(|r| r.kind == "notify_incident");
    let message = notifications[0].output["message"].as_str().unwrap();
    assert!(message.contains("opened at site plant-1: 3 devices (pump-1, pump-2, pump-3)"), "{message}");
    let triage = &triages[0];
    assert_eq!((triage.kind.as_str(), triage.status), ("llm_decide", ResultStatus::Succeeded), "{triage:?}");
    assert_eq!(triage.output["answer"]["reason"], "inspect pump-1 first", "{}", triage.output);
    let chain = |kind: &'static str| {
        [
            ("process command", "shoal-worker", Some(kind)),
            ("publish command", "shoal-worker", Some(kind)),
            ("process command", "shoal-worker", Some("correlate_incident")),
            ("publish command", "shoal-worker", Some("correlate_incident")),
            ("process command", "shoal-worker", Some("check_device")),
            ("publish command", "shoal-orchestrator", Some("check_device")),
            ("evaluate rules", "shoal-orchestrator", None),
        ]
    };
    assert_one_trace_each(&notifications, &receiver, &chain("notify_incident"));
    assert_one_trace_each(&triages, &receiver, &chain("llm_decide"));
}
