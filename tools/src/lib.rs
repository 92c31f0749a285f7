//! Helpers for Shoal's cross-process tests: a real Kafka broker (started by
//! `scripts/kafka.sh`, found through `KAFKA_BOOTSTRAP_SERVERS`), the real
//! binaries from `target/debug`, and per-test topics and groups so tests
//! never see each other's records.
//!
//! Waiting is always on a condition with a deadline, never a bare sleep.

// Test helpers: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use shoal_kafka::settings::{KafkaSettings, TopicSettings, TopicsSettings};
use uuid::Uuid;

pub mod otlp;

/// The broker the tests use.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Kafka settings pointing at the test broker.
pub fn kafka_settings() -> KafkaSettings {
    KafkaSettings { bootstrap_servers: bootstrap(), ..KafkaSettings::default() }
}

/// Installs a log subscriber once, honouring `RUST_LOG` (tests' own logs).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// A test's private namespace: topic names, group ids and a log directory.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Short unique id.
    pub id: String,
    /// Topics under the scope's prefix.
    pub topics: TopicsSettings,
    /// Directory for child logs and record files.
    pub dir: PathBuf,
}

impl Scope {
    /// A fresh namespace named after the test.
    pub fn new(test: &str) -> Self {
        let id = format!("{test}-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let topics = topics_named(&format!("it.{id}"), 1);
        let dir = target_dir().join("it-logs").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        Self { id, topics, dir }
    }

    /// Environment for a Shoal binary: broker, topics, groups, quick status.
    pub fn env(&self) -> Vec<(String, String)> {
        let t = &self.topics;
        let mut env = vec![
            ("SHOAL__KAFKA__BOOTSTRAP_SERVERS".to_string(), bootstrap()),
            ("SHOAL__WORKER__GROUP_ID".into(), format!("it.{}.workers", self.id)),
            ("SHOAL__ORCHESTRATOR__DECISIONS_GROUP".into(), format!("it.{}.decisions", self.id)),
            ("SHOAL__ORCHESTRATOR__RESULTS_GROUP".into(), format!("it.{}.results", self.id)),
            // Transactional ids are global to the cluster: tests running at
            // the same time must not share them or they fence each other.
            ("SHOAL__DELIVERY__TRANSACTIONAL_ID_PREFIX".into(), format!("it.{}", self.id)),
            ("SHOAL__LOG__STATUS_INTERVAL_SECS".into(), "2".into()),
            // Port 0: each process picks a free port (tests run side by
            // side); `http_address` reads it from the log.
            ("SHOAL__OBSERVABILITY__LISTEN".into(), "127.0.0.1:0".into()),
            ("RUST_LOG".into(), std::env::var("SHOAL_IT_CHILD_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into())),
            ("NO_COLOR".into(), "1".into()),
        ];
        env.extend(topic_env(t));
        env
    }

    /// The workers' group id.
    pub fn workers_group(&self) -> String {
        format!("it.{}.workers", self.id)
    }

    /// Creates the scope's topics.
    pub async fn create_topics(&self) {
        shoal_kafka::ensure_topics(&kafka_settings(), &self.topics).await.unwrap();
    }
}

/// Shoal's topics under `prefix` (`<prefix>.commands`, ...), with the
/// default partition counts of a test run.
pub fn topics_named(prefix: &str, replication: i32) -> TopicsSettings {
    let topic = |name: &str, partitions| TopicSettings { name: format!("{prefix}.{name}"), partitions, replication };
    TopicsSettings {
        ticks: topic("ticks", 3),
        events: topic("events", 3),
        commands: topic("commands", 12),
        results: topic("results", 6),
        dlq: topic("dlq", 1),
        create: true,
    }
}

/// Environment naming `topics` and their partition counts for a Shoal binary.
pub fn topic_env(topics: &TopicsSettings) -> Vec<(String, String)> {
    topics
        .all()
        .iter()
        .flat_map(|(key, topic)| {
            let upper = key.to_uppercase();
            [
                (format!("SHOAL__TOPICS__{upper}__NAME"), topic.name.clone()),
                (format!("SHOAL__TOPICS__{upper}__PARTITIONS"), topic.partitions.to_string()),
            ]
        })
        .collect()
}

/// The repository's root (for its scripts).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A single-node broker of one test's own: its own state directory and
/// port, started by `scripts/kafka.sh` like the shared one, so the test can
/// stop it without touching the broker other tests use.
/// Stopped, and its data deleted, when dropped.
#[derive(Debug)]
pub struct OwnBroker {
    dir: PathBuf,
    port: u16,
}

impl OwnBroker {
    /// Starts a fresh broker on `port` with its state in `dir`, and waits
    /// until it answers.
    pub fn start(port: u16, dir: &Path) -> Self {
        let broker = Self { dir: dir.to_path_buf(), port };
        assert!(broker.kafka_sh(&["up", "--fresh"]), "own broker on port {port} did not start");
        broker
    }

    /// Its bootstrap servers.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kafka settings pointing at it.
    pub fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings { bootstrap_servers: self.bootstrap(), ..KafkaSettings::default() }
    }

    /// Stops it (SIGTERM: a controlled shutdown), keeping its data.
    pub fn stop(&self) {
        assert!(self.kafka_sh(&["down"]), "own broker on port {} did not stop", self.port);
    }

    fn kafka_sh(&self, args: &[&str]) -> bool {
        Command::new("bash")
            .arg(repo_root().join("scripts/kafka.sh"))
            .args(args)
            .env("SHOAL_KAFKA_DIR", &self.dir)
            .env("SHOAL_KAFKA_PORT", self.port.to_string())
            .env("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")
            // Otherwise kafka.sh would manage the shared broker instead.
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("SHOAL_KAFKA_BROKERS")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.kafka_sh(&["down", "--purge"]);
    }
}

/// `target/debug` (or whichever profile the tests were built with).
pub fn target_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/, binaries (shoal-chaos)
    // in target/<profile>/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") { dir.parent().unwrap().to_path_buf() } else { dir.to_path_buf() }
}

/// Path of a workspace binary; `make test` builds them before the tests.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// A child process whose output goes to a log file; killed if dropped while
/// still running.
#[derive(Debug)]
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Child,
    /// Combined stdout/stderr log file.
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program` with `env` added, logging to `<dir>/<name>.log`.
    pub fn spawn(name: &str, program: &Path, args: &[&str], env: &[(String, String)], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self { name: name.into(), child, log, status: None }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(i32::try_from(self.child.id()).unwrap()), signal).unwrap();
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().unwrap().is_none()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address a Shoal process serves `/metrics`, `/healthz` and
/// `/readyz` on, read from its log once it is there.
pub async fn http_address(proc: &Proc, timeout: Duration) -> std::net::SocketAddr {
    let mut found = None;
    eventually(timeout, &format!("{} to log its HTTP address", proc.name), || {
        found = proc.log_text().lines().find_map(|line| {
            let rest = line.split("serving /metrics, /healthz and /readyz").nth(1)?;
            rest.split("address=").nth(1)?.split_whitespace().next()?.parse().ok()
        });
        let done = found.is_some();
        async move { done }
    })
    .await;
    found.unwrap()
}

/// `GET http://<address><path>` with a plain HTTP/1.1 request: status and
/// body. A refused connection is an `Err`.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response timed out"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not HTTP: {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Starts `shoal-sim` on a free port; returns it (killed when dropped) and
/// its WebSocket URL.
pub fn start_sim(args: &[&str], dir: &Path) -> (Proc, String) {
    let log = dir.join("sim.log");
    let mut child = Command::new(bin("shoal-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    // The simulator prints this line once bound; read_line returns when it
    // arrives or the process exits.
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url =
        line.trim().strip_prefix("shoal-sim listening on ").unwrap_or_else(|| panic!("unexpected sim output {line:?}"));
    let url = url.to_string();
    (Proc { name: "sim".into(), child, log, status: None }, url)
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
    }
}

/// A plain idempotent producer for test input.
pub fn producer() -> FutureProducer {
    producer_for(&bootstrap())
}

/// [`producer`] for another cluster.
pub fn producer_for(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap()
}

/// Produces `payload` to `topic` keyed by `key` and waits for the ack.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// [`produce`] to one partition, whatever the key's hash.
pub async fn produce_to(producer: &FutureProducer, topic: &str, partition: i32, key: &str, payload: &[u8]) {
    producer
        .send(FutureRecord::to(topic).partition(partition).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Reads a whole topic (all partitions, from the beginning, committed
/// records only), accumulating what it has seen across calls.
pub struct TopicReader {
    consumer: BaseConsumer,
    partitions: i32,
    at_end: std::collections::HashSet<i32>,
    /// Records read so far.
    pub messages: Vec<OwnedMessage>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader").field("messages", &self.messages.len()).finish()
    }
}

impl TopicReader {
    /// Assigns every partition of `topic` at the beginning.
    pub fn new(topic: &str) -> Self {
        Self::new_at(&bootstrap(), topic)
    }

    /// [`TopicReader::new`] on another cluster.
    pub fn new_at(bootstrap: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("it-reader-{}", Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let partitions = metadata.topics()[0].partitions().len();
        assert!(partitions > 0, "topic {topic} has no partitions");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, i32::try_from(p).unwrap(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Self {
            consumer,
            partitions: i32::try_from(partitions).unwrap(),
            at_end: Default::default(),
            messages: Vec::new(),
        }
    }

    /// Reads until every partition has reported its end (for
    /// `read_committed`, the last stable offset) with nothing after it.
    /// Offsets cannot be counted instead: transaction markers and aborted
    /// records take offsets too.
    pub async fn read_to_end(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // One poll first, so records committed before this call are fetched
        // and clear a partition's earlier end-of-partition mark.
        tokio::task::block_in_place(|| self.drain());
        while self.at_end.len() < usize::try_from(self.partitions).unwrap() {
            tokio::task::block_in_place(|| self.drain());
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} reading to the end; have {}",
                self.messages.len()
            );
        }
    }

    /// Reads whatever is available now (up to ~100 ms of polling).
    pub fn drain(&mut self) -> usize {
        let before = self.messages.len();
        while let Some(result) = self.consumer.poll(Duration::from_millis(100)) {
            match result {
                Ok(message) => {
                    self.at_end.remove(&message.partition());
                    self.messages.push(message.detach());
                }
                Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                    self.at_end.insert(partition);
                }
                Err(error) => panic!("reading a topic: {error}"),
            }
        }
        self.messages.len() - before
    }

    /// Reads until `condition(messages)` holds or `timeout` passes.
    pub async fn read_until(&mut self, timeout: Duration, what: &str, condition: impl Fn(&[OwnedMessage]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            tokio::task::block_in_place(|| self.drain());
            if condition(&self.messages) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; have {} records",
                self.messages.len()
            );
        }
    }
}

/// A header's value as text.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    (0..headers.count())
        .map(|i| headers.get(i))
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Members of `group` that have an assignment, as reported by the broker.
pub fn group_members_with_assignment(group: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().unwrap();
    let Ok(list) = consumer.fetch_group_list(Some(group), Duration::from_secs(5)) else { return 0 };
    list.groups()
        .iter()
        .filter(|g| g.name() == group && g.state() == "Stable")
        .flat_map(|g| g.members())
        .filter(|m| m.assignment().is_some_and(|a| !a.is_empty()))
        .count()
}

/// Counts of each key in `ids`, to find duplicates and gaps.
pub fn counts<T: std::hash::Hash + Eq>(ids: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
    let mut map = HashMap::new();
    for id in ids {
        *map.entry(id).or_insert(0) += 1;
    }
    map
}

/// A valid `raise_alert` command for `key`.
pub fn alert_command(key: &str, seq: u64) -> shoal_protocol::messages::Command {
    use shoal_protocol::messages::{Command, SCHEMA_VERSION, kinds};
    let payload = shoal_protocol::payloads::RaiseAlert {
        symbol: key.to_string(),
        level: "100".parse().unwrap(),
        previous_price: "99.95".parse().unwrap(),
        price: "100.05".parse().unwrap(),
    };
    Command {
        schema_version: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        kind: kinds::RAISE_ALERT.into(),
        key: key.to_string(),
        seq,
        issued_at: chrono::Utc::now(),
        deadline: None,
        payload: serde_json::to_value(payload).unwrap(),
    }
}

/// Decodes every record of a results topic.
pub fn decode_results(messages: &[OwnedMessage]) -> Vec<shoal_protocol::messages::CommandResult> {
    use shoal_protocol::messages::WireMessage;
    messages
        .iter()
        .map(|m| shoal_protocol::messages::CommandResult::decode(m.payload().unwrap_or_default()).unwrap())
        .collect()
}

// ------------------------------------------------------------------ feeds

/// A client of the simulator's `/control` endpoint (faults on demand).
#[derive(Debug)]
pub struct SimControl {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl SimControl {
    /// Connects to the control endpoint of the simulator at `sim_url`.
    pub async fn connect(sim_url: &str) -> Self {
        let url = format!("{sim_url}{}", shoal_sim::CONTROL_PATH);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
            .await
            .expect("control connects in time")
            .expect("control connects");
        Self { ws }
    }

    /// Sends one command and returns the reply.
    pub async fn send(&mut self, command: serde_json::Value) -> serde_json::Value {
        use futures::{SinkExt, StreamExt};
        self.ws.send(tokio_tungstenite::tungstenite::Message::text(command.to_string())).await.unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(120), self.ws.next())
                .await
                .expect("control replies in time")
                .expect("control connection open")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let reply: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(reply["ok"], true, "control command {command} failed: {reply}");
                return reply;
            }
        }
    }

