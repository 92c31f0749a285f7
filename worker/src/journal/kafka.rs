//! The journal topic as a [`JournalStore`]: an idempotent producer outside
//! any transaction, and a reader of one partition from its start to its end.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use shoal_kafka::polled::{AwaitedProducer, Outgoing};
use shoal_kafka::settings::KafkaSettings;
use shoal_kafka::tail::{EndIsNotAnError, reader_config};

use super::{JournalError, JournalRecord, JournalStore, record_key};

/// Longest read of one journal partition into memory.
const LOAD_BOUND: Duration = Duration::from_secs(30);

/// The journal topic.
pub struct KafkaStore {
    producer: AwaitedProducer,
    kafka: KafkaSettings,
    client_id: String,
    topic: String,
    /// The journal topic's partition count, once known (0 before).
    partitions: AtomicI32,
}

impl std::fmt::Debug for KafkaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStore").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl KafkaStore {
    /// A store on `topic`. Its producer is idempotent with `acks=all` and
    /// not transactional: records survive an aborted result transaction.
    pub fn new(kafka: &KafkaSettings, client_id: &str, topic: &str) -> Result<Self, JournalError> {
        let mut config = shoal_kafka::producer_config(kafka, client_id);
        // A journal record is written alone and awaited: no batching delay.
        config.set("linger.ms", "0");
        let producer = AwaitedProducer::create(&config).map_err(|source| JournalError::Kafka {
            topic: topic.into(),
            what: "creating the producer",
            source,
        })?;
        Ok(Self {
            producer,
            kafka: kafka.clone(),
            client_id: client_id.to_string(),
            topic: topic.to_string(),
            partitions: AtomicI32::new(0),
        })
    }

    fn error(&self, what: &'static str) -> impl FnOnce(KafkaError) -> JournalError + '_ {
        move |source| JournalError::Kafka { topic: self.topic.clone(), what, source }
    }

    /// The journal partition of commands partition `partition`.
    fn journal_partition(&self, partition: i32) -> i32 {
        let n = self.partitions.load(Ordering::Relaxed).max(1);
        partition.rem_euclid(n)
    }

    /// Reads journal partition `partition` from its start to its end
    /// (blocking). Learns the topic's partition count on the way.
    fn read_partition(&self, commands_partition: i32) -> Result<Vec<JournalRecord>, JournalError> {
        let started = Instant::now();
        let cfg =
            reader_config(&self.kafka, &format!("{}-load", self.client_id), &format!("{}-journal", self.client_id));
        let consumer: BaseConsumer<EndIsNotAnError> =
            cfg.create_with_context(EndIsNotAnError).map_err(self.error("creating the reader"))?;
        let metadata =
            consumer.fetch_metadata(Some(&self.topic), LOAD_BOUND).map_err(self.error("reading metadata"))?;
        let count = metadata.topics().iter().find(|t| t.name() == self.topic).map_or(0, |t| t.partitions().len());
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        if count == 0 {
            return Err(JournalError::Other(format!(
                "journal topic {} does not exist (topics.journal.name; created at start-up when topics.create=true)",
                self.topic
            )));
        }
        self.partitions.store(count, Ordering::Relaxed);
        let partition = self.journal_partition(commands_partition);
        let (low, high) =
            consumer.fetch_watermarks(&self.topic, partition, LOAD_BOUND).map_err(self.error("reading watermarks"))?;
        let mut records = Vec::new();
        if high <= low {
            return Ok(records);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, partition, Offset::Beginning)
            .map_err(self.error("assigning the partition"))?;
        consumer.assign(&assignment).map_err(self.error("assigning the partition"))?;
        loop {
            if started.elapsed() > LOAD_BOUND {
                return Err(JournalError::Incomplete {
                    topic: self.topic.clone(),
                    partition,
                    seconds: LOAD_BOUND.as_secs(),
                });
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    let offset = message.offset();
                    match message.payload().map(serde_json::from_slice::<JournalRecord>) {
                        Some(Ok(record)) => records.push(record),
                        // A tombstone or a record this version cannot read:
                        // it journals nothing this worker can reuse.
                        None => {}
                        Some(Err(error)) => {
                            tracing::warn!(topic = %self.topic, partition, offset, %error, "unreadable journal record skipped");
                        }
                    }
                    if offset + 1 >= high {
                        return Ok(records);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(records),
                Some(Err(error)) => tracing::warn!(topic = %self.topic, partition, %error, "reading the journal"),
                None => {}
            }
        }
    }
}

#[async_trait::async_trait]
impl JournalStore for KafkaStore {
    async fn load(&self, partition: i32) -> Result<Vec<JournalRecord>, JournalError> {
        // librdkafka's consumer calls block; this runs rarely (once per
        // partition and rebalance), on the runtime's blocking threads.
        tokio::task::block_in_place(|| self.read_partition(partition))
    }

    async fn append(&self, partition: i32, record: &JournalRecord) -> Result<(), JournalError> {
        let payload = serde_json::to_vec(record).map_err(|e| JournalError::Other(e.to_string()))?;
        let key = record_key(record.command_id, &record.step);
        let partition = Some(self.journal_partition(partition));
        let out = Outgoing { topic: &self.topic, partition, key: key.as_bytes(), payload: &payload };
        // Bounded by `kafka.message_timeout_ms` (librdkafka fails the
        // delivery then); a full queue is waited out as long as it takes.
        self.producer.send(out, Duration::MAX).await.map(|_| ()).map_err(|source| JournalError::Kafka {
            topic: self.topic.clone(),
            what: "writing a record",
            source,
        })
    }
}
