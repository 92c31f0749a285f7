//! Freshness and provenance: where a value came from, when it happened, and
//! how far each input partition has been applied.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The Kafka record an input was read from.
///
/// Ordered by topic, partition, offset: the order breaks ties between two
/// inputs with the same event time (see [`Stamp::merge`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Provenance {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

impl Provenance {
    /// A provenance from its parts.
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Self { topic: topic.into(), partition, offset }
    }
}

/// When a value last changed (event time) and which input changed it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Event time of the input, as carried by the record.
    pub at: DateTime<Utc>,
    /// The input's record.
    pub provenance: Provenance,
}

impl Stamp {
    /// A stamp from its parts.
    pub fn new(at: DateTime<Utc>, provenance: Provenance) -> Self {
        Self { at, provenance }
    }

    /// Keeps the newer of `self` and `other`: later event time first, then
    /// the greater provenance. Taking the maximum (instead of the last one
    /// applied) makes an entity's stamp independent of how inputs from
    /// different partitions were interleaved.
    pub fn merge(&mut self, other: &Stamp) {
        if *other > *self {
            *self = other.clone();
        }
    }
}

/// A record (or what was derived from one) with the stamp of the input it
/// came in. Serialised flat: the value's fields, then `at` and `provenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    /// The record or value.
    #[serde(flatten)]
    pub value: T,
    /// Event time and record of the input.
    #[serde(flatten)]
    pub stamp: Stamp,
}

impl<T> Stamped<T> {
    /// `value` as brought by the input of `stamp`.
    pub fn new(value: T, stamp: &Stamp) -> Self {
        Self { value, stamp: stamp.clone() }
    }
}

/// How far one input partition has been applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMark {
    /// Offset of the last input applied. Inputs at or below it are replays.
    pub offset: i64,
    /// Newest event time among the inputs applied from this partition
    /// (absent until one carried an event time).
    pub event_time: Option<DateTime<Utc>>,
    /// Inputs applied from this partition (replays not counted).
    pub inputs: u64,
}

/// The watermark of every input partition: topic → partition → mark.
///
/// Kafka keeps offsets increasing within a partition, so one number per
/// partition is enough to tell a new input from a replayed one, whatever the
/// interleaving of partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Watermarks {
    partitions: BTreeMap<String, BTreeMap<i32, PartitionMark>>,
}

impl Watermarks {
    /// The mark of one partition, if anything was applied from it.
    pub fn mark(&self, topic: &str, partition: i32) -> Option<&PartitionMark> {
        self.partitions.get(topic).and_then(|p| p.get(&partition))
    }

    /// Every partition's mark, ordered by topic then partition.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, &PartitionMark)> {
        self.partitions.iter().flat_map(|(t, ps)| ps.iter().map(move |(p, m)| (t.as_str(), *p, m)))
    }

    /// Newest event time applied from any partition: how fresh the state is.
    pub fn newest_event_time(&self) -> Option<DateTime<Utc>> {
        self.iter().filter_map(|(_, _, m)| m.event_time).max()
    }

    /// `Some(last applied offset)` when `provenance` is at or below its
    /// partition's watermark, i.e. a replay.
    pub fn replayed(&self, provenance: &Provenance) -> Option<i64> {
        self.mark(&provenance.topic, provenance.partition).map(|m| m.offset).filter(|last| provenance.offset <= *last)
    }

    /// Records `provenance` (not a replay) as applied, with its event time.
    pub fn advance(&mut self, provenance: &Provenance, event_time: Option<DateTime<Utc>>) {
        let partitions = self.partitions.entry(provenance.topic.clone()).or_default();
        let mark = partitions.entry(provenance.partition).or_insert(PartitionMark {
            offset: provenance.offset,
            event_time: None,
            inputs: 0,
        });
        mark.offset = provenance.offset;
        mark.event_time = mark.event_time.max(event_time);
        mark.inputs += 1;
    }
}

/// `at - span`, or the earliest representable instant when that underflows
/// (a record can carry any timestamp; arithmetic on it must never panic).
pub(crate) fn minus(at: DateTime<Utc>, span: TimeDelta) -> DateTime<Utc> {
    at.checked_sub_signed(span).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::ts;

    #[test]
    fn offsets_at_or_below_the_mark_are_replays_per_partition() {
        let mut w = Watermarks::default();
        assert_eq!(w.replayed(&Provenance::new("t", 0, 0)), None);
        w.advance(&Provenance::new("t", 0, 5), Some(ts(10)));
        assert_eq!(w.replayed(&Provenance::new("t", 0, 5)), Some(5));
        assert_eq!(w.replayed(&Provenance::new("t", 0, 3)), Some(5));
        assert_eq!(w.replayed(&Provenance::new("t", 0, 6)), None);
        assert_eq!(w.replayed(&Provenance::new("t", 1, 0)), None, "another partition");
        assert_eq!(w.replayed(&Provenance::new("u", 0, 5)), None, "another topic");
        w.advance(&Provenance::new("u", 2, 9), Some(ts(4)));
        w.advance(&Provenance::new("t", 0, 7), Some(ts(8)));
        let mark = w.mark("t", 0).unwrap();
        assert_eq!((mark.offset, mark.event_time, mark.inputs), (7, Some(ts(10)), 2), "event time never goes back");
        assert_eq!(w.newest_event_time(), Some(ts(10)));
        assert_eq!(w.iter().map(|(t, p, _)| (t, p)).collect::<Vec<_>>(), [("t", 0), ("u", 2)]);
    }

    #[test]
    fn stamps_keep_the_newest_whatever_the_order() {
        let a = Stamp::new(ts(1), Provenance::new("t", 0, 9));
        let b = Stamp::new(ts(2), Provenance::new("t", 1, 0));
        let c = Stamp::new(ts(2), Provenance::new("t", 1, 1));
        let mut x = a.clone();
        x.merge(&c);
        x.merge(&b);
        let mut y = b.clone();
        y.merge(&a);
        y.merge(&c);
        assert_eq!(x, c);
        assert_eq!(y, c);
    }

    #[test]
    fn minus_never_panics() {
        assert_eq!(minus(DateTime::<Utc>::MIN_UTC, TimeDelta::hours(1)), DateTime::<Utc>::MIN_UTC);
        assert_eq!(minus(ts(60), TimeDelta::seconds(60)), ts(0));
    }
}
