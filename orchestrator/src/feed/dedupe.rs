//! Ingest deduplication and gap detection by the exchange's own numbers.
//!
//! Feed ingest is the one stage that cannot be replayed from Kafka, so it
//! deduplicates by what the exchange provides: a trade whose numeric trade id
//! is not above the highest one already accepted for its (source, symbol,
//! id space) is a repeat (a Kraken snapshot or Coinbase `last_match` after a
//! reconnect, an exchange resend) and is dropped. Where trade ids are
//! consecutive per symbol, an id more than one above the highest seen is a
//! gap: trades were lost.
//!
//! The state survives reconnects (it lives outside the connection) and
//! restarts: [`recover`] reads the tail of the ticks topic at start-up and
//! seeds the highest trade id per key from what was actually written.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use shoal_kafka::headers::{HeaderView, MESSAGE_TYPE};
use shoal_kafka::settings::KafkaSettings;
use shoal_protocol::messages::{MarketTick, WireMessage};

/// Trade ids of Binance `trade` and `aggTrade` streams are different number
/// spaces; every other feed has one.
pub fn id_space(tick: &MarketTick) -> &'static str {
    if tick.channel.as_deref() == Some("aggTrade") { "aggTrade" } else { "trade" }
}

#[derive(Debug, Default, Clone, Copy)]
struct Ids {
    /// Highest id accepted (published or queued).
    accepted: u64,
    /// Highest id known to exist (accepted, or announced by a heartbeat).
    seen: u64,
}

/// What [`Dedupe::trade`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New; publish it. `gap`: (expected, received) when ids skipped ahead.
    New {
        /// The skipped range, if any.
        gap: Option<(u64, u64)>,
    },
    /// Already accepted before: drop it.
    Duplicate,
}

/// Highest trade ids per (source, symbol, id space): keyed by symbol (looked
/// up without allocating), then a short list per source and id space.
#[derive(Debug, Default, Clone)]
pub struct Dedupe {
    ids: HashMap<String, Vec<(String, &'static str, Ids)>>,
}

impl Dedupe {
    /// Empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys with state.
    pub fn len(&self) -> usize {
        self.ids.values().map(Vec::len).sum()
    }

    fn entry(&mut self, source: &str, symbol: &str, space: &'static str) -> &mut Ids {
        if !self.ids.contains_key(symbol) {
            self.ids.insert(symbol.to_owned(), Vec::new());
        }
        // Present: inserted just above if it was missing.
        let list = self.ids.get_mut(symbol).expect("entry exists");
        let at = match list.iter().position(|(s, sp, _)| s == source && *sp == space) {
            Some(at) => at,
            None => {
                list.push((source.to_owned(), space, Ids::default()));
                list.len() - 1
            }
        };
        &mut list[at].2
    }

    /// Whether there is no state.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The highest accepted id of a key.
    pub fn accepted(&self, source: &str, symbol: &str, space: &'static str) -> Option<u64> {
        self.ids.get(symbol)?.iter().find(|(s, sp, _)| s == source && *sp == space).map(|(_, _, i)| i.accepted)
    }

    /// Decides about a trade with numeric id `id`. `continuity`: ids are
    /// consecutive on this feed, so a skip is a gap.
    pub fn trade(&mut self, source: &str, symbol: &str, space: &'static str, id: u64, continuity: bool) -> Verdict {
        let ids = self.entry(source, symbol, space);
        if ids.accepted != 0 && id <= ids.accepted {
            return Verdict::Duplicate;
        }
        // Lazily (`then`): the highest id possible (u64::MAX) has no next one.
        let gap = (continuity && ids.seen != 0 && id > ids.seen.saturating_add(1)).then(|| (ids.seen + 1, id));
        ids.accepted = id;
        ids.seen = ids.seen.max(id);
        Verdict::New { gap }
    }

    /// A heartbeat announced `last_id` as the symbol's latest trade id.
    /// Returns the gap (expected, announced) when trades before it never
    /// arrived; they are then not reported again.
    pub fn announced(&mut self, source: &str, symbol: &str, space: &'static str, last_id: u64) -> Option<(u64, u64)> {
        let ids = self.entry(source, symbol, space);
        let gap = (ids.seen != 0 && last_id > ids.seen).then(|| (ids.seen + 1, last_id));
        ids.seen = ids.seen.max(last_id);
        gap
    }

    /// Seeds state from a tick already on the ticks topic.
    pub fn remember(&mut self, tick: &MarketTick) {
        if let Some(id) = tick.trade_id.as_deref().and_then(|t| t.parse::<u64>().ok()) {
            let ids = self.entry(&tick.source, &tick.symbol, id_space(tick));
            ids.accepted = ids.accepted.max(id);
            ids.seen = ids.seen.max(id);
        }
    }
}

/// What [`recover`] read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Tick records read from the topic's tail.
    pub ticks_read: u64,
    /// Keys (source, symbol, id space) seeded.
    pub keys: usize,
}

/// Why recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A Kafka call failed.
    #[error("reading the tail of {topic}: {source}")]
    Kafka {
        /// The ticks topic.
        topic: String,
        /// The Kafka error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The tail was not read completely in time.
    #[error("reading the tail of {0} timed out")]
    Timeout(String),
}

