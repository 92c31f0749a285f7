//! The results stage: reads the commands topic (what was issued), the
//! results topic (what came back) and the dead-letter topic, matches
//! results to commands by command id, and records each outcome against its
//! command. All three feed the state's commands, outcomes and alerts (its
//! shards: see [`crate::state`]). Reading the topics keeps this stage
//! replayable and able to run on its own, in any process.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use opentelemetry::trace::SpanContext;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use serde::Serialize;
use shoal_kafka::dlq::DeadLetter;
use shoal_kafka::headers::HeaderView;
use shoal_kafka::outputs::Outputs;
use shoal_kafka::pipeline::{self, Processor, Work};
use shoal_kafka::trace::{self, Sampler};
use shoal_protocol::messages::{Command, CommandResult, ResultStatus};
use shoal_state::Record;
use shoal_telemetry::metrics::{Metrics, kind_label};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::Shards;
use crate::state::decode::{InputTopics, decode};

shoal_telemetry::counters! {
    /// Results counters.
    pub struct ResultStats {
        /// Commands seen on the commands topic.
        commands_seen => counter("shoal_results_commands_seen", "Commands read by the results stage"),
        /// Results seen on the results topic.
        results_seen => counter("shoal_results_seen", "Results read by the results stage"),
        /// Outcomes recorded (result matched to its command).
        recorded,
        /// Recorded with status `succeeded`.
        succeeded,
        /// Recorded with any other status.
        not_succeeded,
        /// Commands issued and not yet answered (remembered ones).
        pending => gauge(
            "shoal_results_pending",
            "Commands issued and not yet answered (in flight between the orchestrator and the workers)"
        ),
        /// A second result for an already recorded command.
        duplicates => counter("shoal_results_duplicates", "Second results for an already recorded command"),
        /// Pending commands or early results forgotten because of the bound.
        evicted => counter(
            "shoal_results_evicted",
            "Pending commands or early results forgotten because of results.max_pending"
        ),
        /// Records that could not be decoded (sent to the dead-letter topic).
        dead_lettered => counter(
            "shoal_dead_letters",
            "Records sent to the dead-letter topic, by stage",
            stage = "results"
        ),
    }
}

/// The stage's name (logs, metrics, readiness checks).
pub const STAGE: &str = "results";

/// One recorded outcome, as logged and appended to the record file.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The command.
    pub command_id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its key.
    pub key: String,
    /// Its per-key sequence number.
    pub seq: u64,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Result status.
    pub status: ResultStatus,
    /// Worker that produced the result.
    pub worker_id: String,
    /// When the worker finished.
    pub finished_at: DateTime<Utc>,
    /// When this stage recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Issue to record, milliseconds.
    pub end_to_end_ms: i64,
    /// Handler output.
    pub output: serde_json::Value,
    /// Trace context of the result record (its producer span), so that the
    /// recording continues the decision's trace even when the result was
    /// read before its command.
    #[serde(skip)]
    pub result_trace: Option<SpanContext>,
}

/// Bounded insertion-ordered map: the oldest entries go first when full.
#[derive(Debug)]
struct Bounded<V> {
    map: HashMap<Uuid, V>,
    order: VecDeque<Uuid>,
    cap: usize,
}

