//! Where the tests run: the broker, the binaries, and a test's private
//! namespace of topics, groups and log directory.

use std::path::PathBuf;

use shoal_kafka::settings::{KafkaSettings, TopicSettings, TopicsSettings};
use uuid::Uuid;

/// The read token every test process accepts on its state API.
pub const READ_TOKEN: &str = "it-read-token-4f0c2a9b7d";
/// The admin token every test process accepts on its state API.
pub const ADMIN_TOKEN: &str = "it-admin-token-91e5d3c6a8";

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

    /// The start of a test that makes its topics itself, or needs none:
    /// logs initialised and a fresh namespace.
    pub fn logged(test: &str) -> Self {
        init_logs();
        Self::new(test)
    }

    /// The usual start of a test: logs initialised, a fresh namespace and
    /// its topics created.
    pub async fn with_topics(test: &str) -> Self {
        let scope = Self::logged(test);
        scope.create_topics().await;
        scope
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
            // The state query API, on a free port too (`api_address`), with
            // the test tokens, and the scope's own members topic.
            ("SHOAL__API__LISTEN".into(), "127.0.0.1:0".into()),
            ("SHOAL_API_TOKENS".into(), format!("read:{READ_TOKEN},admin:{ADMIN_TOKEN}")),
            ("SHOAL__STATE__MEMBERS_TOPIC".into(), format!("it.{}.members", self.id)),
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
        journal: topic("journal", 12),
        approvals: topic("approvals", 3),
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
