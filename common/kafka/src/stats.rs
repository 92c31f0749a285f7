//! What librdkafka's statistics callback (`statistics.interval.ms`) says
//! about a client: whether it is connected to a broker, and, for a consumer,
//! the lag of each partition it fetches. Read by `/readyz` and `/metrics`.
//!
//! Only the few fields Shoal uses are parsed (unknown fields are ignored),
//! so a newer librdkafka adding fields cannot break it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// How often clients that report to a [`ClientHealth`] emit statistics.
pub const STATS_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
struct RawStats {
    #[serde(default)]
    brokers: HashMap<String, RawBroker>,
    #[serde(default)]
    topics: HashMap<String, RawTopic>,
}

#[derive(Debug, Deserialize)]
struct RawBroker {
    #[serde(default)]
    state: String,
    #[serde(default)]
    source: String,
}

#[derive(Debug, Deserialize)]
struct RawTopic {
    #[serde(default)]
    partitions: HashMap<String, RawPartition>,
}

#[derive(Debug, Deserialize)]
struct RawPartition {
    #[serde(default)]
    partition: i32,
    #[serde(default)]
    fetch_state: String,
    #[serde(default = "unknown")]
    consumer_lag: i64,
    #[serde(default = "unknown")]
    app_offset: i64,
    #[serde(default = "unknown")]
    committed_offset: i64,
    #[serde(default = "unknown")]
    lo_offset: i64,
    #[serde(default = "unknown")]
    hi_offset: i64,
    #[serde(default = "unknown")]
    ls_offset: i64,
}

impl RawPartition {
    /// Messages between the consumer's read position and the end of the
    /// partition (its last stable offset: Shoal reads `read_committed`).
    ///
    /// librdkafka's own `consumer_lag` counts from the committed offset,
    /// which this client does not know when offsets are committed inside
    /// transactions (it stays -1), so the position is used: the offset after
    /// the last record handed to the application, else the committed offset,
    /// else the start of the partition (`auto.offset.reset=earliest`).
    fn lag(&self) -> Option<i64> {
        let end = if self.ls_offset >= 0 { self.ls_offset } else { self.hi_offset };
        let position = [self.app_offset, self.committed_offset, self.lo_offset].into_iter().find(|o| *o >= 0);
        match position {
            Some(position) if end >= 0 => Some((end - position).max(0)),
            _ => (self.consumer_lag >= 0).then_some(self.consumer_lag),
        }
    }
}

fn unknown() -> i64 {
    -1
}