impl<V> Bounded<V> {
    fn new(cap: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), cap }
    }

    /// Inserts; returns how many old entries were evicted.
    fn insert(&mut self, id: Uuid, value: V) -> u64 {
        let mut evicted = 0;
        if self.map.insert(id, value).is_none() {
            self.order.push_back(id);
        }
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => evicted += u64::from(self.map.remove(&old).is_some()),
                None => break,
            }
        }
        // Entries removed by `take` leave stale ids in `order`; trim them so
        // the queue stays proportional to the map.
        if self.order.len() > self.cap.saturating_mul(2) {
            let map = &self.map;
            self.order.retain(|id| map.contains_key(id));
        }
        evicted
    }

    fn take(&mut self, id: &Uuid) -> Option<V> {
        self.map.remove(id)
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Matches results to commands.
#[derive(Debug)]
pub struct Recorder {
    issued: Bounded<Command>,
    early: Bounded<(CommandResult, Option<SpanContext>)>,
    recorded: Bounded<()>,
    record_file: Option<std::fs::File>,
    stats: Arc<ResultStats>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// A recorder remembering at most `max_pending` of each kind of entry,
    /// appending outcomes to `record_file` if given.
    pub fn new(
        max_pending: usize,
        record_file: Option<std::fs::File>,
        stats: Arc<ResultStats>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            issued: Bounded::new(max_pending),
            early: Bounded::new(max_pending),
            recorded: Bounded::new(max_pending),
            record_file,
            stats,
            metrics,
        }
    }

    /// Commands issued and still awaiting a result.
    pub fn pending(&self) -> usize {
        self.issued.len()
    }

    /// Notes an issued command; records it at once if its result came first.
    pub fn on_command(&mut self, command: Command) -> Option<Outcome> {
        self.stats.commands_seen.fetch_add(1, Ordering::Relaxed);
        if self.recorded.map.contains_key(&command.id) {
            return None; // replayed command whose outcome is already recorded
        }
        if let Some((result, trace)) = self.early.take(&command.id) {
            return Some(self.record(command, result, trace));
        }
        let evicted = self.issued.insert(command.id, command);
        self.stats.evicted.fetch_add(evicted, Ordering::Relaxed);
        self.stats.pending.store(self.issued.len() as u64, Ordering::Relaxed);
        None
    }

    /// Notes a result (with the trace context of its record); records it if
    /// its command is known.
    pub fn on_result(&mut self, result: CommandResult, trace: Option<SpanContext>) -> Option<Outcome> {
        self.stats.results_seen.fetch_add(1, Ordering::Relaxed);
        if self.recorded.map.contains_key(&result.command_id) {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(command_id = %result.command_id, worker_id = %result.worker_id, "duplicate result for an already recorded command");
            return None;
        }
        match self.issued.take(&result.command_id) {
            Some(command) => Some(self.record(command, result, trace)),
            None => {
                let evicted = self.early.insert(result.command_id, (result, trace));
                self.stats.evicted.fetch_add(evicted, Ordering::Relaxed);
                None
            }
        }
    }

    fn record(&mut self, command: Command, result: CommandResult, result_trace: Option<SpanContext>) -> Outcome {
        let recorded_at = Utc::now();
        let latency = (recorded_at - command.issued_at).to_std().unwrap_or_default();
        let m = &self.metrics;
        m.command_latency.get_or_create(&kind_label(&command.kind)).observe(latency.as_secs_f64());
        m.results_recorded
            .get_or_create(&vec![("kind", command.kind.clone()), ("status", result.status.as_str().to_string())])
            .inc();
        self.stats.pending.store(self.issued.len() as u64, Ordering::Relaxed);
        let outcome = Outcome {
            command_id: command.id,
            kind: command.kind,
            key: command.key,
            seq: command.seq,
            issued_at: command.issued_at,
            status: result.status,
            worker_id: result.worker_id,
            finished_at: result.finished_at,
            recorded_at,
            end_to_end_ms: (recorded_at - command.issued_at).num_milliseconds(),
            output: result.output,
            result_trace,
        };
        self.recorded.insert(outcome.command_id, ());
        self.stats.recorded.fetch_add(1, Ordering::Relaxed);
        let counter =
            if outcome.status == ResultStatus::Succeeded { &self.stats.succeeded } else { &self.stats.not_succeeded };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(file) = &mut self.record_file {
            let mut line = serde_json::to_vec(&outcome).unwrap_or_default();
            line.push(b'\n');
            if let Err(error) = file.write_all(&line) {
                tracing::error!(%error, "cannot append to the outcome record file");
            }
        }
        outcome
    }
}

/// The results stage's [`Processor`].
#[derive(Debug)]
pub struct ResultProcessor {
    /// Which topic is which.
    pub topics: InputTopics,
    /// The derived state of commands, outcomes and alerts, one shard per
    /// input partition.
    pub shards: Shards,
    /// Cancelled when a shard cannot be restored: the stage stops rather
    /// than record without its state.
    pub stop: CancellationToken,
    /// Matching state.
    pub recorder: Recorder,
    /// Counters.
    pub stats: Arc<ResultStats>,
    /// The stage's consumer group (span attribute).
    pub consumer_group: String,
    /// Which decisions starting here are traced.
    pub sampler: Arc<Sampler>,
}

