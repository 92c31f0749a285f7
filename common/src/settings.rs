//! Layered configuration: built-in defaults, then an optional TOML file, then
//! environment variables (`SHOAL__SECTION__KEY`), validated into typed structs.
//!
//! Every binary has its own settings struct; the sections they share (Kafka,
//! topics, logging, shutdown) live here.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::telemetry::LogFormat;

/// Prefix of environment variables that override configuration.
pub const ENV_PREFIX: &str = "SHOAL";
/// Separator between nesting levels in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// A configuration problem, always naming the key and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value failed validation after parsing.
    #[error("invalid configuration value for `{key}`: {message} (expected {expected})")]
    Invalid {
        /// Dotted key, e.g. `kafka.bootstrap_servers`.
        key: String,
        /// What is wrong with the value.
        message: String,
        /// The expected form.
        expected: String,
    },
    /// The layered sources could not be read or did not deserialize.
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
}

impl SettingsError {
    /// Builds an [`SettingsError::Invalid`].
    pub fn invalid(key: impl Into<String>, message: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), message: message.into(), expected: expected.into() }
    }
}

/// Implemented by each binary's settings struct.
pub trait Validate {
    /// Dotted keys whose environment values are comma-separated lists.
    const LIST_KEYS: &'static [&'static str] = &[];

    /// Checks cross-field rules and value ranges that serde cannot express.
    fn validate(&self) -> Result<(), SettingsError>;
}

/// Loads `T` from defaults (`T::default()`), then `file` if given (must exist)
/// or `shoal.toml` in the working directory if present, then the environment.
pub fn load<T>(file: Option<&Path>) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    load_from(file, std::env::vars())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_from<T, I>(file: Option<&Path>, env: I) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
    I: IntoIterator<Item = (String, String)>,
{
    let defaults = config::Config::try_from(&T::default())?;
    let mut builder = config::Config::builder().add_source(defaults);
    builder = match file {
        Some(path) => builder.add_source(config::File::from(path).required(true)),
        None => builder.add_source(config::File::with_name("shoal.toml").required(false)),
    };
    let env_map: config::Map<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}"))).collect();
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .try_parsing(true)
        .source(Some(env_map));
    if !T::LIST_KEYS.is_empty() {
        environment = environment.list_separator(",");
        for key in T::LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
    }
    builder = builder.add_source(environment);
    let settings: T = builder.build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// The settings as JSON with secret-looking values (passwords, secrets,
/// tokens, private keys) replaced, for `--print-config` and logs.
pub fn redacted<T: Serialize>(settings: &T) -> serde_json::Value {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    let k = key.to_ascii_lowercase();
                    let secret = ["password", "secret", "token", "key.pem", "private"].iter().any(|s| k.contains(s));
                    if secret && v.is_string() {
                        *v = serde_json::Value::String("<redacted>".into());
                    } else if k == "headers"
                        && let Some(headers) = v.as_object_mut()
                    {
                        // Extra handshake headers carry credentials (API keys,
                        // bearer tokens): keep the names, hide every value.
                        for value in headers.values_mut() {
                            *value = serde_json::Value::String("<redacted>".into());
                        }
                    } else {
                        walk(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(settings).unwrap_or(serde_json::Value::Null);
    walk(&mut value);
    value
}

/// Connection to the Kafka cluster, shared by every client Shoal creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    /// Consumer group protocol: `classic` (default) or `consumer` (KIP-848).
    pub group_protocol: String,
    /// Consumer session timeout, milliseconds.
    pub session_timeout_ms: u32,
    /// Producer linger, milliseconds: how long to wait to fill a batch.
    pub linger_ms: u32,
    /// Producer delivery timeout, milliseconds (`message.timeout.ms`).
    pub message_timeout_ms: u32,
    /// Raw librdkafka properties applied last. Keys may use `_` for `.`
    /// (so environment variables can set them).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            security_protocol: "plaintext".into(),
            group_protocol: "classic".into(),
            session_timeout_ms: 10_000,
            linger_ms: 5,
            message_timeout_ms: 30_000,
            options: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    /// Checks the section, naming keys under `kafka.`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.bootstrap_servers.trim().is_empty()
            || self.bootstrap_servers.split(',').any(|s| !is_host_port(s.trim()))
        {
            return Err(SettingsError::invalid(
                "kafka.bootstrap_servers",
                format!("{:?} is not a list of host:port", self.bootstrap_servers),
                "comma-separated host:port pairs, e.g. 127.0.0.1:9092",
            ));
        }
        one_of(
            "kafka.security_protocol",
            &self.security_protocol,
            &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"],
        )?;
        one_of("kafka.group_protocol", &self.group_protocol, &["classic", "consumer"])?;
        if self.session_timeout_ms < 1_000 {
            return Err(SettingsError::invalid(
                "kafka.session_timeout_ms",
                format!("{} is too small", self.session_timeout_ms),
                "milliseconds >= 1000",
            ));
        }
        Ok(())
    }

    /// Raw options with `_` turned into `.` (librdkafka names use dots only).
    pub fn normalised_options(&self) -> impl Iterator<Item = (String, &str)> {
        self.options.iter().map(|(k, v)| (k.replace('_', "."), v.as_str()))
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// Checks that `value` is one of `allowed`.
pub fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), SettingsError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(SettingsError::invalid(
            key,
            format!("{value:?} is not recognised"),
            format!("one of {}", allowed.join(", ")),
        ))
    }
}

