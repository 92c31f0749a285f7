//! The worker's configuration (see the README's configuration reference).

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use shoal_app::settings::ShutdownSettings;
use shoal_config::{SettingsError, Validate};
use shoal_kafka::settings::{DeliverySettings, KafkaSettings, TopicsSettings};
use shoal_telemetry::settings::{LogSettings, ObservabilitySettings};

/// Everything `shoal-worker` reads at start-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Topic names and partition counts.
    pub topics: TopicsSettings,
    /// Logging.
    pub log: LogSettings,
    /// Graceful shutdown bound.
    pub shutdown: ShutdownSettings,
    /// Exactly-once or at-least-once delivery.
    pub delivery: DeliverySettings,
    /// Metrics, health endpoints and trace export.
    pub observability: ObservabilitySettings,
    /// Worker behaviour.
    pub worker: WorkerSection,
    /// The orchestrator's sections are accepted and ignored, so one file or
    /// one environment can configure both binaries.
    #[serde(skip_serializing)]
    pub orchestrator: IgnoredAny,
    /// See `orchestrator`.
    #[serde(skip_serializing)]
    pub feed: IgnoredAny,
    /// See `orchestrator`.
    #[serde(skip_serializing)]
    pub rules: IgnoredAny,
    /// See `orchestrator`.
    #[serde(skip_serializing)]
    pub results: IgnoredAny,
}

/// The `[worker]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// This instance's identity, written into every result. Defaults to the
    /// host name (the pod name on Kubernetes) or `worker-<pid>`.
    pub id: String,
    /// Consumer group shared by all workers.
    pub group_id: String,
    /// How often completed offsets are committed, milliseconds.
    pub commit_interval_ms: u64,
    /// A handler running longer than this fails the attempt, milliseconds
    /// (a time-out is retried like any transient failure).
    pub handler_timeout_ms: u64,
    /// Attempts per command before a transient failure becomes final (and
    /// the command is dead-lettered).
    pub max_attempts: u32,
    /// First retry delay, milliseconds; doubles per attempt, with jitter.
    pub retry_initial_ms: u64,
    /// Largest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// Keys handled concurrently; commands of one key always run one after
    /// another in `seq` order.
    pub max_concurrency: usize,
    /// Commands read but not finished (running or waiting behind their key);
    /// reading pauses at this bound. At most 512: the commit metadata names
    /// unfinished commands and must fit Kafka's 4 KiB limit.
    pub max_in_flight: usize,
    /// At-least-once only: how many command ids with results the worker
    /// remembers to skip repeats (read from the results topic's tail when
    /// its partitions change).
    pub dedupe_window: usize,
    /// Register the diagnostic `probe` handler (for rehearsing failures).
    pub probe_handler: bool,
}

impl Default for WorkerSection {
    fn default() -> Self {
        let id = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| format!("worker-{}", std::process::id()));
        Self {
            id,
            group_id: "shoal-workers".into(),
            commit_interval_ms: 1_000,
            handler_timeout_ms: 5_000,
            max_attempts: 5,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            max_concurrency: 16,
            max_in_flight: 256,
            dedupe_window: 100_000,
            probe_handler: false,
        }
    }
}

impl shoal_app::AppSettings for WorkerSettings {
    fn log(&self) -> &LogSettings {
        &self.log
    }

    fn shutdown(&self) -> &ShutdownSettings {
        &self.shutdown
    }

    fn observability(&self) -> &ObservabilitySettings {
        &self.observability
    }
}

impl Validate for WorkerSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        self.topics.validate()?;
        self.shutdown.validate()?;
        self.delivery.validate()?;
        self.observability.validate()?;
        let w = &self.worker;
        if w.id.trim().is_empty() {
            return Err(SettingsError::invalid("worker.id", "empty", "a non-empty identity, e.g. worker-1"));
        }
        if w.group_id.trim().is_empty() {
            return Err(SettingsError::invalid("worker.group_id", "empty", "a consumer group name"));
        }
        if !(10..=60_000).contains(&w.commit_interval_ms) {
            return Err(SettingsError::invalid(
                "worker.commit_interval_ms",
                w.commit_interval_ms.to_string(),
                "milliseconds between 10 and 60000",
            ));
        }
        if !(1..=600_000).contains(&w.handler_timeout_ms) {
            return Err(SettingsError::invalid(
                "worker.handler_timeout_ms",
                w.handler_timeout_ms.to_string(),
                "milliseconds between 1 and 600000",
            ));
        }
        if !(1..=100).contains(&w.max_attempts) {
            return Err(SettingsError::invalid(
                "worker.max_attempts",
                w.max_attempts.to_string(),
                "an integer between 1 and 100",
            ));
        }
        if w.retry_initial_ms == 0 || w.retry_initial_ms > w.retry_max_ms {
            return Err(SettingsError::invalid(
                "worker.retry_initial_ms",
                format!("{} (max {})", w.retry_initial_ms, w.retry_max_ms),
                "milliseconds > 0 and <= worker.retry_max_ms",
            ));
        }
        if !(1..=10_000).contains(&w.max_concurrency) {
            return Err(SettingsError::invalid(
                "worker.max_concurrency",
                w.max_concurrency.to_string(),
                "an integer between 1 and 10000",
            ));
        }
        let max_in_flight = shoal_kafka::pipeline::MAX_IN_FLIGHT;
        if !(1..=max_in_flight).contains(&w.max_in_flight) {
            return Err(SettingsError::invalid(
                "worker.max_in_flight",
                w.max_in_flight.to_string(),
                format!("an integer between 1 and {max_in_flight}"),
            ));
        }
        if !(1..=10_000_000).contains(&w.dedupe_window) {
            return Err(SettingsError::invalid(
                "worker.dedupe_window",
                w.dedupe_window.to_string(),
                "an integer between 1 and 10000000",
            ));
        }
        Ok(())
    }
}