/// Reads the last `tail` records of every partition of `topic` and returns
/// the dedupe state they imply. Blocking; call it off the async threads.
pub fn recover(
    kafka: &KafkaSettings,
    topic: &str,
    tail: i64,
    timeout: Duration,
) -> Result<(Dedupe, Recovery), RecoveryError> {
    let err = |source| RecoveryError::Kafka { topic: topic.to_owned(), source };
    let mut config = shoal_kafka::client_config(kafka, "shoal-ingest-recovery");
    // Assigned partitions only; the group id is required by librdkafka but
    // nothing is ever committed under it.
    config
        .set("group.id", "shoal-ingest-recovery")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create().map_err(err)?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(err)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).map_err(err)?;
        if high > low {
            let start = (high - tail.max(1)).max(low);
            assignment.add_partition_offset(topic, partition, Offset::Offset(start)).map_err(err)?;
            ends.insert(partition, high);
        }
    }
    let mut dedupe = Dedupe::new();
    let mut recovery = Recovery::default();
    if ends.is_empty() {
        return Ok((dedupe, recovery));
    }
    consumer.assign(&assignment).map_err(err)?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(RecoveryError::Timeout(topic.to_owned()));
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            // Nothing more may come for a partition whose tail holds only
            // transaction markers; check positions.
            if let Ok(positions) = consumer.position() {
                for element in positions.elements() {
                    if let Offset::Offset(at) = element.offset()
                        && ends.get(&element.partition()).is_some_and(|end| at >= *end)
                    {
                        ends.remove(&element.partition());
                    }
                }
            }
            continue;
        };
        let message = result.map_err(err)?;
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
        let kind = HeaderView(message.headers()).get(MESSAGE_TYPE);
        if kind.is_some_and(|k| k != "tick") {
            continue;
        }
        if let Ok(tick) = MarketTick::decode(message.payload().unwrap_or_default()) {
            recovery.ticks_read += 1;
            dedupe.remember(&tick);
        }
    }
    recovery.keys = dedupe.len();
    Ok((dedupe, recovery))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_duplicates_and_skips_are_gaps() {
        let mut d = Dedupe::new();
        assert_eq!(d.trade("k", "A", "trade", 10, true), Verdict::New { gap: None });
        assert_eq!(d.trade("k", "A", "trade", 11, true), Verdict::New { gap: None });
        assert_eq!(d.trade("k", "A", "trade", 11, true), Verdict::Duplicate);
        assert_eq!(d.trade("k", "A", "trade", 3, true), Verdict::Duplicate);
        assert_eq!(d.trade("k", "A", "trade", 15, true), Verdict::New { gap: Some((12, 15)) });
        assert_eq!(d.trade("k", "A", "aggTrade", 3, true), Verdict::New { gap: None }, "own number space");
        assert_eq!(d.trade("k", "B", "trade", 99, false), Verdict::New { gap: None });
        assert_eq!(d.trade("k", "B", "trade", 120, false), Verdict::New { gap: None }, "no continuity promised");
    }

    #[test]
    fn a_heartbeat_ahead_of_the_trades_is_a_gap_reported_once() {
        let mut d = Dedupe::new();
        d.trade("cb", "BTC-USD", "trade", 18, true);
        assert_eq!(d.announced("cb", "BTC-USD", "trade", 18), None);
        assert_eq!(d.announced("cb", "BTC-USD", "trade", 20), Some((19, 20)));
        assert_eq!(d.trade("cb", "BTC-USD", "trade", 21, true), Verdict::New { gap: None }, "already reported");
    }

    /// Found by fuzzing (feed_coinbase): a heartbeat announcing u64::MAX,
    /// then a trade or another such heartbeat, overflowed `seen + 1`.
    #[test]
    fn the_highest_possible_id_does_not_overflow() {
        let mut d = Dedupe::new();
        d.trade("cb", "BTC-USD", "trade", 18, true);
        assert_eq!(d.announced("cb", "BTC-USD", "trade", u64::MAX), Some((19, u64::MAX)));
        assert_eq!(d.announced("cb", "BTC-USD", "trade", u64::MAX), None);
        assert_eq!(d.trade("cb", "BTC-USD", "trade", 21, true), Verdict::New { gap: None });
        assert_eq!(d.trade("cb", "ETH-USD", "trade", u64::MAX, true), Verdict::New { gap: None });
        assert_eq!(d.trade("cb", "ETH-USD", "trade", u64::MAX, true), Verdict::Duplicate);
    }

    #[test]
    fn remembered_ticks_make_replays_duplicates() {
        let mut d = Dedupe::new();
        let tick = MarketTick {
            schema_version: 1,
            source: "kraken".into(),
            symbol: "BTC/USD".into(),
            price: 1.into(),
            size: 1.into(),
            side: None,
            trade_id: Some("500".into()),
            sequence: None,
            exchange_ts: chrono::Utc::now(),
            received_at: chrono::Utc::now(),
            channel: Some("trade".into()),
        };
        d.remember(&tick);
        assert_eq!(d.trade("kraken", "BTC/USD", "trade", 480, true), Verdict::Duplicate);
        assert_eq!(d.trade("kraken", "BTC/USD", "trade", 503, true), Verdict::New { gap: Some((501, 503)) });
    }
}
