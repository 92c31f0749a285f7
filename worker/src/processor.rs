//! Handling of consumed commands: decode, check the deadline, run the
//! handler with retries, publish the result (and a dead letter when a
//! command fails for good).
//!
//! A batch of records is handled key by key: the commands of one key run one
//! after another in the order they were consumed (which is `seq` order), and
//! different keys run concurrently up to `worker.max_concurrency`, so a key
//! waiting on retries does not hold up the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use rand::Rng;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use shoal_common::kafka::dlq::DeadLetter;
use shoal_common::kafka::headers::HeaderView;
use shoal_common::kafka::outputs::{MessageMeta, Outputs};
use shoal_common::kafka::pipeline::Processor;
use shoal_common::messages::{Command, CommandResult, ResultStatus, SCHEMA_VERSION, WireMessage as _};
use tracing::Instrument;

use crate::handlers::{HandlerError, Registry};

/// What this worker has done; read by status lines and tests.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Commands handled (result produced; with exactly-once delivery it
    /// becomes visible when its transaction commits).
    pub handled: AtomicU64,
    /// Results with status `succeeded`.
    pub succeeded: AtomicU64,
    /// Results with status `failed`.
    pub failed: AtomicU64,
    /// Results with status `expired`.
    pub expired: AtomicU64,
    /// Results with status `unsupported`.
    pub unsupported: AtomicU64,
    /// Handler attempts retried after a transient failure.
    pub retries: AtomicU64,
    /// Records that could not be decoded (sent to the dead-letter topic).
    pub undecodable: AtomicU64,
    /// Records sent to the dead-letter topic for any reason.
    pub dead_lettered: AtomicU64,
    /// Commands whose `seq` skipped ahead of the key's previous one.
    pub sequence_gaps: AtomicU64,
    /// Commands whose `seq` was not above the key's previous one (a replay
    /// or a restarted issuer).
    pub sequence_regressions: AtomicU64,
}

/// Last `seq` seen per key, to report gaps and regressions. It only knows
/// keys this worker has handled since the last rebalance: after one, a key
/// may come from another owner, so the history is dropped rather than
/// misread.
#[derive(Debug, Default)]
pub struct SequenceCheck {
    last: HashMap<String, u64>,
    rebalances_seen: u64,
}

/// Keys remembered at most; beyond it the history starts again.
const MAX_TRACKED_KEYS: usize = 100_000;

impl SequenceCheck {
    fn check(&mut self, command: &Command, rebalances: u64, stats: &WorkerStats) {
        if rebalances != self.rebalances_seen || self.last.len() >= MAX_TRACKED_KEYS {
            self.last.clear();
            self.rebalances_seen = rebalances;
        }
        if let Some(previous) = self.last.insert(command.key.clone(), command.seq) {
            if command.seq > previous + 1 {
                stats.sequence_gaps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %command.key, previous, seq = command.seq, command_id = %command.id, "sequence gap: commands of this key are missing");
            } else if command.seq <= previous {
                stats.sequence_regressions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %command.key, previous, seq = command.seq, command_id = %command.id, "sequence regression: replayed command or restarted issuer");
            }
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
    status: ResultStatus,
    output: serde_json::Value,
    attempts: u32,
    /// Set when the command failed for good and must be dead-lettered.
    dead_letter: Option<&'static str>,
}

/// The worker's [`Processor`].
#[derive(Debug)]
pub struct CommandProcessor {
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
    /// Keys handled concurrently.
    pub max_concurrency: usize,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Group counters, for status lines.
    pub group: Arc<shoal_common::kafka::consumer::GroupStats>,
    /// Per-key sequence check.
    pub sequences: SequenceCheck,
}

