//! Handling of consumed commands: decode, check the deadline, run the
//! handler with retries, publish the result (and a dead letter when a
//! command fails for good).
//!
//! The pipeline runs the commands of one key one after another in the order
//! they were consumed (which is `seq` order), and different keys
//! concurrently up to `worker.max_concurrency`, so a key waiting on retries
//! holds up neither the others nor the delivery of their results.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt as _;
use rand::Rng;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use shoal_kafka::dlq::DeadLetter;
use shoal_kafka::headers::HeaderView;
use shoal_kafka::outputs::{MessageMeta, Outputs};
use shoal_kafka::pipeline::{self, Processor, Work};
use shoal_kafka::trace::{self, Sampler, Trace};
use shoal_protocol::messages::{Command, CommandResult, ResultStatus, SequenceAnomaly, SequenceNote, WireMessage as _};
use shoal_telemetry::metrics::{Metrics, kind_label};
use tracing::Instrument;

use crate::dedupe::{TailReader, Window};
use crate::flow::FlowControl;
use crate::handlers::{HandlerContext, HandlerError, Registry};
use crate::journal::Journal;

shoal_telemetry::counters! {
    /// What this worker has done; read by status lines, metrics and tests.
    pub struct WorkerStats {
        /// Commands handled (result produced; with exactly-once delivery it
        /// becomes visible when its transaction commits).
        handled,
        /// Results with status `succeeded`.
        succeeded => counter("shoal_worker_results", "Results the worker produced, by status", status = "succeeded"),
        /// Results with status `failed`.
        failed => counter("shoal_worker_results", "Results the worker produced, by status", status = "failed"),
        /// Results with status `expired`.
        expired => counter("shoal_worker_results", "Results the worker produced, by status", status = "expired"),
        /// Results with status `unsupported`.
        unsupported => counter("shoal_worker_results", "Results the worker produced, by status", status = "unsupported"),
        /// Handler attempts retried after a transient failure.
        retries => counter("shoal_worker_retries", "Handler attempts retried after a transient failure"),
        /// Commands whose `seq` skipped ahead of the key's previous one.
        sequence_gaps => counter(
            "shoal_worker_sequence_anomalies",
            "Commands whose per-key seq skipped ahead (gap) or went back (regression)",
            anomaly = "gap"
        ),
        /// Commands whose `seq` was not above the key's previous one (a replay
        /// or a restarted issuer).
        sequence_regressions => counter(
            "shoal_worker_sequence_anomalies",
            "Commands whose per-key seq skipped ahead (gap) or went back (regression)",
            anomaly = "regression"
        ),
        /// Repeated commands skipped because their result already exists
        /// (at-least-once dedupe window).
        duplicates_skipped => counter(
            "shoal_worker_duplicates_skipped",
            "Repeated commands skipped because their result already exists (at-least-once dedupe window)"
        ),
        /// Command ids in the at-least-once dedupe window (as of the last
        /// status line).
        dedupe_window,
        /// Records that could not be decoded (sent to the dead-letter topic).
        undecodable,
        /// Records sent to the dead-letter topic for any reason.
        dead_lettered => counter("shoal_dead_letters", "Records sent to the dead-letter topic, by stage", stage = "worker"),
    }
}

/// Last `seq` seen per key, to report gaps and regressions. It only knows
/// keys this worker has handled since the last rebalance: after one, a key
/// may come from another owner, so the history is dropped rather than
/// misread.
#[derive(Debug, Default)]
pub struct SequenceCheck {
    last: HashMap<String, u64, foldhash::fast::RandomState>,
    rebalances_seen: u64,
}

/// Keys remembered at most; beyond it the history starts again.
const MAX_TRACKED_KEYS: usize = 100_000;

