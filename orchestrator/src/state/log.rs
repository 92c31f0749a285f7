//! Reading one partition of a topic, outside any consumer group: a
//! changelog from its beginning (restore), an input partition over a range
//! of offsets (catch-up, replay, audit). Blocking: call from a blocking
//! thread or `block_in_place`.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use shoal_kafka::settings::KafkaSettings;
use shoal_kafka::tail::EndIsNotAnError;

/// Pause between two requests for a partition's watermarks.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Why a read did not finish.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A Kafka call failed.
    #[error("reading {topic}/{partition}: {source}")]
    Kafka {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The client's error.
        source: KafkaError,
    },
    /// The bound passed before the end was reached.
    #[error("reading {topic}/{partition}: not finished within {bound:?} (at offset {at})")]
    Timeout {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The bound.
        bound: Duration,
        /// The next offset it would have read.
        at: i64,
    },
}

/// What one read saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Records visited.
    pub records: u64,
    /// Offset of the last record visited (`-1` for none).
    pub last_offset: i64,
}

/// A reader of single partitions (read-committed).
pub struct LogReader {
    consumer: BaseConsumer<EndIsNotAnError>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").finish_non_exhaustive()
    }
}

impl LogReader {
    /// A reader; it assigns partitions itself and commits nothing.
    pub fn new(kafka: &KafkaSettings, client_id: &str) -> Result<Self, KafkaError> {
        let mut cfg = shoal_kafka::tail::reader_config(kafka, client_id, &format!("{client_id}-reader"));
        // The end of a partition is reached by a fetch that finds nothing:
        // do not let it wait the default half second.
        cfg.set("fetch.wait.max.ms", "10");
        Ok(Self { consumer: cfg.create_with_context(EndIsNotAnError)? })
    }

    /// Partitions of `topic`.
    pub fn partitions(&self, topic: &str, bound: Duration) -> Result<Vec<i32>, LogError> {
        let metadata = self.consumer.fetch_metadata(Some(topic), bound).map_err(|source| kafka(topic, -1, source))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect())
    }

    /// The partition's low and high watermarks. A partition whose leader is
    /// being elected (a broker just died) answers `UnknownPartition` or
    /// `LeaderNotAvailable` for a moment: asked again every 200 ms until
    /// `bound` (counted from `started`) has passed.
    fn watermarks(
        &self,
        topic: &str,
        partition: i32,
        started: Instant,
        bound: Duration,
    ) -> Result<(i64, i64), LogError> {
        loop {
            let left = bound.saturating_sub(started.elapsed());
            match self.consumer.fetch_watermarks(topic, partition, left.max(Duration::from_millis(100))) {
                Ok(marks) => return Ok(marks),
                Err(error) if started.elapsed() + RETRY_PAUSE < bound => {
                    tracing::debug!(topic, partition, %error, "watermarks not available yet; asking again");
                    std::thread::sleep(RETRY_PAUSE);
                    // Refresh the topic's metadata: the client's cached
                    // view may still name a leader that died.
                    let refresh = RETRY_PAUSE.min(bound.saturating_sub(started.elapsed()));
                    if let Err(error) = self.consumer.fetch_metadata(Some(topic), refresh) {
                        tracing::debug!(topic, %error, "metadata refresh failed");
                    }
                }
                Err(error) => return Err(kafka(topic, partition, error)),
            }
        }
    }

    /// Visits the committed records of `topic`/`partition` from offset
    /// `from` (inclusive; `None` for the beginning) up to `until`
    /// (exclusive; `None` for the partition's end as of now), in order,
    /// within `bound`.
    pub fn read(
        &self,
        topic: &str,
        partition: i32,
        from: Option<i64>,
        until: Option<i64>,
        bound: Duration,
        mut visit: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<ReadReport, LogError> {
        let started = Instant::now();
        let mut report = ReadReport { records: 0, last_offset: -1 };
        let (low, high) = self.watermarks(topic, partition, started, bound)?;
        let start = from.unwrap_or(low).max(low);
        let end = until.unwrap_or(high).min(high);
        if start >= end {
            return Ok(report);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(|e| kafka(topic, partition, e))?;
        self.consumer.assign(&assignment).map_err(|e| kafka(topic, partition, e))?;
        let mut next = start;
        let outcome = loop {
            if next >= end {
                break Ok(());
            }
            if started.elapsed() > bound {
                break Err(LogError::Timeout { topic: topic.into(), partition, bound, at: next });
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    next = message.offset() + 1;
                    if message.offset() < end {
                        report.records += 1;
                        report.last_offset = message.offset();
                        visit(&message);
                    }
                }
                // Read-committed: the end of what is readable (the last
                // stable offset) may be below `end` while a transaction is
                // open; offsets up to `end` that are transaction markers
                // or aborted records are never delivered.
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    let position = self.consumer.position().ok();
                    if let Some(Offset::Offset(at)) =
                        position.as_ref().and_then(|p| p.find_partition(topic, partition)).map(|e| e.offset())
                    {
                        next = next.max(at);
                    }
                    if until.is_none() || next >= end {
                        break Ok(());
                    }
                }
                Some(Err(error)) => tracing::warn!(topic, partition, %error, "reading a partition"),
                None => {}
            }
        };
        let _ = self.consumer.unassign();
        outcome.map(|()| report)
    }
}

fn kafka(topic: &str, partition: i32, source: KafkaError) -> LogError {
    LogError::Kafka { topic: topic.into(), partition, source }
}
