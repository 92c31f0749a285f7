//! Record headers: Shoal metadata and W3C trace context.
//!
//! Metadata lives in headers (not in the JSON body) so routing, tracing and
//! dead-lettering work even when the body cannot be decoded.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::SpanContext;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

pub use shoal_protocol::headers::{COMMAND_ID, MESSAGE_TYPE, PRODUCER, SCHEMA_VERSION, TRACEPARENT, TRACESTATE};
pub use shoal_telemetry::trace::TraceParent;

/// Builder for the headers of an outgoing record.
#[derive(Debug, Default)]
pub struct HeaderSet {
    entries: Vec<(String, String)>,
}

impl HeaderSet {
    /// Starts with type, schema version and producer identity.
    pub fn new(message_type: &str, producer: &str) -> Self {
        let mut set = Self::default();
        set.insert(MESSAGE_TYPE, message_type);
        set.insert(SCHEMA_VERSION, &shoal_protocol::messages::SCHEMA_VERSION.to_string());
        set.insert(PRODUCER, producer);
        set
    }

    /// Adds (or replaces) a header.
    pub fn insert(&mut self, name: &str, value: &str) -> &mut Self {
        self.entries.retain(|(k, _)| k != name);
        self.entries.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds `traceparent`/`tracestate` for `traced` (the span the record is
    /// produced in, when it is exported: see [`shoal_telemetry::trace::context_of`]);
    /// without one (span export is off or the decision is not sampled, so no
    /// span was made), passes `inherited` on instead, so that the decision
    /// stays one trace in the processes that do export.
    pub fn with_trace(mut self, traced: Option<&SpanContext>, inherited: Option<&TraceParent>) -> Self {
        use opentelemetry::trace::TraceContextExt as _;
        if let Some(traced) = traced {
            let context = opentelemetry::Context::new().with_remote_span_context(traced.clone());
            TraceContextPropagator::new().inject_context(&context, &mut self);
        } else if let Some(parent) = inherited {
            self.insert(TRACEPARENT, &parent.traceparent);
            if let Some(state) = &parent.tracestate {
                self.insert(TRACESTATE, state);
            }
        }
        self
    }

    /// Converts into rdkafka headers.
    pub fn into_owned(self) -> OwnedHeaders {
        self.entries.iter().fold(OwnedHeaders::new_with_capacity(self.entries.len()), |h, (k, v)| {
            h.insert(Header { key: k, value: Some(v.as_bytes()) })
        })
    }
}

impl Injector for HeaderSet {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key, &value);
    }
}

/// Reads headers of a consumed record (borrowed or owned).
#[derive(Clone, Copy)]
pub struct HeaderView<'a, H: Headers = BorrowedHeaders>(pub Option<&'a H>);

impl<H: Headers> std::fmt::Debug for HeaderView<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(Extractor::keys(self)).finish()
    }
}

impl<'a, H: Headers> HeaderView<'a, H> {
    /// The first header called `name`, if it is UTF-8.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let headers = self.0?;
        headers.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Makes the span a child of the trace context in these headers, so one
    /// decision is one trace across processes (see [`shoal_telemetry::trace::set_parent`]).
    /// Nothing for a disabled span (an untraced record: no header parsing on
    /// that path).
    pub fn set_parent_of(&self, span: &tracing::Span) {
        if span.is_disabled() {
            return;
        }
        shoal_telemetry::trace::set_parent(span, TraceContextPropagator::new().extract(self));
    }

    /// The record's `traceparent` (and `tracestate`), as received.
    pub fn trace_parent(&self) -> Option<TraceParent> {
        self.trace_origin().0
    }

    /// The record's trace context, and whether a Shoal process produced it
    /// (it has [`MESSAGE_TYPE`]): one pass over the headers, since this runs
    /// for every consumed record.
    pub fn trace_origin(&self) -> (Option<TraceParent>, bool) {
        let (mut traceparent, mut tracestate, mut shoal) = (None, None, false);
        for header in self.0.into_iter().flat_map(|h| h.iter()) {
            let value = || header.value.and_then(|v| std::str::from_utf8(v).ok());
            match header.key {
                TRACEPARENT => traceparent = value(),
                TRACESTATE => tracestate = value(),
                MESSAGE_TYPE => shoal = true,
                _ => {}
            }
        }
        let parent = traceparent
            .map(|tp| TraceParent { traceparent: tp.to_string(), tracestate: tracestate.map(str::to_string) });
        (parent, shoal)
    }

