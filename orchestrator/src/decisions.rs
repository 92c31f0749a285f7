//! The decisions stage: reads ticks and business events from Kafka, updates
//! derived state, and issues commands keyed by entity with a per-key
//! sequence number.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use shoal_common::kafka::dlq::DeadLetter;
use shoal_common::kafka::headers::HeaderView;
use shoal_common::kafka::outputs::{MessageMeta, Outputs};
use shoal_common::kafka::pipeline::{self, Processor, Work};
use shoal_common::messages::{Command, DecodeError, Event, MarketTick, SCHEMA_VERSION, WireMessage};
use shoal_common::observability::{kind_label, metrics};
use uuid::Uuid;

use crate::rules::{Draft, MarketRules};

/// Decisions counters.
#[derive(Debug, Default)]
pub struct DecisionStats {
    /// Ticks read.
    pub ticks: AtomicU64,
    /// Events read.
    pub events: AtomicU64,
    /// Commands produced (visible once delivered, or once their transaction
    /// commits with exactly-once delivery).
    pub commands: AtomicU64,
    /// Records that could not be decoded or used (sent to the dead-letter topic).
    pub dead_lettered: AtomicU64,
}

/// The decisions stage's [`Processor`].
#[derive(Debug)]
pub struct DecisionProcessor {
    /// Instance identity for headers.
    pub producer_id: String,
    /// Ticks topic (to tell ticks from events).
    pub ticks_topic: String,
    /// Commands topic.
    pub commands_topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Commands expire this long after issue; `None` for never.
    pub deadline: Option<chrono::Duration>,
    /// Derived state and rules.
    pub rules: MarketRules,
    /// Next sequence number per key.
    pub sequences: HashMap<String, u64>,
    /// Counters.
    pub stats: Arc<DecisionStats>,
    /// The stage's consumer group (span attribute).
    pub consumer_group: String,
}

impl DecisionStats {
    /// Registers the counters as metrics, read at each scrape.
    pub fn register_metrics(self: &Arc<Self>) {
        let m = metrics();
        let s = self.clone();
        m.counter("shoal_decisions_ticks", "Ticks read by the decisions stage", vec![], move || {
            s.ticks.load(Ordering::Relaxed)
        });
        let s = self.clone();
        m.counter("shoal_decisions_events", "Business events read by the decisions stage", vec![], move || {
            s.events.load(Ordering::Relaxed)
        });
        let s = self.clone();
        m.counter(
            "shoal_dead_letters",
            "Records sent to the dead-letter topic, by stage",
            vec![("stage", "decisions".to_string())],
            move || s.dead_lettered.load(Ordering::Relaxed),
        );
    }
}

impl DecisionProcessor {
    fn issue(&mut self, draft: Draft, out: &mut Outputs, parent: &tracing::Span) {
        let seq = self.sequences.entry(draft.key.clone()).or_insert(0);
        *seq += 1;
        let issued_at = Utc::now();
        let command = Command {
            schema_version: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            kind: draft.kind,
            key: draft.key,
            seq: *seq,
            issued_at,
            deadline: self.deadline.map(|d| issued_at + d),
            payload: draft.payload,
        };
        let span = tracing::info_span!(
            parent: parent,
            "publish command",
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = %self.commands_topic,
            messaging.kafka.message.key = %command.key,
            messaging.message.id = %command.id,
            command.id = %command.id,
            command.kind = %command.kind,
            command.key = %command.key,
            command.seq = command.seq,
        );
        let meta =
            MessageMeta { message_type: "command", producer_id: &self.producer_id, command_id: Some(command.id) };
        out.message(&self.commands_topic, &command.key, &meta, &command, &span);
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        metrics().commands_issued.get_or_create(&kind_label(&command.kind)).inc();
        // Inside the span, so the line carries the trace id.
        span.in_scope(|| {
            tracing::info!(command_id = %command.id, kind = %command.kind, key = %command.key, seq = command.seq, "command issued");
        });
    }
}

impl DecisionProcessor {
    /// Handles one record, in consumption order.
    fn handle_record(&mut self, message: &OwnedMessage, out: &mut Outputs) {
        let payload = message.payload().unwrap_or_default();
        let span = tracing::info_span!(
            "evaluate rules",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = message.topic(),
            messaging.destination.partition.id = %message.partition(),
            messaging.kafka.offset = message.offset(),
            messaging.kafka.message.key = message.key().map(String::from_utf8_lossy).as_deref().unwrap_or_default(),
            messaging.consumer.group.name = %self.consumer_group,
            shoal.commands_issued = tracing::field::Empty,
        );
        HeaderView(message.headers()).set_parent_of(&span);
        let drafts: Result<Vec<Draft>, (&str, String)> = span.in_scope(|| {
            if message.topic() == self.ticks_topic {
                self.stats.ticks.fetch_add(1, Ordering::Relaxed);
                MarketTick::decode(payload).map(|tick| self.rules.on_tick(&tick)).map_err(decode_reason)
            } else {
                self.stats.events.fetch_add(1, Ordering::Relaxed);
                let event = Event::decode(payload).map_err(decode_reason)?;
                match self.rules.on_event(&event) {
                    Ok(draft) => Ok(draft.into_iter().collect()),
                    Err(error) => Err(("invalid_event_attributes", error)),
                }
            }
        });
        match drafts {
            Ok(drafts) => {
                span.record("shoal.commands_issued", drafts.len());
                for draft in drafts {
                    self.issue(draft, out, &span);
                }
            }
            Err((reason, error)) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                span.in_scope(|| {
                    out.dead_letter(
                        &self.dlq_topic,
                        message,
                        DeadLetter { reason, error, stage: "decisions", attempts: 1 },
                    );
                });
            }
        }
    }
}

impl Processor for DecisionProcessor {
    fn start(&mut self, record: OwnedMessage) -> Work {
        // The state must see every record in order: the work is done here.
        let mut out = Outputs::new();
        self.handle_record(&record, &mut out);
        pipeline::ready(out)
    }

    fn status(&self) {
        let s = &self.stats;
        tracing::info!(
            ticks = s.ticks.load(Ordering::Relaxed),
            events = s.events.load(Ordering::Relaxed),
            commands = s.commands.load(Ordering::Relaxed),
            dead_lettered = s.dead_lettered.load(Ordering::Relaxed),
            symbols = self.rules.symbols(),
            keys = self.sequences.len(),
            "decisions status"
        );
    }
}

fn decode_reason(error: DecodeError) -> (&'static str, String) {
    (error.reason(), error.to_string())
}
