//! Shared building blocks of Shoal: versioned message types, configuration,
//! Kafka client plumbing, telemetry and process lifecycle.

pub mod app;
pub mod kafka;
pub mod messages;
pub mod observability;
pub mod payloads;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
