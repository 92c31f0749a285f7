//! How the work on one consumed record is traced: the per-record side of
//! decision sampling ([`shoal_telemetry::trace`] draws and exports; this
//! reads the draw of an upstream process from the record's headers and hands
//! it on to the outputs).

use rdkafka::Message;
pub use shoal_telemetry::trace::*;

use crate::headers::HeaderView;
use crate::outputs::Outputs;

/// How the work on one record is traced.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    sampled: bool,
    /// Trace context handed on to what the record causes when no span of
    /// this process stands between them.
    cause: Option<TraceParent>,
}

impl Trace {
    /// The decision for a consumed record: its `traceparent`'s flag; not
    /// traced when a Shoal process produced it without one (decided
    /// upstream); a new draw when it comes from outside Shoal without one,
    /// or with a malformed one (the decision starts here).
    pub fn of<M: Message>(record: &M) -> Self {
        match HeaderView(record.headers()).trace_origin() {
            (Some(parent), _) => match parent.validated_sampled() {
                Some(sampled) => Self { sampled: sampled && exporting(), cause: Some(parent) },
                None => Self::root(),
            },
            (None, true) => Self::untraced(),
            (None, false) => Self::root(),
        }
    }

    /// A decision that starts here: traced if drawn (see [`draw`]).
    pub fn root() -> Self {
        Self { sampled: draw(), cause: None }
    }

    /// Not traced, and nothing to pass on.
    pub fn untraced() -> Self {
        Self { sampled: false, cause: None }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_nothing_is_sampled_and_nothing_invented() {
        // No `install` in unit tests: the default is "not exporting".
        let root = Trace::root();
        assert!(!root.sampled());
        assert_eq!(root.cause, None);
        assert!(root.span(|| tracing::info_span!("never")).is_none());
    }
}
