//! Handling of one consumed command: decode, check the deadline, run the
//! handler, publish the result (or a dead letter).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use shoal_common::kafka::dlq::DeadLetter;
use shoal_common::kafka::headers::HeaderView;
use shoal_common::kafka::outputs::{MessageMeta, Outputs};
use shoal_common::kafka::pipeline::Processor;
use shoal_common::messages::{Command, CommandResult, ResultStatus, SCHEMA_VERSION, WireMessage as _};
use tracing::Instrument;

use crate::handlers::Registry;

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
    /// Records that could not be decoded (sent to the dead-letter topic).
    pub undecodable: AtomicU64,
    /// Records sent to the dead-letter topic for any reason.
    pub dead_lettered: AtomicU64,
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
    /// Handler time limit.
    pub handler_timeout: Duration,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Group counters, for status lines.
    pub group: Arc<shoal_common::kafka::consumer::GroupStats>,
}

impl CommandProcessor {
    /// Runs the handler, catching panics and enforcing the time limit.
    async fn execute(&self, command: &Command) -> (ResultStatus, serde_json::Value) {
        if let Some(deadline) = command.deadline
            && Utc::now() > deadline
        {
            return (
                ResultStatus::Expired,
                serde_json::json!({"reason": "deadline passed before execution", "deadline": deadline}),
            );
        }
        let Some(handler) = self.registry.get(&command.kind) else {
            return (
                ResultStatus::Unsupported,
                serde_json::json!({"error": format!("no handler for kind {:?}; this worker handles {:?}", command.kind, self.registry.kinds())}),
            );
        };
        let owned = command.clone();
        // A separate task isolates a panicking handler from the worker.
        let task = tokio::spawn(async move { handler.handle(&owned).await }.in_current_span());
        match tokio::time::timeout(self.handler_timeout, task).await {
            Ok(Ok(Ok(output))) => (ResultStatus::Succeeded, output),
            Ok(Ok(Err(error))) => (ResultStatus::Failed, serde_json::json!({"error": error.to_string()})),
            Ok(Err(join_error)) => {
                (ResultStatus::Failed, serde_json::json!({"error": format!("handler panicked: {join_error}")}))
            }
            Err(_) => (
                ResultStatus::Failed,
                serde_json::json!({"error": format!("handler timed out after {:?}", self.handler_timeout)}),
            ),
        }
    }
}

impl Processor for CommandProcessor {
    async fn process(&mut self, message: &BorrowedMessage<'_>, out: &mut Outputs) {
        let command = match Command::decode(message.payload().unwrap_or_default()) {
            Ok(command) => command,
            Err(error) => {
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                let letter =
                    DeadLetter { reason: error.reason(), error: error.to_string(), stage: "worker", attempts: 1 };
                out.dead_letter(&self.dlq_topic, message, letter);
                return;
            }
        };
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
        let (status, output) = self.execute(&command).instrument(span.clone()).await;
        let result = CommandResult {
            schema_version: SCHEMA_VERSION,
            command_id: command.id,
            kind: command.kind.clone(),
            key: command.key.clone(),
            seq: command.seq,
            worker_id: self.worker_id.clone(),
            status,
            output,
            started_at,
            finished_at: Utc::now(),
        };
        let meta = MessageMeta { message_type: "result", producer_id: &self.worker_id, command_id: Some(command.id) };
        out.message(&self.results_topic, &command.key, &meta, &result, &span);
        self.stats.count_status(status);
        // Logged outside the span so the line stays readable.
        tracing::info!(
            command_id = %command.id, kind = %command.kind, key = %command.key, seq = command.seq,
            status = status.as_str(), handler_ms = (result.finished_at - started_at).num_milliseconds(),
            "command handled"
        );
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
            undecodable = s.undecodable.load(Ordering::Relaxed),
            dead_lettered = s.dead_lettered.load(Ordering::Relaxed),
            assigned_partitions = self.group.assigned.load(Ordering::Relaxed),
            rebalances = self.group.rebalances.load(Ordering::Relaxed),
            "worker status"
        );
    }
}
