//! Keeps a worker that may have lost its partitions without knowing it yet
//! from running effects.
//!
//! A worker paused past its session timeout (a stopped process, a long GC
//! or VM stall) has been dropped from the group, and its partitions given to
//! another worker, which reads the journal and runs their commands. When
//! the paused worker resumes, its in-flight handlers resume at once, before
//! librdkafka has told it of the loss: without a fence they would run the
//! same effect steps as the new owner, at the same moment, each seeing no
//! journal record of the other's. Kafka fences the paused worker's results
//! (its transaction carries an old generation) but cannot fence a webhook or
//! a model call.
//!
//! The fence notices pauses with a ticker: a tick arriving later than
//! `threshold` after the previous one means the process did not run for
//! that long. From then on effects wait until the group membership is known
//! again — librdkafka reported a rebalance (the loss and the rejoin), or a
//! full session timeout passed, after which librdkafka's own session timer
//! would have reported a loss — and then run only if the command's
//! partition is still assigned to this worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the ticker ticks.
pub const TICK: Duration = Duration::from_millis(100);

/// Pause detection for one worker process.
#[derive(Debug)]
pub struct Fence {
    origin: Instant,
    /// A gap between ticks longer than this is a pause.
    threshold: Duration,
    /// How long membership stays uncertain after a pause.
    session_timeout: Duration,
    /// Milliseconds since `origin` of the last tick.
    last_tick_ms: AtomicU64,
    /// Until when (ms since `origin`) membership is uncertain; 0: it is not.
    uncertain_until_ms: AtomicU64,
    /// The group's rebalance count when the pause was noticed.
    rebalances_at_pause: AtomicU64,
    /// Pauses noticed.
    pauses: AtomicU64,
}

/// What the fence says about running an effect now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No pause, or membership is known again since.
    Clear,
    /// Paused recently and membership is not known yet: wait and ask again.
    Uncertain,
}

impl Fence {
    /// A fence for a group with `session_timeout`: pauses longer than half
    /// of it count (the coordinator may drop the member after
    /// `session_timeout` minus the time since its last heartbeat).
    pub fn new(session_timeout: Duration) -> Self {
        Self {
            origin: Instant::now(),
            threshold: (session_timeout / 2).max(Duration::from_millis(500)),
            session_timeout,
            last_tick_ms: AtomicU64::new(0),
            uncertain_until_ms: AtomicU64::new(0),
            rebalances_at_pause: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a tick at `now_ms`, noticing a pause since the last one;
    /// returns the pause's length when there was one.
    fn observe_at(&self, now_ms: u64, rebalances: u64) -> Option<Duration> {
        let last = self.last_tick_ms.swap(now_ms, Ordering::AcqRel);
        let gap = Duration::from_millis(now_ms.saturating_sub(last));
        if gap <= self.threshold {
            return None;
        }
        let until = now_ms.saturating_add(u64::try_from(self.session_timeout.as_millis()).unwrap_or(u64::MAX));
        self.rebalances_at_pause.store(rebalances, Ordering::Release);
        self.uncertain_until_ms.store(until, Ordering::Release);
        self.pauses.fetch_add(1, Ordering::Relaxed);
        Some(gap)
    }

    /// The ticker's call, every [`TICK`].
    pub fn tick(&self, rebalances: u64) {
        if let Some(gap) = self.observe_at(self.now_ms(), rebalances) {
            tracing::warn!(
                paused_ms = gap.as_millis() as u64,
                "this worker did not run for longer than half its session timeout; effects wait until its group membership is known again"
            );
        }
    }

    fn verdict_at(&self, now_ms: u64, rebalances: u64) -> Verdict {
        // A handler can get here before the ticker runs after a pause.
        let _ = self.observe_at(now_ms.max(self.last_tick_ms.load(Ordering::Acquire)), rebalances);
        let until = self.uncertain_until_ms.load(Ordering::Acquire);
        if until == 0 || now_ms >= until || rebalances != self.rebalances_at_pause.load(Ordering::Acquire) {
            Verdict::Clear
        } else {
            Verdict::Uncertain
        }
    }

    /// Whether an effect may run now, given the group's rebalance count.
    pub fn verdict(&self, rebalances: u64) -> Verdict {
        self.verdict_at(self.now_ms(), rebalances)
    }

    /// Pauses noticed so far.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_ticks_are_no_pause() {
        let fence = Fence::new(Duration::from_secs(10));
        for t in (0..10_000).step_by(100) {
            assert_eq!(fence.observe_at(t, 1), None);
            assert_eq!(fence.verdict_at(t, 1), Verdict::Clear);
        }
        assert_eq!(fence.pauses(), 0);
    }

    #[test]
    fn a_pause_makes_membership_uncertain_until_a_rebalance() {
        let fence = Fence::new(Duration::from_secs(10));
        assert_eq!(fence.observe_at(1_000, 3), None);
        // Stopped for 12 s: a handler resumes before the ticker does.
        assert_eq!(fence.verdict_at(13_000, 3), Verdict::Uncertain);
        assert_eq!(fence.pauses(), 1);
        assert_eq!(fence.verdict_at(13_050, 3), Verdict::Uncertain, "the ticker's late tick changes nothing");
        // librdkafka reports the loss: the rebalance count moves.
        assert_eq!(fence.verdict_at(13_100, 4), Verdict::Clear);
    }

    #[test]
    fn without_a_rebalance_a_session_timeout_ends_the_doubt() {
        let fence = Fence::new(Duration::from_secs(10));
        fence.observe_at(0, 1);
        assert!(fence.observe_at(6_000, 1).is_some());
        for t in (6_100..16_000).step_by(100) {
            fence.observe_at(t, 1);
            assert_eq!(fence.verdict_at(t, 1), Verdict::Uncertain, "at {t} ms");
        }
        fence.observe_at(16_000, 1);
        assert_eq!(fence.verdict_at(16_000, 1), Verdict::Clear);
        assert_eq!(fence.pauses(), 1);
    }

    #[test]
    fn short_stalls_under_load_do_not_count() {
        let fence = Fence::new(Duration::from_secs(10));
        fence.observe_at(0, 1);
        assert_eq!(fence.observe_at(4_900, 1), None, "under half the session timeout");
        assert_eq!(fence.verdict_at(4_950, 1), Verdict::Clear);
    }
}
