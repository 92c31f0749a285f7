//! Which consumed offsets are safe to commit.
//!
//! A record's offset becomes committable only when everything it caused has
//! been acknowledged by Kafka (its result, or its dead letter). Records finish
//! out of order (different output partitions ack at different times), so the
//! committable position of a partition is the lowest offset still pending, or
//! one past the highest begun when nothing is pending.
//!
//! A record may cause several outputs (or none). Each pending record holds a
//! count: one for "still being processed" plus one per output not yet
//! acknowledged; it completes when the count reaches zero.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use rdkafka::{Offset, TopicPartitionList};

/// Identifies one consumed record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

#[derive(Debug, Default)]
struct PartitionState {
    pending: BTreeMap<i64, u32>,
    failed: BTreeSet<i64>,
    next_after_highest: i64,
    committed: Option<i64>,
}

impl PartitionState {
    /// The offset to commit: the next record to read after a restart.
    fn committable(&self) -> i64 {
        let first_pending = self.pending.keys().next().copied();
        let first_failed = self.failed.first().copied();
        [first_pending, first_failed].into_iter().flatten().min().unwrap_or(self.next_after_highest)
    }
}

/// Tracks in-flight records per partition. Shared between the consuming task
/// and the producer's delivery callback; the lock is held only for map
/// updates, never across an await.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: Mutex<HashMap<(String, i32), PartitionState>>,
}

impl OffsetTracker {
    /// Creates an empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(String, i32), PartitionState>) -> R) -> R {
        // A poisoned lock means a panic elsewhere already; the map itself is
        // still consistent because every update is a single insert/remove.
        let mut guard = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Records that processing of `origin` has started. Pair with
    /// [`OffsetTracker::complete`] when processing is done.
    pub fn begin(&self, origin: &Origin) {
        self.with(|m| {
            let state = m.entry((origin.topic.clone(), origin.partition)).or_default();
            *state.pending.entry(origin.offset).or_insert(0) += 1;
            state.next_after_highest = state.next_after_highest.max(origin.offset + 1);
        });
    }

    /// Records that one more output of `origin` awaits acknowledgement.
    /// Pair with [`OffsetTracker::complete`] (delivered) or
    /// [`OffsetTracker::fail`] (not delivered).
    pub fn add_output(&self, origin: &Origin) {
        self.begin(origin);
    }

    /// Records that processing of `origin`, or one of its outputs, is done.
    pub fn complete(&self, origin: &Origin) {
        self.with(|m| {
            if let Some(state) = m.get_mut(&(origin.topic.clone(), origin.partition))
                && let Some(count) = state.pending.get_mut(&origin.offset)
            {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.pending.remove(&origin.offset);
                }
            }
        });
    }

    /// Records that `origin` could not be handled for good in this process:
    /// the committed position will never pass it, so it is processed again
    /// after a restart or rebalance instead of being lost.
    pub fn fail(&self, origin: &Origin) {
        self.with(|m| {
            if let Some(state) = m.get_mut(&(origin.topic.clone(), origin.partition)) {
                state.pending.remove(&origin.offset);
                state.failed.insert(origin.offset);
            }
        });
    }

    /// Offsets that advanced since the last [`OffsetTracker::mark_committed`],
    /// optionally only for the given partitions.
    pub fn commit_list(&self, only: Option<&[(String, i32)]>) -> TopicPartitionList {
        self.with(|m| {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), state) in m.iter() {
                if only.is_some_and(|o| !o.iter().any(|(t, p)| t == topic && p == partition)) {
                    continue;
                }
                let offset = state.committable();
                if offset > 0 && state.committed != Some(offset) {
                    // Adding to a fresh list cannot fail for a valid offset.
                    let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
                }
            }
            tpl
        })
    }

    /// Remembers what was committed so it is not committed again.
    pub fn mark_committed(&self, tpl: &TopicPartitionList) {
        self.with(|m| {
            for elem in tpl.elements() {
                if let (Some(state), Offset::Offset(o)) =
                    (m.get_mut(&(elem.topic().to_string(), elem.partition())), elem.offset())
                {
                    state.committed = Some(o);
                }
            }
        });
    }

    /// Forgets partitions this consumer no longer owns.
    pub fn forget(&self, partitions: &[(String, i32)]) {
        self.with(|m| {
            for key in partitions {
                m.remove(key);
            }
        });
    }

    /// Number of records begun but not yet completed or failed.
    pub fn in_flight(&self) -> usize {
        self.with(|m| m.values().map(|s| s.pending.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(offset: i64) -> Origin {
        Origin { topic: "t".into(), partition: 0, offset }
    }

    fn committable(tracker: &OffsetTracker) -> Option<i64> {
        let tpl = tracker.commit_list(None);
        tpl.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
    }

    #[test]
    fn commits_only_the_completed_prefix() {
        let t = OffsetTracker::new();
        for i in 10..13 {
            t.begin(&o(i));
        }
        assert_eq!(committable(&t), Some(10));
        t.complete(&o(11));
        assert_eq!(committable(&t), Some(10), "11 done but 10 pending");
        t.complete(&o(10));
        assert_eq!(committable(&t), Some(12));
        t.complete(&o(12));
        assert_eq!(committable(&t), Some(13));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_record_completes_after_processing_and_all_outputs() {
        let t = OffsetTracker::new();
        t.begin(&o(0));
        t.add_output(&o(0));
        t.add_output(&o(0));
        t.complete(&o(0)); // processing done, two outputs in flight
        t.complete(&o(0));
        assert_eq!(committable(&t), None, "one output still unacknowledged");
        t.complete(&o(0));
        assert_eq!(committable(&t), Some(1));
    }

    #[test]
    fn a_failed_record_holds_the_position() {
        let t = OffsetTracker::new();
        t.begin(&o(0));
        t.begin(&o(1));
        t.fail(&o(0));
        t.complete(&o(1));
        assert_eq!(committable(&t), None, "offset 0 stays uncommitted: nothing to commit");
    }

    #[test]
    fn committed_offsets_are_not_repeated_and_forget_drops_state() {
        let t = OffsetTracker::new();
        t.begin(&o(5));
        t.complete(&o(5));
        let tpl = t.commit_list(None);
        assert_eq!(tpl.count(), 1);
        t.mark_committed(&tpl);
        assert_eq!(t.commit_list(None).count(), 0);
        t.begin(&o(6));
        assert_eq!(t.commit_list(Some(&[("other".into(), 0)])).count(), 0);
        t.forget(&[("t".into(), 0)]);
        assert_eq!(t.in_flight(), 0);
    }
}
