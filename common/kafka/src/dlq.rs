//! Dead letters: records that cannot be handled for good are published to
//! the dead-letter topic with their original key, body and headers, plus
//! headers saying why and where they came from (see
//! [`Outputs::dead_letter`](super::outputs::Outputs::dead_letter)). Nothing is
//! silently dropped.

pub use shoal_protocol::headers::dead_letter::*;

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
