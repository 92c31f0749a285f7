//! Flow control: admission of commands to their handlers by kind and key
//! (see docs/flow-control.md).
//!
//! Before a handler runs, its command is admitted: it waits for its kind's
//! rate token, its key's rate token (both token buckets), a permit of its
//! kind's concurrency, then one of `worker.flow.slots` handler slots, which
//! are granted by priority (highest first, first come first served within
//! a priority). A command whose deadline passes while it waits is answered
//! `expired`. The LLM skill's per-key token budget ([`TokenBudget`]) lives
//! here too.

mod bucket;
mod slots;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, in_range, non_empty};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use bucket::{BudgetExceeded, KeyBuckets, MAX_TRACKED_KEYS, TokenBucket, TokenBudget};
pub use slots::{PrioritySlots, SlotPermit};

/// The `[worker.flow]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowSettings {
    /// Handlers running at once across all kinds, granted by priority; 0:
    /// `worker.max_concurrency`.
    pub slots: usize,
    /// Limits and priority per command kind (`[worker.flow.kinds.<kind>]`);
    /// kinds not named have priority 0 and no limits.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, KindFlow>,
    /// The LLM skill's budget (`[worker.flow.llm]`).
    pub llm: LlmBudgetSettings,
}

/// `[worker.flow.kinds.<kind>]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindFlow {
    /// Higher is served first when handler slots are short.
    pub priority: i32,
    /// Handlers of this kind running at once, at most.
    pub max_concurrency: Option<usize>,
    /// Commands of this kind started per second, on average.
    pub rate_per_s: Option<f64>,
    /// Commands of this kind that may start at once after a quiet spell
    /// (default 1).
    pub burst: Option<u32>,
    /// Commands of this kind started per second for one key.
    pub key_rate_per_s: Option<f64>,
    /// Commands of one key that may start at once (default 1).
    pub key_burst: Option<u32>,
}

/// `[worker.flow.llm]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmBudgetSettings {
    /// Model tokens (input plus output) one key may use per minute across
    /// its `llm_decide` commands; 0: no budget.
    pub tokens_per_key_per_minute: u64,
}

const RATE_EXPECTED: &str = "a number of commands per second above 0 and at most 1000000";

impl FlowSettings {
    /// Checks the section against `worker.max_concurrency`.
    pub fn validate(&self, max_concurrency: usize) -> Result<(), SettingsError> {
        in_range("worker.flow.slots", self.slots, 0..=max_concurrency, "an integer (0: worker.max_concurrency)")?;
        for (kind, flow) in &self.kinds {
            non_empty("worker.flow.kinds.<kind>", kind, "a command kind, e.g. raise_alert")?;
            let key = |field: &str| format!("worker.flow.kinds.{kind}.{field}");
            in_range(&key("priority"), flow.priority, -1_000..=1_000, "an integer")?;
            if let Some(limit) = flow.max_concurrency
                && !(1..max_concurrency).contains(&limit)
            {
                return Err(SettingsError::invalid(
                    key("max_concurrency"),
                    format!("{limit} (worker.max_concurrency = {max_concurrency})"),
                    format!(
                        "an integer from 1 to {}, below worker.max_concurrency, so that other kinds' commands \
                         still get pipeline slots while this kind's wait",
                        max_concurrency.saturating_sub(1)
                    ),
                ));
            }
            rate(&key("rate_per_s"), flow.rate_per_s, &key("burst"), flow.burst)?;
            rate(&key("key_rate_per_s"), flow.key_rate_per_s, &key("key_burst"), flow.key_burst)?;
        }
        in_range(
            "worker.flow.llm.tokens_per_key_per_minute",
            self.llm.tokens_per_key_per_minute,
            0..=1_000_000_000,
            "tokens (0: no budget)",
        )
    }

    /// Whether any kind has a priority or a limit.
    pub fn limits_kinds(&self) -> bool {
        self.kinds.values().any(|k| *k != KindFlow::default())
    }
}

fn rate(key: &str, rate: Option<f64>, burst_key: &str, burst: Option<u32>) -> Result<(), SettingsError> {
    match (rate, burst) {
        (Some(r), _) if !(r > 0.0 && r <= 1_000_000.0) => {
            Err(SettingsError::invalid(key, r.to_string(), RATE_EXPECTED))
        }
        (Some(_), Some(b)) => in_range(burst_key, b, 1..=1_000_000, "an integer"),
        (None, Some(b)) => Err(SettingsError::invalid(
            burst_key,
            format!("{b} without {key}"),
            format!("set only together with {key}"),
        )),
        _ => Ok(()),
    }
}

shoal_telemetry::counters! {
    /// What admission did; read by the status line and metrics.
    pub struct FlowStats {
        /// Commands that had to wait for a rate token, a kind permit or a slot.
        waits => counter("shoal_worker_flow_waits", "Commands that waited for admission to their handler (rate, kind concurrency or a slot)"),
        /// Time those commands waited, in all, milliseconds.
        wait_ms => counter("shoal_worker_flow_wait_milliseconds", "Time commands waited for admission to their handler, milliseconds"),
        /// Commands whose deadline passed while they waited.
        expired_waiting => counter("shoal_worker_flow_expired", "Commands whose deadline passed while they waited for admission"),
        /// `llm_decide` model calls refused because the key's budget was spent.
        llm_budget_refusals => counter("shoal_worker_llm_budget_refusals", "llm_decide commands refused because their key's token budget was spent"),
        /// Commands waiting for admission now.
        waiting => gauge("shoal_worker_flow_waiting", "Commands waiting for admission to their handler now"),
    }
}

