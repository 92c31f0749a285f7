//! The `[shutdown]` section.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_config::SettingsError;

/// Shutdown behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSettings {
    /// Upper bound on a graceful shutdown, milliseconds; past it the process
    /// exits anyway (non-zero).
    pub timeout_ms: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self { timeout_ms: 10_000 }
    }
}

impl ShutdownSettings {
    /// The bound as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the section.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(100..=600_000).contains(&self.timeout_ms) {
            return Err(SettingsError::invalid(
                "shutdown.timeout_ms",
                format!("{}", self.timeout_ms),
                "milliseconds between 100 and 600000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_checked_and_named() {
        assert!(ShutdownSettings::default().validate().is_ok());
        let err = ShutdownSettings { timeout_ms: 5 }.validate().unwrap_err().to_string();
        assert!(err.contains("shutdown.timeout_ms"), "{err}");
        assert_eq!(ShutdownSettings { timeout_ms: 1500 }.timeout(), Duration::from_millis(1500));
    }
}