impl SequenceCheck {
    /// Records `command`'s seq; returns what was wrong with it, if anything.
    fn check(&mut self, command: &Command, rebalances: u64, stats: &WorkerStats) -> Option<SequenceNote> {
        if rebalances != self.rebalances_seen || self.last.len() >= MAX_TRACKED_KEYS {
            self.last.clear();
            self.rebalances_seen = rebalances;
        }
        // seq 0: not sequenced (a command emitted by a level below).
        if command.seq == 0 {
            return None;
        }
        let previous = self.last.insert(command.key.clone(), command.seq)?;
        if command.seq > previous + 1 {
            stats.sequence_gaps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key = %command.key, previous, seq = command.seq, command_id = %command.id, "sequence gap: commands of this key are missing");
            Some(SequenceNote { anomaly: SequenceAnomaly::Gap, previous })
        } else if command.seq <= previous {
            stats.sequence_regressions.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key = %command.key, previous, seq = command.seq, command_id = %command.id, "sequence regression: replayed command or restarted issuer");
            Some(SequenceNote { anomaly: SequenceAnomaly::Regression, previous })
        } else {
            None
        }
    }
}

impl WorkerStats {
    fn count_status(&self, status: ResultStatus) {
        let counter = match status {
            ResultStatus::Succeeded => &self.succeeded,
            ResultStatus::Failed => &self.failed,
            ResultStatus::Expired => &self.expired,
            ResultStatus::Unsupported => &self.unsupported,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
}

/// Retry policy for transient handler failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter before attempt `attempt + 1`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }
}

/// How one command ended.
struct Execution {
    /// When its handler started (after admission), or when it was decided
    /// without one.
    started_at: chrono::DateTime<Utc>,
    started: std::time::Instant,
    status: ResultStatus,
    output: serde_json::Value,
    attempts: u32,
    /// Set when the command failed for good and must be dead-lettered.
    dead_letter: Option<&'static str>,
}

/// What a caught panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The dead-letter reason of a command that failed for good with `error`.
fn dead_letter_reason(error: &HandlerError) -> &'static str {
    match error {
        HandlerError::NonDeterministic { .. } => "non_deterministic",
        e if e.is_retryable() => "retries_exhausted",
        _ => "handler_failed",
    }
}

/// What running a command needs; shared by the work of every key.
#[derive(Debug)]
pub struct Executor {
    /// Identity written into results.
    pub worker_id: String,
    /// Topic results go to.
    pub results_topic: String,
    /// Dead-letter topic.
    pub dlq_topic: String,
    /// Handlers.
    pub registry: Registry,
    /// Time limit of one handler attempt.
    pub handler_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Where the handler duration histogram goes.
    pub metrics: Arc<Metrics>,
    /// Which decisions starting here are traced.
    pub sampler: Arc<Sampler>,
    /// The side-effect journal handlers' effects go through.
    pub journal: Arc<Journal>,
    /// Admission of commands to their handlers (priorities, limits).
    pub flow: Arc<FlowControl>,
    /// Where commands the skills emit for the next level go.
    pub next: crate::levels::NextLevel,
}

