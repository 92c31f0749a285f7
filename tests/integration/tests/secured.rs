//! Shoal against a secured broker (`scripts/kafka.sh up --secure`: SASL_SSL,
//! SCRAM-SHA-512, the ACL authorizer with nothing allowed by default): each
//! process connects as its role's user, and the only ACLs are the ones
//! `shoal-acl` generates from the test's configuration.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use shoal_integration_tests::*;
use shoal_protocol::messages::WireMessage;
use uuid::Uuid;

/// The secured broker, its scope's topics created by the admin, and the
/// ACLs generated for `roles` applied.
async fn secured_scope(test: &str, roles: &[&str]) -> (&'static SecureBroker, Scope) {
    let broker = tokio::task::block_in_place(SecureBroker::get);
    let scope = Scope::logged(test);
    shoal_kafka::ensure_topics(&broker.kafka_settings("admin"), &scope.topics).await.unwrap();
    if !roles.is_empty() {
        let applied = tokio::task::block_in_place(|| broker.apply_acls(&scope_env(broker, &scope), roles));
        assert!(applied.contains("created="), "shoal-acl said:\n{applied}");
    }
    (broker, scope)
}

/// The scope's environment on the secured broker (topics made by the
/// admin beforehand, so no process needs to create any but its state's).
fn scope_env(broker: &SecureBroker, scope: &Scope) -> Vec<(String, String)> {
    let mut env = scope.env();
    env.push(("SHOAL__KAFKA__BOOTSTRAP_SERVERS".into(), broker.bootstrap.clone()));
    env
}

/// A process of `scope` connecting as `user`.
fn as_user(launch: Launch, broker: &SecureBroker, user: &str) -> Launch {
    broker.env_as(user, None).into_iter().fold(launch, |l, (k, v)| l.with(&k, v))
}

/// Issues `n` alert commands as the admin.
async fn issue_as_admin(broker: &SecureBroker, scope: &Scope, n: usize) -> Vec<Uuid> {
    let producer: FutureProducer = broker.client_config("admin").set("enable.idempotence", "true").create().unwrap();
    let mut issued = Vec::new();
    for i in 0..n {
        let command = alert_command(&format!("key-{}", i % 8), (i / 8) as u64 + 1);
        let body = command.encode();
        producer
            .send(
                FutureRecord::to(&scope.topics.commands.name).key(&command.key).payload(&body),
                Duration::from_secs(20),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        issued.push(command.id);
    }
    issued
}

/// Whether `user` may write to `topic`: one record, its delivery's answer.
async fn can_write(broker: &SecureBroker, user: &str, topic: &str) -> Result<(), String> {
    let producer: FutureProducer =
        broker.client_config(user).set("message.timeout.ms", "15000").create().map_err(|e| e.to_string())?;
    producer
        .send(FutureRecord::to(topic).key("probe").payload("probe"), Duration::from_secs(15))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e.to_string())
}

