//! What a stage wants produced for one consumed record. Processors only
//! describe their outputs; the pipeline delivers them, either tracked
//! one by one (at-least-once) or in a transaction with the consumed offsets
//! (exactly-once).

use opentelemetry::trace::SpanContext;
use rdkafka::Message;
use rdkafka::message::OwnedHeaders;

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
        let mut set = HeaderSet::new(self.message_type, self.producer_id).with_trace(traced, inherited);
        if let Some(id) = self.command_id {
            set.insert(headers::COMMAND_ID, &id.to_string());
        }
        set.into_owned()
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