/// One topic's name and partition count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Topic name.
    pub name: String,
    /// Partitions to create it with (an existing topic is left as it is).
    pub partitions: i32,
    /// Replication factor to create it with.
    pub replication: i32,
}

impl TopicSettings {
    fn new(name: &str, partitions: i32) -> Self {
        Self { name: name.into(), partitions, replication: 1 }
    }

    fn validate(&self, key: &str) -> Result<(), SettingsError> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 249
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_name {
            return Err(SettingsError::invalid(
                format!("topics.{key}.name"),
                format!("{:?} is not a valid Kafka topic name", self.name),
                "1-249 characters of [a-zA-Z0-9._-]",
            ));
        }
        if self.partitions < 1 {
            return Err(SettingsError::invalid(
                format!("topics.{key}.partitions"),
                format!("{}", self.partitions),
                "an integer >= 1",
            ));
        }
        if self.replication < 1 {
            return Err(SettingsError::invalid(
                format!("topics.{key}.replication"),
                format!("{}", self.replication),
                "an integer >= 1",
            ));
        }
        Ok(())
    }
}

/// The topics Shoal uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsSettings {
    /// Normalised market ticks, keyed by symbol.
    pub ticks: TopicSettings,
    /// Business events, keyed by entity.
    pub events: TopicSettings,
    /// Commands, keyed by entity.
    pub commands: TopicSettings,
    /// Results, keyed like their commands.
    pub results: TopicSettings,
    /// Dead letters: anything undecodable or failed for good.
    pub dlq: TopicSettings,
    /// Create missing topics at start-up through the admin API.
    pub create: bool,
}

impl Default for TopicsSettings {
    fn default() -> Self {
        Self {
            ticks: TopicSettings::new("shoal.ticks", 6),
            events: TopicSettings::new("shoal.events", 6),
            commands: TopicSettings::new("shoal.commands", 12),
            results: TopicSettings::new("shoal.results", 6),
            dlq: TopicSettings::new("shoal.dlq", 1),
            create: true,
        }
    }
}

impl TopicsSettings {
    /// Checks every topic.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (key, topic) in self.all() {
            topic.validate(key)?;
        }
        Ok(())
    }

    /// All topics with their config key.
    pub fn all(&self) -> [(&'static str, &TopicSettings); 5] {
        [
            ("ticks", &self.ticks),
            ("events", &self.events),
            ("commands", &self.commands),
            ("results", &self.results),
            ("dlq", &self.dlq),
        ]
    }
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

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into(), status_interval_secs: 10 }
    }
}

/// How results and commands are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Outputs and consumed offsets are committed in one Kafka transaction:
    /// no loss, no duplicates, for `read_committed` readers.
    ExactlyOnce,
    /// Outputs are acknowledged before their input's offset is committed: no
    /// loss; a crash can repeat outputs.
    AtLeastOnce,
}

/// The `[delivery]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// `exactly_once` or `at_least_once`.
    pub mode: DeliveryMode,
    /// Prefix of transactional ids; each stage instance appends its stage and
    /// instance id, which must be stable across restarts (so a restarted
    /// instance fences its zombie).
    pub transactional_id_prefix: String,
    /// Most records per transaction.
    pub transaction_max_records: usize,
    /// Longest a transaction collects records before committing, ms.
    pub transaction_max_ms: u64,
    /// Bound on each transactional call (init, offsets, commit, abort), ms.
    pub transaction_call_timeout_ms: u64,
    /// Append a JSON line per transaction (committed, aborted, or unknown
    /// outcome, with a digest of each output) to this file; empty for none.
    /// The chaos checker reads it to prove aborted results are never seen.
    pub history_path: String,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::ExactlyOnce,
            transactional_id_prefix: "shoal".into(),
            // Large enough that a backlog amortises the per-transaction cost
            // (about 100 ms of commit round trips); at low rates the time
            // bound closes the batch first.
            transaction_max_records: 5_000,
            transaction_max_ms: 100,
            transaction_call_timeout_ms: 10_000,
            history_path: String::new(),
        }
    }
}

impl DeliverySettings {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.transactional_id_prefix.trim().is_empty() {
            return Err(SettingsError::invalid("delivery.transactional_id_prefix", "empty", "a non-empty prefix"));
        }
        if !(1..=100_000).contains(&self.transaction_max_records) {
            return Err(SettingsError::invalid(
                "delivery.transaction_max_records",
                self.transaction_max_records.to_string(),
                "an integer between 1 and 100000",
            ));
        }
        if !(1..=60_000).contains(&self.transaction_max_ms) {
            return Err(SettingsError::invalid(
                "delivery.transaction_max_ms",
                self.transaction_max_ms.to_string(),
                "milliseconds between 1 and 60000",
            ));
        }
        if !(1_000..=300_000).contains(&self.transaction_call_timeout_ms) {
            return Err(SettingsError::invalid(
                "delivery.transaction_call_timeout_ms",
                self.transaction_call_timeout_ms.to_string(),
                "milliseconds between 1000 and 300000",
            ));
        }
        Ok(())
    }

    /// The transactional id of one stage instance.
    pub fn transactional_id(&self, stage: &str, instance: &str) -> String {
        format!("{}-{stage}-{instance}", self.transactional_id_prefix)
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
    pub otlp_protocol: String,
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
}

