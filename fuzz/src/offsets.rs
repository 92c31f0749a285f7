//! Commit metadata (`shoal-kafka`'s `offsets::DoneAbove`): the records above
//! a committed offset that are already done, read back by whoever consumes
//! the partition next. Input: the committed offset on the first line, the
//! metadata after it.
//!
//! - `decode` of any metadata never panics and answers consistently;
//! - `encode` then `decode` of a tracker's state (built from the same bytes)
//!   never claims a not-done record done, and is exact when at most
//!   `MAX_LISTED` records are listed.

use std::collections::BTreeSet;

use shoal_kafka::offsets::DoneAbove;

/// `offsets::MAX_LISTED` (private): beyond it the encoding claims less.
const MAX_LISTED: usize = 512;

/// Decodes the input's metadata, then round-trips a state built from it.
pub fn metadata(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let committed: i64 = first.trim().parse().unwrap_or(0);
    if let Some(done) = DoneAbove::decode(committed, rest) {
        assert!(!done.is_done(committed), "the committed offset itself is never done");
        let probe = (committed.saturating_sub(2)..=committed.saturating_add(300)).filter(|o| done.is_done(*o)).count();
        assert!(probe <= done.count(), "{probe} done offsets seen, count says {}", done.count());
    }
    encoded(committed.rem_euclid(1 << 40), rest.as_bytes());
}

/// A tracker's state from bytes: each byte moves the offset ahead by 1..64;
/// a byte >= 64 leaves the record there not done.
fn encoded(committed: i64, bytes: &[u8]) {
    let mut not_done = BTreeSet::new();
    if bytes.first().is_some_and(|b| b % 2 == 1) {
        // The committed offset is the first not-done record, when one is.
        not_done.insert(committed);
    }
    let mut offset = committed;
    for b in bytes {
        offset += i64::from(b % 64) + 1;
        if *b >= 64 {
            not_done.insert(offset);
        }
    }
    let end = offset + 1 + (bytes.len() as i64 % 3);
    let metadata = DoneAbove::encode(committed, end, &not_done);
    let done = DoneAbove::decode(committed, &metadata);
    let truly_done = |o: i64| o > committed && o < end && !not_done.contains(&o);
    let listed = not_done.range(committed + 1..end).count();
    let exact = listed <= MAX_LISTED;
    let probes = (committed - 1..=(committed + 300).min(end + 1))
        .chain(not_done.iter().flat_map(|o| [o - 1, *o, o + 1]))
        .chain([end - 1, end, end + 1]);
    for o in probes {
        let claimed = done.as_ref().is_some_and(|d| d.is_done(o));
        assert!(!claimed || truly_done(o), "offset {o} claimed done but is not; metadata {metadata:?}");
        if exact {
            assert_eq!(claimed, truly_done(o), "offset {o}: metadata {metadata:?}");
        }
    }
    if exact {
        let count = done.as_ref().map_or(0, DoneAbove::count);
        assert_eq!(count as i64, end - committed - 1 - listed as i64, "metadata {metadata:?}");
    }
}
