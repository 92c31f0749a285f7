//! A counting semaphore that grants freed slots by priority: the waiter of
//! the highest priority gets the next free slot, waiters of one priority in
//! the order they came. The state is a small struct behind a std mutex that
//! is never held across an `.await`; a waiter is woken by a oneshot.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Waiters are ordered by priority (highest first), then arrival.
type WaiterId = (Reverse<i32>, u64);

#[derive(Debug)]
struct State {
    free: usize,
    waiters: BTreeMap<WaiterId, oneshot::Sender<()>>,
    next_id: u64,
}

/// The slots; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PrioritySlots {
    state: Mutex<State>,
}

/// One granted slot; dropping it frees the slot for the next waiter.
#[derive(Debug)]
pub struct SlotPermit {
    slots: Arc<PrioritySlots>,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// A queued request for a slot. Dropped before it was granted (its command
/// gave up waiting), it leaves the queue; dropped after it was granted but
/// before the grant was taken, it hands the slot on.
struct Waiting<'a> {
    slots: &'a Arc<PrioritySlots>,
    id: WaiterId,
    granted: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.slots.lock();
        if state.waiters.remove(&self.id).is_some() {
            return;
        }
        // Granted while giving up: the receiver is still alive (it is ours),
        // so the grant was delivered; pass the slot on.
        if self.granted.try_recv().is_ok() {
            PrioritySlots::release_locked(&mut state);
        }
    }
}

impl PrioritySlots {
    /// `slots` slots, all free.
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(State { free: slots, waiters: BTreeMap::new(), next_id: 0 }) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement: a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot now if one is free and nobody waits for one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<SlotPermit> {
        let mut state = self.lock();
        if state.free > 0 && state.waiters.is_empty() {
            state.free -= 1;
            return Some(SlotPermit { slots: self.clone() });
        }
        None
    }

    /// A slot, waiting behind higher priorities and earlier waiters of the
    /// same priority. Cancel-safe: dropping the future gives up the place.
    pub async fn acquire(self: &Arc<Self>, priority: i32) -> SlotPermit {
        let mut waiting = {
            let mut state = self.lock();
            if state.free > 0 && state.waiters.is_empty() {
                state.free -= 1;
                return SlotPermit { slots: self.clone() };
            }
            let id = (Reverse(priority), state.next_id);
            state.next_id += 1;
            let (grant, granted) = oneshot::channel();
            state.waiters.insert(id, grant);
            Waiting { slots: self, id, granted, done: false }
        };
        // The sender lives in the queue until it grants, so the channel
        // only closes by granting.
        let _ = (&mut waiting.granted).await;
        waiting.done = true;
        SlotPermit { slots: self.clone() }
    }

    fn release(&self) {
        Self::release_locked(&mut self.lock());
    }

    fn release_locked(state: &mut State) {
        while let Some((_, grant)) = state.waiters.pop_first() {
            if grant.send(()).is_ok() {
                return;
            }
        }
        state.free += 1;
    }

    /// Free slots and waiters, for tests and status.
    pub fn snapshot(&self) -> (usize, usize) {
        let state = self.lock();
        (state.free, state.waiters.len())
    }
}