/// A client's connectivity and, for consumers, per-partition lag, from its
/// latest statistics.
#[derive(Debug, Default)]
pub struct ClientHealth {
    /// Brokers (not counting librdkafka's logical ones) in state `UP`.
    brokers_up: AtomicI64,
    /// Brokers known, same count.
    brokers_known: AtomicI64,
    /// When the last statistics arrived, ms since the Unix epoch (0: never).
    last_stats_ms: AtomicU64,
    /// Lag of each partition being fetched: (topic, partition) → messages.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Producers: records the brokers acknowledged.
    delivered: AtomicU64,
    /// Producers: records whose delivery failed (reported by librdkafka).
    delivery_failures: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl ClientHealth {
    /// Takes in one statistics JSON document. A document that does not
    /// parse is ignored (and logged at debug level).
    pub fn observe(&self, json: &[u8]) {
        let stats: RawStats = match serde_json::from_slice(json) {
            Ok(s) => s,
            Err(error) => {
                tracing::debug!(%error, "cannot parse librdkafka statistics");
                return;
            }
        };
        let real = stats.brokers.values().filter(|b| b.source != "logical");
        let (mut known, mut up) = (0, 0);
        for broker in real {
            known += 1;
            up += i64::from(broker.state == "UP");
        }
        self.brokers_known.store(known, Ordering::Relaxed);
        self.brokers_up.store(up, Ordering::Relaxed);
        let mut lag = BTreeMap::new();
        for (topic, t) in &stats.topics {
            for p in t.partitions.values() {
                // Partition -1 is librdkafka's internal "unassigned" queue;
                // only partitions being fetched have a meaningful lag.
                if p.partition >= 0
                    && p.fetch_state == "active"
                    && let Some(messages) = p.lag()
                {
                    lag.insert((topic.clone(), p.partition), messages);
                }
            }
        }
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
        self.last_stats_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Counts one delivery report of a producer.
    pub fn note_delivery(&self, ok: bool) {
        let counter = if ok { &self.delivered } else { &self.delivery_failures };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A producer's delivery reports so far: (acknowledged, failed).
    pub fn deliveries(&self) -> (u64, u64) {
        (self.delivered.load(Ordering::Relaxed), self.delivery_failures.load(Ordering::Relaxed))
    }

    /// Brokers connected, brokers known (from the latest statistics).
    pub fn brokers(&self) -> (i64, i64) {
        (self.brokers_up.load(Ordering::Relaxed), self.brokers_known.load(Ordering::Relaxed))
    }

    /// Lag per fetched partition.
    pub fn lag(&self) -> BTreeMap<(String, i32), i64> {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `Ok` when recent statistics show at least one broker connection;
    /// otherwise why not.
    pub fn connected(&self) -> Result<(), String> {
        let last = self.last_stats_ms.load(Ordering::Relaxed);
        if last == 0 {
            return Err("no statistics from the Kafka client yet".into());
        }
        let age = Duration::from_millis(now_ms().saturating_sub(last));
        if age > STATS_INTERVAL * 5 {
            return Err(format!("Kafka client statistics are {}s old", age.as_secs()));
        }
        let (up, known) = self.brokers();
        if up == 0 {
            return Err(format!("no broker connection (0 of {known} brokers up)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "name": "c#consumer-1", "type": "consumer",
      "brokers": {
        "127.0.0.1:9092/1": {"name": "127.0.0.1:9092/1", "nodeid": 1, "source": "learned", "state": "UP"},
        "GroupCoordinator": {"name": "GroupCoordinator", "nodeid": -1, "source": "logical", "state": "UP"},
        "127.0.0.1:9093/bootstrap": {"nodeid": -1, "source": "configured", "state": "DOWN"}
      },
      "topics": {
        "shoal.commands": {"topic": "shoal.commands", "partitions": {
          "0": {"partition": 0, "fetch_state": "active", "consumer_lag": -1, "app_offset": 13, "committed_offset": -1, "lo_offset": 0, "hi_offset": 21, "ls_offset": 20},
          "1": {"partition": 1, "fetch_state": "none", "consumer_lag": -1},
          "2": {"partition": 2, "fetch_state": "active", "consumer_lag": -1, "app_offset": -1, "committed_offset": -1, "lo_offset": 0, "hi_offset": 0, "ls_offset": 0},
          "-1": {"partition": -1, "fetch_state": "none", "consumer_lag": -1}
        }}
      }
    }"#;

    #[test]
    fn counts_real_brokers_up_and_keeps_the_lag_of_fetched_partitions() {
        let health = ClientHealth::default();
        assert!(health.connected().unwrap_err().contains("no statistics"));
        health.observe(SAMPLE.as_bytes());
        assert_eq!(health.brokers(), (1, 2));
        assert!(health.connected().is_ok());
        let lag = health.lag();
        assert_eq!(lag.len(), 2);
        assert_eq!(lag.get(&("shoal.commands".to_string(), 0)), Some(&7), "last stable 20 - position 13");
        assert_eq!(lag.get(&("shoal.commands".to_string(), 2)), Some(&0), "empty partition, nothing read yet");
    }

    #[test]
    fn no_broker_up_is_not_connected() {
        let health = ClientHealth::default();
        health.observe(br#"{"brokers": {"127.0.0.1:1/bootstrap": {"source": "configured", "state": "CONNECT"}}}"#);
        let err = health.connected().unwrap_err();
        assert!(err.contains("0 of 1"), "{err}");
        health.observe(b"not json");
        assert_eq!(health.brokers(), (0, 1), "a bad document changes nothing");
    }
}
