//! `shoal-dlq` against a real broker: dead letters written by a real
//! worker are listed and shown, re-driven by reason exactly once (a second
//! run re-drives nothing, a dry run publishes nothing), and a run that
//! crashes mid-way is completed by the next without duplicates.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use shoal_integration_tests::*;
use shoal_kafka::dlq;
use shoal_protocol::messages::{Command, ResultStatus, SCHEMA_VERSION, WireMessage};
use uuid::Uuid;

/// What a `shoal-dlq` run printed, and how it ended.
struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn has_line(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }

    fn has_line_starting(&self, start: &str) -> bool {
        self.stdout.lines().any(|l| l.starts_with(start))
    }

    /// The counts of the `dlq redrive:` summary line.
    fn summary(&self) -> HashMap<String, String> {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("dlq redrive: "))
            .unwrap_or_else(|| panic!("no summary line; stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr));
        line["dlq redrive: ".len()..]
            .split_whitespace()
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn assert_summary(&self, expected: &[(&str, &str)]) {
        let summary = self.summary();
        let expected: HashMap<String, String> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(summary, expected, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
    }
}

/// Runs the real `shoal-dlq` binary in the scope (its broker, topics and
/// transactional id prefix) and waits for it.
fn dlq_tool(scope: &Scope, args: &[&str]) -> Run {
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new(bin("shoal-dlq"))
            .args(args)
            .args(["--timeout-secs", "60"])
            .envs(scope.env())
            .env_remove("SHOAL_CONFIG")
            .current_dir(&scope.dir)
            .output()
            .unwrap()
    });
    let run = Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!("$ shoal-dlq {}\n{}{}", args.join(" "), run.stdout, run.stderr);
    run
}

/// [`dlq_tool`] that must succeed.
fn dlq_ok(scope: &Scope, args: &[&str]) -> Run {
    let run = dlq_tool(scope, args);
    assert!(run.status.success(), "shoal-dlq {args:?} exited {}:\n{}\n{}", run.status, run.stdout, run.stderr);
    run
}

fn probe(key: &str, payload: serde_json::Value) -> Command {
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        kind: "probe".into(),
        key: key.into(),
        seq: 1,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload,
    }
}

