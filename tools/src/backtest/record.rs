//! Recording the ticks topic to a file: every committed tick, from the
//! beginning to the end as of the start, merged across partitions in
//! event-time order (then partition, then offset, so the order is the same
//! every time).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use shoal_kafka::settings::KafkaSettings;
use shoal_protocol::messages::MarketTick;

/// Why the topic could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Kafka refused or did not answer.
    #[error("topic {topic}: {what}: {source}")]
    Kafka {
        /// Topic.
        topic: String,
        /// What was being done.
        what: &'static str,
        /// The librdkafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The topic does not exist or has no partitions.
    #[error("topic {0} has no partitions (does it exist?)")]
    NoPartitions(String),
    /// The end was not reached in time.
    #[error("topic {topic}: not read to its end within {seconds} s ({read} records read)")]
    Timeout {
        /// Topic.
        topic: String,
        /// The bound.
        seconds: u64,
        /// Records read until then.
        read: usize,
    },
}

/// What a recording run read.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The ticks, in recording order.
    pub ticks: Vec<MarketTick>,
    /// Records that were not ticks (skipped, counted, and the first few
    /// named by partition and offset).
    pub undecodable: usize,
    /// Partition/offset of the first undecodable records.
    pub undecodable_examples: Vec<(i32, i64)>,
}

/// Reads `topic` (committed records only) to its end as of now.
pub fn record(kafka: &KafkaSettings, topic: &str, bound: Duration) -> Result<Recorded, RecordError> {
    let kafka_error = |what| move |source| RecordError::Kafka { topic: topic.to_string(), what, source };
    let consumer: BaseConsumer = shoal_kafka::client_config(kafka, "shoal-backtest-record")
        .set("group.id", format!("shoal-backtest-record-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(kafka_error("creating the consumer"))?;
    let metadata =
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(kafka_error("reading metadata"))?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        return Err(RecordError::NoPartitions(topic.to_string()));
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let p = i32::try_from(p).unwrap_or(i32::MAX);
        tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(kafka_error("assigning"))?;
    }
    consumer.assign(&tpl).map_err(kafka_error("assigning"))?;
    let deadline = Instant::now() + bound;
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut read: Vec<(i32, i64, MarketTick)> = Vec::new();
    let mut out = Recorded::default();
    while at_end.len() < partitions {
        if Instant::now() > deadline {
            return Err(RecordError::Timeout { topic: topic.to_string(), seconds: bound.as_secs(), read: read.len() });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(error)) => return Err(kafka_error("reading")(error)),
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                match message.payload().map(serde_json::from_slice::<MarketTick>) {
                    Some(Ok(tick)) => read.push((message.partition(), message.offset(), tick)),
                    _ => {
                        out.undecodable += 1;
                        if out.undecodable_examples.len() < 5 {
                            out.undecodable_examples.push((message.partition(), message.offset()));
                        }
                    }
                }
            }
        }
    }
    read.sort_by_key(|(partition, offset, tick)| (tick.exchange_ts, *partition, *offset));
    out.ticks = read.into_iter().map(|(_, _, tick)| tick).collect();
    Ok(out)
}
