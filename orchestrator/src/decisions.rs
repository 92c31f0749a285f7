//! The decisions stage: reads ticks and business events from Kafka, applies
//! them to the derived state (its shards: see [`crate::state`]), runs the
//! rules over it, and issues commands keyed by entity with a per-key
//! sequence number.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use shoal_kafka::dlq::DeadLetter;
use shoal_kafka::headers::HeaderView;
use shoal_kafka::outputs::{MessageMeta, Outputs};
use shoal_kafka::pipeline::{self, Processor, Work};
use shoal_kafka::tail::TailReader;
use shoal_kafka::trace::{self, Sampler, Trace};
use shoal_protocol::messages::{Command, SCHEMA_VERSION, WireMessage};
use shoal_state::Record;
use shoal_telemetry::metrics::{Metrics, kind_label};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::approvals::{ApprovalRules, Expiry};
use crate::rules::{Decision, Draft};
use crate::sequences::{Recovery, Sequences};
use crate::settings::RulesSettings;
use crate::state::Shards;
use crate::state::decode::{InputTopics, decode};
use shoal_protocol::approvals::HeldCommand;

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
        /// Book tops read from the ticks topic (they go into the state).
        book_tops,
        /// Feed data-quality events read from the ticks topic.
        data_quality,
        /// Keys with a sequence number (as of the last status line).
        keys,
    }
}

/// The decisions stage's [`Processor`].
#[derive(Debug)]
pub struct DecisionProcessor {
    /// Instance identity for headers.
    pub producer_id: String,
    /// Commands topic.
    pub commands_topic: String,
    /// Commands expire this long after issue; `None` for never.
    pub deadline: Option<chrono::Duration>,
    /// Which topic is which.
    pub topics: InputTopics,
    /// The rules.
    pub rules: RulesSettings,
    /// The derived state, one shard per input partition.
    pub shards: Shards,
    /// Cancelled when a shard cannot be restored: the stage stops rather
    /// than decide without its state.
    pub stop: CancellationToken,
    /// Last sequence number issued per key.
    pub sequences: Sequences,
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
    /// Kinds held for approval, and the approvals topic.
    pub approvals: ApprovalRules,
    /// Writes the expiries of overdue approvals (`None`: no kind needs
    /// approval).
    pub expiry: Option<Expiry>,
}

/// The stage's name (logs, metrics, readiness checks).
pub const STAGE: &str = "decisions";

/// Commands read back, at most, to recover the per-key sequence numbers.
pub const SEQUENCE_RECOVERY_RECORDS: usize = 200_000;

/// Per-key sequence numbers live in memory ([`Sequences`]), but the
/// commands that carry them are in Kafka: at start, after the input is
/// rewound (an aborted transaction takes its commands with it) and after
/// partitions are assigned, the stage reads the newest committed commands
/// back. A key whose last command is older than
/// [`SEQUENCE_RECOVERY_RECORDS`] commands starts again at 1 (workers
/// report that as a regression).
#[derive(Debug)]
pub struct SequenceRecovery {
    /// Reader of the commands topic.
    pub tail: TailReader,
}

