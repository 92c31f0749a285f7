//! Reads the newest records of a topic, for state a stage rebuilds from
//! Kafka itself: the worker's dedupe window (ids of results that exist) and
//! the decisions stage's per-key sequence numbers (the last command issued
//! for each key).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use crate::settings::KafkaSettings;

/// The client context of readers that read to a partition's end: the end
/// of a partition is how they know they are done, not an error worth a log
/// line (librdkafka reports it as a global error too).
#[derive(Debug, Clone, Copy, Default)]
pub struct EndIsNotAnError;

impl rdkafka::ClientContext for EndIsNotAnError {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF));
        if !end {
            tracing::warn!(%error, reason, "kafka client error (reader)");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndIsNotAnError {}

/// The configuration of a reader that assigns partitions itself, reads
/// committed records only, commits nothing and reports each partition's
/// end: the tail reader, the state's log reader, `shoal-dlq`. `group` is
/// required by librdkafka even for a consumer that only assigns; nothing
/// joins or commits to it.
pub fn reader_config(kafka: &KafkaSettings, client_id: &str, group: &str) -> rdkafka::ClientConfig {
    let mut cfg = super::client_config(kafka, client_id);
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // A reader reads through to a partition's end as fast as it can;
        // librdkafka's default prefetch (64 MiB) fills on a restore and the
        // allocator keeps what it took. The group consumers' bound still
        // keeps a fetch ahead.
        .set("queued.max.messages.kbytes", super::PREFETCH_KIB.to_string());
    cfg
}

/// A reader of one topic's tail, outside any consumer group.
pub struct TailReader {
    consumer: BaseConsumer<EndIsNotAnError>,
    topic: String,
}

impl std::fmt::Debug for TailReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailReader").field("topic", &self.topic).finish_non_exhaustive()
    }
}

/// What one [`TailReader::read`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailRead {
    /// Records visited.
    pub records: usize,
    /// Whether every partition was read to its end within the bound.
    pub complete: bool,
}

impl TailReader {
    /// A reader of `topic`; it assigns partitions itself and commits nothing.
    pub fn new(kafka: &KafkaSettings, client_id: &str, topic: &str) -> Result<Self, KafkaError> {
        let cfg = reader_config(kafka, client_id, &format!("{client_id}-tail"));
        Ok(Self { consumer: cfg.create_with_context(EndIsNotAnError)?, topic: topic.to_string() })
    }

    /// Visits about the last `budget` committed records of the topic, spread
    /// evenly over its partitions (in order within each), within `bound`.
    /// Blocking: call off the async runtime's threads or in
    /// `block_in_place`.
    pub fn read(
        &self,
        budget: usize,
        bound: Duration,
        mut visit: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<TailRead, KafkaError> {
        let started = Instant::now();
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), bound)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let per_partition = i64::try_from(budget / partitions.len().max(1)).unwrap_or(i64::MAX).max(1);
        let mut assignment = TopicPartitionList::new();
        let mut unfinished = HashSet::new();
        for partition in partitions {
            let (low, high) = self.consumer.fetch_watermarks(&self.topic, partition, bound)?;
            if high > low {
                assignment.add_partition_offset(
                    &self.topic,
                    partition,
                    Offset::Offset((high - per_partition).max(low)),
                )?;
                unfinished.insert(partition);
            }
        }
        self.consumer.assign(&assignment)?;
        let mut records = 0;
        while !unfinished.is_empty() && started.elapsed() < bound {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    records += 1;
                    visit(&message);
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    unfinished.remove(&partition);
                }
                Some(Err(error)) => tracing::warn!(topic = %self.topic, %error, "reading the topic's tail"),
                None => {}
            }
        }
        self.consumer.unassign()?;
        if !unfinished.is_empty() {
            tracing::warn!(topic = %self.topic, partitions = ?unfinished, "topic tail not read to the end in time");
        }
        Ok(TailRead { records, complete: unfinished.is_empty() })
    }
}
