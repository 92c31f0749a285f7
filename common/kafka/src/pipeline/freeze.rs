//! Notices when this process was frozen (SIGSTOP, a VM pause, a swap storm)
//! long enough that the group may have given its partitions to another
//! member. With at-least-once delivery such a "zombie" must not publish the
//! results it had in hand when it froze: the new owner is already redoing
//! those records. The idea is HBase's JVM pause monitor: a thread that
//! sleeps a short, fixed time and measures how long it really slept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// Milliseconds since `origin` at the watcher's last wake-up.
    last_tick_ms: AtomicU64,
    /// Pauses longer than the threshold seen so far.
    freezes: AtomicU64,
    stop: AtomicBool,
}

/// Handle to the watcher thread; the thread stops when this is dropped.
#[derive(Debug)]
pub struct FreezeGuard {
    shared: Arc<Shared>,
    threshold: Duration,
    seen: u64,
}

/// How often the watcher wakes up.
const TICK: Duration = Duration::from_millis(50);

impl FreezeGuard {
    /// Starts watching; a pause longer than `threshold` counts as a freeze.
    pub fn start(threshold: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            freezes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let watched = shared.clone();
        let threshold_ms = u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX);
        std::thread::Builder::new().name("shoal-freeze-guard".into()).spawn(move || {
            while !watched.stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                let now = millis_since(watched.origin);
                let last = watched.last_tick_ms.swap(now, Ordering::AcqRel);
                if now.saturating_sub(last) > threshold_ms {
                    watched.freezes.fetch_add(1, Ordering::AcqRel);
                    tracing::warn!(
                        paused_ms = now - last,
                        "this process was paused; treating its partitions as possibly lost"
                    );
                }
            }
        })?;
        Ok(Self { shared, threshold, seen: 0 })
    }

    /// Whether the process froze since the last call that returned true, or
    /// is just waking from a freeze the watcher has not measured yet.
    pub fn tripped(&mut self) -> bool {
        let freezes = self.shared.freezes.load(Ordering::Acquire);
        let last = self.shared.last_tick_ms.load(Ordering::Acquire);
        let stale = millis_since(self.shared.origin).saturating_sub(last)
            > u64::try_from(self.threshold.as_millis()).unwrap_or(u64::MAX);
        if freezes != self.seen || stale {
            // A stale tick becomes a counted freeze once the watcher wakes;
            // count it as seen then too, so it trips only once.
            self.seen = freezes + u64::from(stale);
            return true;
        }
        false
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn millis_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_is_not_tripped_and_a_stale_watcher_is() {
        let mut guard = FreezeGuard::start(Duration::from_millis(500)).unwrap();
        assert!(!guard.tripped());
        // Simulate what a SIGSTOP looks like from inside: the watcher's last
        // tick is far in the past, then it wakes and measures the gap.
        std::thread::sleep(Duration::from_millis(600));
        guard.shared.last_tick_ms.store(0, Ordering::Release);
        assert!(guard.tripped(), "stale watcher");
        // The watcher then counts that freeze: it must not trip twice.
        let deadline = Instant::now() + Duration::from_secs(5);
        while guard.shared.freezes.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!guard.tripped(), "the same freeze trips once");
    }
}
