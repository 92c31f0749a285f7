//! Kafka plumbing shared by the orchestrator and the worker: client
//! configuration, topic creation, record headers, offset tracking, a producer
//! that reports deliveries to that tracker, and dead-letter publishing.

pub mod access;
pub mod consumer;
pub mod dlq;
pub mod headers;
pub mod offsets;
pub mod outputs;
pub mod pipeline;
pub mod polled;
pub mod producer;
pub mod settings;
pub mod stage;
pub mod stats;
pub mod tail;
pub mod trace;
pub mod transactions;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::settings::{KafkaSettings, TopicsSettings};

/// Errors from Shoal's Kafka helpers.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// A client could not be created (bad property, unreachable cluster, ...).
    #[error("cannot create Kafka {what}: {source}")]
    Client {
        /// Which client.
        what: &'static str,
        /// The librdkafka error.
        #[source]
        source: KafkaError,
    },
    /// Topic creation failed for a reason other than "already exists".
    #[error("cannot create topic {topic}: {reason}")]
    CreateTopic {
        /// Topic name.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
}

/// Settings common to every client: bootstrap, security and raw options.
/// Raw options are applied last so an operator can override anything.
pub fn client_config(kafka: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("client.id", client_id)
        .set("security.protocol", kafka.security_protocol.as_str());
    apply_raw_options(&mut cfg, kafka);
    cfg
}

fn apply_raw_options(cfg: &mut ClientConfig, kafka: &KafkaSettings) {
    for (key, value) in kafka.normalised_options() {
        cfg.set(key, value);
    }
}

/// A producer configuration. Idempotence and `acks=all` are set explicitly
/// because librdkafka's defaults would allow duplicates and loss on retry.
pub fn producer_config(kafka: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut cfg = client_config(kafka, client_id);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", kafka.linger_ms.to_string())
        .set("message.timeout.ms", kafka.message_timeout_ms.to_string())
        .set("compression.type", kafka.compression.as_str());
    apply_raw_options(&mut cfg, kafka);
    cfg
}

/// Records per partition a group consumer prefetches (`queued.min.messages`).
pub(crate) const PREFETCH_RECORDS_PER_PARTITION: u32 = 10_000;
/// Bytes a consumer prefetches in all, KiB (`queued.max.messages.kbytes`):
/// group consumers and the tail readers.
pub(crate) const PREFETCH_KIB: u32 = 16_384;

/// A consumer-group configuration. Offsets are committed explicitly by
/// Shoal from its [`offsets::OffsetTracker`], never automatically, so a
/// committed offset only ever covers fully handled records.
pub fn consumer_config(kafka: &KafkaSettings, group_id: &str, client_id: &str) -> ClientConfig {
    let mut cfg = client_config(kafka, client_id);
    cfg.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        // Prefetch bound. librdkafka's defaults (100,000 records per
        // partition, 64 MiB) pull a whole backlog into memory, which the
        // allocator then keeps; a stage works a few thousand records ahead
        // at most (`worker.max_in_flight`), so 10,000 per partition and
        // 16 MiB still keep the next fetch under way. `kafka.options`
        // overrides both.
        .set("queued.min.messages", PREFETCH_RECORDS_PER_PARTITION.to_string())
        .set("queued.max.messages.kbytes", PREFETCH_KIB.to_string());
    if kafka.group_protocol == settings::GroupProtocol::Consumer {
        // KIP-848: the broker assigns; session timeout and assignment strategy
        // are broker-side settings there and librdkafka rejects them.
        cfg.set("group.protocol", "consumer");
    } else {
        cfg.set("group.protocol", "classic")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (kafka.session_timeout_ms / 4).max(250).to_string());
    }
    apply_raw_options(&mut cfg, kafka);
    cfg
}

/// Creates every configured topic that does not exist yet. Existing topics
/// are left untouched (their partition count is not changed).
pub async fn ensure_topics(kafka: &KafkaSettings, topics: &TopicsSettings) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka, "shoal-admin")
        .create()
        .map_err(|source| KafkaSetupError::Client { what: "admin client", source })?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .all()
        .iter()
        .map(|(key, t)| {
            let topic = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(t.replication));
            topics.create_configs(key).iter().fold(topic, |topic, (name, value)| topic.set(name, value))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(|source| KafkaSetupError::Client { what: "topics (admin request)", source })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::debug!(%topic, "topic exists"),
            Err((topic, code)) => {
                return Err(KafkaSetupError::CreateTopic { topic, reason: code.to_string() });
            }
        }
    }
    Ok(())
}
