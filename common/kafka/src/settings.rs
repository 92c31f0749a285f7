//! The `[kafka]`, `[topics]` and `[delivery]` sections: connection to the
//! cluster, the topics Shoal uses, and how stages deliver their outputs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, at_least, in_range, non_empty};

shoal_config::choice! {
    /// `kafka.security_protocol`: how clients reach the brokers (librdkafka's
    /// `security.protocol`).
    pub enum SecurityProtocol {
        /// No TLS, no authentication.
        Plaintext = "plaintext",
        /// TLS.
        Ssl = "ssl",
        /// SASL authentication without TLS.
        SaslPlaintext = "sasl_plaintext",
        /// SASL authentication over TLS.
        SaslSsl = "sasl_ssl",
    }
}

shoal_config::choice! {
    /// `kafka.group_protocol`: the consumer group protocol.
    pub enum GroupProtocol {
        /// The classic protocol: client-side assignment (cooperative sticky).
        Classic = "classic",
        /// KIP-848: the broker assigns.
        Consumer = "consumer",
    }
}

shoal_config::choice! {
    /// `kafka.compression`: how producers compress record batches
    /// (librdkafka's `compression.type`).
    pub enum Compression {
        /// No compression.
        None = "none",
        /// gzip.
        Gzip = "gzip",
        /// Snappy.
        Snappy = "snappy",
        /// LZ4: fast, small contexts.
        Lz4 = "lz4",
        /// Zstandard: smaller batches, more CPU, and a compression context
        /// created for each message set the producer compresses.
        Zstd = "zstd",
    }
}

/// Connection to the Kafka cluster, shared by every client Shoal creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: SecurityProtocol,
    /// Consumer group protocol: `classic` (default) or `consumer` (KIP-848).
    pub group_protocol: GroupProtocol,
    /// Consumer session timeout, milliseconds.
    pub session_timeout_ms: u32,
    /// Producer linger, milliseconds: how long to wait to fill a batch.
    pub linger_ms: u32,
    /// Producer delivery timeout, milliseconds (`message.timeout.ms`).
    pub message_timeout_ms: u32,
    /// Producer batch compression (`compression.type`).
    pub compression: Compression,
    /// Raw librdkafka properties applied last. Keys may use `_` for `.`
    /// (so environment variables can set them).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            security_protocol: SecurityProtocol::Plaintext,
            group_protocol: GroupProtocol::Classic,
            session_timeout_ms: 10_000,
            linger_ms: 5,
            message_timeout_ms: 30_000,
            compression: Compression::Lz4,
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
        // `security_protocol`, `group_protocol` and `compression` are checked as they are
        // read (an unknown string names the key and the accepted ones).
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
        at_least(&format!("topics.{key}.partitions"), self.partitions, 1, "an integer")?;
        at_least(&format!("topics.{key}.replication"), self.replication, 1, "an integer")
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
    /// The workers' side-effect journal (`docs/journal.md`): one record per
    /// command and effect step, keyed `<command id>/<step>`, created
    /// compacted. Give it as many partitions as `commands`: a command read
    /// from commands partition `p` is journalled in partition `p` (modulo
    /// the journal's partition count).
    pub journal: TopicSettings,
    /// Approvals of commands whose kind needs one (`docs/approval.md`):
    /// requests, decisions and expiries, keyed by command id.
    pub approvals: TopicSettings,
    /// Create missing topics at start-up through the admin API.
    pub create: bool,
}

/// How long journal records are kept (7 days), milliseconds.
pub const JOURNAL_RETENTION_MS: &str = "604800000";

impl Default for TopicsSettings {
    fn default() -> Self {
        Self {
            ticks: TopicSettings::new("shoal.ticks", 6),
            events: TopicSettings::new("shoal.events", 6),
            commands: TopicSettings::new("shoal.commands", 12),
            results: TopicSettings::new("shoal.results", 6),
            dlq: TopicSettings::new("shoal.dlq", 1),
            journal: TopicSettings::new("shoal.journal", 12),
            approvals: TopicSettings::new("shoal.approvals", 3),
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
    pub fn all(&self) -> [(&'static str, &TopicSettings); 7] {
        [
            ("ticks", &self.ticks),
            ("events", &self.events),
            ("commands", &self.commands),
            ("results", &self.results),
            ("dlq", &self.dlq),
            ("journal", &self.journal),
            ("approvals", &self.approvals),
        ]
    }

    /// Topic-level configs a topic is created with (an existing topic is
    /// not changed). The journal is compacted, so the newest record of each
    /// step is kept, and also deleted after 7 days: a command replayed later
    /// than that runs its effects again.
    pub fn create_configs(&self, key: &str) -> &'static [(&'static str, &'static str)] {
        match key {
            "journal" => &[("cleanup.policy", "compact,delete"), ("retention.ms", JOURNAL_RETENTION_MS)],
            _ => &[],
        }
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
    /// Fault injection for tests: abort every Nth transaction of each stage
    /// instead of committing it (after its records were produced), as a
    /// broker-side failure would; `0` (the default) never.
    pub inject_abort_every: u64,
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
            inject_abort_every: 0,
        }
    }
}

impl DeliverySettings {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), SettingsError> {
        non_empty("delivery.transactional_id_prefix", &self.transactional_id_prefix, "a non-empty prefix")?;
        in_range("delivery.transaction_max_records", self.transaction_max_records, 1..=100_000, "an integer")?;
        in_range("delivery.transaction_max_ms", self.transaction_max_ms, 1..=60_000, "milliseconds")?;
        in_range(
            "delivery.transaction_call_timeout_ms",
            self.transaction_call_timeout_ms,
            1_000..=300_000,
            "milliseconds",
        )
    }