    /// The simulator's counters (`accepted`, `open`, `subscribes`,
    /// `client_closes`, `rejected_handshakes`).
    pub async fn stats(&mut self) -> serde_json::Value {
        self.send(serde_json::json!({"cmd": "stats"})).await
    }
}

/// Records every text frame a plain WebSocket client receives, to compare
/// what the simulator sent with what ingest wrote.
#[derive(Debug)]
pub struct Witness {
    /// Raw text frames received so far.
    pub frames: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Witness {
    /// Connects to `url`, sends `subscribe` messages, and records frames.
    pub async fn start(url: &str, subscribe: &[String]) -> Self {
        use futures::{SinkExt, StreamExt};
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        for request in subscribe {
            ws.send(tokio_tungstenite::tungstenite::Message::text(request.clone())).await.unwrap();
        }
        let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = frames.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                    sink.lock().unwrap().push(text.as_str().to_owned());
                }
            }
        });
        Self { frames, task }
    }

    /// Frames received so far.
    pub fn len(&self) -> usize {
        self.frames.lock().unwrap().len()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops recording and returns the frames.
    pub fn stop(self) -> Vec<String> {
        self.task.abort();
        self.frames.lock().unwrap().clone()
    }
}

/// Feed ingest running in this process, writing to a scope's ticks topic.
#[derive(Debug)]
pub struct Ingest {
    /// The feed's counters.
    pub stats: std::sync::Arc<shoal_orchestrator::feed::FeedStats>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
    producer: shoal_kafka::producer::TrackedProducer,
}

