//! Which records are traced, decided once per decision.
//!
//! Tracing every record costs the hot path (span creation, attribute
//! recording, export), so Shoal samples whole decisions: the process where a
//! decision starts (feed ingest, or the first Shoal process to see a record
//! without trace context) draws it with probability `sample_ratio`, capped at
//! `max_traced_per_sec` traced decisions per second (a rate-limiting sampler:
//! a quiet stream is traced whole, a saturated one pays for a bounded number
//! of traces), and every later hop follows the `sampled` flag of the W3C
//! `traceparent` it receives (parent-based sampling). A decision is
//! therefore traced end to end or not at all, and an untraced record costs
//! one header lookup per hop: no span is made for it (see [`Trace::span`]).
//!
//! An untraced decision still carries a `traceparent` (flag `00`) so that
//! the processes after it agree; a process that does not export passes the
//! context it received on unchanged.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rdkafka::Message;

use crate::kafka::headers::{HeaderView, TraceParent};
use crate::kafka::outputs::Outputs;

/// Default of `observability.max_traced_per_sec`: far above a demo's or a
/// typical deployment's decision rate (every decision is traced), far below
/// a saturated pipeline's (tens of thousands per second), where tracing
/// every decision would halve throughput.
pub const DEFAULT_MAX_TRACED_PER_SEC: u32 = 100;

/// The sampling set-up of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Spans are exported (OpenTelemetry spans exist at all).
    pub exporting: bool,
    /// Probability that a decision starting here is traced.
    pub ratio: f64,
    /// Most decisions starting here traced per second; 0 for no cap.
    pub max_per_sec: u32,
}

/// Draws whether a decision is traced: with probability `ratio`, and no
/// more than `max_per_sec` a second (with a burst of as many). The cap is a
/// GCRA rate limiter (`governor`), so a draw is a few atomic operations.
pub struct DecisionSampler<C: Clock = DefaultClock> {
    ratio: f64,
    cap: Option<RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
}

impl<C: Clock> std::fmt::Debug for DecisionSampler<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionSampler").field("ratio", &self.ratio).field("capped", &self.cap.is_some()).finish()
    }
}

impl DecisionSampler {
    /// A sampler on the real clock.
    pub fn new(ratio: f64, max_per_sec: u32) -> Self {
        Self::with_clock(ratio, max_per_sec, DefaultClock::default())
    }
}

impl<C: Clock> DecisionSampler<C> {
    /// A sampler on `clock` (a fake clock in tests, and in the benchmark,
    /// which issues commands faster than an orchestrator would decide them).
    pub fn with_clock(ratio: f64, max_per_sec: u32, clock: C) -> Self {
        let cap = NonZeroU32::new(max_per_sec).map(|n| RateLimiter::direct_with_clock(Quota::per_second(n), clock));
        Self { ratio, cap }
    }

    /// Whether the next decision is traced.
    pub fn draw(&self) -> bool {
        let drawn = self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio);
        // The cap is consulted only for decisions the ratio keeps, so it
        // counts traced decisions.
        drawn && self.cap.as_ref().is_none_or(|cap| cap.check().is_ok())
    }
}

static SAMPLER: OnceLock<(Sampling, DecisionSampler)> = OnceLock::new();

/// Sets the process's sampling (first call wins; `telemetry::init` calls it).
pub fn install(sampling: Sampling) {
    let _ = SAMPLER.set((sampling, DecisionSampler::new(sampling.ratio, sampling.max_per_sec)));
}

/// Whether this process exports spans.
pub fn exporting() -> bool {
    SAMPLER.get().is_some_and(|(sampling, _)| sampling.exporting)
}

/// Whether a decision starting here is traced (false when not exporting).
pub fn draw() -> bool {
    SAMPLER.get().is_some_and(|(sampling, sampler)| sampling.exporting && sampler.draw())
}

/// How the work on one record is traced.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    sampled: bool,
    /// Trace context handed on to what the record causes when no span of
    /// this process stands between them.
    cause: Option<TraceParent>,
}

impl Trace {
    /// The decision for a consumed record: its `traceparent`'s flag, or a new
    /// draw when it has none (the decision starts here).
    pub fn of<M: Message>(record: &M) -> Self {
        let Some(parent) = HeaderView(record.headers()).trace_parent() else { return Self::root() };
        match parent.validated_sampled() {
            Some(sampled) => Self { sampled: sampled && exporting(), cause: Some(parent) },
            None => Self::root(),
        }
    }

    /// A decision that starts here.
    pub fn root() -> Self {
        if !exporting() {
            return Self { sampled: false, cause: None };
        }
        if draw() {
            return Self { sampled: true, cause: None };
        }
        Self { sampled: false, cause: Some(TraceParent::unsampled()) }
    }

    /// Whether the record is traced here.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// `make()` if traced, else a disabled span (which costs nothing and
    /// makes its children disabled too: see [`child`]).
    pub fn span(&self, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
        if self.sampled { make() } else { tracing::Span::none() }
    }

    /// Outputs that carry this trace on.
    pub fn outputs(&self) -> Outputs {
        Outputs::with_cause(self.cause.clone())
    }
}

/// The exported span context of `span`, or `None` when it has none (a
/// disabled span, or a span the OpenTelemetry layer does not see). Records
/// produced inside `span` carry this context, and batch spans link to it.
pub fn context_of(span: &tracing::Span) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    // Untraced records take this path: no context lookup at all.
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// `make()` when `parent` is a real span, else a disabled span: children of
/// untraced work are not made.
pub fn child(parent: &tracing::Span, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if parent.is_none() { tracing::Span::none() } else { make() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_parent_makes_no_children() {
        let child = child(&tracing::Span::none(), || tracing::info_span!("never"));
        assert!(child.is_none());
    }

    #[test]
    fn without_export_nothing_is_sampled_and_nothing_invented() {
        // No `install` in unit tests: the default is "not exporting".
        let root = Trace::root();
        assert!(!root.sampled());
        assert_eq!(root.cause, None);
        assert!(root.span(|| tracing::info_span!("never")).is_none());
    }

    #[test]
    fn the_cap_bounds_traced_decisions_per_second() {
        let clock = governor::clock::FakeRelativeClock::default();
        let sampler = DecisionSampler::with_clock(1.0, 10, clock.clone());
        // 1,000 decisions a second for 5 s: the burst of 10, then 10 a second.
        let mut traced = 0;
        for _ in 0..5_000 {
            clock.advance(std::time::Duration::from_millis(1));
            traced += usize::from(sampler.draw());
        }
        assert!((50..=60).contains(&traced), "{traced} traced");
        // A quiet stream (one decision every 200 ms) is traced whole.
        let quiet = (0..50).filter(|_| {
            clock.advance(std::time::Duration::from_millis(200));
            sampler.draw()
        });
        assert_eq!(quiet.count(), 50);
    }

    #[test]
    fn without_a_cap_the_ratio_alone_decides() {
        assert!((0..1_000).all(|_| DecisionSampler::new(1.0, 0).draw()));
        assert!(!(0..1_000).any(|_| DecisionSampler::new(0.0, 0).draw()));
        let half = (0..10_000).filter(|_| DecisionSampler::new(0.5, 0).draw()).count();
        assert!((4_000..=6_000).contains(&half), "{half} of 10,000 at ratio 0.5");
    }
}