impl Executor {
    /// Runs the handler with retries, catching panics and enforcing the
    /// time limit on each attempt.
    /// `assignment` is the partition's revocation count when the record was
    /// read: effects run only while it is unchanged (journal fence).
    async fn execute(&self, command: &Arc<Command>, partition: i32, assignment: u64) -> Execution {
        let (started_at, started) = (Utc::now(), std::time::Instant::now());
        let decided =
            |status, output, dead_letter| Execution { started_at, started, status, output, attempts: 0, dead_letter };
        if let Some(deadline) = command.deadline
            && Utc::now() > deadline
        {
            let output = serde_json::json!({"reason": "deadline passed before execution", "deadline": deadline});
            return decided(ResultStatus::Expired, output, None);
        }
        let Some(handler) = self.registry.get(&command.kind) else {
            let error =
                format!("no handler for kind {:?}; this worker handles {:?}", command.kind, self.registry.kinds());
            let output = serde_json::json!({ "error": error });
            return decided(ResultStatus::Unsupported, output, Some("unsupported_kind"));
        };
        // Held until the handler is done (all attempts, retries' waits).
        let _admission = match self.flow.admit(&command.kind, &command.key, command.deadline).await {
            Ok(admission) => admission,
            Err(expired) => {
                let output = serde_json::json!({
                    "reason": "deadline passed while waiting for admission (worker.flow)",
                    "deadline": command.deadline,
                    "waited_ms": u64::try_from(expired.waited.as_millis()).unwrap_or(u64::MAX),
                });
                return decided(ResultStatus::Expired, output, None);
            }
        };
        let (started_at, started) = (Utc::now(), std::time::Instant::now());
        let mut attempt = 1;
        loop {
            // Shared, not copied: the payload can be large.
            let owned = Arc::clone(command);
            let handler = handler.clone();
            let journal = self.journal.clone();
            let span = trace::child(&tracing::Span::current(), || {
                tracing::info_span!(
                    "run handler",
                    shoal.handler.kind = %command.kind,
                    shoal.handler.attempt = attempt,
                    otel.status_code = tracing::field::Empty,
                )
            });
            // Run in place, not as a task of its own: a spawn per command
            // (and the wake-ups across threads it brings) cost more than
            // most handlers. A panic is caught here; a handler with heavy
            // computation moves it to `spawn_blocking` itself.
            let attempt_run = std::panic::AssertUnwindSafe(
                async move {
                    let ctx = HandlerContext::new(attempt, &owned, partition, handler.as_ref(), &journal)
                        .started_under(assignment);
                    handler.handle_with(&owned, &ctx).await
                }
                .instrument(span.clone()),
            )
            .catch_unwind();
            // On time-out the attempt is dropped, so that the next one does
            // not run the same effect step beside it.
            let outcome = match tokio::time::timeout(self.handler_timeout, attempt_run).await {
                Ok(Ok(result)) => result,
                Ok(Err(panic)) => Err(HandlerError::Rejected(format!("handler panicked: {}", panic_message(&*panic)))),
                Err(_) => Err(HandlerError::Retryable(format!("handler timed out after {:?}", self.handler_timeout))),
            };
            if let Err(error) = &outcome {
                span.record("otel.status_code", "ERROR");
                tracing::info!(parent: &span, %error, "handler attempt failed");
            }
            match outcome {
                Ok(output) => {
                    let (status, attempts, dead_letter) = (ResultStatus::Succeeded, attempt, None);
                    return Execution { started_at, started, status, output, attempts, dead_letter };
                }
                Err(error) if error.is_retryable() && attempt < self.retry.max_attempts => {
                    // Only this key waits: the pipeline runs other keys'
                    // commands, and commits their results, meanwhile.
                    let delay = self.retry.delay(attempt);
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(command_id = %command.id, attempt, ?delay, %error, "transient failure; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => {
                    let reason = dead_letter_reason(&error);
                    let output = serde_json::json!({"error": error.to_string(), "attempts": attempt});
                    return Execution {
                        started_at,
                        started,
                        status: ResultStatus::Failed,
                        output,
                        attempts: attempt,
                        dead_letter: Some(reason),
                    };
                }
            }
        }
    }

    /// Handles one decoded command: its result (and dead letter).
    async fn handle(
        &self,
        message: &OwnedMessage,
        command: Command,
        sequence: Option<SequenceNote>,
        group: &str,
        assignment: u64,
    ) -> Outputs {
        let trace = Trace::of(message, &self.sampler);
        let mut out = trace.outputs();
        let span = trace.span(|| {
            let id = command.id.to_string();
            shoal_kafka::process_span!(
                "process command",
                message,
                group,
                messaging.kafka.message.key = command.key.as_str(),
                messaging.message.id = id.as_str(),
                command.id = id.as_str(),
                command.kind = command.kind.as_str(),
                command.seq = command.seq,
                shoal.worker.id = self.worker_id.as_str(),
                shoal.result.status = tracing::field::Empty,
            )
        });
        HeaderView(message.headers()).set_parent_of(&span);
        let command = Arc::new(command);
        let execution = self.execute(&command, message.partition(), assignment).instrument(span.clone()).await;
        // The handler's time: a wait for admission is not in it.
        let (started_at, elapsed) = (execution.started_at, execution.started.elapsed());
        self.metrics.handler_duration.get_or_create(&kind_label(&command.kind)).observe(elapsed.as_secs_f64());
        let status = execution.status;
        span.record("shoal.result.status", status.as_str());
        if status != ResultStatus::Succeeded {
            span.record("otel.status_code", "ERROR");
        }
        let times = (started_at, Utc::now());
        let result = CommandResult {
            sequence,
            ..CommandResult::answering(&command, self.worker_id.as_str(), status, execution.output, times)
        };
        let publish = trace::child(&span, || {
            let id = command.id.to_string();
            shoal_kafka::send_span!(
                "publish result",
                &span,
                "publish",
                messaging.destination.name = self.results_topic.as_str(),
                messaging.kafka.message.key = command.key.as_str(),
                messaging.message.id = id.as_str(),
                command.id = id.as_str(),
            )
        });
        let meta = MessageMeta { message_type: "result", producer_id: &self.worker_id, command_id: Some(command.id) };
        out.message(&self.results_topic, &command.key, &meta, &result, &publish);
        drop(publish);
        if status == ResultStatus::Succeeded {
            self.next.publish(&command, &result.output, &self.worker_id, &span, &mut out);
        }
        if let Some(reason) = execution.dead_letter {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            let error = result.output.get("error").and_then(|e| e.as_str()).unwrap_or(reason).to_string();
            let letter = DeadLetter { reason, error, stage: "worker", attempts: execution.attempts };
            span.in_scope(|| out.dead_letter(&self.dlq_topic, message, letter));
        }
        self.stats.count_status(status);
        // Inside the span, so the line carries the trace id.
        span.in_scope(|| {
            // Its own target, so that a busy deployment can turn the line
            // per command off (`shoal_worker::command=warn`) and keep the rest.
            tracing::info!(
                target: "shoal_worker::command",
                command_id = %command.id, kind = %command.kind, key = %command.key, seq = command.seq,
                status = status.as_str(), attempts = execution.attempts,
                handler_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                "command handled"
            );
        });
        out
    }
}

/// At-least-once only: skips commands whose results already exist.
#[derive(Debug)]
pub struct Dedupe {
    /// Ids of commands with results.
    pub window: Window,
    /// Refills `window` from the results topic.
    pub reader: TailReader,
    /// Rebalance count at the last reload; `None` to reload before the next
    /// command.
    pub loaded_at: Option<u64>,
}

/// The worker's [`Processor`].
#[derive(Debug)]
pub struct CommandProcessor {
    exec: Arc<Executor>,
    group: Arc<shoal_kafka::consumer::GroupStats>,
    sequences: SequenceCheck,
    dedupe: Option<Dedupe>,
    restorer: Option<crate::keyed::Restorer>,
}

impl CommandProcessor {
    /// A processor running commands with `exec`; `dedupe` with at-least-once
    /// delivery.
    pub fn new(exec: Executor, group: Arc<shoal_kafka::consumer::GroupStats>, dedupe: Option<Dedupe>) -> Self {
        Self { exec: Arc::new(exec), group, sequences: SequenceCheck::default(), dedupe, restorer: None }
    }