impl CommandProcessor {
    /// Runs the handler with retries, catching panics and enforcing the
    /// time limit on each attempt.
    async fn execute(&self, command: &Command) -> Execution {
        if let Some(deadline) = command.deadline
            && Utc::now() > deadline
        {
            let output = serde_json::json!({"reason": "deadline passed before execution", "deadline": deadline});
            return Execution { status: ResultStatus::Expired, output, attempts: 0, dead_letter: None };
        }
        let Some(handler) = self.registry.get(&command.kind) else {
            let error =
                format!("no handler for kind {:?}; this worker handles {:?}", command.kind, self.registry.kinds());
            let output = serde_json::json!({ "error": error });
            return Execution {
                status: ResultStatus::Unsupported,
                output,
                attempts: 0,
                dead_letter: Some("unsupported_kind"),
            };
        };
        let mut attempt = 1;
        loop {
            let owned = command.clone();
            let handler = handler.clone();
            // A separate task isolates a panicking handler from the worker.
            let task = tokio::spawn(async move { handler.handle(&owned, attempt).await }.in_current_span());
            let outcome = match tokio::time::timeout(self.handler_timeout, task).await {
                Ok(Ok(result)) => result,
                Ok(Err(join_error)) => Err(HandlerError::Rejected(format!("handler panicked: {join_error}"))),
                Err(_) => Err(HandlerError::Retryable(format!("handler timed out after {:?}", self.handler_timeout))),
            };
            match outcome {
                Ok(output) => {
                    return Execution { status: ResultStatus::Succeeded, output, attempts: attempt, dead_letter: None };
                }
                Err(error) if error.is_retryable() && attempt < self.retry.max_attempts => {
                    let delay = self.retry.delay(attempt);
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(command_id = %command.id, attempt, ?delay, %error, "transient failure; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => {
                    let reason = if error.is_retryable() { "retries_exhausted" } else { "handler_failed" };
                    let output = serde_json::json!({"error": error.to_string(), "attempts": attempt});
                    return Execution {
                        status: ResultStatus::Failed,
                        output,
                        attempts: attempt,
                        dead_letter: Some(reason),
                    };
                }
            }
        }
    }

    /// Handles one decoded command into `out`.
    async fn handle(&self, message: &OwnedMessage, command: Command, out: &mut Outputs) {
        let span = tracing::info_span!(
            "process command",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation = "process",
            messaging.destination.name = message.topic(),
            messaging.kafka.partition = message.partition(),
            messaging.kafka.offset = message.offset(),
            command.id = %command.id,
            command.kind = %command.kind,
            command.key = %command.key,
            command.seq = command.seq,
        );
        HeaderView(message.headers()).set_parent_of(&span);
        let started_at = Utc::now();
        let execution = self.execute(&command).instrument(span.clone()).await;
        let status = execution.status;
        let result = CommandResult {
            schema_version: SCHEMA_VERSION,
            command_id: command.id,
            kind: command.kind.clone(),
            key: command.key.clone(),
            seq: command.seq,
            worker_id: self.worker_id.clone(),
            status,
            output: execution.output,
            started_at,
            finished_at: Utc::now(),
        };
        let meta = MessageMeta { message_type: "result", producer_id: &self.worker_id, command_id: Some(command.id) };
        out.message(&self.results_topic, &command.key, &meta, &result, &span);
        if let Some(reason) = execution.dead_letter {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            let error = result.output.get("error").and_then(|e| e.as_str()).unwrap_or(reason).to_string();
            let letter = DeadLetter { reason, error, stage: "worker", attempts: execution.attempts };
            out.dead_letter(&self.dlq_topic, message, letter);
        }
        self.stats.count_status(status);
        // Logged outside the span so the line stays readable.
        tracing::info!(
            command_id = %command.id, kind = %command.kind, key = %command.key, seq = command.seq,
            status = status.as_str(), attempts = execution.attempts,
            handler_ms = (result.finished_at - started_at).num_milliseconds(),
            "command handled"
        );
    }
}

impl Processor for CommandProcessor {
    async fn process(&mut self, message: &OwnedMessage, out: &mut Outputs) {
        match Command::decode(message.payload().unwrap_or_default()) {
            Ok(command) => {
                let rebalances = self.group.rebalances.load(Ordering::Relaxed);
                self.sequences.check(&command, rebalances, &self.stats);
                self.handle(message, command, out).await;
            }
            Err(error) => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                let letter =
                    DeadLetter { reason: error.reason(), error: error.to_string(), stage: "worker", attempts: 1 };
                out.dead_letter(&self.dlq_topic, message, letter);
            }
        }
    }

