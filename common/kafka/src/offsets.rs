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
//!
//! Because records of different keys finish out of order, records above the
//! committed position may already be done. The commit carries that in its
//! metadata ([`DoneAbove`]), so whoever reads the partition next skips them
//! instead of repeating their outputs (the technique of Confluent's parallel
//! consumer).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use foldhash::fast::RandomState;
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
    committed: Option<(i64, String)>,
}

impl PartitionState {
    /// The offset to commit: the next record to read after a restart.
    fn committable(&self) -> i64 {
        let first_pending = self.pending.keys().next().copied();
        let first_failed = self.failed.first().copied();
        [first_pending, first_failed].into_iter().flatten().min().unwrap_or(self.next_after_highest)
    }

    /// Commit metadata naming the records above the committed position that
    /// are not done yet (everything else below `next_after_highest` is).
    fn metadata(&self, committed: i64) -> String {
        let not_done: BTreeSet<i64> = self.pending.keys().chain(self.failed.iter()).copied().collect();
        DoneAbove::encode(committed, self.next_after_highest, &not_done)
    }
}

/// Records above a partition's committed offset that are already done, as
/// carried in the commit's metadata: every offset in `[committed, end)` is
/// done except those in `not_done` (the committed offset itself never is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoneAbove {
    committed: i64,
    end: i64,
    not_done: BTreeSet<i64>,
}

/// Most not-done offsets listed, so the metadata stays under Kafka's default
/// 4 KiB `offset.metadata.max.bytes`.
const MAX_LISTED: usize = 512;

/// Marks Shoal's metadata format; anything else is ignored.
const METADATA_PREFIX: &str = "shoal1:";

impl DoneAbove {
    /// Encodes the state for a commit at `committed`: empty when no record
    /// above it is done. Offsets are written as base-36 differences, so a
    /// few hundred not-done records fit Kafka's default 4 KiB metadata limit.
    pub fn encode(committed: i64, end: i64, not_done: &BTreeSet<i64>) -> String {
        let mut above: Vec<i64> = not_done.range(committed + 1..end).copied().collect();
        // Too many to list: claim less. Everything from the first unlisted
        // one on counts as not done (it may be repeated, never lost).
        let end = if above.len() > MAX_LISTED {
            let cut = above[MAX_LISTED];
            above.truncate(MAX_LISTED);
            cut
        } else {
            end
        };
        let open = end - committed - 1; // records above the committed one
        if open <= 0 || above.len() as i64 == open {
            return String::new();
        }
        let mut out = format!("{METADATA_PREFIX}{}", base36(end - committed));
        let mut previous = committed;
        for offset in above {
            out.push(',');
            out.push_str(&base36(offset - previous));
            previous = offset;
        }
        out
    }

    /// Reads metadata committed at `committed`; `None` when it is not
    /// Shoal's or is damaged (then nothing above the position counts as done).
    pub fn decode(committed: i64, metadata: &str) -> Option<Self> {
        let body = metadata.strip_prefix(METADATA_PREFIX)?;
        let mut parts = body.split(',');
        let span = i64::from_str_radix(parts.next()?, 36).ok()?;
        let mut not_done = BTreeSet::new();
        let mut previous = committed;
        for part in parts {
            let delta = i64::from_str_radix(part, 36).ok().filter(|d| *d > 0)?;
            previous = previous.checked_add(delta)?;
            not_done.insert(previous);
        }
        let end = committed.checked_add(span)?;
        (span > 0 && previous < end).then_some(Self { committed, end, not_done })
    }

    /// How many records above the committed position were done.
    pub fn count(&self) -> usize {
        usize::try_from(self.end - self.committed - 1).unwrap_or(0).saturating_sub(self.not_done.len())
    }

    /// Whether `offset` was already done when this was committed.
    pub fn is_done(&self, offset: i64) -> bool {
        offset > self.committed && offset < self.end && !self.not_done.contains(&offset)
    }
}

fn base36(mut n: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n <= 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Tracks in-flight records per partition. Shared between the consuming task
/// and the producer's delivery callback; the lock is held only for map
/// updates, never across an await.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: Mutex<HashMap<(String, i32), PartitionState, RandomState>>,
    /// Signalled when a record completes or fails, so a loop waiting for
    /// room under its in-flight bound wakes up at once.
    progressed: tokio::sync::Notify,
    /// Set when the broker refused an output for good (an ACL): retrying
    /// cannot deliver it, so the stage stops. The flag is what the loop
    /// polls; the text says what was refused.
    refused_flag: std::sync::atomic::AtomicBool,
    refused: Mutex<Option<String>>,
}

impl OffsetTracker {
    /// Creates an empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that the broker refused an output for good (`what`: the
    /// operation, the resource and the broker's answer); the first one is
    /// kept.
    pub fn refuse(&self, what: String) {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(what);
        self.refused_flag.store(true, std::sync::atomic::Ordering::Release);
        self.progressed.notify_one();
    }

