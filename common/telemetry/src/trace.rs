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
//! An untraced decision carries no trace context at all: a record that a
//! Shoal process produced (it has the `shoal-message-type` header) without a
//! `traceparent` was decided upstream and is not traced here either. Only
//! records from outside Shoal (business events, commands a user's own
//! producer writes) start a decision where they are consumed. Writing a
//! not-sampled `traceparent` on every untraced record instead cost 5–10% of
//! a saturated pipeline's throughput (measured with `shoal-bench`): 55
//! random hex characters per record, parsed, copied and compressed at each
//! hop. A process that does not export passes the context it received on
//! unchanged.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::metrics::Metrics;

/// Default of `observability.max_traced_per_sec`: far above a demo's or a
/// typical deployment's decision rate (every decision is traced), far below
/// a saturated pipeline's (tens of thousands per second), where tracing
/// every decision would halve throughput.
pub const DEFAULT_MAX_TRACED_PER_SEC: u32 = 100;

/// The W3C trace context of a consumed record, kept as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// `traceparent` header value.
    pub traceparent: String,
    /// `tracestate` header value, if any.
    pub tracestate: Option<String>,
}

impl TraceParent {
    fn fields(&self) -> Option<(&str, &str, &str, u8)> {
        let mut parts = self.traceparent.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let ok = hex(version, 2)
            && version != "ff"
            && hex(trace, 32)
            && trace.bytes().any(|b| b != b'0')
            && hex(span, 16)
            && span.bytes().any(|b| b != b'0')
            && hex(flags, 2);
        if !ok || (version == "00" && parts.next().is_some()) {
            return None;
        }
        Some((version, trace, span, u8::from_str_radix(flags, 16).ok()?))
    }

    /// Whether the header is a well-formed W3C `traceparent`.
    pub fn is_valid(&self) -> bool {
        self.fields().is_some()
    }

    /// The `sampled` flag (false when malformed).
    pub fn sampled(&self) -> bool {
        self.validated_sampled().unwrap_or(false)
    }

    /// `None` when malformed, else the `sampled` flag: both answers from one
    /// parse.
    pub fn validated_sampled(&self) -> Option<bool> {
        self.fields().map(|(_, _, _, flags)| flags & 1 == 1)
    }

    /// The trace id (32 hex digits), when well-formed.
    pub fn trace_id(&self) -> Option<&str> {
        self.fields().map(|(_, trace, _, _)| trace)
    }
}

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

impl Sampling {
    /// Nothing exported, nothing drawn.
    pub const OFF: Self = Self { exporting: false, ratio: 0.0, max_per_sec: 0 };
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
        self.decide() == Draw::Traced
    }

    /// The next decision's draw, and why it is not traced.
    pub fn decide(&self) -> Draw {
        if !(self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio)) {
            return Draw::NotSampled;
        }
        // The cap is consulted only for decisions the ratio keeps, so it
        // counts traced decisions.
        match &self.cap {
            Some(cap) if cap.check().is_err() => Draw::OverCap,
            _ => Draw::Traced,
        }
    }
}

/// The outcome of drawing one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// Traced.
    Traced,
    /// Left out by the sample ratio.
    NotSampled,
    /// Kept by the ratio, left out by `max_traced_per_sec`.
    OverCap,
}

/// Draws made in this process, by outcome (the `shoal_trace_decisions`
/// metric).
#[derive(Debug, Default)]
struct Draws([AtomicU64; 3]);

/// This process's decision sampling: whether it exports spans, and the draw
/// for each decision that starts here. Part of the process's
/// [`Telemetry`](crate::Telemetry) handle.
#[derive(Debug)]
pub struct Sampler {
    sampling: Sampling,
    sampler: DecisionSampler,
    draws: Arc<Draws>,
}

impl Sampler {
    /// Sampling as `sampling` says.
    pub fn new(sampling: Sampling) -> Self {
        let sampler = DecisionSampler::new(sampling.ratio, sampling.max_per_sec);
        Self { sampling, sampler, draws: Arc::default() }
    }

    /// Nothing exported, nothing drawn.
    pub fn off() -> Self {
        Self::new(Sampling::OFF)
    }

    /// When it exports, registers the `shoal_trace_decisions` counters.
    pub fn register_metrics(&self, metrics: &Metrics) {
        if !self.sampling.exporting {
            return;
        }
        for (i, outcome) in ["traced", "not_sampled", "over_cap"].into_iter().enumerate() {
            let draws = self.draws.clone();
            metrics.counter(
                "shoal_trace_decisions",
                "Decisions that started in this process, by whether they are traced (not_sampled: left out by the \
                 sample ratio; over_cap: by observability.max_traced_per_sec)",
                vec![("outcome", outcome.to_string())],
                move || draws.0[i].load(Ordering::Relaxed),
            );
        }
    }

    /// Whether this process exports spans.
    pub fn exporting(&self) -> bool {
        self.sampling.exporting
    }

    /// Whether a decision starting here is traced (false when not exporting).
    pub fn draw(&self) -> bool {
        if !self.sampling.exporting {
            return false;
        }
        let draw = self.sampler.decide();
        let slot = match draw {
            Draw::Traced => 0,
            Draw::NotSampled => 1,
            Draw::OverCap => 2,
        };
        self.draws.0[slot].fetch_add(1, Ordering::Relaxed);
        draw == Draw::Traced
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

/// Makes `parent` the parent of `span` (nothing for a disabled span) and
/// builds the span's context at once. Without context activation a span's
/// ids exist only once its context is built, and the log formatter reads
/// them from there: built later (by the first record produced inside the
/// span, or at its end), lines logged before that, such as a handler's
/// failed attempts or the results stage's `result recorded`, would name no
/// trace. Every traced span gets its context built anyway, so this costs
/// nothing extra.
pub fn set_parent(span: &tracing::Span, parent: opentelemetry::Context) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if span.is_disabled() {
        return;
    }
    // An absent or invalid parent leaves the span a root; not an error.
    let _ = span.set_parent(parent);
    let _ = span.context();
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
        assert_eq!(sampler.decide(), Draw::OverCap, "no time passed since the last draw");
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
