//! Token buckets: a rate with a burst, per kind or per key, and the LLM
//! skill's token budget per key. Pure bookkeeping over a given `Instant`
//! (tokio's, so tests run on paused time).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Keys tracked at most per map; beyond it idle keys are forgotten.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// A bucket of `burst` tokens refilled at `rate` per second. Tokens may be
/// reserved ahead of time (the count goes below zero): each reservation
/// says how long to wait for its token, so waiters are served in the order
/// they reserved, with no polling.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self { rate, burst, tokens: burst, at: now }
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let gained = now.duration_since(self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + gained).min(self.burst);
            self.at = now;
        }
    }

    /// Reserves one token; how long until it is there (zero: now).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.take(1.0, now);
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }

    /// Takes `amount` tokens, going below zero if need be (a debt later
    /// refills pay back).
    pub fn take(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.tokens -= amount;
    }

    /// Tokens there now (negative: owed).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Whether the bucket is full: forgetting it changes nothing.
    fn is_full(&mut self, now: Instant) -> bool {
        self.available(now) >= self.burst
    }
}

/// One bucket per key, at most [`MAX_TRACKED_KEYS`] of them: when the map
/// is full, full buckets (keys idle long enough to have refilled) are
/// dropped, which loses nothing; if every key is busy, all are forgotten
/// (their limits start again from full buckets).
#[derive(Debug)]
pub struct KeyBuckets {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<String, TokenBucket>,
}

impl KeyBuckets {
    /// Buckets of `burst` tokens refilled at `rate` per second.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self::bounded(rate, burst, MAX_TRACKED_KEYS)
    }

    /// [`KeyBuckets::new`] tracking at most `max_keys` keys.
    pub fn bounded(rate: f64, burst: f64, max_keys: usize) -> Self {
        Self { rate, burst, max_keys: max_keys.max(1), buckets: HashMap::new() }
    }

    /// The bucket of `key`, made full if it was not tracked.
    pub fn bucket(&mut self, key: &str, now: Instant) -> &mut TokenBucket {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
            if self.buckets.len() >= self.max_keys {
                tracing::debug!(
                    keys = self.buckets.len(),
                    "per-key limits: every tracked key is busy; forgetting them"
                );
                self.buckets.clear();
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.entry(key.to_string()).or_insert_with(|| TokenBucket::new(rate, burst, now))
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The LLM skill's token budget: `per_minute` tokens per key, refilled
/// evenly over a minute. A call is allowed while the key has tokens left;
/// what it used is charged afterwards (so the last call may overdraw, and
/// the key waits until the debt is refilled).
#[derive(Debug)]
pub struct TokenBudget {
    per_minute: u64,
    keys: std::sync::Mutex<KeyBuckets>,
}

/// A key's budget is spent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "token budget of key {key:?} exhausted: worker.flow.llm.tokens_per_key_per_minute = {per_minute}, \
     {owed:.0} tokens owed; refills in {wait_s:.1} s"
)]
pub struct BudgetExceeded {
    /// The key.
    pub key: String,
    /// The budget.
    pub per_minute: u64,
    /// Tokens used beyond the budget (0 when exactly spent).
    pub owed: f64,
    /// Seconds until the key has a token again.
    pub wait_s: f64,
}

impl TokenBudget {
    /// `per_minute` tokens per key (more than zero).
    pub fn new(per_minute: u64) -> Self {
        let rate = per_minute as f64 / 60.0;
        Self { per_minute, keys: std::sync::Mutex::new(KeyBuckets::new(rate, per_minute as f64)) }
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, KeyBuckets> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tokens `key` has left now, or why it may not call the model.
    pub fn check(&self, key: &str, now: Instant) -> Result<f64, BudgetExceeded> {
        let left = self.keys().bucket(key, now).available(now);
        if left > 0.0 {
            return Ok(left);
        }
        let rate = self.per_minute as f64 / 60.0;
        let wait_s = (-left + 1.0) / rate;
        Err(BudgetExceeded { key: key.to_string(), per_minute: self.per_minute, owed: -left, wait_s })
    }

    /// Charges `tokens` used by a call of `key`.
    pub fn charge(&self, key: &str, tokens: u64, now: Instant) {
        self.keys().bucket(key, now).take(tokens as f64, now);
    }
}
