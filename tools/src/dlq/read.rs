//! Reading whole topics (`read_committed`, outside any consumer group),
//! and single records.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use shoal_kafka::settings::KafkaSettings;
use shoal_kafka::tail::EndIsNotAnError;

use super::{DeadLetter, DlqError};

/// A reader that assigns partitions itself and commits nothing.
pub struct Reader {
    consumer: BaseConsumer<EndIsNotAnError>,
    bound: Duration,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("bound", &self.bound).finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader whose every read of a topic must end within `bound`.
    pub fn new(kafka: &KafkaSettings, client_id: &str, bound: Duration) -> Result<Self, DlqError> {
        let mut cfg = shoal_kafka::tail::reader_config(kafka, client_id, &format!("{client_id}-reader"));
        cfg.set("allow.auto.create.topics", "false");
        let consumer = cfg.create_with_context(EndIsNotAnError).map_err(DlqError::kafka("creating a Kafka reader"))?;
        Ok(Self { consumer, bound })
    }

    /// The partitions of `topic`, or `None` when it does not exist.
    pub fn partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, DlqError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), self.bound)
            .map_err(DlqError::kafka(format!("reading the metadata of {topic}")))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        if found.error().is_some() || found.partitions().is_empty() {
            return Ok(None);
        }
        let mut partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
        partitions.sort_unstable();
        Ok(Some(partitions))
    }

    /// Visits every committed record of `topic`, each partition in order,
    /// up to its end (its last stable offset). An error when `topic` does
    /// not exist, or when some partition was not read to its end in time.
    pub fn scan(&self, topic: &str, mut visit: impl FnMut(&BorrowedMessage<'_>)) -> Result<usize, DlqError> {
        let partitions = self.partitions(topic)?.ok_or_else(|| DlqError::NoTopic(topic.to_string()))?;
        let started = Instant::now();
        let mut assignment = TopicPartitionList::new();
        let mut unfinished = HashSet::new();
        for partition in partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, partition, self.bound)
                .map_err(DlqError::kafka(format!("reading the offsets of {topic}/{partition}")))?;
            if high > low {
                assignment
                    .add_partition_offset(topic, partition, Offset::Offset(low))
                    .map_err(DlqError::kafka("assigning partitions"))?;
                unfinished.insert(partition);
            }
        }
        self.consumer.assign(&assignment).map_err(DlqError::kafka(format!("assigning {topic}")))?;
        let mut records = 0;
        let result = loop {
            if unfinished.is_empty() {
                break Ok(records);
            }
            if started.elapsed() > self.bound {
                break Err(DlqError::Incomplete { topic: topic.to_string(), bound: self.bound });
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    records += 1;
                    visit(&message);
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    unfinished.remove(&partition);
                }
                Some(Err(error)) if fatal(&error) => {
                    break Err(DlqError::Kafka { what: format!("reading {topic}"), source: error });
                }
                Some(Err(error)) => tracing::warn!(%topic, %error, "reading; retrying"),
                None => {}
            }
        };
        self.consumer.unassign().map_err(DlqError::kafka("unassigning"))?;
        result
    }

    /// The record at `topic/partition@offset`, if there is a committed one
    /// there (an offset can hold a transaction marker, or an aborted or
    /// deleted record).
    pub fn fetch(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<DeadLetter>, DlqError> {
        let partitions = self.partitions(topic)?.ok_or_else(|| DlqError::NoTopic(topic.to_string()))?;
        if !partitions.contains(&partition) {
            return Ok(None);
        }
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, self.bound)
            .map_err(DlqError::kafka(format!("reading the offsets of {topic}/{partition}")))?;
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(DlqError::kafka("assigning a partition"))?;
        self.consumer.assign(&assignment).map_err(DlqError::kafka(format!("assigning {topic}/{partition}")))?;
        let started = Instant::now();
        let result = loop {
            if started.elapsed() > self.bound {
                break Err(DlqError::Incomplete { topic: topic.to_string(), bound: self.bound });
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) if message.offset() == offset => break Ok(Some(DeadLetter::from_message(&message))),
                // Past it: the offset holds no committed record.
                Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => break Ok(None),
                Some(Err(error)) if fatal(&error) => {
                    break Err(DlqError::Kafka { what: format!("reading {topic}/{partition}"), source: error });
                }
                Some(Err(error)) => tracing::warn!(%topic, partition, %error, "reading; retrying"),
                None => {}
            }
        };
        self.consumer.unassign().map_err(DlqError::kafka("unassigning"))?;
        result
    }
}

/// Errors after which polling again cannot help.
fn fatal(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Fatal
        )
    )
}
