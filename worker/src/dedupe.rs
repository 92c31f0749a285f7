//! At-least-once delivery repeats work: after a worker dies before its
//! offsets are committed, the next owner of the partition reads the same
//! commands again. The dedupe window stops those repeats from producing a
//! second result: it holds the ids of commands whose results are already in
//! the results topic, read from the topic's tail whenever this worker's
//! partitions change (and after it rewinds), plus the ones it produced since.
//!
//! It is bounded (`worker.dedupe_window` ids, oldest dropped first), so a
//! command repeated after more than that many newer results is handled again.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use shoal_kafka::headers::COMMAND_ID;
use shoal_kafka::settings::KafkaSettings;
use shoal_protocol::messages::{CommandResult, WireMessage};
use uuid::Uuid;

/// Ids in arrival order, oldest evicted first.
#[derive(Debug, Default)]
struct Ids {
    set: HashSet<Uuid, foldhash::fast::RandomState>,
    order: VecDeque<Uuid>,
    /// Changes on every reload, so work started before it cannot add an id
    /// whose result was discarded.
    generation: u64,
}

/// The shared window; cheap to clone into running work.
#[derive(Debug, Clone)]
pub struct Window {
    ids: Arc<Mutex<Ids>>,
    capacity: usize,
}

impl Window {
    /// An empty window holding at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self { ids: Arc::new(Mutex::new(Ids::default())), capacity: capacity.max(1) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Ids) -> R) -> R {
        // Every update leaves the sets consistent, so a poisoned lock's data
        // is still good.
        f(&mut self.ids.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Current generation, to pass to [`Window::insert`].
    pub fn generation(&self) -> u64 {
        self.with(|ids| ids.generation)
    }

    /// `None` when a result for `id` is known, else the generation to pass
    /// to [`Window::insert`] once it has one (one lock for both).
    pub fn unseen(&self, id: &Uuid) -> Option<u64> {
        self.with(|ids| (!ids.set.contains(id)).then_some(ids.generation))
    }

    /// Whether a result for `id` is known.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.with(|ids| ids.set.contains(id))
    }

    /// Remembers `id`, unless the window was reloaded since `generation`.
    pub fn insert(&self, id: Uuid, generation: u64) {
        let capacity = self.capacity;
        self.with(|ids| {
            if ids.generation != generation || !ids.set.insert(id) {
                return;
            }
            ids.order.push_back(id);
            while ids.order.len() > capacity {
                if let Some(old) = ids.order.pop_front() {
                    ids.set.remove(&old);
                }
            }
        });
    }

    /// Forgets every id, and work started before cannot add its own: after
    /// a rewind some of them belong to results that were dropped or never
    /// acknowledged, and skipping those commands would lose them. Until a
    /// reload succeeds the window is empty (repeats get second results,
    /// which at-least-once allows; a loss it does not).
    pub fn clear(&self) {
        self.replace(Vec::new());
    }

    fn replace(&self, loaded: Vec<Uuid>) {
        let capacity = self.capacity;
        self.with(|ids| {
            ids.generation += 1;
            ids.set.clear();
            ids.order.clear();
            let skip = loaded.len().saturating_sub(capacity);
            for id in loaded.into_iter().skip(skip) {
                if ids.set.insert(id) {
                    ids.order.push_back(id);
                }
            }
        });
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.with(|ids| ids.set.len())
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Refills a [`Window`] from the tail of the results topic.
#[derive(Debug)]
pub struct TailReader {
    tail: shoal_kafka::tail::TailReader,
    window: Window,
}

/// Bound on one reload; a slower cluster leaves the window partly filled.
const RELOAD_BOUND: Duration = Duration::from_secs(15);

impl TailReader {
    /// A reader of `topic` filling `window`.
    pub fn new(kafka: &KafkaSettings, client_id: &str, topic: &str, window: Window) -> Result<Self, KafkaError> {
        Ok(Self { tail: shoal_kafka::tail::TailReader::new(kafka, client_id, topic)?, window })
    }

    /// Replaces the window with the ids of the newest results in the topic.
    /// Blocking: call in `block_in_place`. Returns the ids loaded.
    pub fn reload(&self) -> Result<usize, KafkaError> {
        let started = Instant::now();
        let mut loaded = Vec::new();
        let read = self.tail.read(self.window.capacity, RELOAD_BOUND, |message| {
            if let Some(id) = command_id(message) {
                loaded.push(id);
            }
        })?;
        if !read.complete {
            tracing::warn!("results tail not read to the end in time; the dedupe window is partial");
        }
        let count = loaded.len();
        self.window.replace(loaded);
        tracing::info!(
            ids = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "dedupe window reloaded from the results tail"
        );
        Ok(count)
    }
}

/// The command id of a result record: its header, else its body.
fn command_id<M: Message>(message: &M) -> Option<Uuid> {
    let from_header = message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == COMMAND_ID)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
    });
    from_header.or_else(|| CommandResult::decode(message.payload()?).ok().map(|r| r.command_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_bounded_and_forgets_the_oldest() {
        let window = Window::new(3);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        let generation = window.generation();
        for id in &ids {
            window.insert(*id, generation);
        }
        assert_eq!(window.len(), 3);
        assert!(!window.contains(&ids[0]), "oldest evicted");
        assert!(ids[1..].iter().all(|id| window.contains(id)));
    }

    #[test]
    fn work_started_before_a_reload_cannot_add_its_id() {
        let window = Window::new(10);
        let before = window.generation();
        let loaded = Uuid::now_v7();
        window.replace(vec![loaded]);
        let discarded = Uuid::now_v7();
        window.insert(discarded, before);
        assert!(window.contains(&loaded));
        assert!(!window.contains(&discarded), "its result may have been dropped: it must run again");
        window.insert(discarded, window.generation());
        assert!(window.contains(&discarded));
    }

    #[test]
    fn a_cleared_window_skips_nothing_and_takes_no_late_ids() {
        let window = Window::new(10);
        let before = window.generation();
        let handled = Uuid::now_v7();
        window.insert(handled, before);
        assert_eq!(window.unseen(&handled), None, "a repeat is skipped while its result stands");
        // A rewind: the result of `handled` may never have been written.
        window.clear();
        assert!(window.unseen(&handled).is_some(), "it must run again");
        let late = Uuid::now_v7();
        window.insert(late, before);
        assert!(window.unseen(&late).is_some(), "work from before the rewind cannot add its id");
    }

    #[test]
    fn a_reload_larger_than_the_window_keeps_the_newest() {
        let window = Window::new(2);
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        window.replace(ids.clone());
        assert_eq!(window.len(), 2);
        assert!(window.contains(&ids[3]) && window.contains(&ids[4]));
    }
}
