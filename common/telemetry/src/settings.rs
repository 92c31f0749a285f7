//! The `[log]` and `[observability]` sections.

use serde::{Deserialize, Serialize};
use shoal_config::SettingsError;

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

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Default filter (`RUST_LOG` syntax) when `RUST_LOG` is unset.
    pub level: String,
    /// Seconds between status lines (counters); 0 disables them.
    pub status_interval_secs: u64,
}

impl LogSettings {
    /// How often stages log their status line; `None` when
    /// `status_interval_secs` is 0.
    pub fn status_interval(&self) -> Option<std::time::Duration> {
        (self.status_interval_secs > 0).then(|| std::time::Duration::from_secs(self.status_interval_secs))
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into(), status_interval_secs: 10 }
    }
}

/// The `[observability]` section: HTTP endpoints (metrics, health) and
/// trace export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilitySettings {
    /// `host:port` of the HTTP server for `/metrics`, `/healthz` and
    /// `/readyz`; empty to disable it.
    pub listen: String,
    /// Export spans over OTLP.
    pub otlp_enabled: bool,
    /// OTLP endpoint (base URL); empty for the `OTEL_EXPORTER_OTLP_*`
    /// environment variables or the protocol's default. The environment
    /// variables win over this key.
    pub otlp_endpoint: String,
    /// `grpc` or `http/protobuf`; `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` and
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` win over this key.
    pub otlp_protocol: OtlpProtocol,
    /// `service.name` of exported spans; empty for the binary's name.
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
    /// wins over this key.
    pub service_name: String,
    /// Share of decisions traced, 0.0 to 1.0, drawn where a decision starts
    /// and followed by every later hop. `OTEL_TRACES_SAMPLER` (and
    /// `OTEL_TRACES_SAMPLER_ARG`) win over this key.
    pub sample_ratio: f64,
    /// Most decisions per second that start in this process and are traced
    /// (after `sample_ratio`); 0 for no cap. Bounds what tracing costs at
    /// full load while a quiet stream is still traced whole.
    pub max_traced_per_sec: u32,
    /// File whose first line is the bearer token `/metrics` requires
    /// (`Authorization: Bearer <token>`); empty for none. `/healthz` and
    /// `/readyz` stay open (probes carry no token).
    pub metrics_token_file: String,
    /// Environment variable holding that token instead; empty for none.
    pub metrics_token_env: String,
    /// PEM certificate chain to serve this port over HTTPS with; empty for
    /// plain HTTP. Set together with `tls_key_file`.
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`'s first certificate.
    pub tls_key_file: String,
}

impl Default for ObservabilitySettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
            otlp_enabled: false,
            otlp_endpoint: String::new(),
            otlp_protocol: OtlpProtocol::Grpc,
            service_name: String::new(),
            sample_ratio: 1.0,
            max_traced_per_sec: crate::trace::DEFAULT_MAX_TRACED_PER_SEC,
            metrics_token_file: String::new(),
            metrics_token_env: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

shoal_config::choice! {
    /// OTLP transports (`observability.otlp_protocol`).
    pub enum OtlpProtocol {
        /// OTLP over gRPC.
        Grpc = "grpc",
        /// OTLP protobuf over HTTP.
        HttpProtobuf = "http/protobuf",
    }
}