impl DecisionProcessor {
    /// Reads the committed numbers back when [`Sequences`] asks for it.
    fn recover_sequences(&mut self) {
        let recovery = self.sequences.recovery();
        if recovery == Recovery::Current {
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
                    ?recovery,
                    "per-key sequence numbers recovered from the commands topic"
                );
                self.sequences.recovered(last);
            }
            // Tried again before the next record; meanwhile numbers go on
            // from memory.
            Err(error) => tracing::warn!(%error, "cannot read the commands topic to recover sequence numbers"),
        }
    }

    /// Issues `draft`, or holds it for approval when its kind needs one.
    fn issue(&mut self, draft: Draft, input: (&str, i32), out: &mut Outputs, parent: &tracing::Span) {
        let now = Utc::now();
        let held = HeldCommand {
            id: Uuid::now_v7(),
            kind: draft.kind,
            key: draft.key,
            decided_at: now,
            deadline: self.deadline.map(|d| now + d),
            payload: draft.payload,
        };
        if self.approvals.needs(&held.kind) {
            return self.hold(held, draft.requested_by, out, parent);
        }
        self.publish(held, input, out, parent);
    }

    /// Writes the approval request holding `held` to the approvals topic.
    fn hold(
        &mut self,
        held: HeldCommand,
        requested_by: Option<shoal_protocol::payloads::Requester>,
        out: &mut Outputs,
        parent: &tracing::Span,
    ) {
        let (id, kind, key) = (held.id, held.kind.clone(), held.key.clone());
        let event = self.approvals.request(held, requested_by);
        let meta = MessageMeta { message_type: "approval", producer_id: &self.producer_id, command_id: Some(id) };
        out.message(&self.approvals.topic, &id.to_string(), &meta, &event, parent);
        parent.in_scope(|| {
            tracing::info!(command_id = %id, %kind, %key, "command held for approval");
        });
    }

    /// Issues `held` with the key's next `seq` and its own id and deadline.
    fn publish(&mut self, held: HeldCommand, input: (&str, i32), out: &mut Outputs, parent: &tracing::Span) {
        let seq = self.sequences.next(&held.key, input);
        let command = Command {
            schema_version: SCHEMA_VERSION,
            id: held.id,
            kind: held.kind,
            key: held.key,
            seq,
            issued_at: Utc::now(),
            deadline: held.deadline,
            payload: held.payload,
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
    /// Handles one record, in consumption order: decode, apply to its
    /// shard with the rules, issue the commands, checkpoint when due.
    fn handle_record(&mut self, message: &OwnedMessage, trace: &Trace, out: &mut Outputs) {
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
        let decided = span.in_scope(|| self.decide(message, out));
        match decided {
            Ok(decision) => {
                span.record("shoal.commands_issued", decision.drafts.len());
                for draft in decision.drafts {
                    self.issue(draft, (message.topic(), message.partition()), out, &span);
                }
                for held in decision.released {
                    span.in_scope(|| tracing::info!(command_id = %held.id, kind = %held.kind, key = %held.key, "command approved"));
                    self.publish(held, (message.topic(), message.partition()), out, &span);
                }
                if let Some((reason, error)) = decision.rejected {
                    self.dead_letter(message, reason, error, out, &span);
                }
            }
            Err((reason, error)) => self.dead_letter(message, reason, error.to_string(), out, &span),
        }
    }

    /// Decodes the record and applies it to its shard (restored first if
    /// needed) with the rules.
    fn decide(&mut self, message: &OwnedMessage, out: &mut Outputs) -> Result<Decision, (&'static str, String)> {
        let input = decode(&self.topics, message).map_err(|e| (e.reason, e.detail))?;
        self.count(&input.record);
        self.shards.decide(&input, out).map_err(|error| {
            tracing::error!(topic = message.topic(), partition = message.partition(), %error, "cannot restore the state shard; stopping the stage so that nothing is decided without its state");
            self.stop.cancel();
            ("state_restore_failed", error.to_string())
        })
    }

    fn count(&self, record: &Record) {
        let counter = match record {
            Record::Tick(_) => &self.stats.ticks,
            Record::BookTop(_) => &self.stats.book_tops,
            Record::DataQuality(dq) => {
                tracing::warn!(source = %dq.source, symbol = %dq.symbol, kind = ?dq.kind, missing = ?dq.missing, detail = %dq.detail, "feed data-quality event");
                &self.stats.data_quality
            }
            _ => &self.stats.events,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &'static str,
        error: String,
        out: &mut Outputs,
        span: &tracing::Span,
    ) {
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        span.in_scope(|| {
            out.dead_letter(&self.topics.dlq, message, DeadLetter { reason, error, stage: "decisions", attempts: 1 });
        });
    }
}

impl Processor for DecisionProcessor {
    fn start(&mut self, record: OwnedMessage) -> Work {
        if self.stop.is_cancelled() {
            // Not decided: never finished, so never committed; the next
            // owner (or the next start) decides it.
            return Box::pin(std::future::pending());
        }
        self.recover_sequences();
        // The state must see every record in order: the work is done here.
        let trace = Trace::of(&record, &self.sampler);
        let mut out = trace.outputs();
        self.handle_record(&record, &trace, &mut out);
        self.shards.publish(false);
        pipeline::ready(out)
    }

    fn reset(&mut self) {
        // The commands of an aborted transaction are gone: number again from
        // what is committed; the state may hold inputs whose effects were
        // rolled back: restore it from what is committed.
        self.sequences.aborted();
        self.shards.rewound();
    }

    fn committed(&mut self, offsets: &[(String, i32, i64)]) {
        self.shards.committed(offsets);
    }

    fn revoked(&mut self, partitions: &[(String, i32)]) {
        // The open transaction's part for them is dropped: so are the
        // numbers it held.
        self.sequences.revoked(partitions);
        self.shards.drop_partitions(partitions);
    }

    fn assigned(&mut self, partitions: &[(String, i32)]) {
        self.sequences.assigned();
        self.shards.assigned(partitions);
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(self.shards.publish_interval_ms().clamp(10, 1_000)))
    }

    fn tick(&mut self) {
        self.shards.publish(false);
        if let Some(expiry) = &mut self.expiry {
            let now = Utc::now();
            let overdue = self.shards.states_of(&self.approvals.topic).flat_map(|s| crate::approvals::overdue(s, now));
            expiry.expire(overdue.collect());
        }
    }

    fn status(&self) {
        let s = &self.stats;
        s.keys.store(self.sequences.len() as u64, Ordering::Relaxed);
        s.log_status("decisions status", STAGE);
        self.shards.status(STAGE);
    }
}