/// Produces `payload` keyed by `key` with `headers`, and waits for the ack.
async fn produce_with_headers(topic: &str, key: &str, payload: &[u8], headers: &[(&str, &str)]) {
    let headers =
        headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| h.insert(Header { key: k, value: Some(v.as_bytes()) }));
    producer()
        .send(FutureRecord::to(topic).key(key).payload(payload).headers(headers), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// A record's headers as (name, text) pairs, in order.
fn headers_of(message: &OwnedMessage) -> Vec<(String, String)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `topic` exists on the broker.
fn topic_exists(topic: &str) -> bool {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

/// The sum of the high watermarks of `topic`'s partitions: every offset
/// taken, by committed, aborted and open transactions' records and markers.
fn offsets_taken(topic: &str) -> i64 {
    // read_uncommitted: the true high watermarks, not the last stable offsets.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    partitions.iter().map(|&p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).sum()
}

/// The records of `messages` whose body is `payload`.
fn with_payload<'a>(messages: &'a [OwnedMessage], payload: &[u8]) -> Vec<&'a OwnedMessage> {
    messages.iter().filter(|m| m.payload() == Some(payload)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_redriven_by_reason_exactly_once() {
    let scope = Scope::with_topics("dlq-redrive").await;
    let (commands, dlq_topic) = (scope.topics.commands.name.clone(), scope.topics.dlq.name.clone());
    let log_topic = format!("{dlq_topic}.redrive");
    let fixed = scope.dir.join("bug-fixed");
    let mut worker = scope
        .worker("worker")
        .id("dlq-worker")
        .with("SHOAL__WORKER__PROBE_HANDLER", "true")
        .with("SHOAL__WORKER__MAX_ATTEMPTS", "2")
        .with("SHOAL__WORKER__RETRY_INITIAL_MS", "20")
        .with("SHOAL__WORKER__RETRY_MAX_MS", "50")
        .mode("exactly_once")
        .spawn();

    // Three commands that keep failing until the bug is fixed (the file
    // exists), each with headers of its own; one that fails for good; one
    // that does not decode.
    let stuck: Vec<Command> =
        (0..3).map(|i| probe(&format!("stuck-{i}"), serde_json::json!({"fail_until_exists": fixed}))).collect();
    for (i, c) in stuck.iter().enumerate() {
        let tenant = format!("t-{i}");
        let id = c.id.to_string();
        let headers = [("shoal-command-id", id.as_str()), ("x-tenant", tenant.as_str())];
        produce_with_headers(&commands, &c.key, &c.encode(), &headers).await;
    }
    let broken = probe("broken", serde_json::json!({"permanent": true}));
    produce(&producer(), &commands, &broken.key, &broken.encode()).await;
    let garbage = b"\x00\x01 not a command \xff";
    produce(&producer(), &commands, "garbage", garbage).await;

    let mut dead = TopicReader::new(&dlq_topic);
    dead.read_until(Duration::from_secs(90), "five dead letters", |m| m.len() >= 5).await;
    let reason_of = |m: &OwnedMessage| header(m, dlq::REASON).unwrap();
    let malformed = dead.messages.iter().find(|m| reason_of(m) == "malformed").expect("a malformed dead letter");
    let malformed_at = format!("{dlq_topic}/{}@{}", malformed.partition(), malformed.offset());
    let malformed_origin = format!(
        "{}/{}@{}",
        header(malformed, dlq::ORIGIN_TOPIC).unwrap(),
        header(malformed, dlq::ORIGIN_PARTITION).unwrap(),
        header(malformed, dlq::ORIGIN_OFFSET).unwrap()
    );

    // list: grouped by reason, then origin topic.
    let list = dlq_ok(&scope, &["list"]);
    assert_eq!(
        list.lines()[0],
        format!("dead-letter topic {dlq_topic}: 5 dead letters, 5 selected (filters: none), 3 reasons")
    );
    for start in [
        "reason=retries_exhausted count=3 redriven=0 oldest=".to_string(),
        format!("  origin_topic={commands} count=3 redriven=0 oldest="),
        "reason=handler_failed count=1 redriven=0 oldest=".into(),
        "reason=malformed count=1 redriven=0 oldest=".into(),
        "total count=5 redriven=0 oldest=".into(),
    ] {
        assert!(list.has_line_starting(&start), "no line starting {start:?}:\n{}", list.stdout);
    }
    let filtered = dlq_ok(&scope, &["list", "--reason", "malformed", "--reason", "handler_failed"]);
    assert!(filtered.lines()[0].contains("5 dead letters, 2 selected"), "{}", filtered.stdout);
    assert!(!filtered.has_line_starting("reason=retries_exhausted"), "{}", filtered.stdout);

    // show: by coordinates (a binary body), and by command id (JSON).
    let shown = dlq_ok(&scope, &["show", &malformed_at]);
    for line in [
        format!("dead letter {malformed_at}"),
        format!("  origin:   {malformed_origin}"),
        "  reason:   malformed".into(),
        "  stage:    worker".into(),
        "  key:      garbage".into(),
        format!("  payload (binary, {} bytes, hex):", garbage.len()),
    ] {
        assert!(shown.has_line(&line), "no line {line:?}:\n{}", shown.stdout);
    }
    let shown = dlq_ok(&scope, &["show", &stuck[0].id.to_string()]);
    for line in
        ["  reason:   retries_exhausted", "  attempts: 2", "  redriven: no", "    x-tenant: t-0", "  key:      stuck-0"]
    {
        assert!(shown.has_line(line), "no line {line:?}:\n{}", shown.stdout);
    }
    assert!(shown.stdout.contains("\"fail_until_exists\": "), "{}", shown.stdout);
    assert!(!shown.stdout.contains("    shoal-dlq-reason:"), "added headers listed as original:\n{}", shown.stdout);
    let missing = dlq_tool(&scope, &["show", &format!("{dlq_topic}/0@999")]);
    assert_eq!(missing.status.code(), Some(1), "{}", missing.stderr);

    // A dry run (the default) says what it would do and publishes nothing.
    let dry = dlq_ok(&scope, &["redrive", "--reason", "retries_exhausted"]);
    dry.assert_summary(&[
        ("selected", "3"),
        ("redriven", "0"),
        ("already_redriven", "0"),
        ("skipped_no_origin", "0"),
        ("dry_run", "true"),
        ("would_redrive", "3"),
    ]);
    assert_eq!(dry.lines().iter().filter(|l| l.starts_with("would redrive ")).count(), 3, "{}", dry.stdout);
    let old = dlq_ok(&scope, &["redrive", "--reason", "retries_exhausted", "--until", "2000-01-01T00:00:00Z"]);
    assert_eq!(old.summary()["selected"], "0", "--until before every dead letter selects none");
    let unselected = dlq_tool(&scope, &["redrive", "--yes"]);
    assert_eq!(unselected.status.code(), Some(2), "a redrive needs a selector or --all");
    let mut origin = TopicReader::new(&commands);
    origin.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(origin.messages.len(), 5, "dry runs published nothing");
    assert!(!topic_exists(&log_topic), "a dry run creates no re-drive log");

    // The bug is fixed: re-drive the exhausted retries.
    std::fs::write(&fixed, b"").unwrap();
    let first = dlq_ok(&scope, &["redrive", "--reason", "retries_exhausted", "--yes"]);
    first.assert_summary(&[
        ("selected", "3"),
        ("redriven", "3"),
        ("already_redriven", "0"),
        ("skipped_no_origin", "0"),
    ]);
    assert_eq!(first.lines().iter().filter(|l| l.starts_with("redriven ")).count(), 3, "{}", first.stdout);

    // Each payload reached its origin exactly once more, with its key,
    // partition and original headers (none of the dead letter's).
    origin.read_until(Duration::from_secs(30), "three re-driven commands", |m| m.len() >= 8).await;
    origin.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(origin.messages.len(), 8, "three re-driven, nothing else");
    for (i, c) in stuck.iter().enumerate() {
        let copies = with_payload(&origin.messages, &c.encode());
        assert_eq!(copies.len(), 2, "{}: the original and one re-drive", c.key);
        let (original, redriven) = (copies[0], copies[1]);
        assert_eq!(redriven.key(), Some(c.key.as_bytes()));
        assert_eq!(redriven.partition(), original.partition(), "re-driven to its origin partition");
        let expected = vec![("shoal-command-id".to_string(), c.id.to_string()), ("x-tenant".into(), format!("t-{i}"))];
        assert_eq!(headers_of(redriven), expected, "the original headers, and only those");
    }
    assert_eq!(with_payload(&origin.messages, &broken.encode()).len(), 1, "other reasons are not re-driven");
    assert_eq!(with_payload(&origin.messages, garbage).len(), 1, "other reasons are not re-driven");

    // The worker, fixed, now handles them.
    let mut results = TopicReader::new(&scope.topics.results.name);
    results
        .read_until(Duration::from_secs(60), "the re-driven commands succeed", |m| {
            let decoded = decode_results(m);
            stuck.iter().all(|c| decoded.iter().any(|r| r.command_id == c.id && r.status == ResultStatus::Succeeded))
        })
        .await;

    // Again: nothing new.
    let second = dlq_ok(&scope, &["redrive", "--reason", "retries_exhausted", "--yes"]);
    second.assert_summary(&[
        ("selected", "3"),
        ("redriven", "0"),
        ("already_redriven", "3"),
        ("skipped_no_origin", "0"),
    ]);
    origin.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(origin.messages.len(), 8, "the second run published nothing");
    let list = dlq_ok(&scope, &["list", "--reason", "retries_exhausted"]);
    assert!(list.has_line_starting("reason=retries_exhausted count=3 redriven=3 "), "{}", list.stdout);
    let shown = dlq_ok(&scope, &["show", &stuck[1].id.to_string()]);
    assert!(shown.has_line_starting("  redriven: yes, at "), "{}", shown.stdout);
    dead.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(dead.messages.len(), 5, "the re-driven commands succeeded: no new dead letters");

    worker.stop_cleanly(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_that_crashes_before_a_commit_is_completed_by_the_next_run_without_duplicates() {
    let scope = Scope::with_topics("dlq-crash").await;
    let (commands, dlq_topic) = (scope.topics.commands.name.clone(), scope.topics.dlq.name.clone());
    let mut worker = scope.worker("worker").id("dlq-crash-worker").mode("exactly_once").spawn();
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| format!("not json {i}").into_bytes()).collect();
    for (i, body) in bodies.iter().enumerate() {
        produce(&producer(), &commands, &format!("bad-{i}"), body).await;
    }
    let mut dead = TopicReader::new(&dlq_topic);
    dead.read_until(Duration::from_secs(90), "three dead letters", |m| m.len() >= 3).await;
    worker.stop_cleanly(Duration::from_secs(20));
    // A dead letter that says nothing of where it came from (written by
    // hand: Shoal always writes the origin).
    produce_with_headers(&dlq_topic, "orphan", b"orphan", &[(dlq::REASON, "malformed")]).await;

    // One dead letter per transaction; the run dies after producing the
    // second batch, before committing it.
    let crashed = dlq_tool(
        &scope,
        &["redrive", "--reason", "malformed", "--yes", "--batch", "1", "--crash-before-commit-of-batch", "2"],
    );
    assert_eq!(crashed.status.code(), Some(3), "{}", crashed.stderr);
    assert_eq!(crashed.lines().iter().filter(|l| l.starts_with("redriven ")).count(), 1, "{}", crashed.stdout);
    let mut origin = TopicReader::new(&commands);
    origin.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(origin.messages.len(), 4, "the committed batch is visible, the crashed one is not");
    // Yet the crashed batch's record is on the broker: 3 originals, batch 1
    // (its record and commit marker), and batch 2's uncommitted record.
    assert_eq!(tokio::task::block_in_place(|| offsets_taken(&commands)), 6, "the crashed batch was produced");

    // The next run fences the crashed one, aborting its batch, and re-drives
    // what the log does not list.
    let next = dlq_ok(&scope, &["redrive", "--reason", "malformed", "--yes", "--batch", "1"]);
    next.assert_summary(&[("selected", "4"), ("redriven", "2"), ("already_redriven", "1"), ("skipped_no_origin", "1")]);
    origin.read_until(Duration::from_secs(30), "all re-driven", |m| m.len() >= 6).await;
    origin.read_to_end(Duration::from_secs(30)).await;
    assert_eq!(origin.messages.len(), 6);
    for body in &bodies {
        assert_eq!(with_payload(&origin.messages, body).len(), 2, "{:?}: the original and one re-drive", body);
    }

    // The log lists each re-driven dead letter once, keyed by its place.
    let mut log = TopicReader::new(&format!("{dlq_topic}.redrive"));
    log.read_to_end(Duration::from_secs(30)).await;
    let mut keys: Vec<String> =
        log.messages.iter().map(|m| String::from_utf8_lossy(m.key().unwrap()).into_owned()).collect();
    keys.sort();
    let mut expected: Vec<String> =
        dead.messages.iter().map(|m| format!("{dlq_topic}/{}@{}", m.partition(), m.offset())).collect();
    expected.sort();
    assert_eq!(keys, expected, "one committed log record per re-driven dead letter");

    let last = dlq_ok(&scope, &["redrive", "--reason", "malformed", "--yes"]);
    last.assert_summary(&[("selected", "4"), ("redriven", "0"), ("already_redriven", "3"), ("skipped_no_origin", "1")]);
}