impl Default for ObservabilitySettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:9464".into(),
            otlp_enabled: false,
            otlp_endpoint: String::new(),
            otlp_protocol: "grpc".into(),
            service_name: String::new(),
            sample_ratio: 1.0,
            max_traced_per_sec: crate::trace::DEFAULT_MAX_TRACED_PER_SEC,
        }
    }
}

/// OTLP transports.
pub const OTLP_PROTOCOLS: [&str; 2] = ["grpc", "http/protobuf"];

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
        one_of("observability.otlp_protocol", &self.otlp_protocol, &OTLP_PROTOCOLS)?;
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

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct TestSettings {
        kafka: KafkaSettings,
        topics: TopicsSettings,
        shutdown: ShutdownSettings,
        observability: ObservabilitySettings,
    }

    impl Validate for TestSettings {
        fn validate(&self) -> Result<(), SettingsError> {
            self.kafka.validate()?;
            self.topics.validate()?;
            self.shutdown.validate()?;
            self.observability.validate()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let s: TestSettings = load_from(None, env(&[])).unwrap();
        assert_eq!(s.topics.commands.name, "shoal.commands");
        assert_eq!(s.topics.commands.partitions, 12);
        assert_eq!(s.kafka.bootstrap_servers, "127.0.0.1:9092");
    }

    #[test]
    fn environment_overrides_defaults() {
        let s: TestSettings = load_from(
            None,
            env(&[
                ("SHOAL__KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092,10.0.0.2:9092"),
                ("SHOAL__TOPICS__COMMANDS__PARTITIONS", "24"),
                ("SHOAL__KAFKA__OPTIONS__SOCKET_KEEPALIVE_ENABLE", "true"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "10.0.0.1:9092,10.0.0.2:9092");
        assert_eq!(s.topics.commands.partitions, 24);
        let opts: Vec<_> = s.kafka.normalised_options().collect();
        assert_eq!(opts, vec![("socket.keepalive.enable".to_string(), "true")]);
    }

    #[test]
    fn file_layer_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("shoal-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shoal.toml");
        std::fs::write(
            &path,
            "[topics.commands]\nname = \"from.file\"\npartitions = 3\nreplication = 1\n[shutdown]\ntimeout_ms = 5000\n",
        )
        .unwrap();
        let s: TestSettings = load_from(Some(&path), env(&[("SHOAL__SHUTDOWN__TIMEOUT_MS", "7000")])).unwrap();
        assert_eq!(s.topics.commands.name, "from.file");
        assert_eq!(s.topics.commands.partitions, 3);
        assert_eq!(s.shutdown.timeout_ms, 7000);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("SHOAL__KAFKA__BOOTSTRAP_SERVERS", "nohostport", "kafka.bootstrap_servers"),
            ("SHOAL__KAFKA__GROUP_PROTOCOL", "weird", "kafka.group_protocol"),
            ("SHOAL__TOPICS__COMMANDS__PARTITIONS", "0", "topics.commands.partitions"),
            ("SHOAL__TOPICS__COMMANDS__PARTITIONS", "twelve", "partitions"),
            ("SHOAL__SHUTDOWN__TIMEOUT_MS", "5", "shutdown.timeout_ms"),
            ("SHOAL__OBSERVABILITY__LISTEN", "9464", "observability.listen"),
            ("SHOAL__OBSERVABILITY__OTLP_PROTOCOL", "http/json", "observability.otlp_protocol"),
            ("SHOAL__OBSERVABILITY__OTLP_ENDPOINT", "localhost:4317", "observability.otlp_endpoint"),
            ("SHOAL__OBSERVABILITY__OTLP_ENABLED", "maybe", "otlp_enabled"),
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
        assert_eq!(s.observability.otlp_protocol, "http/protobuf");
        let defaults: TestSettings = load_from(None, env(&[])).unwrap();
        assert_eq!(defaults.observability.listen, "0.0.0.0:9464");
        assert!(!defaults.observability.otlp_enabled);
    }

    #[test]
    fn redaction_hides_secrets() {
        let mut s = TestSettings::default();
        s.kafka.options.insert("sasl.password".into(), "hunter2".into());
        let json = redacted(&s).to_string();
        assert!(!json.contains("hunter2"));
        assert!(json.contains("<redacted>"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = load_from::<TestSettings, _>(None, env(&[("SHOAL__KAFKA__BOOTSTRAP_SERVER", "x:1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bootstrap_server"), "{err}");
    }
}
