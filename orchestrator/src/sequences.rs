//! Per-key sequence numbers of the commands the decisions stage issues.
//!
//! The numbers live in memory; the commands that carry them are in Kafka,
//! and a command is there only once the transaction of its input commits.
//! Until then it sits in the stage's open transaction, and it is dropped
//! (its number with it) when that transaction aborts or when the input's
//! partition is revoked or lost before the commit. So each key remembers
//! the input partition its last number was issued for:
//!
//! - **revoked or lost partitions**: their keys are forgotten, since the
//!   commands numbered for them were dropped with the partition;
//! - **assigned partitions**: the committed commands are read back and fill
//!   in every key not issued from a partition still owned (another owner
//!   may have numbered it meanwhile); keys issued from a partition owned
//!   throughout keep their numbers, which may be ahead of the log by what
//!   the open transaction holds;
//! - **an abort** (the whole open transaction gone): every number is taken
//!   from the committed commands again.
//!
//! A key whose numbers are ahead of the log is never set back, and a key
//! whose number was dropped never skips one: per key, `seq` goes 1, 2, 3, …
//! on the commands topic with neither gaps nor repeats.

use std::collections::HashMap;

/// An input partition: (topic, partition).
pub type InputPartition = (String, i32);

/// What has to be read back from the commands topic before the next
/// number is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing: memory matches what is committed or pending in the open
    /// transaction.
    Current,
    /// Partitions were assigned: fill in the keys not issued from a
    /// partition owned throughout.
    Fill,
    /// The open transaction was aborted: every key from the log.
    Replace,
}

/// Last number issued per key, and the input partition it was issued for
/// (`None`: read back from the commands topic).
#[derive(Debug)]
pub struct Sequences {
    by_key: HashMap<String, (u64, Option<InputPartition>)>,
    recovery: Recovery,
}

impl Default for Sequences {
    fn default() -> Self {
        Self { by_key: HashMap::new(), recovery: Recovery::Replace }
    }
}

impl Sequences {
    /// The next number of `key`, issued for a record of `input`.
    pub fn next(&mut self, key: &str, input: (&str, i32)) -> u64 {
        let entry = self.by_key.entry(key.to_string()).or_insert((0, None));
        entry.0 += 1;
        entry.1 = Some((input.0.to_string(), input.1));
        entry.0
    }

    /// Keys with a number.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key has a number.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// What has to be read back before the next number.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The open transaction was aborted: every number comes from the log.
    pub fn aborted(&mut self) {
        self.recovery = Recovery::Replace;
    }

    /// `partitions` were revoked or lost: the numbers issued for them
    /// and not committed are gone with the open transaction's part for them.
    pub fn revoked(&mut self, partitions: &[InputPartition]) {
        self.by_key.retain(|_, (_, input)| input.as_ref().is_none_or(|p| !partitions.contains(p)));
    }

    /// Partitions were assigned: their keys may have been numbered by
    /// another owner.
    pub fn assigned(&mut self) {
        if self.recovery == Recovery::Current {
            self.recovery = Recovery::Fill;
        }
    }

    /// Applies the highest committed `seq` per key, read back from the
    /// commands topic, as [`Sequences::recovery`] asks.
    pub fn recovered(&mut self, committed: HashMap<String, u64>) {
        match self.recovery {
            Recovery::Current => return,
            Recovery::Replace => {
                self.by_key = committed.into_iter().map(|(key, seq)| (key, (seq, None))).collect();
            }
            Recovery::Fill => {
                for (key, seq) in committed {
                    match self.by_key.get_mut(&key) {
                        // Issued from a partition owned throughout: memory
                        // holds what the open transaction adds.
                        Some((own, Some(_))) => *own = (*own).max(seq),
                        Some(entry) => *entry = (seq, None),
                        None => {
                            self.by_key.insert(key, (seq, None));
                        }
                    }
                }
            }
        }
        self.recovery = Recovery::Current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(entries: &[(&str, u64)]) -> HashMap<String, u64> {
        entries.iter().map(|(k, s)| (k.to_string(), *s)).collect()
    }

    fn p(partition: i32) -> InputPartition {
        ("ticks".to_string(), partition)
    }

    #[test]
    fn numbers_start_from_the_log_and_go_on_in_memory() {
        let mut s = Sequences::default();
        assert_eq!(s.recovery(), Recovery::Replace, "nothing is known before the first read");
        s.recovered(log(&[("A", 7)]));
        assert_eq!(s.recovery(), Recovery::Current);
        assert_eq!(s.next("A", ("ticks", 0)), 8);
        assert_eq!(s.next("A", ("ticks", 0)), 9);
        assert_eq!(s.next("B", ("ticks", 1)), 1);
    }

    /// The chaos run's case: the partition was lost (session timeout) with
    /// A's commands 220–223 in the open transaction, which dropped them, and
    /// then assigned back. Numbering from memory gave 224 after 219.
    #[test]
    fn a_partition_lost_and_assigned_back_numbers_again_from_the_log() {
        let mut s = Sequences::default();
        s.recovered(log(&[("A", 219), ("B", 40)]));
        for _ in 0..4 {
            s.next("A", ("ticks", 0));
        }
        assert_eq!(s.next("B", ("ticks", 1)), 41);
        s.revoked(&[p(0)]);
        s.assigned();
        assert_eq!(s.recovery(), Recovery::Fill);
        s.recovered(log(&[("A", 219), ("B", 40)]));
        assert_eq!(s.next("A", ("ticks", 0)), 220, "no gap");
        assert_eq!(s.next("B", ("ticks", 1)), 42, "B's 41 is in the open transaction: no repeat");
    }

    #[test]
    fn an_assigned_partition_takes_the_other_owners_numbers() {
        let mut s = Sequences::default();
        s.recovered(log(&[("A", 5), ("C", 9)]));
        s.next("A", ("ticks", 0));
        s.assigned();
        // C was numbered up to 30 by its previous owner meanwhile; A's own
        // number is ahead of the log (its 6 is not committed yet).
        s.recovered(log(&[("A", 5), ("C", 30)]));
        assert_eq!(s.next("C", ("ticks", 2)), 31);
        assert_eq!(s.next("A", ("ticks", 0)), 7);
    }

    #[test]
    fn an_abort_takes_every_number_from_the_log_and_wins_over_an_assignment() {
        let mut s = Sequences::default();
        s.recovered(log(&[("A", 5)]));
        s.next("A", ("ticks", 0));
        s.aborted();
        s.assigned();
        assert_eq!(s.recovery(), Recovery::Replace);
        s.recovered(log(&[("A", 5)]));
        assert_eq!(s.next("A", ("ticks", 0)), 6, "the aborted 6 is issued again");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn revoking_other_partitions_keeps_the_keys_of_those_still_owned() {
        let mut s = Sequences::default();
        s.recovered(HashMap::new());
        s.next("A", ("ticks", 0));
        s.next("B", ("ticks", 1));
        s.revoked(&[p(1), ("events".to_string(), 0)]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next("A", ("ticks", 0)), 2);
    }
}
