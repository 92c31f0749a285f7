//! The decisions stage: reads ticks and business events from Kafka, updates
//! derived state, and issues commands keyed by entity with a per-key
//! sequence number.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use shoal_kafka::dlq::DeadLetter;
use shoal_kafka::headers::{self, HeaderView};
use shoal_kafka::outputs::{MessageMeta, Outputs};
use shoal_kafka::pipeline::{self, Processor, Work};
use shoal_kafka::tail::TailReader;
use shoal_kafka::trace::{self, Sampler, Trace};
use shoal_protocol::messages::{
    BookTop, Command, DataQuality, DecodeError, Event, MarketTick, SCHEMA_VERSION, WireMessage,
};
use shoal_telemetry::metrics::{Metrics, kind_label};
use uuid::Uuid;

use crate::rules::{Draft, MarketRules};

shoal_telemetry::counters! {
    /// Decisions counters.
    pub struct DecisionStats {
        /// Ticks read.
        ticks => counter("shoal_decisions_ticks", "Ticks read by the decisions stage"),
        /// Events read.
        events => counter("shoal_decisions_events", "Business events read by the decisions stage"),
        /// Commands produced (visible once delivered, or once their transaction
        /// commits with exactly-once delivery).
        commands,
        /// Records that could not be decoded or used (sent to the dead-letter topic).
        dead_lettered => counter(
            "shoal_dead_letters",
            "Records sent to the dead-letter topic, by stage",
            stage = "decisions"
        ),
        /// Book tops read from the ticks topic (no rule uses them yet).
        book_tops,
        /// Feed data-quality events read from the ticks topic.
        data_quality,
        /// Symbols the rules keep state for (as of the last status line).
        symbols,
        /// Keys with a sequence number (as of the last status line).
        keys,
    }
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
    /// Last sequence number issued per key.
    pub sequences: HashMap<String, u64>,
    /// Reads the last issued sequence numbers back from the commands topic.
    pub recovery: SequenceRecovery,
    /// Counters.
    pub stats: Arc<DecisionStats>,
    /// The stage's consumer group (span attribute).
    pub consumer_group: String,
    /// Where the commands-issued counter goes.
    pub metrics: Arc<Metrics>,
    /// Which decisions starting here are traced.
    pub sampler: Arc<Sampler>,
}

/// The stage's name (logs, metrics, readiness checks).
pub const STAGE: &str = "decisions";

/// Commands read back, at most, to recover the per-key sequence numbers.
pub const SEQUENCE_RECOVERY_RECORDS: usize = 200_000;

/// Per-key sequence numbers live in memory, but the commands that carry them
/// are in Kafka: at start, and after the input is rewound (an aborted
/// transaction takes its commands with it), the stage reads the newest
/// committed commands back and goes on from the highest `seq` per key. A key
/// whose last command is older than [`SEQUENCE_RECOVERY_RECORDS`] commands
/// starts again at 1 (workers report that as a regression).
#[derive(Debug)]
pub struct SequenceRecovery {
    /// Reader of the commands topic.
    pub tail: TailReader,
    /// Whether `sequences` matches what is committed.
    pub current: bool,
}

impl DecisionProcessor {
    /// Rebuilds `sequences` from the commands topic unless it is current.
    fn recover_sequences(&mut self) {
        if self.recovery.current {
            return;
        }
        let mut last: HashMap<String, u64> = HashMap::new();
        let read = tokio::task::block_in_place(|| {
            self.recovery.tail.read(SEQUENCE_RECOVERY_RECORDS, std::time::Duration::from_secs(30), |message| {
                if let Some(Ok(command)) = message.payload().map(Command::decode) {
                    let seq = last.entry(command.key).or_default();
                    *seq = (*seq).max(command.seq);
                }
            })
        });
        match read {
            Ok(read) => {
                tracing::info!(
                    commands = read.records,
                    keys = last.len(),
                    complete = read.complete,
                    "per-key sequence numbers recovered from the commands topic"
                );
                self.sequences = last;
                self.recovery.current = true;
            }
            // Tried again before the next record; meanwhile numbers go on
            // from memory.
            Err(error) => tracing::warn!(%error, "cannot read the commands topic to recover sequence numbers"),
        }
    }

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
        let span = trace::child(parent, || {
            shoal_kafka::send_span!(
            "publish command",
            parent,
            "publish",
            messaging.destination.name = %self.commands_topic,
            messaging.kafka.message.key = %command.key,
            messaging.message.id = %command.id,
            command.id = %command.id,
            command.kind = %command.kind,
            command.key = %command.key,
            command.seq = command.seq,
            )
        });
        let meta =
            MessageMeta { message_type: "command", producer_id: &self.producer_id, command_id: Some(command.id) };
        out.message(&self.commands_topic, &command.key, &meta, &command, &span);
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        self.metrics.commands_issued.get_or_create(&kind_label(&command.kind)).inc();
        // Inside the span, so the line carries the trace id.
        span.in_scope(|| {
            tracing::info!(command_id = %command.id, kind = %command.kind, key = %command.key, seq = command.seq, "command issued");
        });
    }
}

impl DecisionProcessor {
    /// Handles one record, in consumption order.
    fn handle_record(&mut self, message: &OwnedMessage, trace: &Trace, out: &mut Outputs) {
        let payload = message.payload().unwrap_or_default();
        let span = trace.span(|| {
            shoal_kafka::process_span!(
                "evaluate rules",
                message,
                self.consumer_group.as_str(),
                messaging.kafka.message.key = message.key().map(String::from_utf8_lossy).as_deref().unwrap_or_default(),
                shoal.commands_issued = tracing::field::Empty,
            )
        });
        HeaderView(message.headers()).set_parent_of(&span);
        let message_type = HeaderView(message.headers()).get(headers::MESSAGE_TYPE);
        let drafts: Result<Vec<Draft>, (&str, String)> = span.in_scope(|| {
            if message.topic() == self.ticks_topic && message_type == Some("book_top") {
                self.stats.book_tops.fetch_add(1, Ordering::Relaxed);
                BookTop::decode(payload).map(|_| Vec::new()).map_err(decode_reason)
            } else if message.topic() == self.ticks_topic && message_type == Some("data_quality") {
                self.stats.data_quality.fetch_add(1, Ordering::Relaxed);
                let event = DataQuality::decode(payload).map_err(decode_reason)?;
                // Surfaced to the orchestrator: logged here and counted in
                // the status line. The symbol's window is not reset: the
                // prices received remain true prices.
                tracing::warn!(
                    source = %event.source,
                    symbol = %event.symbol,
                    kind = ?event.kind,
                    missing = ?event.missing,
                    detail = %event.detail,
                    "feed data-quality event"
                );
                Ok(Vec::new())
            } else if message.topic() == self.ticks_topic {
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
        self.recover_sequences();
        // The state must see every record in order: the work is done here.
        let trace = Trace::of(&record, &self.sampler);
        let mut out = trace.outputs();
        self.handle_record(&record, &trace, &mut out);
        pipeline::ready(out)
    }

    fn reset(&mut self) {
        // The commands of an aborted transaction are gone: number again from
        // what is committed.
        self.recovery.current = false;
    }

    fn status(&self) {
        let s = &self.stats;
        s.symbols.store(self.rules.symbols() as u64, Ordering::Relaxed);
        s.keys.store(self.sequences.len() as u64, Ordering::Relaxed);
        s.log_status("decisions status", STAGE);
    }
}

fn decode_reason(error: DecodeError) -> (&'static str, String) {
    (error.reason(), error.to_string())
}