    /// The remote span context in these headers, if valid (for span links).
    pub fn span_context(&self) -> Option<opentelemetry::trace::SpanContext> {
        use opentelemetry::trace::TraceContextExt as _;
        let context = TraceContextPropagator::new().extract(self);
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then_some(span_context)
    }

    /// Copies every header into a [`HeaderSet`] (used for dead letters).
    pub fn to_set(&self) -> HeaderSet {
        let mut set = HeaderSet::default();
        if let Some(headers) = self.0 {
            for h in headers.iter() {
                let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                set.entries.push((h.key.to_string(), value.into_owned()));
            }
        }
        set
    }
}

impl<H: Headers> Extractor for HeaderView<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        HeaderView::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.map(|h| h.iter().map(|h| h.key).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_existing_header() {
        let mut set = HeaderSet::new("command", "test");
        set.insert(COMMAND_ID, "a").insert(COMMAND_ID, "b");
        let owned = set.into_owned();
        let ids: Vec<_> = owned.iter().filter(|h| h.key == COMMAND_ID).collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].value, Some(&b"b"[..]));
        assert!(owned.iter().any(|h| h.key == MESSAGE_TYPE && h.value == Some(&b"command"[..])));
    }

    #[test]
    fn trace_origin_tells_shoal_records_from_foreign_ones() {
        // A Shoal record of an untraced decision: no context, but Shoal's.
        let untraced = HeaderSet::new("command", "o").with_trace(None, None).into_owned();
        assert_eq!(HeaderView(Some(&untraced)).trace_origin(), (None, true));
        // A foreign record: neither (a decision starts where it is read).
        let foreign = OwnedHeaders::new().insert(Header { key: "content-type", value: Some(&b"json"[..]) });
        assert_eq!(HeaderView(Some(&foreign)).trace_origin(), (None, false));
        assert_eq!(HeaderView::<OwnedHeaders>(None).trace_origin(), (None, false));
        // A foreign record that carries context: passed on as it is.
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let traced = OwnedHeaders::new().insert(Header { key: TRACEPARENT, value: Some(traceparent.as_bytes()) });
        let (parent, shoal) = HeaderView(Some(&traced)).trace_origin();
        assert_eq!(parent.map(|p| p.traceparent), Some(traceparent.to_string()));
        assert!(!shoal);
    }

    #[test]
    fn traceparent_flags_and_validity() {
        let tp = |s: &str| TraceParent { traceparent: s.into(), tracestate: None };
        let sampled = tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(sampled.is_valid() && sampled.sampled());
        assert_eq!(sampled.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert!(!tp("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").sampled());
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "not a traceparent",
        ] {
            assert!(!tp(bad).is_valid(), "{bad:?} accepted");
            assert!(!tp(bad).sampled());
        }
    }

    #[test]
    fn without_a_span_context_the_inherited_trace_is_passed_on() {
        let inherited = TraceParent {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
            tracestate: Some("vendor=x".into()),
        };
        // No OpenTelemetry layer here: the span has no context.
        let owned = HeaderSet::new("result", "w").with_trace(None, Some(&inherited)).into_owned();
        let view = HeaderView(Some(&owned));
        assert_eq!(view.trace_parent(), Some(inherited));
        let none = HeaderSet::new("result", "w").with_trace(None, None).into_owned();
        assert_eq!(HeaderView(Some(&none)).trace_parent(), None);
    }

    #[test]
    fn span_context_reads_a_w3c_traceparent() {
        let mut set = HeaderSet::new("command", "test");
        set.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let owned = set.into_owned();
        let context = HeaderView(Some(&owned)).span_context().unwrap();
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_remote());
        let none = HeaderSet::new("command", "test").into_owned();
        assert!(HeaderView(Some(&none)).span_context().is_none());
    }
}