/// No password of any user appears in `text`.
fn assert_no_secret(broker: &SecureBroker, what: &str, text: &str) {
    for password in broker.passwords() {
        assert!(!text.contains(password), "a SCRAM password appears in {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_runs_exactly_once_with_only_the_generated_acls() {
    let (broker, scope) = secured_scope("secpipe", &["ingest", "decisions", "results", "worker"]).await;
    let env = scope_env(broker, &scope);
    let (mut sim, url) = start_sim(&["--rate", "20", "--seed", "5", "--symbols", "SEC-A,SEC-B,SEC-C"], &scope.dir);
    let launch = |name: &str, user: &str, stages: &str| {
        let l = scope.orchestrator(name).with_all(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        as_user(l, broker, user).stages(stages).mode("exactly_once")
    };
    let mut worker =
        as_user(scope.worker("worker").with_all(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))), broker, "worker")
            .id("sec-worker-1")
            .mode("exactly_once")
            .spawn();
    let record = scope.dir.join("outcomes.jsonl");
    let mut results = launch("results", "results", "results").record_to(&record).spawn();
    let mut decisions = launch("decisions", "decisions", "decisions").lively_rules().spawn();
    let mut ingest = launch("ingest", "ingest", "ingest").feed(&url).spawn();

    wait_for_lines(&record, 30, Duration::from_secs(120), "30 outcomes recorded under SASL_SSL").await;
    for p in [&mut ingest, &mut decisions, &mut results, &mut worker] {
        assert!(p.running(), "{} died; log:\n{}", p.name, p.log_text());
    }
    ingest.stop_cleanly(Duration::from_secs(20));
    decisions.stop_cleanly(Duration::from_secs(20));

    // Every command issued has exactly one committed result.
    let mut commands = TopicReader::with_config(broker.client_config("admin"), &scope.topics.commands.name);
    commands.read_to_end(Duration::from_secs(30)).await;
    let issued: Vec<Uuid> = decode_commands(&commands.messages).iter().map(|c| c.id).collect();
    assert!(issued.len() >= 30, "only {} commands issued", issued.len());
    let mut read = TopicReader::with_config(broker.client_config("admin"), &scope.topics.results.name);
    read.read_until(Duration::from_secs(60), "a result per command", |m| m.len() >= issued.len()).await;
    read.read_to_end(Duration::from_secs(20)).await;
    assert_one_result_each(&decode_results(&read.messages), &issued);

    // Each role can do its job (above) and not one thing outside it.
    let t = &scope.topics;
    for (user, topic) in [
        ("ingest", &t.commands.name),
        ("decisions", &t.results.name),
        ("results", &t.commands.name),
        ("worker", &t.ticks.name),
    ] {
        let refused = can_write(broker, user, topic).await.expect_err(&format!("{user} may not write {topic}"));
        assert!(refused.contains("authorization"), "{user} writing {topic}: {refused}");
    }

    worker.stop_cleanly(Duration::from_secs(30));
    results.stop_cleanly(Duration::from_secs(30));
    sim.stop_cleanly(Duration::from_secs(10));
    for p in [&ingest, &decisions, &results, &worker, &sim] {
        assert_no_secret(broker, &format!("{}'s log", p.name), &p.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_the_process_at_start_naming_the_cause() {
    let (broker, scope) = secured_scope("secpass", &["worker"]).await;
    let wrong = "not-the-password-7c1e9f";
    let mut worker = scope
        .worker("worker")
        .with_all(scope_env(broker, &scope).iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .with_all(broker.env_as("worker", Some(wrong)).iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .spawn();
    let status = worker.expect_exit(Duration::from_secs(40));
    let log = worker.log_text();
    assert!(!status.success(), "a refused worker must not exit cleanly; log:\n{log}");
    assert!(log.contains("refused the credentials of user \"worker\""), "the error names the user; log:\n{log}");
    assert!(log.contains("sasl.password"), "the error names the setting to fix; log:\n{log}");
    assert!(!log.contains("worker started"), "it never got as far as starting; log:\n{log}");
    assert!(!log.contains(wrong), "the wrong password is not logged");
    assert_no_secret(broker, "the refused worker's log", &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_config_shows_no_password() {
    let broker = tokio::task::block_in_place(SecureBroker::get);
    let output = std::process::Command::new(bin("shoal-worker"))
        .arg("--print-config")
        .envs(broker.env_as("worker", None))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "--print-config failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("<redacted>"), "the password is shown redacted:\n{text}");
    assert_no_secret(broker, "--print-config", &text);
}

/// A worker in `mode` whose principal lacks Write on the results topic
/// stops with an error naming the operation and the topic; once the ACL is
/// granted, a new worker gives every command exactly one result.
async fn missing_write_on_results(mode: &str) {
    let (broker, scope) = secured_scope(&format!("secacl-{}", &mode[..3]), &[]).await;
    let mut env = scope_env(broker, &scope);
    env.push(("SHOAL__DELIVERY__MODE".into(), mode.into()));
    tokio::task::block_in_place(|| {
        broker.apply_acls(&env, &["worker"]);
        broker.remove_topic_acl("User:worker", "Write", &scope.topics.results.name);
    });
    let issued = issue_as_admin(broker, &scope, 24).await;
    let worker = |name: &str| {
        as_user(scope.worker(name).with_all(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))), broker, "worker")
            .id("sec-acl-worker")
            .mode(mode)
    };
    let mut refused = worker("worker-refused").spawn();
    let status = refused.expect_exit(Duration::from_secs(90));
    let log = refused.log_text();
    assert!(!status.success(), "a worker that cannot write its results must not exit cleanly; log:\n{log}");
    assert!(
        log.contains("not authorized") && log.contains("Write") && log.contains(&scope.topics.results.name),
        "the error names the operation and the topic; log:\n{log}"
    );
    // Nothing was committed past the refused records: with the ACL
    // granted, every command is processed, each exactly once.
    tokio::task::block_in_place(|| broker.apply_acls(&env, &["worker"]));
    let mut fixed = worker("worker-fixed").spawn();
    let mut read = TopicReader::with_config(broker.client_config("admin"), &scope.topics.results.name);
    read.read_until(Duration::from_secs(90), "a result per command", |m| m.len() >= issued.len()).await;
    read.read_to_end(Duration::from_secs(20)).await;
    assert_one_result_each(&decode_results(&read.messages), &issued);
    fixed.stop_cleanly(Duration::from_secs(30));
    assert_no_secret(broker, "the workers' logs", &(log + &fixed.log_text()));
}

test_in_both_modes!(missing_write_on_results => a_worker_without_write_on_results_stops_naming_it_exactly_once, a_worker_without_write_on_results_stops_naming_it_at_least_once);

/// Runs a Shoal tool of the scope as `user`; its exit status and output.
fn run_tool(
    broker: &SecureBroker,
    env: &[(String, String)],
    user: &str,
    program: &str,
    args: &[&str],
) -> (bool, String) {
    let output = std::process::Command::new(bin(program))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .envs(broker.env_as(user, None))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_and_api_roles_do_their_job_and_nothing_else() {
    let (broker, scope) = secured_scope("sectools", &["state", "redrive", "api"]).await;
    let env = scope_env(broker, &scope);
    let members = format!("it.{}.members", scope.id);
    let admin = shoal_kafka::settings::TopicsSettings {
        ticks: shoal_kafka::settings::TopicSettings { name: members.clone(), partitions: 1, replication: 1 },
        ..scope.topics.clone()
    };
    shoal_kafka::ensure_topics(&broker.kafka_settings("admin"), &admin).await.unwrap();

    // state: rebuilds a shard's state from an input topic.
    let (ok, out) = tokio::task::block_in_place(|| {
        run_tool(
            broker,
            &env,
            "state",
            "shoal-state",
            &["replay", "--topic", &scope.topics.ticks.name, "--partition", "0"],
        )
    });
    assert!(ok, "shoal-state replay as state:\n{out}");
    // redrive: lists the dead letters (reads the dead-letter topic and its re-drive log).
    let (ok, out) = tokio::task::block_in_place(|| run_tool(broker, &env, "redrive", "shoal-dlq", &["list"]));
    assert!(ok, "shoal-dlq list as redrive:\n{out}");
    // api: announces on the members topic.
    can_write(broker, "api", &members).await.unwrap();

    for (user, topic) in [
        ("state", &scope.topics.ticks.name),
        ("redrive", &scope.topics.journal.name),
        ("api", &scope.topics.commands.name),
    ] {
        let refused = can_write(broker, user, topic).await.expect_err(&format!("{user} may not write {topic}"));
        assert!(refused.contains("authorization"), "{user} writing {topic}: {refused}");
    }
}
