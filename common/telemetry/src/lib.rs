//! Shoal's telemetry: logs (text or JSON, with trace ids), OTLP span
//! export, decision sampling and W3C trace context, the Prometheus metrics
//! registry, readiness checks, and the HTTP server for `/metrics`,
//! `/healthz` and `/readyz`. No Kafka here: the Kafka runtime registers its
//! counters and checks through these types.

pub mod counters;
pub mod health;
pub mod logs;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod trace;

pub use logs::{LogFormat, init, init_logging};

use std::sync::Arc;

/// The process's telemetry handle: its metrics registry, readiness checks
/// and decision sampling. Made once by the binary (see `shoal_app::main`)
/// and passed to every stage, so that several stages, or several whole
/// applications in one test process, each have their own; nothing here is a
/// process-wide global (the `tracing` subscriber, which `tracing` makes
/// global, excepted).
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Metrics served at `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Checks served at `/readyz`.
    pub health: Arc<health::Health>,
    /// Which decisions are traced.
    pub sampler: Arc<trace::Sampler>,
}

impl Telemetry {
    /// A handle sampling as `sampling` says, with empty metrics and checks.
    pub fn new(sampling: trace::Sampling) -> Self {
        let metrics = Arc::new(metrics::Metrics::new());
        let sampler = Arc::new(trace::Sampler::new(sampling));
        sampler.register_metrics(&metrics);
        Self { metrics, health: Arc::default(), sampler }
    }

    /// A handle that traces nothing (for tests and tools).
    pub fn untraced() -> Self {
        Self::new(trace::Sampling::OFF)
    }
}