    /// The transactional id of one stage instance.
    pub fn transactional_id(&self, stage: &str, instance: &str) -> String {
        format!("{}-{stage}-{instance}", self.transactional_id_prefix)
    }
}

#[cfg(test)]
mod tests {
    use shoal_config::{Validate, load_from};

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct TestSettings {
        kafka: KafkaSettings,
        topics: TopicsSettings,
        delivery: DeliverySettings,
    }

    impl Validate for TestSettings {
        fn validate(&self) -> Result<(), SettingsError> {
            self.kafka.validate()?;
            self.topics.validate()?;
            self.delivery.validate()
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
        assert_eq!(s.delivery.mode, DeliveryMode::ExactlyOnce);
    }

    #[test]
    fn environment_overrides_defaults() {
        let s: TestSettings = load_from(
            None,
            env(&[
                ("SHOAL__KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092,10.0.0.2:9092"),
                ("SHOAL__TOPICS__COMMANDS__PARTITIONS", "24"),
                ("SHOAL__KAFKA__OPTIONS__SOCKET_KEEPALIVE_ENABLE", "true"),
                ("SHOAL__DELIVERY__MODE", "at_least_once"),
                ("SHOAL__KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
                ("SHOAL__KAFKA__GROUP_PROTOCOL", "consumer"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.bootstrap_servers, "10.0.0.1:9092,10.0.0.2:9092");
        assert_eq!(s.topics.commands.partitions, 24);
        assert_eq!(s.delivery.mode, DeliveryMode::AtLeastOnce);
        assert_eq!(s.kafka.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(s.kafka.group_protocol, GroupProtocol::Consumer);
        let opts: Vec<_> = s.kafka.normalised_options().collect();
        assert_eq!(opts, vec![("socket.keepalive.enable".to_string(), "true")]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("SHOAL__KAFKA__BOOTSTRAP_SERVERS", "nohostport", "kafka.bootstrap_servers"),
            ("SHOAL__KAFKA__GROUP_PROTOCOL", "weird", "kafka.group_protocol"),
            ("SHOAL__KAFKA__SECURITY_PROTOCOL", "tls", "kafka.security_protocol"),
            ("SHOAL__KAFKA__SESSION_TIMEOUT_MS", "10", "kafka.session_timeout_ms"),
            ("SHOAL__TOPICS__COMMANDS__PARTITIONS", "0", "topics.commands.partitions"),
            ("SHOAL__TOPICS__COMMANDS__PARTITIONS", "twelve", "partitions"),
            ("SHOAL__TOPICS__DLQ__NAME", "no spaces", "topics.dlq.name"),
            ("SHOAL__DELIVERY__TRANSACTION_MAX_RECORDS", "0", "delivery.transaction_max_records"),
            ("SHOAL__DELIVERY__TRANSACTION_MAX_MS", "0", "delivery.transaction_max_ms"),
            ("SHOAL__DELIVERY__TRANSACTION_CALL_TIMEOUT_MS", "5", "delivery.transaction_call_timeout_ms"),
            ("SHOAL__DELIVERY__MODE", "sometimes", "mode"),
        ];
        for (var, value, key) in cases {
            let err = load_from::<TestSettings, _>(None, env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: error {err:?} does not name {key}");
        }
    }

    #[test]
    fn redaction_hides_kafka_passwords() {
        let mut s = TestSettings::default();
        s.kafka.options.insert("sasl.password".into(), "hunter2".into());
        let json = shoal_config::redacted(&s).to_string();
        assert!(!json.contains("hunter2"));
        assert!(json.contains("<redacted>"));
    }
}