    /// What the broker refused for good, if anything.
    pub fn refused(&self) -> Option<String> {
        if !self.refused_flag.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(String, i32), PartitionState, RandomState>) -> R) -> R {
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

    /// Waits until a record completes or fails (or returns at once if one
    /// did since the last wait).
    pub async fn progressed(&self) {
        self.progressed.notified().await;
    }

    /// Records that processing of `origin`, or one of its outputs, is done.
    pub fn complete(&self, origin: &Origin) {
        self.progressed.notify_one();
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
        self.progressed.notify_one();
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
                let metadata = state.metadata(offset);
                let unchanged = state.committed.as_ref().is_some_and(|(o, m)| *o == offset && *m == metadata);
                // Position 0 is committed too when records above it are
                // done: their outputs go out with this commit, and without
                // the metadata the next owner would do them again.
                if (offset > 0 || !metadata.is_empty()) && !unchanged {
                    // Adding to a fresh list cannot fail for a valid offset.
                    let mut elem = tpl.add_partition(topic, *partition);
                    let _ = elem.set_offset(Offset::Offset(offset));
                    elem.set_metadata(metadata);
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
                    state.committed = Some((o, elem.metadata().to_string()));
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

    /// Partitions holding records whose outputs could not be delivered: they
    /// must be read again (the caller rewinds them and forgets them here).
    pub fn failed_partitions(&self) -> Vec<(String, i32)> {
        self.with(|m| m.iter().filter(|(_, s)| !s.failed.is_empty()).map(|(k, _)| k.clone()).collect())
    }

    /// Forgets every partition (after the input was rewound).
    pub fn clear(&self) {
        self.with(HashMap::clear);
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
        assert_eq!(committable(&t), None, "offset 0 failed, nothing done: nothing to commit");
        t.complete(&o(1));
        assert_eq!(committable(&t), Some(0), "the position stays at the failed record");
        let tpl = t.commit_list(None);
        let done = DoneAbove::decode(0, tpl.elements()[0].metadata()).expect("shoal metadata");
        assert!(!done.is_done(0) && done.is_done(1), "0 is redone after a restart, 1 is not");
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

    #[test]
    fn commit_metadata_names_what_is_done_above_the_position() {
        let t = OffsetTracker::new();
        for i in 10..16 {
            t.begin(&o(i));
        }
        // 10 and 13 still running; 11, 12, 14, 15 done.
        for i in [11, 12, 14, 15] {
            t.complete(&o(i));
        }
        let tpl = t.commit_list(None);
        let elem = &tpl.elements()[0];
        assert_eq!(elem.offset(), Offset::Offset(10));
        let done = DoneAbove::decode(10, elem.metadata()).expect("shoal metadata");
        let skipped: Vec<i64> = (0..20).filter(|i| done.is_done(*i)).collect();
        assert_eq!(skipped, vec![11, 12, 14, 15]);
    }

    #[test]
    fn done_records_above_a_running_first_record_are_committed_at_position_0() {
        let t = OffsetTracker::new();
        for i in 0..4 {
            t.begin(&o(i));
        }
        // The partition's first record is still running (a slow model
        // call); 1..=3 are done and their outputs are in this commit.
        for i in 1..4 {
            t.complete(&o(i));
        }
        let tpl = t.commit_list(None);
        assert_eq!(tpl.count(), 1, "position 0 with metadata must be committed");
        let elem = &tpl.elements()[0];
        assert_eq!(elem.offset(), Offset::Offset(0));
        let done = DoneAbove::decode(0, elem.metadata()).expect("shoal metadata");
        assert_eq!((0..6).filter(|i| done.is_done(*i)).collect::<Vec<_>>(), vec![1, 2, 3]);
        t.mark_committed(&tpl);
        assert_eq!(t.commit_list(None).count(), 0, "unchanged: not committed again");
        let fresh = OffsetTracker::new();
        fresh.begin(&o(0));
        assert_eq!(fresh.commit_list(None).count(), 0, "nothing done: nothing to commit");
    }

    #[test]
    fn metadata_is_empty_when_nothing_above_is_done_and_bad_metadata_is_ignored() {
        let none = BTreeSet::new();
        assert_eq!(DoneAbove::encode(5, 6, &none), "");
        assert_eq!(DoneAbove::encode(5, 8, &BTreeSet::from([6, 7])), "");
        let encoded = DoneAbove::encode(100, 2_000, &BTreeSet::from([101, 1_500]));
        let done = DoneAbove::decode(100, &encoded).unwrap();
        assert!(!done.is_done(100) && !done.is_done(101) && done.is_done(102) && done.is_done(1_499));
        assert!(!done.is_done(1_500) && done.is_done(1_999) && !done.is_done(2_000));
        for bad in ["", "other", "shoal1:", "shoal1:zz,-1", "shoal1:2,5", "shoal1:!"] {
            assert_eq!(DoneAbove::decode(100, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn too_many_open_records_are_cut_off_conservatively() {
        let not_done: BTreeSet<i64> = (0..2_000).map(|i| 10 + i * 2).collect();
        let encoded = DoneAbove::encode(10, 10_000, &not_done);
        assert!(encoded.len() < 4_000, "{} bytes", encoded.len());
        let done = DoneAbove::decode(10, &encoded).unwrap();
        assert!(done.is_done(11) && !done.is_done(12));
        // Nothing at or past the cut is claimed done.
        assert!(done.is_done(1_035));
        assert!((12 + 2 * 512..10_000).all(|o| !done.is_done(o)));
    }

    #[test]
    fn a_few_hundred_open_records_fit_the_default_metadata_limit() {
        let not_done: BTreeSet<i64> = (0..512).map(|i| 1_000 + i * 3_000).collect();
        let encoded = DoneAbove::encode(1_000, 2_000_000, &not_done);
        assert!(encoded.len() < 4_000, "{} bytes", encoded.len());
    }
}
