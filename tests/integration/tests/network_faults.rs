//! Network faults between one exactly-once worker and its broker, made by a
//! real TCP fault proxy (Toxiproxy, `NetFaults`): a partition past the
//! session timeout (packets black-holed, or connections reset), 300 ms of
//! added latency, and connections cut mid-stream. One worker of three
//! reaches the broker through the proxy; the others, the issuer and the
//! reader are direct. Every command must have exactly one committed result.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use shoal_integration_tests::*;
use shoal_protocol::messages::WireMessage;
use uuid::Uuid;

const KEYS: usize = 24;
/// The workers' session timeout (short, so a partition past it is short).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// The worker behind the proxy.
const PROXIED: &str = "w-1";

/// One test at a time: each runs a broker, a proxy and three workers of its
/// own, and the faults' timing should not depend on the others' load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A broker of the test's own with a fault proxy in front of it, and the
/// test's topics on it.
struct Rig {
    scope: Scope,
    broker: OwnBroker,
    faults: NetFaults,
}

impl Rig {
    /// Broker on `port` (controller `port + 1`, proxy `port + 2`, its
    /// `FAULTY` listener `port + 3`).
    async fn start(test: &str, port: u16) -> Self {
        let scope = Scope::logged(test);
        let broker = tokio::task::block_in_place(|| OwnBroker::start_proxied(port, &scope.dir.join("kafka")));
        shoal_kafka::ensure_topics(&broker.kafka_settings(), &scope.topics).await.unwrap();
        let faults = broker.net_faults(&scope.dir).await;
        Self { scope, broker, faults }
    }

    /// An exactly-once worker, through the proxy if `proxied`.
    fn worker(&self, id: &str, proxied: bool) -> Proc {
        let bootstrap = if proxied { self.faults.bootstrap() } else { self.broker.bootstrap() };
        self.scope
            .worker(id)
            .id(id)
            .mode("exactly_once")
            .with("SHOAL__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
            .with("SHOAL__KAFKA__SESSION_TIMEOUT_MS", SESSION_TIMEOUT.as_millis().to_string())
            .with("SHOAL__KAFKA__MESSAGE_TIMEOUT_MS", "10000")
            .with("SHOAL__DELIVERY__TRANSACTION_CALL_TIMEOUT_MS", "5000")
            .spawn()
    }

    /// `w-1` through the proxy, `w-2` and `w-3` direct, all three with
    /// partitions.
    async fn workers(&self) -> Vec<Proc> {
        let workers = vec![self.worker(PROXIED, true), self.worker("w-2", false), self.worker("w-3", false)];
        self.wait_for_group(Duration::from_secs(90), "3 workers with partitions", |m| {
            m.len() == 3 && m.iter().all(|(_, n)| *n > 0)
        })
        .await;
        workers
    }

    /// Waits until the workers' group is stable with members (client id,
    /// partitions assigned) for which `accept` holds.
    async fn wait_for_group(&self, timeout: Duration, what: &str, accept: impl Fn(&[(String, usize)]) -> bool) {
        let accept = &accept;
        wait_for(timeout, what, || async move {
            let (bootstrap, group) = (self.broker.bootstrap(), self.scope.workers_group());
            let members = tokio::task::spawn_blocking(move || stable_members(&bootstrap, &group)).await.unwrap();
            match members {
                Some(m) if accept(&m) => Ok(()),
                other => Err(format!("members: {other:?}")),
            }
        })
        .await;
    }

    fn results(&self) -> TopicReader {
        TopicReader::new_at(&self.broker.bootstrap(), &self.scope.topics.results.name)
    }
}

/// Members of a Stable `group` with the number of partitions each is
/// assigned; `None` while the group is not stable.
fn stable_members(bootstrap: &str, group: &str) -> Option<Vec<(String, usize)>> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let list = consumer.fetch_group_list(Some(group), Duration::from_secs(5)).ok()?;
    let info = list.groups().iter().find(|g| g.name() == group && g.state() == "Stable")?;
    let members =
        info.members().iter().map(|m| (m.client_id().to_string(), assigned_partitions(m.assignment()))).collect();
    Some(members)
}

