//! How the work on one consumed record is traced: the per-record side of
//! decision sampling ([`shoal_telemetry::trace`] draws and exports; this
//! reads the draw of an upstream process from the record's headers and hands
//! it on to the outputs).

pub use rdkafka::Message;
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
    pub fn of<M: Message>(record: &M, sampler: &Sampler) -> Self {
        match HeaderView(record.headers()).trace_origin() {
            (Some(parent), _) => match parent.validated_sampled() {
                Some(sampled) => Self { sampled: sampled && sampler.exporting(), cause: Some(parent) },
                None => Self::root(sampler),
            },
            (None, true) => Self::untraced(),
            (None, false) => Self::root(sampler),
        }
    }

    /// A decision that starts here: traced if drawn (see [`Sampler::draw`]).
    pub fn root(sampler: &Sampler) -> Self {
        Self { sampled: sampler.draw(), cause: None }
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

/// A span for processing one consumed record, with the OpenTelemetry
/// messaging attributes of a Kafka consumer (system, operation, topic,
/// partition, offset, consumer group) written once here; `fields` add the
/// stage's own. `otel.status_code` can be recorded later.
///
/// `process_span!("record result", message, group, command.id = %id)`
#[macro_export]
macro_rules! process_span {
    ($name:literal, $record:expr, $group:expr $(, $($fields:tt)*)?) => {
        ::tracing::info_span!(
            $name,
            otel.kind = "consumer",
            otel.status_code = ::tracing::field::Empty,
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = $crate::trace::Message::topic($record),
            // A string in the semantic conventions.
            messaging.destination.partition.id = %$crate::trace::Message::partition($record),
            messaging.kafka.offset = $crate::trace::Message::offset($record),
            messaging.consumer.group.name = $group,
            $($($fields)*)?
        )
    };
}

/// A span for producing records (operation `publish`, or `commit` for a
/// transaction), with the OpenTelemetry messaging attributes of a Kafka
/// producer written once here; `fields` add the destination and the
/// stage's own.
///
/// `send_span!("publish command", parent, "publish", messaging.destination.name = %topic)`
#[macro_export]
macro_rules! send_span {
    ($name:literal, $parent:expr, $operation:literal $(, $($fields:tt)*)?) => {
        ::tracing::info_span!(
            parent: $parent,
            $name,
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.operation.name = $operation,
            $($($fields)*)?
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_nothing_is_sampled_and_nothing_invented() {
        let root = Trace::root(&Sampler::off());
        assert!(!root.sampled());
        assert_eq!(root.cause, None);
        assert!(root.span(|| tracing::info_span!("never")).is_none());
    }
}
