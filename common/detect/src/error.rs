//! The crate's error type: only settings can be invalid; observing data never fails.

use thiserror::Error;

/// Why a set of detector settings was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DetectError {
    /// A setting is out of its allowed range.
    #[error("invalid setting `{field}`: {reason}")]
    InvalidSetting {
        /// The setting's field name, as spelt in the settings struct.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

impl DetectError {
    /// Builds an [`DetectError::InvalidSetting`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidSetting { field, reason: reason.into() }
    }
}

/// Formats a number for a human-readable reason: fixed-point with `decimals`
/// places for ordinary magnitudes, scientific notation for huge or tiny ones,
/// so a reason never carries hundreds of digits.
pub(crate) fn num(x: f64, decimals: usize) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e9).contains(&a) { format!("{x:.decimals$e}") } else { format!("{x:.decimals$}") }
}
