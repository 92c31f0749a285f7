//! The orchestrator's configuration (see the README's configuration reference).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use shoal_app::settings::ShutdownSettings;
use shoal_config::{SettingsError, Validate, one_of};
use shoal_kafka::settings::{DeliverySettings, KafkaSettings, TopicsSettings};
use shoal_protocol::messages::kinds;
use shoal_telemetry::settings::{LogSettings, ObservabilitySettings};

/// Everything `shoal-orchestrator` reads at start-up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorSettings {
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Topic names and partition counts.
    pub topics: TopicsSettings,
    /// Logging.
    pub log: LogSettings,
    /// Graceful shutdown bound.
    pub shutdown: ShutdownSettings,
    /// Exactly-once or at-least-once delivery.
    pub delivery: DeliverySettings,
    /// Metrics, health endpoints and trace export.
    pub observability: ObservabilitySettings,
    /// Which stages run and their consumer groups.
    pub orchestrator: OrchestratorSection,
    /// The market data feed.
    pub feed: FeedSettings,
    /// Decision rules.
    pub rules: RulesSettings,
    /// Result recording.
    pub results: ResultsSettings,
    /// The worker's section is accepted and ignored, so one file or one
    /// environment can configure both binaries.
    #[serde(skip_serializing)]
    pub worker: IgnoredAny,
}

/// Orchestrator stages; all run in one process by default.
pub const STAGES: [&str; 3] = ["ingest", "decisions", "results"];

/// The `[orchestrator]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorSection {
    /// Instance identity (Kafka client id, `shoal-producer` header).
    pub id: String,
    /// Stages to run: any of `ingest`, `decisions`, `results`.
    pub stages: Vec<String>,
    /// Consumer group of the decisions stage.
    pub decisions_group: String,
    /// Consumer group of the results stage.
    pub results_group: String,
    /// How often completed offsets are committed, milliseconds.
    pub commit_interval_ms: u64,
}

impl Default for OrchestratorSection {
    fn default() -> Self {
        Self {
            id: "shoal-orchestrator".into(),
            stages: STAGES.iter().map(|s| s.to_string()).collect(),
            decisions_group: "shoal-orchestrator-decisions".into(),
            results_group: "shoal-orchestrator-results".into(),
            commit_interval_ms: 1_000,
        }
    }
}

impl OrchestratorSection {
    /// Whether `stage` is enabled.
    pub fn runs(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
}

/// Wire formats `feed.format` accepts.
pub const FEED_FORMATS: [&str; 4] = ["shoal-sim", "binance", "coinbase", "kraken"];

/// The `[feed]` section: one WebSocket market data feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSettings {
    /// WebSocket URL (`ws://` or `wss://`).
    pub url: String,
    /// Wire format of the feed: `shoal-sim`, `binance`, `coinbase` or `kraken`.
    pub format: String,
    /// Symbols to subscribe to as the feed names them; `*` (all the feed
    /// offers) only for `shoal-sim`.
    pub symbols: Vec<String>,
    /// Channels to subscribe to; empty for the format's default (Binance
    /// `trade`, `bookTicker`; Coinbase `matches`, `ticker`, `heartbeat`;
    /// Kraken `trade`, `ticker`).
    pub channels: Vec<String>,
    /// Extra HTTP headers for the WebSocket handshake (an API key, a bearer
    /// token). Never logged; redacted in `--print-config`. In the
    /// environment write `_` for `-` in the name.
    pub headers: BTreeMap<String, String>,
    /// First reconnect delay, milliseconds; doubles up to the maximum.
    pub reconnect_initial_ms: u64,
    /// Largest reconnect delay, milliseconds.
    pub reconnect_max_ms: u64,
    /// Largest accepted WebSocket message (and frame), bytes.
    pub max_message_bytes: usize,
    /// Interval between WebSocket pings sent to the feed, milliseconds.
    pub ping_interval_ms: u64,
    /// Nothing received (data, heartbeat or pong) for this long means the
    /// feed is stale: the connection is replaced, milliseconds.
    pub stale_after_ms: u64,
    /// Items (trades, book tops, data-quality events) queued between the
    /// socket and Kafka before per-symbol coalescing starts.
    pub queue_capacity: usize,
    /// Most records published to Kafka per second; `0` for no limit. A
    /// throttle for shared clusters and for rehearsing backpressure.
    pub max_publish_per_sec: u64,
    /// At start-up, read this many records from the end of every ticks
    /// partition to recover the last trade ids (deduplication across
    /// restarts); `0` to skip.
    pub recover_tail_records: u64,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:9001".into(),
            format: "shoal-sim".into(),
            symbols: vec!["*".into()],
            channels: Vec::new(),
            headers: BTreeMap::new(),
            reconnect_initial_ms: 250,
            reconnect_max_ms: 10_000,
            max_message_bytes: 1 << 20,
            ping_interval_ms: 5_000,
            stale_after_ms: 15_000,
            queue_capacity: 10_000,
            max_publish_per_sec: 0,
            recover_tail_records: 10_000,
        }
    }
}