    async fn process_batch(&mut self, records: &[OwnedMessage]) -> Vec<Outputs> {
        let mut outputs: Vec<Outputs> = records.iter().map(|_| Outputs::new()).collect();
        // Group by key, keeping consumption order within each key.
        let mut chains: Vec<Vec<(usize, Command)>> = Vec::new();
        let mut chain_of_key: HashMap<String, usize> = HashMap::new();
        for (index, message) in records.iter().enumerate() {
            match Command::decode(message.payload().unwrap_or_default()) {
                Ok(command) => {
                    let rebalances = self.group.rebalances.load(Ordering::Relaxed);
                    self.sequences.check(&command, rebalances, &self.stats);
                    let chain = *chain_of_key.entry(command.key.clone()).or_insert_with(|| {
                        chains.push(Vec::new());
                        chains.len() - 1
                    });
                    chains[chain].push((index, command));
                }
                Err(error) => {
                    self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    let letter =
                        DeadLetter { reason: error.reason(), error: error.to_string(), stage: "worker", attempts: 1 };
                    outputs[index].dead_letter(&self.dlq_topic, message, letter);
                }
            }
        }
        let this = &*self;
        let done: Vec<Vec<(usize, Outputs)>> = futures::stream::iter(chains)
            .map(|chain| async move {
                let mut produced = Vec::with_capacity(chain.len());
                for (index, command) in chain {
                    let mut out = Outputs::new();
                    this.handle(&records[index], command, &mut out).await;
                    produced.push((index, out));
                }
                produced
            })
            .buffer_unordered(self.max_concurrency)
            .collect()
            .await;
        for (index, out) in done.into_iter().flatten() {
            outputs[index] = out;
        }
        outputs
    }

    fn status(&self) {
        let s = &self.stats;
        tracing::info!(
            worker_id = %self.worker_id,
            handled = s.handled.load(Ordering::Relaxed),
            succeeded = s.succeeded.load(Ordering::Relaxed),
            failed = s.failed.load(Ordering::Relaxed),
            expired = s.expired.load(Ordering::Relaxed),
            unsupported = s.unsupported.load(Ordering::Relaxed),
            retries = s.retries.load(Ordering::Relaxed),
            sequence_gaps = s.sequence_gaps.load(Ordering::Relaxed),
            sequence_regressions = s.sequence_regressions.load(Ordering::Relaxed),
            undecodable = s.undecodable.load(Ordering::Relaxed),
            dead_lettered = s.dead_lettered.load(Ordering::Relaxed),
            assigned_partitions = self.group.assigned.load(Ordering::Relaxed),
            rebalances = self.group.rebalances.load(Ordering::Relaxed),
            "worker status"
        );
    }
}

#[cfg(test)]
mod tests {
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
        for (key, seq) in [("a", 1), ("a", 2), ("b", 7), ("a", 4), ("a", 4), ("b", 3)] {
            check.check(&command(key, seq), 0, &stats);
        }
        assert_eq!(stats.sequence_gaps.load(Ordering::Relaxed), 1, "a: 2 -> 4");
        assert_eq!(stats.sequence_regressions.load(Ordering::Relaxed), 2, "a: 4 -> 4, b: 7 -> 3");
        // After a rebalance the key may have moved; no false report.
        check.check(&command("a", 9), 1, &stats);
        assert_eq!(stats.sequence_gaps.load(Ordering::Relaxed), 1);
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
