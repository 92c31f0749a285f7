//! Per-key ordering with bounded concurrency: jobs of one key run one after
//! another in the order they were pushed; jobs of different keys run
//! concurrently, at most `max_running` keys at a time. Pure bookkeeping: the
//! caller runs the jobs and reports when each finishes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

use foldhash::fast::RandomState;

/// Queues of waiting jobs per key.
#[derive(Debug)]
pub(crate) struct Chains<K, J> {
    waiting: HashMap<K, VecDeque<J>, RandomState>,
    running: HashSet<K, RandomState>,
    /// Keys with waiting jobs and nothing running, in arrival order.
    ready: VecDeque<K>,
    max_running: usize,
    queued: usize,
}

impl<K: Clone + Eq + Hash, J> Chains<K, J> {
    /// Runs at most `max_running` keys at once (at least one).
    pub(crate) fn new(max_running: usize) -> Self {
        Self {
            waiting: HashMap::default(),
            running: HashSet::default(),
            ready: VecDeque::new(),
            max_running: max_running.max(1),
            queued: 0,
        }
    }

    /// Adds a job; returns it back when it may start now.
    pub(crate) fn push(&mut self, key: K, job: J) -> Option<J> {
        if !self.running.contains(&key) && self.running.len() < self.max_running && !self.waiting.contains_key(&key) {
            self.running.insert(key);
            return Some(job);
        }
        let queue = self.waiting.entry(key.clone()).or_default();
        if queue.is_empty() && !self.running.contains(&key) {
            self.ready.push_back(key);
        }
        queue.push_back(job);
        self.queued += 1;
        None
    }

    /// Records that the running job of `key` finished; returns the jobs that
    /// may start now (the key's next one, or another key's).
    pub(crate) fn finished(&mut self, key: &K) -> Vec<(K, J)> {
        let mut start = Vec::new();
        if !self.running.remove(key) {
            return start;
        }
        if let Some(job) = self.take_waiting(key) {
            self.running.insert(key.clone());
            start.push((key.clone(), job));
        }
        while self.running.len() < self.max_running {
            let Some(next) = self.ready.pop_front() else { break };
            if self.running.contains(&next) {
                continue;
            }
            if let Some(job) = self.take_waiting(&next) {
                self.running.insert(next.clone());
                start.push((next, job));
            }
        }
        start
    }

    fn take_waiting(&mut self, key: &K) -> Option<J> {
        let queue = self.waiting.get_mut(key)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(key);
        }
        if job.is_some() {
            self.queued -= 1;
        }
        job
    }

    /// Drops waiting jobs that `keep` rejects (running ones are the caller's).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &J) -> bool) {
        for (key, queue) in &mut self.waiting {
            queue.retain(|job| keep(key, job));
        }
        self.waiting.retain(|_, queue| !queue.is_empty());
        self.queued = self.waiting.values().map(VecDeque::len).sum();
        let waiting = &self.waiting;
        self.ready.retain(|key| waiting.contains_key(key));
    }

    /// Forgets everything: waiting jobs and which keys run (the caller
    /// discards what is running).
    pub(crate) fn clear(&mut self) {
        self.waiting.clear();
        self.running.clear();
        self.ready.clear();
        self.queued = 0;
    }

    /// Jobs waiting to start.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_runs_in_order_and_other_keys_are_not_held_up() {
        let mut c: Chains<&str, u32> = Chains::new(4);
        assert_eq!(c.push("a", 1), Some(1));
        assert_eq!(c.push("a", 2), None, "a is busy: 2 waits");
        assert_eq!(c.push("b", 10), Some(10), "b does not wait for a");
        assert_eq!(c.push("a", 3), None);
        assert_eq!(c.finished(&"b"), vec![]);
        assert_eq!(c.finished(&"a"), vec![("a", 2)]);
        assert_eq!(c.finished(&"a"), vec![("a", 3)]);
        assert_eq!(c.finished(&"a"), vec![]);
        assert_eq!(c.queued(), 0);
        assert_eq!(c.push("a", 4), Some(4), "an idle key starts at once");
    }

    #[test]
    fn at_most_max_running_keys_run_and_waiting_keys_start_in_arrival_order() {
        let mut c: Chains<&str, u32> = Chains::new(2);
        assert_eq!(c.push("a", 1), Some(1));
        assert_eq!(c.push("b", 2), Some(2));
        assert_eq!(c.push("c", 3), None);
        assert_eq!(c.push("d", 4), None);
        assert_eq!(c.push("c", 5), None);
        assert_eq!(c.finished(&"b"), vec![("c", 3)]);
        assert_eq!(c.finished(&"a"), vec![("d", 4)]);
        assert_eq!(c.finished(&"c"), vec![("c", 5)]);
        assert_eq!(c.finished(&"d"), vec![]);
        assert_eq!(c.finished(&"c"), vec![]);
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn retain_drops_waiting_jobs_and_clear_forgets_everything() {
        let mut c: Chains<&str, u32> = Chains::new(1);
        assert_eq!(c.push("a", 1), Some(1));
        c.push("a", 2);
        c.push("b", 3);
        c.push("c", 4);
        c.retain(|key, _| *key != "b");
        assert_eq!(c.queued(), 2);
        assert_eq!(c.finished(&"a"), vec![("a", 2)]);
        assert_eq!(c.finished(&"a"), vec![("c", 4)]);
        c.push("d", 5);
        c.clear();
        assert_eq!(c.queued(), 0);
        assert_eq!(c.push("d", 6), Some(6));
    }
}
