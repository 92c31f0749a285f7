//! Names of the record headers Shoal reads and writes.
//!
//! Metadata lives in headers (not in the JSON body) so routing, tracing and
//! dead-lettering work even when the body cannot be decoded.

/// Header naming the message type (`command`, `result`, `tick`, `event`).
pub const MESSAGE_TYPE: &str = "shoal-message-type";
/// Header carrying the body's schema version.
pub const SCHEMA_VERSION: &str = "shoal-schema-version";
/// Header carrying the command id on commands and results.
pub const COMMAND_ID: &str = "shoal-command-id";
/// Header naming the producing component instance.
pub const PRODUCER: &str = "shoal-producer";

/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// W3C vendor trace state header.
pub const TRACESTATE: &str = "tracestate";

/// Headers a dead letter carries besides its original ones: why it was
/// dead-lettered and where it came from.
pub mod dead_letter {
    /// Short machine-readable reason (e.g. `malformed`).
    pub const REASON: &str = "shoal-dlq-reason";
    /// Human-readable error text.
    pub const ERROR: &str = "shoal-dlq-error";
    /// The Shoal stage that gave up (e.g. `worker`).
    pub const STAGE: &str = "shoal-dlq-stage";
    /// Topic the record was read from.
    pub const ORIGIN_TOPIC: &str = "shoal-origin-topic";
    /// Partition it was read from.
    pub const ORIGIN_PARTITION: &str = "shoal-origin-partition";
    /// Offset it was read from.
    pub const ORIGIN_OFFSET: &str = "shoal-origin-offset";
    /// How many attempts were made.
    pub const ATTEMPTS: &str = "shoal-dlq-attempts";
}
