//! Shoal's telemetry: logs (text or JSON, with trace ids), OTLP span
//! export, decision sampling and W3C trace context, the Prometheus metrics
//! registry, readiness checks, and the HTTP server for `/metrics`,
//! `/healthz` and `/readyz`. No Kafka here: the Kafka runtime registers its
//! counters and checks through these types.

pub mod health;
pub mod logs;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod trace;

pub use logs::{LogFormat, init, init_logging};