impl FeedSettings {
    /// The channels to subscribe to: the configured ones, or the format's
    /// defaults.
    pub fn effective_channels(&self) -> Vec<String> {
        if !self.channels.is_empty() {
            return self.channels.clone();
        }
        let defaults: &[&str] = match self.format.as_str() {
            "binance" => &["trade", "bookTicker"],
            "coinbase" => &["matches", "ticker", "heartbeat"],
            "kraken" => &["trade", "ticker"],
            _ => &[],
        };
        defaults.iter().map(|c| (*c).to_owned()).collect()
    }

    /// Header name as sent: `_` stands for `-` (environment variables
    /// cannot hold `-`).
    pub fn header_name(key: &str) -> String {
        key.replace('_', "-").to_ascii_lowercase()
    }
}

/// The `[rules]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// Rolling window length, seconds of exchange time.
    pub window_secs: u64,
    /// A move of at least this many basis points over the window issues
    /// `evaluate_strategy`.
    pub move_threshold_bps: u32,
    /// After a move command, the same symbol waits this long before the
    /// next one, seconds.
    pub move_cooldown_secs: u64,
    /// Crossing a multiple of this price step issues `raise_alert`; `0`
    /// disables the rule.
    #[serde(with = "rust_decimal::serde::str")]
    pub level_step: Decimal,
    /// Commands must be executed within this long of being issued,
    /// milliseconds; `0` for no deadline.
    pub command_deadline_ms: u64,
    /// Event type → command kind for events on the events topic.
    pub events: BTreeMap<String, String>,
}

impl Default for RulesSettings {
    fn default() -> Self {
        Self {
            window_secs: 30,
            move_threshold_bps: 50,
            move_cooldown_secs: 10,
            level_step: Decimal::new(100, 2),
            command_deadline_ms: 60_000,
            events: BTreeMap::from([
                ("card_transaction".to_string(), kinds::SCORE_TRANSACTION.to_string()),
                ("sensor_reading".to_string(), kinds::RAISE_ALERT.to_string()),
            ]),
        }
    }
}

/// The `[results]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResultsSettings {
    /// Append each recorded outcome as a JSON line to this file; empty for
    /// none.
    pub record_path: String,
    /// Issued commands awaiting a result that are remembered at most; the
    /// oldest are forgotten (and counted) beyond it.
    pub max_pending: usize,
}

impl Default for ResultsSettings {
    fn default() -> Self {
        Self { record_path: String::new(), max_pending: 100_000 }
    }
}

impl shoal_app::AppSettings for OrchestratorSettings {
    fn log(&self) -> &LogSettings {
        &self.log
    }

    fn shutdown(&self) -> &ShutdownSettings {
        &self.shutdown
    }

    fn observability(&self) -> &ObservabilitySettings {
        &self.observability
    }
}