/// What one kind is held to.
#[derive(Debug)]
struct KindGate {
    priority: i32,
    concurrency: Option<Arc<Semaphore>>,
    rate: Option<Mutex<TokenBucket>>,
    key_rate: Option<Mutex<KeyBuckets>>,
}

impl KindGate {
    fn new(flow: &KindFlow, now: Instant) -> Self {
        let burst = |b: Option<u32>| f64::from(b.unwrap_or(1));
        Self {
            priority: flow.priority,
            concurrency: flow.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
            rate: flow.rate_per_s.map(|r| Mutex::new(TokenBucket::new(r, burst(flow.burst), now))),
            key_rate: flow.key_rate_per_s.map(|r| Mutex::new(KeyBuckets::new(r, burst(flow.key_burst)))),
        }
    }

    /// How long until this command's rate tokens are there (reserved now).
    fn reserve(&self, key: &str, now: Instant) -> Duration {
        let kind = self.rate.as_ref().map_or(Duration::ZERO, |b| lock(b).reserve(now));
        let key = self.key_rate.as_ref().map_or(Duration::ZERO, |b| lock(b).bucket(key, now).reserve(now));
        kind.max(key)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Admission of commands to their handlers; shared by every key's work.
#[derive(Debug)]
pub struct FlowControl {
    slots: Arc<PrioritySlots>,
    kinds: HashMap<String, KindGate>,
    default_gate: KindGate,
    /// Counters.
    pub stats: Arc<FlowStats>,
}

/// A command may run its handler while this is held.
#[derive(Debug)]
pub struct Admission {
    _kind: Option<OwnedSemaphorePermit>,
    _slot: SlotPermit,
    /// How long the command waited (zero if it did not).
    pub waited: Duration,
}

/// The command's deadline passed while it waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed after waiting {waited:?} for admission")]
pub struct Expired {
    /// How long it waited.
    pub waited: Duration,
}

/// Decrements the waiting gauge however admission ends.
struct WaitingGauge<'a>(&'a FlowStats);

impl Drop for WaitingGauge<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FlowControl {
    /// Flow control of `settings`; `max_concurrency` is the pipeline's
    /// (the default number of slots).
    pub fn new(settings: &FlowSettings, max_concurrency: usize, stats: Arc<FlowStats>) -> Self {
        let now = Instant::now();
        let slots = if settings.slots == 0 { max_concurrency } else { settings.slots };
        let kinds = settings.kinds.iter().map(|(kind, flow)| (kind.clone(), KindGate::new(flow, now))).collect();
        Self {
            slots: PrioritySlots::new(slots.max(1)),
            kinds,
            default_gate: KindGate::new(&KindFlow::default(), now),
            stats,
        }
    }

    /// Waits until a command of `kind` and `key` may run its handler, or
    /// until its `deadline` passes.
    pub async fn admit(&self, kind: &str, key: &str, deadline: Option<DateTime<Utc>>) -> Result<Admission, Expired> {
        let started = Instant::now();
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let _gauge = WaitingGauge(&self.stats);
        let gate = self.kinds.get(kind).unwrap_or(&self.default_gate);
        let admitted = match deadline {
            None => Some(self.wait(gate, key).await),
            Some(deadline) => {
                let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::timeout(left, self.wait(gate, key)).await.ok()
            }
        };
        let waited = started.elapsed();
        let Some((kind_permit, slot, blocked)) = admitted else {
            self.stats.expired_waiting.fetch_add(1, Ordering::Relaxed);
            self.count_wait(waited);
            tracing::debug!(kind, key, ?waited, "deadline passed while waiting for admission");
            return Err(Expired { waited });
        };
        if !blocked {
            return Ok(Admission { _kind: kind_permit, _slot: slot, waited: Duration::ZERO });
        }
        self.count_wait(waited);
        tracing::debug!(kind, key, priority = gate.priority, ?waited, "admitted after waiting");
        Ok(Admission { _kind: kind_permit, _slot: slot, waited })
    }

    fn count_wait(&self, waited: Duration) {
        self.stats.waits.fetch_add(1, Ordering::Relaxed);
        self.stats.wait_ms.fetch_add(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Rate tokens, the kind's permit, then a slot; whether it had to wait.
    async fn wait(&self, gate: &KindGate, key: &str) -> (Option<OwnedSemaphorePermit>, SlotPermit, bool) {
        let mut blocked = false;
        let delay = gate.reserve(key, Instant::now());
        if !delay.is_zero() {
            blocked = true;
            tokio::time::sleep(delay).await;
        }
        let kind_permit = match &gate.concurrency {
            None => None,
            Some(semaphore) => match semaphore.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    blocked = true;
                    // Only a closed semaphore fails, and this one never is.
                    semaphore.clone().acquire_owned().await.ok()
                }
            },
        };
        let slot = match self.slots.try_acquire() {
            Some(slot) => slot,
            None => {
                blocked = true;
                self.slots.acquire(gate.priority).await
            }
        };
        (kind_permit, slot, blocked)
    }

    /// Free slots and commands waiting for one.
    pub fn slots(&self) -> (usize, usize) {
        self.slots.snapshot()
    }
}

#[cfg(test)]
mod tests;