impl ObservabilitySettings {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(SettingsError::invalid(
                "observability.listen",
                format!("{:?} is not an IP address and port", self.listen),
                "ip:port, e.g. 0.0.0.0:9464, or an empty string to disable the HTTP server",
            ));
        }
        shoal_config::both_or_neither(
            ("observability.tls_cert_file", &self.tls_cert_file),
            ("observability.tls_key_file", &self.tls_key_file),
            "both observability.tls_cert_file and observability.tls_key_file (PEM files) for HTTPS, or neither",
        )?;
        if !self.metrics_token_file.is_empty() && !self.metrics_token_env.is_empty() {
            return Err(SettingsError::invalid(
                "observability.metrics_token_env",
                "is set together with observability.metrics_token_file",
                "one of them: a file or an environment variable holding the /metrics bearer token",
            ));
        }
        // `otlp_protocol` is checked as it is read (an unknown string names
        // the key and the accepted ones).
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(SettingsError::invalid(
                "observability.sample_ratio",
                format!("{} is out of range", self.sample_ratio),
                "a number from 0.0 (trace nothing) to 1.0 (trace every decision)",
            ));
        }
        if !self.otlp_endpoint.is_empty() {
            match url::Url::parse(&self.otlp_endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return Err(SettingsError::invalid(
                        "observability.otlp_endpoint",
                        format!("{:?} is not an http(s) URL", self.otlp_endpoint),
                        "http://host:port or https://host:port (empty for the OTEL_EXPORTER_OTLP_* variables)",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use shoal_config::{Validate, load_from};

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct TestSettings {
        log: LogSettings,
        observability: ObservabilitySettings,
    }

    impl Validate for TestSettings {
        fn validate(&self) -> Result<(), SettingsError> {
            self.observability.validate()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("SHOAL__OBSERVABILITY__LISTEN", "9464", "observability.listen"),
            ("SHOAL__OBSERVABILITY__OTLP_PROTOCOL", "http/json", "observability.otlp_protocol"),
            ("SHOAL__OBSERVABILITY__OTLP_ENDPOINT", "localhost:4317", "observability.otlp_endpoint"),
            ("SHOAL__OBSERVABILITY__OTLP_ENABLED", "maybe", "otlp_enabled"),
            ("SHOAL__OBSERVABILITY__SAMPLE_RATIO", "1.5", "observability.sample_ratio"),
            ("SHOAL__LOG__FORMAT", "xml", "format"),
            ("SHOAL__OBSERVABILITY__TLS_CERT_FILE", "/etc/shoal/metrics.pem", "observability.tls_key_file"),
            ("SHOAL__OBSERVABILITY__TLS_KEY_FILE", "/etc/shoal/metrics-key.pem", "observability.tls_cert_file"),
        ];
        for (var, value, key) in cases {
            let err = load_from::<TestSettings, _>(None, env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: error {err:?} does not name {key}");
        }
    }

    #[test]
    fn observability_listen_can_be_disabled_and_otlp_switched_on() {
        let s: TestSettings = load_from(
            None,
            env(&[
                ("SHOAL__OBSERVABILITY__LISTEN", ""),
                ("SHOAL__OBSERVABILITY__OTLP_ENABLED", "true"),
                ("SHOAL__OBSERVABILITY__OTLP_PROTOCOL", "http/protobuf"),
            ]),
        )
        .unwrap();
        assert_eq!(s.observability.listen, "");
        assert!(s.observability.otlp_enabled);
        assert_eq!(s.observability.otlp_protocol, OtlpProtocol::HttpProtobuf);
        let defaults: TestSettings = load_from(None, env(&[])).unwrap();
        assert_eq!(defaults.observability.listen, "0.0.0.0:9464");
        assert!(!defaults.observability.otlp_enabled);
        assert_eq!(defaults.log.format, LogFormat::Text);
    }

    #[test]
    fn one_source_for_the_metrics_token() {
        let both = env(&[
            ("SHOAL__OBSERVABILITY__METRICS_TOKEN_FILE", "/run/secrets/metrics"),
            ("SHOAL__OBSERVABILITY__METRICS_TOKEN_ENV", "SHOAL_METRICS_TOKEN"),
        ]);
        let err = load_from::<TestSettings, _>(None, both).unwrap_err().to_string();
        assert!(err.contains("observability.metrics_token_env"), "{err}");
        let one: TestSettings =
            load_from(None, env(&[("SHOAL__OBSERVABILITY__METRICS_TOKEN_ENV", "SHOAL_METRICS_TOKEN")])).unwrap();
        assert_eq!(one.observability.metrics_token_env, "SHOAL_METRICS_TOKEN");
    }
}
