//! The `[shutdown]` section, and [`app_settings!`](crate::app_settings),
//! which gives every binary's settings the sections all binaries share.

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
        shoal_config::in_range("shutdown.timeout_ms", self.timeout_ms, 100..=600_000, "milliseconds")
    }
}

/// Declares a binary's settings struct: the sections every binary shares
/// (`kafka`, `topics`, `log`, `shutdown`, `delivery`, `observability`), then
/// the binary's own fields. Generates the struct (serde, every field
/// defaulted, unknown keys refused), its [`AppSettings`](crate::AppSettings)
/// and `validate_shared`, which checks the shared sections.
///
/// The expanding crate depends on `serde`, `shoal-kafka` and
/// `shoal-telemetry`, whose section types the struct holds.
#[macro_export]
macro_rules! app_settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        $vis struct $name {
            /// Kafka connection.
            pub kafka: ::shoal_kafka::settings::KafkaSettings,
            /// Topic names and partition counts.
            pub topics: ::shoal_kafka::settings::TopicsSettings,
            /// Logging.
            pub log: ::shoal_telemetry::settings::LogSettings,
            /// Graceful shutdown bound.
            pub shutdown: $crate::settings::ShutdownSettings,
            /// Exactly-once or at-least-once delivery.
            pub delivery: ::shoal_kafka::settings::DeliverySettings,
            /// Metrics, health endpoints and trace export.
            pub observability: ::shoal_telemetry::settings::ObservabilitySettings,
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }

        impl $name {
            /// Checks the shared sections, in the order they are declared
            /// (`log` has nothing to check).
            pub fn validate_shared(&self) -> ::std::result::Result<(), ::shoal_config::SettingsError> {
                self.kafka.validate()?;
                self.topics.validate()?;
                self.shutdown.validate()?;
                self.delivery.validate()?;
                self.observability.validate()
            }

            /// The environment of this application's stages: its cluster,
            /// delivery, status interval and shutdown bound, for `instance`.
            pub fn stage_env(
                &self,
                instance: &str,
                telemetry: &::shoal_telemetry::Telemetry,
            ) -> ::shoal_kafka::stage::StageEnv {
                let (kafka, delivery, log) = (&self.kafka, &self.delivery, &self.log);
                ::shoal_kafka::stage::StageEnv::new(kafka, delivery, instance, log, self.shutdown.timeout(), telemetry)
            }
        }

        impl $crate::AppSettings for $name {
            fn log(&self) -> &::shoal_telemetry::settings::LogSettings {
                &self.log
            }

            fn shutdown(&self) -> &$crate::settings::ShutdownSettings {
                &self.shutdown
            }

            fn observability(&self) -> &::shoal_telemetry::settings::ObservabilitySettings {
                &self.observability
            }
        }
    };
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
