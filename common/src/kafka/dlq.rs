//! Dead letters: records that cannot be handled for good are published to
//! the dead-letter topic with their original key, body and headers, plus
//! headers saying why and where they came from (see
//! [`Outputs::dead_letter`](super::outputs::Outputs::dead_letter)). Nothing is
//! silently dropped.

/// Header: short machine-readable reason (e.g. `malformed`).
pub const REASON: &str = "shoal-dlq-reason";
/// Header: human-readable error text.
pub const ERROR: &str = "shoal-dlq-error";
/// Header: the Shoal stage that gave up (e.g. `worker`).
pub const STAGE: &str = "shoal-dlq-stage";
/// Header: topic the record was read from.
pub const ORIGIN_TOPIC: &str = "shoal-origin-topic";
/// Header: partition it was read from.
pub const ORIGIN_PARTITION: &str = "shoal-origin-partition";
/// Header: offset it was read from.
pub const ORIGIN_OFFSET: &str = "shoal-origin-offset";
/// Header: how many attempts were made.
pub const ATTEMPTS: &str = "shoal-dlq-attempts";

/// Why a record is being dead-lettered.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// Short reason code.
    pub reason: &'a str,
    /// Error text.
    pub error: String,
    /// Stage name.
    pub stage: &'a str,
    /// Attempts made.
    pub attempts: u32,
}
