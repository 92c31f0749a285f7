//! Reading whole topics as a `read_committed` consumer.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use uuid::Uuid;

use super::scope::bootstrap;

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
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        Self::with_config(config, topic)
    }

    /// [`TopicReader::new`] with a client configuration (cluster and
    /// security) of the caller's.
    pub fn with_config(mut config: ClientConfig, topic: &str) -> Self {
        let consumer: BaseConsumer = config
            .set("group.id", format!("it-reader-{}", Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        // A topic created a moment ago may not be in the metadata yet.
        let deadline = Instant::now() + Duration::from_secs(20);
        let partitions = loop {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
            let partitions = metadata.topics()[0].partitions().len();
            if partitions > 0 || Instant::now() > deadline {
                break partitions;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
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