impl Ingest {
    /// Starts ingest of `feed` into the scope's ticks topic from `dedupe`.
    pub fn start(
        scope: &Scope,
        feed: shoal_orchestrator::settings::FeedSettings,
        dedupe: shoal_orchestrator::feed::dedupe::Dedupe,
    ) -> Self {
        use shoal_kafka::offsets::OffsetTracker;
        use shoal_kafka::producer::TrackedProducer;
        let producer =
            TrackedProducer::new(&kafka_settings(), "it-ingest", std::sync::Arc::new(OffsetTracker::new())).unwrap();
        let sink = shoal_orchestrator::feed::TickSink {
            producer: producer.clone(),
            topic: scope.topics.ticks.name.clone(),
            producer_id: "it-ingest".into(),
        };
        let stats = std::sync::Arc::new(shoal_orchestrator::feed::FeedStats::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task =
            tokio::spawn(shoal_orchestrator::feed::run_with(feed, sink, shutdown.clone(), stats.clone(), dedupe));
        Self { stats, shutdown, task, producer }
    }

    /// A counter's value.
    pub fn count(
        &self,
        counter: impl Fn(&shoal_orchestrator::feed::FeedStats) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        counter(&self.stats).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `condition` holds on the counters.
    pub async fn wait_for(&self, timeout: Duration, what: &str, condition: impl Fn(&Self) -> bool) {
        eventually(timeout, what, || {
            let ok = condition(self);
            async move { ok }
        })
        .await;
    }

    /// Stops ingest (close handshake, queue drained) and flushes to Kafka.
    pub async fn stop(self) -> std::sync::Arc<shoal_orchestrator::feed::FeedStats> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("ingest stops in time").unwrap();
        self.producer.flush(Duration::from_secs(10)).await.unwrap();
        self.stats
    }
}

/// A ticks topic's records, decoded by their `shoal-message-type` header.
#[derive(Debug, Default)]
pub struct FeedRecords {
    /// Trades, in topic order per partition.
    pub ticks: Vec<shoal_protocol::messages::MarketTick>,
    /// Book tops.
    pub books: Vec<shoal_protocol::messages::BookTop>,
    /// Data-quality events.
    pub quality: Vec<shoal_protocol::messages::DataQuality>,
}

/// Decodes a ticks topic, checking every record is keyed by its symbol.
pub fn decode_feed(messages: &[OwnedMessage]) -> FeedRecords {
    use shoal_protocol::messages::{BookTop, DataQuality, MarketTick, WireMessage};
    let mut records = FeedRecords::default();
    for m in messages {
        let payload = m.payload().unwrap_or_default();
        let kind = header(m, "shoal-message-type").unwrap_or_default();
        let symbol = match kind.as_str() {
            "tick" => {
                let t = MarketTick::decode(payload).unwrap();
                let s = t.symbol.clone();
                records.ticks.push(t);
                s
            }
            "book_top" => {
                let b = BookTop::decode(payload).unwrap();
                let s = b.symbol.clone();
                records.books.push(b);
                s
            }
            "data_quality" => {
                let q = DataQuality::decode(payload).unwrap();
                let s = q.symbol.clone();
                records.quality.push(q);
                s
            }
            other => panic!("unexpected message type {other:?} on the ticks topic"),
        };
        assert_eq!(m.key(), Some(symbol.as_bytes()), "keyed by symbol");
    }
    records
}

/// Trade ids per symbol of `ticks`, in topic order.
pub fn trade_ids_by_symbol(ticks: &[shoal_protocol::messages::MarketTick]) -> HashMap<String, Vec<u64>> {
    let mut ids: HashMap<String, Vec<u64>> = HashMap::new();
    for t in ticks {
        ids.entry(t.symbol.clone()).or_default().push(t.trade_id.as_deref().unwrap().parse().unwrap());
    }
    ids
}
