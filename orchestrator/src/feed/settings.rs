//! The `[feed]` section: which feed ingest connects to and how.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, at_least, in_range, initial_delay};

use super::FeedFormat;

/// The `[feed]` section: one WebSocket market data feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSettings {
    /// WebSocket URL (`ws://` or `wss://`).
    pub url: String,
    /// PEM file of the CA certificate(s) a `wss://` feed's certificate must
    /// chain to. When set they are the only trusted roots (the platform's
    /// are not consulted); empty trusts the platform's root certificates.
    /// Read at start-up (a problem stops it) and again at each connection.
    pub ca_file: String,
    /// Wire format of the feed: `shoal-sim`, `binance`, `coinbase` or `kraken`.
    pub format: FeedFormat,
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
            ca_file: String::new(),
            format: FeedFormat::ShoalSim,
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
        self.format.default_channels().iter().map(|c| (*c).to_owned()).collect()
    }

    /// Header name as sent: `_` stands for `-` (environment variables
    /// cannot hold `-`).
    pub fn header_name(key: &str) -> String {
        key.replace('_', "-").to_ascii_lowercase()
    }

    /// Checks the section (only when the ingest stage runs). `format` is
    /// checked as it is read.
    pub fn validate(&self) -> Result<(), SettingsError> {
        match url::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") => {}
            _ => {
                return Err(SettingsError::invalid(
                    "feed.url",
                    format!("{:?} is not a WebSocket URL", self.url),
                    "ws://host:port/path or wss://host/path",
                ));
            }
        }
        if !self.ca_file.is_empty()
            && let Err(reason) = ca_roots(&self.ca_file)
        {
            return Err(SettingsError::invalid(
                "feed.ca_file",
                reason,
                "the path of a readable PEM file holding the CA certificate(s) of the feed's server \
                 (-----BEGIN CERTIFICATE-----), or empty for the platform's root certificates",
            ));
        }
        self.validate_subscription()?;
        for name in self.headers.keys() {
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
        if self.ping_interval_ms == 0 || self.stale_after_ms <= self.ping_interval_ms {
            return Err(SettingsError::invalid(
                "feed.stale_after_ms",
                format!("{} (ping interval {})", self.stale_after_ms, self.ping_interval_ms),
                "milliseconds above feed.ping_interval_ms, which must be > 0",
            ));
        }
        at_least("feed.queue_capacity", self.queue_capacity, 1, "an integer")?;
        initial_delay(
            "feed.reconnect_initial_ms",
            self.reconnect_initial_ms,
            "feed.reconnect_max_ms",
            self.reconnect_max_ms,
        )?;
        in_range("feed.max_message_bytes", self.max_message_bytes, 1024..=64 << 20, "bytes")
    }

    /// Symbols and channels, as the format names them.
    fn validate_subscription(&self) -> Result<(), SettingsError> {
        if self.symbols.is_empty() || self.symbols.iter().any(|s| s.trim().is_empty()) {
            return Err(SettingsError::invalid(
                "feed.symbols",
                "empty symbol list or empty symbol",
                "symbols, or [\"*\"]",
            ));
        }
        if !self.format.accepts_every_symbol() && self.symbols.iter().any(|s| s == "*") {
            return Err(SettingsError::invalid(
                "feed.symbols",
                format!("\"*\" with feed.format {}", self.format),
                format!("the exchange's symbols, e.g. {}", FeedFormat::symbol_examples()),
            ));
        }
        let allowed = self.format.channels();
        match self.channels.iter().find(|channel| !allowed.contains(&channel.as_str())) {
            None => Ok(()),
            Some(channel) => Err(SettingsError::invalid(
                "feed.channels",
                format!("{channel:?} with feed.format {}", self.format),
                if allowed.is_empty() { "no channels for this format".to_owned() } else { allowed.join(", ") },
            )),
        }
    }
}

/// The certificates of the PEM file at `path` (`feed.ca_file`) as trust
/// roots; at least one, each a parsable X.509 certificate.
pub(super) use shoal_tls::ca_roots;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::settings::OrchestratorSettings;

    /// A throwaway directory for this test's files.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-feed-ca-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        dir
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    fn with_ca_file(ca_file: &str) -> Result<(), SettingsError> {
        FeedSettings { url: "wss://127.0.0.1:9443".into(), ca_file: ca_file.into(), ..FeedSettings::default() }
            .validate()
    }

    #[test]
    fn a_pem_ca_file_is_accepted_and_empty_means_the_platform_roots() {
        let dir = scratch("ok");
        let ca = rcgen::generate_simple_self_signed(vec!["shoal-test-ca".to_owned()]).expect("certificate");
        let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_owned()]).expect("certificate");
        // A bundle of two, with a key and comments around: only the
        // certificates count.
        let bundle = format!("# test CAs\n{}{}{}", ca.cert.pem(), ca.signing_key.serialize_pem(), other.cert.pem());
        let file = write(&dir, "bundle.pem", &bundle);
        with_ca_file(&file).expect("a PEM bundle of CA certificates");
        assert_eq!(ca_roots(&file).expect("roots").len(), 2);
        with_ca_file("").expect("no CA file: platform roots");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ca_file_problems_name_the_key_the_file_and_the_expected_form() {
        let dir = scratch("bad");
        let key = rcgen::KeyPair::generate().expect("key").serialize_pem();
        let missing = dir.join("missing.pem").display().to_string();
        let cases = [
            (missing.clone(), "cannot read"),
            (dir.display().to_string(), "cannot read"),
            (write(&dir, "text.pem", "just some text\n"), "holds no PEM certificate"),
            (write(&dir, "key.pem", &key), "holds no PEM certificate"),
            (
                write(&dir, "broken.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
                "not valid PEM",
            ),
            (
                write(
                    &dir,
                    "not-x509.pem",
                    "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
                ),
                "not a usable X.509 certificate",
            ),
        ];
        for (file, problem) in cases {
            let error = with_ca_file(&file).expect_err(&format!("{file} refused")).to_string();
            assert!(error.contains("`feed.ca_file`"), "{error}");
            assert!(error.contains(&file), "names the file: {error}");
            assert!(error.contains(problem), "{problem}: {error}");
            assert!(error.contains("PEM file holding the CA certificate(s)"), "the expected form: {error}");
        }
        // At start-up, from the environment, as the binary loads it.
        let env = [("SHOAL__FEED__URL", "wss://127.0.0.1:9443"), ("SHOAL__FEED__CA_FILE", missing.as_str())];
        let error = shoal_config::load_from::<OrchestratorSettings, _>(
            None,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .expect_err("a missing CA file stops start-up")
        .to_string();
        assert!(error.contains("`feed.ca_file`") && error.contains("cannot read"), "{error}");
        // Only the ingest stage reads the feed section.
        let env = [("SHOAL__ORCHESTRATOR__STAGES", "results"), ("SHOAL__FEED__CA_FILE", missing.as_str())];
        shoal_config::load_from::<OrchestratorSettings, _>(
            None,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .expect("not checked without ingest");
        let _ = std::fs::remove_dir_all(dir);
    }
}
