//! What a stage wants produced for one consumed record. Processors only
//! describe their outputs; the pipeline delivers them, either tracked
//! one by one (at-least-once) or in a transaction with the consumed offsets
//! (exactly-once).

use opentelemetry::trace::SpanContext;
use rdkafka::Message;
use rdkafka::message::{Header, OwnedHeaders};

use super::dlq::{self, DeadLetter};
use super::headers::{self, HeaderSet, HeaderView, TraceParent};
use shoal_protocol::messages::WireMessage;

/// One record to produce.
#[derive(Debug)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// Partition, when the producer must not choose it by key (a state
    /// changelog's records go to the partition of the input they derive
    /// from).
    pub partition: Option<i32>,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Encoded body; `None` for a tombstone (a null value, which deletes the
    /// key from a compacted topic).
    pub payload: Option<Vec<u8>>,
    /// Headers.
    pub headers: OwnedHeaders,
    /// The exported span this record was produced in (its `traceparent`),
    /// kept so that a span covering a batch can link to it without parsing
    /// headers back; `None` for untraced records.
    pub traced: Option<SpanContext>,
}

/// Header metadata of a Shoal message.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta<'a> {
    /// `shoal-message-type` header.
    pub message_type: &'a str,
    /// `shoal-producer` header.
    pub producer_id: &'a str,
    /// `shoal-command-id` header, on commands and results.
    pub command_id: Option<uuid::Uuid>,
}

impl MessageMeta<'_> {
    /// Headers for a message produced inside the span whose context is
    /// `traced`: type, schema version, producer, optional command id, and the
    /// span's W3C trace context (or `inherited` when there is no exported
    /// span: see [`HeaderSet::with_trace`]).
    pub fn headers(&self, traced: Option<&SpanContext>, inherited: Option<&TraceParent>) -> OwnedHeaders {
        if traced.is_none() {
            return self.untraced_headers(inherited);
        }
        let mut set = HeaderSet::new(self.message_type, self.producer_id).with_trace(traced, inherited);
        if let Some(id) = self.command_id {
            set.insert(headers::COMMAND_ID, &id.to_string());
        }
        set.into_owned()
    }

    /// The same headers, in the same order, for a record produced outside
    /// an exported span (most records): written straight into librdkafka's
    /// list, without the builder's strings (this runs once per record).
    fn untraced_headers(&self, inherited: Option<&TraceParent>) -> OwnedHeaders {
        static VERSION: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| shoal_protocol::messages::SCHEMA_VERSION.to_string());
        let header = |key, value| Header { key, value: Some(value) };
        let mut owned = OwnedHeaders::new_with_capacity(6)
            .insert(header(headers::MESSAGE_TYPE, self.message_type))
            .insert(header(headers::SCHEMA_VERSION, VERSION.as_str()))
            .insert(header(headers::PRODUCER, self.producer_id));
        if let Some(parent) = inherited {
            owned = owned.insert(header(headers::TRACEPARENT, &parent.traceparent));
            if let Some(state) = &parent.tracestate {
                owned = owned.insert(header(headers::TRACESTATE, state));
            }
        }
        if let Some(id) = self.command_id {
            let mut buffer = uuid::Uuid::encode_buffer();
            owned = owned.insert(header(headers::COMMAND_ID, id.hyphenated().encode_lower(&mut buffer)));
        }
        owned
    }
}

/// The outputs of one consumed record.
#[derive(Debug, Default)]
pub struct Outputs {
    items: Vec<Output>,
    cause: Option<TraceParent>,
}

impl Outputs {
    /// No outputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// No outputs yet; messages added later carry `cause` on when no span
    /// of this process stands between them (see `Trace` in [`crate::trace`]).
    pub fn with_cause(cause: Option<TraceParent>) -> Self {
        Self { items: Vec::new(), cause }
    }

    /// Adds `message`, encoded, keyed by `key`, with Shoal's headers.
    pub fn message<M: WireMessage>(
        &mut self,
        topic: &str,
        key: &str,
        meta: &MessageMeta<'_>,
        message: &M,
        span: &tracing::Span,
    ) {
        let traced = shoal_telemetry::trace::context_of(span);
        self.items.push(Output {
            topic: topic.to_string(),
            partition: None,
            key: Some(key.as_bytes().to_vec()),
            payload: Some(message.encode()),
            headers: meta.headers(traced.as_ref(), self.cause.as_ref()),
            traced,
        });
    }

    /// Adds a dead letter for `message` (its original key, body and headers
    /// plus reason and origin headers) and logs why.
    pub fn dead_letter<M: Message>(&mut self, dlq_topic: &str, message: &M, letter: DeadLetter<'_>) {
        tracing::warn!(
            stage = letter.stage,
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason = letter.reason,
            error = %letter.error,
            "record sent to the dead-letter topic"
        );
        let mut headers = HeaderView(message.headers()).to_set();
        headers
            .insert(dlq::REASON, letter.reason)
            .insert(dlq::ERROR, &letter.error)
            .insert(dlq::STAGE, letter.stage)
            .insert(dlq::ORIGIN_TOPIC, message.topic())
            .insert(dlq::ORIGIN_PARTITION, &message.partition().to_string())
            .insert(dlq::ORIGIN_OFFSET, &message.offset().to_string())
            .insert(dlq::ATTEMPTS, &letter.attempts.to_string());
        self.items.push(Output {
            topic: dlq_topic.to_string(),
            partition: None,
            key: message.key().map(<[u8]>::to_vec),
            payload: Some(message.payload().unwrap_or_default().to_vec()),
            headers: headers.into_owned(),
            traced: None,
        });
    }

    /// Adds a record to `partition` of `topic` as is: `payload` `None` is
    /// a tombstone. For records that are not Shoal messages (state
    /// changelogs), so without Shoal's message headers.
    pub fn record(&mut self, topic: &str, partition: i32, key: Vec<u8>, payload: Option<Vec<u8>>) {
        self.items.push(Output {
            topic: topic.to_string(),
            partition: Some(partition),
            key: Some(key),
            payload,
            headers: OwnedHeaders::new(),
            traced: None,
        });
    }

    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the outputs out.
    pub fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers as _;

    use super::*;

    fn pairs(headers: &OwnedHeaders) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string()))
            .collect()
    }

    #[test]
    fn untraced_headers_are_the_builders_headers() {
        let id = uuid::Uuid::now_v7();
        let inherited = TraceParent {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".into(),
            tracestate: Some("shoal=1".into()),
        };
        for (command_id, inherited) in [(Some(id), Some(&inherited)), (None, None), (Some(id), None)] {
            let meta = MessageMeta { message_type: "result", producer_id: "w-1", command_id };
            let mut built = HeaderSet::new(meta.message_type, meta.producer_id).with_trace(None, inherited);
            if let Some(id) = command_id {
                built.insert(headers::COMMAND_ID, &id.to_string());
            }
            assert_eq!(pairs(&meta.headers(None, inherited)), pairs(&built.into_owned()));
        }
    }
}