    /// Restores the stateful skills' state with `restorer` before the first
    /// command, and again when the partitions change or after a rewind.
    #[must_use]
    pub fn with_restorer(mut self, restorer: Option<crate::keyed::Restorer>) -> Self {
        self.restorer = restorer;
        self
    }

    /// Reloads the dedupe window when the partitions changed since the last
    /// load: the commands now assigned may have results from their previous
    /// owner.
    fn refresh_dedupe(&mut self) {
        let rebalances = self.group.rebalances.load(Ordering::Relaxed);
        let Some(dedupe) = self.dedupe.as_mut() else { return };
        if dedupe.loaded_at == Some(rebalances) {
            return;
        }
        match tokio::task::block_in_place(|| dedupe.reader.reload()) {
            Ok(_) => dedupe.loaded_at = Some(rebalances),
            Err(error) => {
                // Without the tail, repeats of the previous owner's commands
                // produce second results; tried again before the next one.
                tracing::warn!(%error, "cannot read the results tail for the dedupe window");
            }
        }
    }
}

impl Processor for CommandProcessor {
    fn start(&mut self, record: OwnedMessage) -> Work {
        let command = match Command::decode(record.payload().unwrap_or_default()) {
            Ok(command) => command,
            Err(error) => {
                self.exec.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                self.exec.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                let letter =
                    DeadLetter { reason: error.reason(), error: error.to_string(), stage: "worker", attempts: 1 };
                let mut out = Outputs::new();
                out.dead_letter(&self.exec.dlq_topic, &record, letter);
                return pipeline::ready(out);
            }
        };
        let rebalances = self.group.rebalances.load(Ordering::Relaxed);
        let sequence = self.sequences.check(&command, rebalances, &self.exec.stats);
        // The assignment the record was read under (journal fence).
        let assignment = self.exec.journal.assignment(record.partition());
        self.refresh_dedupe();
        if let Some(restorer) = self.restorer.as_mut() {
            restorer.refresh(rebalances);
        }
        let window = self.dedupe.as_ref().map(|d| d.window.clone());
        let exec = self.exec.clone();
        let group_id = self.group.group_id.clone();
        Box::pin(async move {
            // Checked when the work runs, after the key's earlier commands.
            let generation = window.as_ref().map(|w| w.unseen(&command.id));
            if let Some(None) = generation {
                let skipped = exec.stats.duplicates_skipped.fetch_add(1, Ordering::Relaxed) + 1;
                if skipped <= 10 || skipped.is_power_of_two() {
                    tracing::info!(target: "shoal_worker::dedupe", command_id = %command.id, key = %command.key, seq = command.seq, skipped, "repeated command skipped: its result already exists");
                }
                return Outputs::new();
            }
            let id = command.id;
            let out = exec.handle(&record, command, sequence, &group_id, assignment).await;
            if let (Some(window), Some(Some(generation))) = (&window, generation) {
                window.insert(id, generation);
            }
            out
        })
    }

