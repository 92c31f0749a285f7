//! Logging and tracing set-up shared by every Shoal binary.
//!
//! Spans are given OpenTelemetry ids (through `tracing-opentelemetry`) even
//! when nothing is exported, so trace context can travel in Kafka headers and
//! one decision stays one trace across processes.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Keeps the tracer provider alive; dropping it shuts tracing down.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Nothing is exported yet, so shutdown has nothing to flush; any error
        // here cannot be reported anywhere useful.
        let _ = self.provider.shutdown();
    }
}

/// Installs the global `tracing` subscriber writing to stderr.
///
/// `RUST_LOG` overrides `default_filter` when set. A second call (components
/// run in-process by tests) keeps the first subscriber.
pub fn init(service_name: &'static str, format: LogFormat, default_filter: &str) -> TelemetryGuard {
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer(service_name);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _already_set = match format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    TelemetryGuard { provider }
}

/// Logging only, for small CLIs (the simulator) that produce no traces.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _already_set = match format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
}
