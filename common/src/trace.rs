//! Which records are traced, decided once per decision.
//!
//! Tracing every record costs the hot path (span creation, attribute
//! recording, export), so Shoal samples whole decisions: the process where a
//! decision starts (feed ingest, or the first Shoal process to see a record
//! without trace context) draws it with probability `sample_ratio`, and every
//! later hop follows the `sampled` flag of the W3C `traceparent` it receives
//! (parent-based sampling). A decision is therefore traced end to end or not
//! at all, and an untraced record costs one header lookup per hop: no span
//! is made for it (see [`Trace::span`]).
//!
//! An untraced decision still carries a `traceparent` (flag `00`) so that
//! the processes after it agree; a process that does not export passes the
//! context it received on unchanged.

use std::sync::OnceLock;

use rdkafka::Message;

use crate::kafka::headers::{HeaderView, TraceParent};
use crate::kafka::outputs::Outputs;

/// The sampling set-up of this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Spans are exported (OpenTelemetry spans exist at all).
    pub exporting: bool,
    /// Probability that a decision starting here is traced.
    pub ratio: f64,
}

static SAMPLING: OnceLock<Sampling> = OnceLock::new();

/// Sets the process's sampling (first call wins; `telemetry::init` calls it).
pub fn install(sampling: Sampling) {
    let _ = SAMPLING.set(sampling);
}

fn sampling() -> Sampling {
    SAMPLING.get().copied().unwrap_or(Sampling { exporting: false, ratio: 0.0 })
}

/// Whether this process exports spans.
pub fn exporting() -> bool {
    sampling().exporting
}

/// Whether a decision starting here is traced (false when not exporting).
pub fn draw() -> bool {
    let Sampling { exporting, ratio } = sampling();
    exporting && (ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio))
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
}