    fn reset(&mut self) {
        if let Some(dedupe) = self.dedupe.as_mut() {
            // Emptied now, not only reloaded: if the reload fails (the
            // brokers are still recovering), ids of results this rewind
            // dropped must not make their commands look done.
            dedupe.window.clear();
            dedupe.loaded_at = None;
        }
        if let Some(restorer) = self.restorer.as_mut() {
            restorer.reset();
        }
    }

    fn status(&self) {
        let s = &self.exec.stats;
        s.dedupe_window.store(self.dedupe.as_ref().map_or(0, |d| d.window.len() as u64), Ordering::Relaxed);
        s.log_status("worker status", "worker");
        self.exec.flow.stats.log_status("flow status", "worker");
        self.exec.journal.stats.log_status("journal status", "worker");
    }
}

#[cfg(test)]
mod tests {
    use shoal_protocol::messages::SCHEMA_VERSION;

    use super::*;

    fn command(key: &str, seq: u64) -> Command {
        Command {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            kind: "k".into(),
            key: key.into(),
            seq,
            issued_at: Utc::now(),
            deadline: None,
            payload: serde_json::json!({}),
        }
    }

    #[test]
    fn sequence_gaps_and_regressions_are_counted_and_forgotten_after_a_rebalance() {
        let stats = WorkerStats::default();
        let mut check = SequenceCheck::default();
        let notes: Vec<Option<SequenceNote>> = [("a", 1), ("a", 2), ("b", 7), ("a", 4), ("a", 4), ("b", 3)]
            .into_iter()
            .map(|(key, seq)| check.check(&command(key, seq), 0, &stats))
            .collect();
        let gap = |previous| Some(SequenceNote { anomaly: SequenceAnomaly::Gap, previous });
        let regression = |previous| Some(SequenceNote { anomaly: SequenceAnomaly::Regression, previous });
        assert_eq!(notes, vec![None, None, None, gap(2), regression(4), regression(7)]);
        assert_eq!(stats.sequence_gaps.load(Ordering::Relaxed), 1, "a: 2 -> 4");
        assert_eq!(stats.sequence_regressions.load(Ordering::Relaxed), 2, "a: 4 -> 4, b: 7 -> 3");
        // After a rebalance the key may have moved; no false report.
        check.check(&command("a", 9), 1, &stats);
        assert_eq!(stats.sequence_gaps.load(Ordering::Relaxed), 1);
    }