/// Partitions in a consumer protocol assignment (version, then per topic
/// its name and partition ids, then user data).
fn assigned_partitions(assignment: Option<&[u8]>) -> usize {
    let Some(bytes) = assignment else { return 0 };
    let int = |at: usize, width: usize| -> Option<usize> {
        let b = bytes.get(at..at + width)?;
        let v = b.iter().fold(0i64, |v, x| (v << 8) | i64::from(*x));
        usize::try_from(v).ok()
    };
    let (mut at, mut partitions) = (2, 0);
    let Some(topics) = int(at, 4) else { return 0 };
    at += 4;
    for _ in 0..topics {
        let Some(name) = int(at, 2) else { return partitions };
        at += 2 + name;
        let Some(n) = int(at, 4) else { return partitions };
        at += 4 + 4 * n;
        partitions += n;
    }
    partitions
}

fn is_proxied(client_id: &str) -> bool {
    client_id.starts_with(&format!("{PROXIED}-"))
}

/// Issues a round of one `raise_alert` command per key every `pace`, to the
/// rig's broker directly, until stopped.
struct Issuer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Uuid>>,
}

impl Issuer {
    fn start(rig: &Rig, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (bootstrap, topic, stopped) =
            (rig.broker.bootstrap(), rig.scope.topics.commands.name.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let producer = producer_for(&bootstrap);
            let mut pace = tokio::time::interval(pace);
            let mut issued = Vec::new();
            let mut round = 0;
            while !stopped.load(Ordering::Relaxed) {
                pace.tick().await;
                round += 1;
                for k in 0..KEYS {
                    let command = alert_command(&format!("key-{k}"), round);
                    produce(&producer, &topic, &command.key, &command.encode()).await;
                    issued.push(command.id);
                }
            }
            issued
        });
        Self { stop, task }
    }

    /// Stops after the round in progress; the ids issued, in order.
    async fn stop(self) -> Vec<Uuid> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Reads until `more` results beyond those read so far are committed.
async fn more_results(results: &mut TopicReader, more: usize, timeout: Duration, what: &str) {
    let target = results.messages.len() + more;
    results.read_until(timeout, what, |m| m.len() >= target).await;
}

/// Reads until a result of the proxied worker for a command it started
/// after `since` is committed.
async fn proxied_result_since(results: &mut TopicReader, since: DateTime<Utc>, what: &str) {
    results
        .read_until(Duration::from_secs(60), what, |m| {
            decode_results(m).iter().any(|r| r.worker_id == PROXIED && r.started_at > since)
        })
        .await;
}

/// Stops issuing, then checks that every command has exactly one committed
/// result.
async fn check_one_result_each(issuer: Issuer, results: &mut TopicReader) {
    let issued = issuer.stop().await;
    results.read_until(Duration::from_secs(120), "a result per command", |m| m.len() >= issued.len()).await;
    // Anything committed late would show up here as a duplicate.
    results.read_to_end(Duration::from_secs(30)).await;
    assert_one_result_each(&decode_results(&results.messages), &issued);
}

/// Checks that every worker is still running, and stops them cleanly.
fn stop_workers(mut workers: Vec<Proc>) {
    for w in &mut workers {
        assert!(w.running(), "{} exited; log:\n{}", w.name, w.log_text());
    }
    stop_all_cleanly(workers.iter_mut(), Duration::from_secs(30));
}

/// [`check_one_result_each`], then [`stop_workers`].
async fn finish(issuer: Issuer, mut results: TopicReader, workers: Vec<Proc>) {
    check_one_result_each(issuer, &mut results).await;
    stop_workers(workers);
}

