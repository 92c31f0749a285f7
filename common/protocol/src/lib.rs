//! Shoal's wire contract: the versioned messages on every topic, the
//! payloads of the bundled command kinds, and the names of the record
//! headers. Serde only: no async runtime, Kafka client, HTTP or
//! OpenTelemetry, so any tool can depend on it to read or write Shoal's
//! topics.

pub mod approvals;
pub mod headers;
pub mod messages;
pub mod payloads;