impl ResultProcessor {
    /// Handles one record, in consumption order: decode, apply to its
    /// state shard, match results to commands.
    fn handle_record(&mut self, message: &OwnedMessage, out: &mut Outputs) {
        let outcome = decode(&self.topics, message)
            .map_err(|e| (e.reason, e.detail))
            .and_then(|input| match self.shards.decide(&input, out) {
                // Dead letters are never dead-lettered again.
                Ok(decision) if input.provenance.topic != self.topics.dlq => match decision.rejected {
                    Some((reason, error)) => Err((reason, error)),
                    None => Ok(input.record),
                },
                Ok(_) => Ok(input.record),
                Err(error) => {
                    tracing::error!(topic = message.topic(), partition = message.partition(), %error, "cannot restore the state shard; stopping the stage so that nothing is recorded without its state");
                    self.stop.cancel();
                    Err(("state_restore_failed", error.to_string()))
                }
            })
            .map(|record| match record {
                Record::Command(command) => self.recorder.on_command(command),
                Record::Result(result) => {
                    // Parsed only for export: without it no span is ever made.
                    let trace =
                        self.sampler.exporting().then(|| HeaderView(message.headers()).span_context()).flatten();
                    self.recorder.on_result(result, trace)
                }
                _ => None,
            });
        match outcome {
            Ok(Some(outcome)) => {
                // The result's decision, when it carries one; a result from a
                // Shoal worker without one belongs to an untraced decision,
                // anything else starts a decision here.
                let traced = match &outcome.result_trace {
                    Some(context) => self.sampler.exporting() && context.is_sampled(),
                    None => {
                        let from_shoal = HeaderView(message.headers()).get(shoal_kafka::headers::MESSAGE_TYPE);
                        from_shoal.is_none() && self.sampler.draw()
                    }
                };
                let span = if !traced {
                    tracing::Span::none()
                } else {
                    shoal_kafka::process_span!(
                    "record result",
                    message,
                    self.consumer_group.as_str(),
                    messaging.kafka.message.key = %outcome.key,
                    messaging.message.id = %outcome.command_id,
                    command.id = %outcome.command_id,
                    command.kind = %outcome.kind,
                    shoal.result.status = outcome.status.as_str(),
                    shoal.worker.id = %outcome.worker_id,
                    shoal.end_to_end_ms = outcome.end_to_end_ms,
                    )
                };
                if let Some(parent) = outcome.result_trace.clone() {
                    use opentelemetry::trace::TraceContextExt as _;
                    trace::set_parent(&span, opentelemetry::Context::new().with_remote_span_context(parent));
                }
                if outcome.status != ResultStatus::Succeeded {
                    span.record("otel.status_code", "ERROR");
                }
                // Inside the span, so the line carries the trace id.
                span.in_scope(|| {
                    tracing::info!(
                        command_id = %outcome.command_id, kind = %outcome.kind, key = %outcome.key, seq = outcome.seq,
                        status = outcome.status.as_str(), worker_id = %outcome.worker_id, end_to_end_ms = outcome.end_to_end_ms,
                        output = %outcome.output,
                        "result recorded"
                    );
                });
            }
            Ok(None) => {}
            Err((reason, error)) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                let letter = DeadLetter { reason, error, stage: "results", attempts: 1 };
                out.dead_letter(&self.topics.dlq, message, letter);
            }
        }
    }
}

impl Processor for ResultProcessor {
    fn start(&mut self, record: OwnedMessage) -> Work {
        if self.stop.is_cancelled() {
            // Never finished, so never committed: the next owner records it.
            return Box::pin(std::future::pending());
        }
        // The state must see every record in order: the work is done here.
        let mut out = Outputs::new();
        self.handle_record(&record, &mut out);
        self.shards.publish(false);
        pipeline::ready(out)
    }

    fn reset(&mut self) {
        // The state may hold inputs whose effects were rolled back: restore
        // it from what is committed.
        self.shards.rewound();
    }

    fn committed(&mut self, offsets: &[(String, i32, i64)]) {
        self.shards.committed(offsets);
    }

    fn revoked(&mut self, partitions: &[(String, i32)]) {
        self.shards.drop_partitions(partitions);
    }

    fn assigned(&mut self, partitions: &[(String, i32)]) {
        self.shards.assigned(partitions);
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(self.shards.publish_interval_ms().clamp(10, 1_000)))
    }

    fn tick(&mut self) {
        self.shards.publish(false);
    }

    fn status(&self) {
        self.stats.pending.store(self.recorder.pending() as u64, Ordering::Relaxed);
        self.stats.log_status("results status", STAGE);
        self.shards.status(STAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::messages::SCHEMA_VERSION;

    fn command(n: u64) -> Command {
        Command {
            schema_version: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            kind: "raise_alert".into(),
            key: "K".into(),
            seq: n,
            issued_at: Utc::now(),
            deadline: None,
            payload: serde_json::json!({}),
        }
    }

    fn result(c: &Command) -> CommandResult {
        CommandResult {
            schema_version: SCHEMA_VERSION,
            command_id: c.id,
            kind: c.kind.clone(),
            key: c.key.clone(),
            seq: c.seq,
            worker_id: "w".into(),
            status: ResultStatus::Succeeded,
            output: serde_json::json!({}),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            sequence: None,
        }
    }

    #[test]
    fn matches_in_either_order_and_counts_duplicates() {
        let stats = Arc::new(ResultStats::default());
        let mut r = Recorder::new(10, None, stats.clone(), Arc::new(Metrics::new()));
        let (a, b) = (command(1), command(2));
        assert!(r.on_command(a.clone()).is_none());
        assert_eq!(r.on_result(result(&a), None).unwrap().command_id, a.id);
        assert!(r.on_result(result(&b), None).is_none(), "result before its command waits");
        assert_eq!(r.on_command(b.clone()).unwrap().command_id, b.id);
        assert!(r.on_result(result(&a), None).is_none());
        assert_eq!(stats.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(stats.recorded.load(Ordering::Relaxed), 2);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn pending_commands_are_bounded() {
        let stats = Arc::new(ResultStats::default());
        let mut r = Recorder::new(3, None, stats.clone(), Arc::new(Metrics::new()));
        for n in 0..5 {
            r.on_command(command(n));
        }
        assert_eq!(r.pending(), 3);
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 2);
    }
}