impl Validate for OrchestratorSettings {
    const LIST_KEYS: &'static [&'static str] = &["orchestrator.stages", "feed.symbols", "feed.channels"];

    fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        self.topics.validate()?;
        self.shutdown.validate()?;
        self.delivery.validate()?;
        self.observability.validate()?;
        let o = &self.orchestrator;
        if o.stages.is_empty() {
            return Err(SettingsError::invalid(
                "orchestrator.stages",
                "empty",
                format!("a list of {}", STAGES.join(", ")),
            ));
        }
        for stage in &o.stages {
            one_of("orchestrator.stages", stage, &STAGES)?;
        }
        if o.id.trim().is_empty() {
            return Err(SettingsError::invalid("orchestrator.id", "empty", "a non-empty identity"));
        }
        if !(10..=60_000).contains(&o.commit_interval_ms) {
            return Err(SettingsError::invalid(
                "orchestrator.commit_interval_ms",
                o.commit_interval_ms.to_string(),
                "milliseconds between 10 and 60000",
            ));
        }
        let f = &self.feed;
        if o.runs("ingest") {
            match url::Url::parse(&f.url) {
                Ok(u) if matches!(u.scheme(), "ws" | "wss") => {}
                _ => {
                    return Err(SettingsError::invalid(
                        "feed.url",
                        format!("{:?} is not a WebSocket URL", f.url),
                        "ws://host:port/path or wss://host/path",
                    ));
                }
            }
            one_of("feed.format", &f.format, &FEED_FORMATS)?;
            if f.symbols.is_empty() || f.symbols.iter().any(|s| s.trim().is_empty()) {
                return Err(SettingsError::invalid(
                    "feed.symbols",
                    "empty symbol list or empty symbol",
                    "symbols, or [\"*\"]",
                ));
            }
            if f.format != "shoal-sim" && f.symbols.iter().any(|s| s == "*") {
                return Err(SettingsError::invalid(
                    "feed.symbols",
                    format!("\"*\" with feed.format {}", f.format),
                    "the exchange's symbols, e.g. BTCUSDT (binance), BTC-USD (coinbase), BTC/USD (kraken)",
                ));
            }
            let allowed: &[&str] = match f.format.as_str() {
                "binance" => &crate::feed::binance::CHANNELS,
                "coinbase" => &crate::feed::coinbase::CHANNELS,
                "kraken" => &crate::feed::kraken::CHANNELS,
                _ => &[],
            };
            for channel in &f.channels {
                if !allowed.contains(&channel.as_str()) {
                    return Err(SettingsError::invalid(
                        "feed.channels",
                        format!("{channel:?} with feed.format {}", f.format),
                        if allowed.is_empty() { "no channels for this format".to_owned() } else { allowed.join(", ") },
                    ));
                }
            }
            for name in f.headers.keys() {
                let header = FeedSettings::header_name(name);
                if tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    // Only the name is shown: the value may be a credential.
                    return Err(SettingsError::invalid(
                        format!("feed.headers.{name}"),
                        "not a valid HTTP header name",
                        "a header name such as authorization or x-api-key",
                    ));
                }
            }
            if f.ping_interval_ms == 0 || f.stale_after_ms <= f.ping_interval_ms {
                return Err(SettingsError::invalid(
                    "feed.stale_after_ms",
                    format!("{} (ping interval {})", f.stale_after_ms, f.ping_interval_ms),
                    "milliseconds above feed.ping_interval_ms, which must be > 0",
                ));
            }
            if f.queue_capacity == 0 {
                return Err(SettingsError::invalid("feed.queue_capacity", "0", "an integer >= 1"));
            }
            if f.reconnect_initial_ms == 0 || f.reconnect_initial_ms > f.reconnect_max_ms {
                return Err(SettingsError::invalid(
                    "feed.reconnect_initial_ms",
                    format!("{} (max {})", f.reconnect_initial_ms, f.reconnect_max_ms),
                    "milliseconds > 0 and <= feed.reconnect_max_ms",
                ));
            }
            if !(1024..=64 << 20).contains(&f.max_message_bytes) {
                return Err(SettingsError::invalid(
                    "feed.max_message_bytes",
                    f.max_message_bytes.to_string(),
                    "bytes between 1024 and 67108864",
                ));
            }
        }
        let r = &self.rules;
        if r.window_secs == 0 {
            return Err(SettingsError::invalid("rules.window_secs", "0", "seconds >= 1"));
        }
        if r.move_threshold_bps == 0 {
            return Err(SettingsError::invalid("rules.move_threshold_bps", "0", "basis points >= 1"));
        }
        if r.level_step < Decimal::ZERO {
            return Err(SettingsError::invalid(
                "rules.level_step",
                r.level_step.to_string(),
                "a decimal >= 0 (0 disables)",
            ));
        }
        for (event_type, kind) in &r.events {
            if kind.trim().is_empty() {
                return Err(SettingsError::invalid(format!("rules.events.{event_type}"), "empty", "a command kind"));
            }
        }
        if self.results.max_pending == 0 {
            return Err(SettingsError::invalid("results.max_pending", "0", "an integer >= 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_config::load_from;

    fn load(pairs: &[(&str, &str)]) -> Result<OrchestratorSettings, SettingsError> {
        load_from(None, pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_are_valid_and_run_every_stage() {
        let s = load(&[]).unwrap();
        assert!(STAGES.iter().all(|st| s.orchestrator.runs(st)));
        assert_eq!(s.rules.level_step.to_string(), "1.00");
    }

    #[test]
    fn lists_come_from_comma_separated_environment_values() {
        let s = load(&[("SHOAL__ORCHESTRATOR__STAGES", "ingest,results"), ("SHOAL__FEED__SYMBOLS", "SIM-A,SIM-B")])
            .unwrap();
        assert_eq!(s.orchestrator.stages, vec!["ingest", "results"]);
        assert_eq!(s.feed.symbols, vec!["SIM-A", "SIM-B"]);
    }

    #[test]
    fn exchange_feeds_need_symbols_and_known_channels() {
        let base = [("SHOAL__FEED__FORMAT", "binance"), ("SHOAL__FEED__SYMBOLS", "BTCUSDT,ETHUSDT")];
        let s = load(&base).unwrap();
        assert_eq!(s.feed.effective_channels(), ["trade", "bookTicker"]);
        let err = load(&[("SHOAL__FEED__FORMAT", "kraken")]).unwrap_err().to_string();
        assert!(err.contains("feed.symbols"), "{err}");
        let mut with_channels = base.to_vec();
        with_channels.push(("SHOAL__FEED__CHANNELS", "aggTrade,ticker"));
        let err = load(&with_channels).unwrap_err().to_string();
        assert!(err.contains("feed.channels") && err.contains("ticker"), "{err}");
    }

    #[test]
    fn handshake_headers_come_from_the_environment_and_are_redacted() {
        let s = load(&[("SHOAL__FEED__HEADERS__X_API_KEY", "s3cret-value")]).unwrap();
        assert_eq!(s.feed.headers.get("x_api_key").map(String::as_str), Some("s3cret-value"));
        assert_eq!(FeedSettings::header_name("x_api_key"), "x-api-key");
        let dump = shoal_config::redacted(&s).to_string();
        assert!(!dump.contains("s3cret-value"), "{dump}");
        assert!(dump.contains("x_api_key"), "the name stays visible");
    }

    #[test]
    fn the_workers_section_is_ignored_but_typos_are_not() {
        assert!(load(&[("SHOAL__WORKER__ID", "w-1")]).is_ok());
        let err = load(&[("SHOAL__WROKER__ID", "w-1")]).unwrap_err().to_string();
        assert!(err.contains("wroker"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (var, value, key) in [
            ("SHOAL__FEED__URL", "http://x", "feed.url"),
            ("SHOAL__ORCHESTRATOR__STAGES", "ingest,dance", "orchestrator.stages"),
            ("SHOAL__RULES__LEVEL_STEP", "-1", "rules.level_step"),
            ("SHOAL__RULES__LEVEL_STEP", "abc", "level_step"),
            ("SHOAL__RULES__WINDOW_SECS", "0", "rules.window_secs"),
            ("SHOAL__FEED__FORMAT", "ftx", "feed.format"),
            ("SHOAL__FEED__STALE_AFTER_MS", "10", "feed.stale_after_ms"),
            ("SHOAL__FEED__CHANNELS", "depth", "feed.channels"),
        ] {
            let err = load(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }
}