/// Waits until `worker` (the proxied one) is a member with partitions
/// again; fails at once, with the end of its log, if it exits meanwhile.
async fn rejoined(rig: &Rig, worker: &mut Proc, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (bootstrap, group) = (rig.broker.bootstrap(), rig.scope.workers_group());
    loop {
        if let Some(status) = worker.wait_exit(Duration::ZERO) {
            let log = worker.log_text();
            let tail: Vec<_> = log.lines().rev().take(15).collect();
            return Err(format!(
                "it exited ({status}); end of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        let (b, g) = (bootstrap.clone(), group.clone());
        let members = tokio::task::spawn_blocking(move || stable_members(&b, &g)).await.unwrap();
        if members.as_ref().is_some_and(|m| m.len() == 3 && m.iter().any(|(id, n)| is_proxied(id) && *n > 0)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("not a member with partitions after {timeout:?}; members: {members:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // poll interval
    }
}

fn is_ready(status: u16, body: &serde_json::Value) -> bool {
    status == 200 && body["ready"] == true
}

/// The proxied worker cut off for longer than its session timeout: the
/// broker drops it, the other two take all partitions and go on, it sees
/// itself not ready; healed, it rejoins and is assigned partitions again.
async fn partitioned_past_the_session_timeout(test: &str, port: u16, how: Partition) {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start(test, port).await;
    let mut workers = rig.workers().await;
    let address = http_address(&workers[0], Duration::from_secs(30)).await;
    wait_for_readyz(address, Duration::from_secs(30), "w-1 ready", is_ready).await;
    let mut results = rig.results();
    let issuer = Issuer::start(&rig, Duration::from_millis(100));
    more_results(&mut results, KEYS * 10, Duration::from_secs(60), "results before the partition").await;
    proxied_result_since(&mut results, DateTime::<Utc>::MIN_UTC, "a result of w-1 (through the proxy)").await;

    let partition = rig.faults.partition(how, Duration::from_secs(90)).await;
    rig.wait_for_group(Duration::from_secs(45), "w-2 and w-3 alone, with all 12 partitions", |m| {
        m.len() == 2 && !m.iter().any(|(id, _)| is_proxied(id)) && m.iter().map(|(_, n)| n).sum::<usize>() == 12
    })
    .await;
    // w-1 itself sees that it has lost its partitions.
    wait_for_readyz(address, Duration::from_secs(45), "w-1 without partitions while cut off", |s, b| {
        s == 503 && failing_checks(b).iter().any(|c| c == "worker.partitions")
    })
    .await;
    // The others take over its keys (past its open transaction, if any,
    // which the transaction coordinator aborts when it times out).
    let taken_over = Utc::now();
    results
        .read_until(Duration::from_secs(60), "a result of w-2 or w-3 for every key while w-1 is cut off", |m| {
            let results = decode_results(m);
            let keys: HashSet<_> = results
                .iter()
                .filter(|r| r.worker_id != PROXIED && r.started_at > taken_over)
                .map(|r| &r.key)
                .collect();
            keys.len() == KEYS
        })
        .await;
    assert!(tokio::time::Instant::now() < partition.ends(), "all of this happened while the partition lasted");
    partition.heal().await;
    let healed = Utc::now();

    let rejoin = rejoined(&rig, &mut workers[0], Duration::from_secs(90)).await;
    if rejoin.is_ok() {
        wait_for_readyz(address, Duration::from_secs(60), "w-1 ready again", is_ready).await;
        proxied_result_since(&mut results, healed, "a result of w-1 after the heal").await;
    }
    // Checked whether or not w-1 came back.
    check_one_result_each(issuer, &mut results).await;
    if let Err(why) = rejoin {
        panic!("w-1 did not rejoin after the {how:?} partition: {why}");
    }
    stop_workers(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_blackholed_past_its_session_timeout_rejoins_and_no_result_is_lost_or_repeated() {
    partitioned_past_the_session_timeout("netblackhole", 29410, Partition::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_connections_are_reset_past_its_session_timeout_rejoins_and_no_result_is_lost_or_repeated() {
    partitioned_past_the_session_timeout("netreset", 29420, Partition::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_ms_of_latency_for_twenty_seconds_loses_and_repeats_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("netlatency", 29430).await;
    let workers = rig.workers().await;
    let mut results = rig.results();
    let issuer = Issuer::start(&rig, Duration::from_millis(100));
    more_results(&mut results, KEYS * 10, Duration::from_secs(60), "results before the latency").await;

    let latency =
        rig.faults.latency(Duration::from_millis(300), Duration::from_millis(30), Duration::from_secs(20)).await;
    // The proxy is in w-1's path: a new client through it waits out the
    // latency on each round trip (connect, API versions, metadata).
    let took = metadata_round_trip(&rig.faults.bootstrap()).await;
    assert!(took >= Duration::from_millis(540), "a metadata request through the proxy took only {took:?}");
    proxied_result_since(&mut results, Utc::now(), "a result of w-1 during the latency").await;
    assert!(tokio::time::Instant::now() < latency.ends(), "w-1 committed results while the latency lasted");
    latency.run_out().await;
    finish(issuer, results, workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_transaction_lose_and_repeat_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("netcut", 29440).await;
    let workers = rig.workers().await;
    let mut results = rig.results();
    // Transactions commit every 100 ms or so: a cut finds one open.
    let issuer = Issuer::start(&rig, Duration::from_millis(50));
    for cut in 1..=5 {
        more_results(&mut results, KEYS * 10, Duration::from_secs(60), &format!("results before cut {cut}")).await;
        rig.faults.cut_connections().await;
    }
    let cut = Utc::now();
    // w-1 may have lost its group session meanwhile (reconnecting after
    // each cut, with librdkafka's growing backoff); it has partitions again
    // and commits results again.
    rig.wait_for_group(Duration::from_secs(60), "w-1 with partitions after the cuts", |m| {
        m.len() == 3 && m.iter().any(|(id, n)| is_proxied(id) && *n > 0)
    })
    .await;
    proxied_result_since(&mut results, cut, "a result of w-1 after the cuts").await;
    finish(issuer, results, workers).await;
}

/// Fetches the cluster's metadata with a new client at `bootstrap`; the
/// ports of the brokers it names, or why it failed.
async fn metadata(bootstrap: &str, timeout: Duration) -> Result<Vec<i32>, String> {
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        let metadata = consumer.fetch_metadata(None, timeout).map_err(|e| e.to_string())?;
        Ok(metadata.brokers().iter().map(rdkafka::metadata::MetadataBroker::port).collect())
    })
    .await
    .unwrap()
}

/// How long a new client at `bootstrap` takes to fetch the metadata.
async fn metadata_round_trip(bootstrap: &str) -> Duration {
    let start = tokio::time::Instant::now();
    metadata(bootstrap, Duration::from_secs(10)).await.expect("metadata through the proxy");
    start.elapsed()
}

fn connect(port: u16) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Sends a Kafka ApiVersions request (v0) and reads the answer: the bytes
/// read, 0 if the connection was closed instead.
fn api_versions(stream: &mut std::net::TcpStream) -> std::io::Result<usize> {
    use std::io::{Read as _, Write as _};
    // Size 10; API key 18, version 0; correlation id 1; no client id.
    stream.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff])?;
    stream.read(&mut [0; 512])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_bootstrapped_at_the_proxy_reach_the_broker_only_through_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let rig = Rig::start("netpath", 29450).await;
    let (proxied, direct) = (rig.faults.bootstrap(), rig.broker.bootstrap());
    let quick = Duration::from_secs(3);
    // Metadata discovery through the proxy names the proxy's port.
    assert_eq!(metadata(&proxied, quick).await, Ok(vec![29452]), "brokers as seen through the proxy");
    assert_eq!(metadata(&direct, quick).await, Ok(vec![29450]), "brokers as seen directly");

    for how in [Partition::Blackhole, Partition::Reset] {
        let fault = rig.faults.partition(how, Duration::from_secs(60)).await;
        let cut_off = metadata(&proxied, quick).await;
        assert!(cut_off.is_err(), "{how:?}: a client through the proxy got metadata: {cut_off:?}");
        assert_eq!(metadata(&direct, quick).await, Ok(vec![29450]), "{how:?}: a direct client is unaffected");
        fault.heal().await;
        wait_for(Duration::from_secs(20), &format!("metadata through the proxy after {how:?}"), || {
            metadata(&proxied, quick)
        })
        .await;
    }

    // Cut: an open connection through the proxy is reset at its next
    // request, and new ones work again once healed.
    let mut open = connect(29452);
    assert!(api_versions(&mut open).unwrap() > 0, "a Kafka request through the proxy is answered");
    let cut = rig.faults.cut(Duration::from_secs(30)).await;
    let answer = api_versions(&mut open);
    assert!(matches!(answer, Ok(0) | Err(_)), "during a cut, a request got an answer: {answer:?}");
    cut.heal().await;
    assert!(api_versions(&mut connect(29452)).unwrap() > 0, "answered again after the cut");

    // A fault ends by itself when its time is up, and when dropped.
    let short = rig.faults.partition(Partition::Reset, Duration::from_secs(2)).await;
    assert!(metadata(&proxied, Duration::from_secs(1)).await.is_err(), "partitioned");
    wait_for(Duration::from_secs(6), "healed when its time was up", || metadata(&proxied, quick)).await;
    drop(short);
    drop(rig.faults.partition(Partition::Blackhole, Duration::from_secs(60)).await);
    assert_eq!(metadata(&proxied, quick).await, Ok(vec![29452]), "healed when dropped");
}