    /// Panics on `"panic"` keys, sleeps past the time limit on `"slow"`
    /// ones, answers the rest.
    struct Unruly;

    #[async_trait::async_trait]
    impl crate::handlers::Handler for Unruly {
        async fn handle(&self, command: &Command, _attempt: u32) -> Result<serde_json::Value, HandlerError> {
            match command.key.as_str() {
                "panic" => panic!("unruly handler"),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(serde_json::json!("late"))
                }
                _ => Ok(serde_json::json!("fine")),
            }
        }
    }

    fn executor() -> Executor {
        let mut registry = Registry::new();
        registry.register("k", Unruly);
        let stats = Arc::new(WorkerStats::default());
        Executor {
            worker_id: "w".into(),
            results_topic: "results".into(),
            dlq_topic: "dlq".into(),
            registry,
            handler_timeout: Duration::from_millis(50),
            retry: RetryPolicy { max_attempts: 2, initial: Duration::from_millis(1), max: Duration::from_millis(1) },
            stats: stats.clone(),
            metrics: Arc::new(Metrics::new()),
            sampler: Arc::new(Sampler::off()),
            journal: Arc::new(Journal::in_memory("w")),
            flow: Arc::new(FlowControl::new(&crate::flow::FlowSettings::default(), 4, Arc::default())),
            next: crate::levels::NextLevel { topic: None, stats: Arc::default() },
        }
    }

    #[tokio::test]
    async fn a_panicking_or_overrunning_handler_fails_its_command_and_the_next_one_runs() {
        let exec = executor();
        let panicked = exec.execute(&Arc::new(command("panic", 1)), 0, 0).await;
        assert_eq!(panicked.status, ResultStatus::Failed);
        assert_eq!(panicked.dead_letter, Some("handler_failed"), "a panic is not retried");
        assert!(panicked.output["error"].as_str().is_some_and(|e| e.contains("handler panicked: unruly handler")));
        let slow = exec.execute(&Arc::new(command("slow", 1)), 0, 0).await;
        assert_eq!((slow.status, slow.attempts), (ResultStatus::Failed, 2), "timed out, retried, timed out");
        assert_eq!(slow.dead_letter, Some("retries_exhausted"));
        assert!(slow.output["error"].as_str().is_some_and(|e| e.contains("timed out after 50ms")));
        let fine = exec.execute(&Arc::new(command("ok", 1)), 0, 0).await;
        assert_eq!((fine.status, fine.output), (ResultStatus::Succeeded, serde_json::json!("fine")));
    }

    #[test]
    fn non_determinism_is_dead_lettered_under_its_own_reason() {
        let error = HandlerError::NonDeterministic {
            command_id: uuid::Uuid::now_v7(),
            step: "post/0".into(),
            recorded: "sha256:a".into(),
            now: "sha256:b".into(),
        };
        assert!(!error.is_retryable(), "failing again would not help");
        assert_eq!(dead_letter_reason(&error), "non_deterministic");
        assert_eq!(dead_letter_reason(&HandlerError::Retryable("x".into())), "retries_exhausted");
        assert_eq!(dead_letter_reason(&HandlerError::Rejected("x".into())), "handler_failed");
    }

    #[test]
    fn retry_delays_grow_are_jittered_and_capped() {
        let policy =
            RetryPolicy { max_attempts: 10, initial: Duration::from_millis(100), max: Duration::from_millis(1_000) };
        for attempt in 1..20 {
            let d = policy.delay(attempt);
            assert!(d <= Duration::from_millis(1_000), "attempt {attempt}: {d:?}");
        }
        let first = policy.delay(1);
        assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first), "{first:?}");
        let third = policy.delay(3);
        assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third), "{third:?}");
    }
}
