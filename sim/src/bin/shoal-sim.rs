//! `shoal-sim`: the bundled market simulator. See
//! [`shoal_sim`] for the protocol.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, ValueEnum, error::ErrorKind};
use rust_decimal::Decimal;
use shoal_sim::{
    ConfigError, Faults, Format, MAX_RATE_PER_SYMBOL, SimConfig, TlsIdentity, TlsPart, price_to_ticks, serve,
};
use shoal_telemetry::{LogFormat, init_logging};
use tokio::net::TcpListener;

const LONG_ABOUT: &str = "\
Serves simulated market trades over WebSocket so Shoal's demo and tests need \
no internet. Prices follow a deterministic, seeded random walk in 0.01 ticks \
(same seed, same trades) with occasional jumps; every symbol trades --rate \
times per second. After binding, prints exactly one line to stdout, \
`shoal-sim listening on ws://<addr>` (`wss://` with --tls-cert), then logs to \
stderr. SIGINT/SIGTERM \
closes every client with code 1001 and exits 0 (a second signal exits at once).

Protocol (JSON text frames):
  server: {\"type\":\"hello\",\"feed\":\"shoal-sim\",\"version\":1,\"symbols\":[\"SIM-A\",...]}
  client: {\"type\":\"subscribe\",\"symbols\":[\"SIM-A\"]}  (\"*\" = all; replaces the set)
  server: {\"type\":\"subscribed\",\"symbols\":[\"SIM-A\"]}  (after an error per unknown symbol)
  client: {\"type\":\"unsubscribe\",\"symbols\":[\"SIM-A\"]}
  server: {\"type\":\"unsubscribed\",\"symbols\":[\"SIM-A\"]}
  server: {\"type\":\"trade\",\"symbol\":\"SIM-A\",\"seq\":456,\"trade_id\":123,\"price\":\"101.25\",
           \"size\":\"0.500\",\"side\":\"buy\",\"ts\":\"2026-11-25T02:04:05.123456Z\"}
  server: {\"type\":\"heartbeat\",\"seq\":457,\"ts\":\"...\"}  (every second while subscribed)
  server: {\"type\":\"error\",\"message\":\"...\"}  (bad request; connection stays open)
seq counts data frames (trades, heartbeats, malformed) per connection from 1, +1 each; \
trade_id counts trades per symbol, the same for every client; price has 2 and size 3 \
decimal places; side is the taker side. Nothing is streamed before a subscribe.

Faults: --malformed-every N replaces every Nth data frame with, in turn: invalid JSON, \
a trade with price \"abc\", an unknown type \"sim_fault\", a binary frame of garbage. \
Each still consumes a seq.

Exchange formats: --format binance|coinbase|kraken speaks that exchange's public \
market data protocol instead (Binance spot /ws/<symbol>@trade|@aggTrade|@bookTicker, \
/stream?streams=a/b and SUBSCRIBE; Coinbase Exchange subscribe with matches, ticker \
and heartbeat channels; Kraken WebSocket v2 trade and ticker channels). A connection \
can also pick its format by URL path: /binance/..., /coinbase, /kraken/v2, /shoal.

Control: a WebSocket at /control takes JSON commands that inject faults into every \
open feed connection: {\"fault\":\"disconnect\"}, {\"fault\":\"stall\",\"ms\":5000}, \
{\"fault\":\"gap\",\"count\":3}, {\"fault\":\"malformed\",\"count\":2}, \
{\"fault\":\"burst\",\"count\":200000}, and {\"cmd\":\"stats\"}.

--require-header \"Name: value\" refuses feed connections (HTTP 401) whose handshake \
lacks that header, to rehearse authenticated feeds; the value is never logged.

TLS: --tls-cert FILE --tls-key FILE (both PEM: the server certificate first, \
then any intermediates; its private key as PKCS#8, PKCS#1 or SEC1) serve \
wss:// instead of ws://, the control endpoint too (rustls; TLS 1.2 and 1.3; \
no client certificates). The certificate must name the address clients \
connect to (e.g. IP 127.0.0.1 or DNS localhost). A client that refuses the \
certificate is logged (\"TLS handshake failed\") and counted \
(tls_handshake_failures in the control stats). Example: \
shoal-sim --listen 127.0.0.1:9443 --tls-cert server.pem --tls-key server-key.pem

Every flag can also be set through the environment variable SHOAL_SIM_<FLAG> \
(e.g. SHOAL_SIM_RATE=50).";

/// Log output format of the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Wire format offered to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// Shoal's native JSON protocol.
    Shoal,
    /// Binance spot public market streams.
    Binance,
    /// Coinbase Exchange public feed.
    Coinbase,
    /// Kraken WebSocket API v2.
    Kraken,
}

#[derive(Debug, Parser)]
#[command(
    name = "shoal-sim",
    version,
    about = "Shoal's bundled market simulator: simulated trades over WebSocket",
    long_about = LONG_ABOUT
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (see the stdout line).
    #[arg(long, env = "SHOAL_SIM_LISTEN", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,

    /// Comma-separated symbols to trade (unique, no whitespace, not "*").
    #[arg(long, env = "SHOAL_SIM_SYMBOLS", value_delimiter = ',', default_value = "SIM-AAA,SIM-BBB,SIM-CCC,SIM-DDD")]
    symbols: Vec<String>,

    /// Trades per second per symbol (> 0, at most 1000000).
    #[arg(long, env = "SHOAL_SIM_RATE", default_value = "5", value_parser = parse_rate)]
    rate: f64,

    /// Seed of the price walks: the same seed gives the same trades.
    #[arg(long, env = "SHOAL_SIM_SEED", default_value_t = 42)]
    seed: u64,

    /// Starting price of every symbol (> 0, at most 2 decimal places).
    #[arg(long, env = "SHOAL_SIM_START_PRICE", default_value = "100.00", value_parser = parse_start_price)]
    start_price: Decimal,

    /// Typical price step per trade, in basis points.
    #[arg(long, env = "SHOAL_SIM_VOLATILITY_BPS", default_value_t = 10)]
    volatility_bps: u32,

    /// Probability in [0, 1] that a trade comes with a price jump.
    #[arg(long, env = "SHOAL_SIM_JUMP_PROBABILITY", default_value = "0.002", value_parser = parse_probability)]
    jump_probability: f64,

    /// Size of a price jump, in basis points.
    #[arg(long, env = "SHOAL_SIM_JUMP_BPS", default_value_t = 150)]
    jump_bps: u32,

    /// Trade id of every symbol's first trade (at least 1). Give a restarted
    /// simulator a higher one (the demo uses the clock) so that its trades
    /// are not taken for repeats by a consumer that remembers the last run's
    /// ids, as Shoal's ingest deduplication does.
    #[arg(long, env = "SHOAL_SIM_FIRST_TRADE_ID", default_value_t = 1)]
    first_trade_id: u64,

    /// Fault: replace every Nth data frame sent to a client with a malformed one.
    #[arg(long, env = "SHOAL_SIM_MALFORMED_EVERY", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    malformed_every: Option<u64>,

    /// Wire format offered to clients whose URL path does not name one.
    #[arg(long, env = "SHOAL_SIM_FORMAT", value_enum, default_value_t = FormatArg::Shoal)]
    format: FormatArg,

    /// Refuse feed connections whose handshake lacks this header ("Name: value").
    #[arg(long, env = "SHOAL_SIM_REQUIRE_HEADER", value_name = "NAME: VALUE", value_parser = parse_header)]
    require_header: Option<(String, String)>,

    /// Serve wss:// with this PEM certificate chain (server certificate
    /// first); needs --tls-key.
    #[arg(long, env = "SHOAL_SIM_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, env = "SHOAL_SIM_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Log format (logs go to stderr; RUST_LOG overrides the "info" level).
    #[arg(long, env = "SHOAL_SIM_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value.trim().parse().map_err(|_| format!("{value:?} is not a number"))?;
    if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE_PER_SYMBOL {
        Ok(rate)
    } else {
        Err(format!("must be a finite number > 0 and at most {MAX_RATE_PER_SYMBOL}"))
    }
}

fn parse_header(value: &str) -> Result<(String, String), String> {
    match value.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
            Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        }
        _ => Err("expected \"Name: value\"".to_owned()),
    }
}

fn parse_probability(value: &str) -> Result<f64, String> {
    let probability: f64 = value.trim().parse().map_err(|_| format!("{value:?} is not a number"))?;
    if (0.0..=1.0).contains(&probability) { Ok(probability) } else { Err("must be within [0, 1]".to_owned()) }
}

fn parse_start_price(value: &str) -> Result<Decimal, String> {
    let price: Decimal = value.trim().parse().map_err(|_| format!("{value:?} is not a decimal number"))?;
    match price_to_ticks(price) {
        Some(_) => Ok(price),
        None => {
            Err("must be > 0 with at most 2 decimal places (prices move in 0.01 ticks) and at most 10^13".to_owned())
        }
    }
}

impl Cli {
    /// Builds the simulator configuration, reporting problems the per-flag
    /// parsers cannot see (duplicate or invalid symbols) as clap errors
    /// naming the flag.
    fn into_config(self) -> Result<SimConfig, clap::Error> {
        let symbols: Vec<String> = self.symbols.iter().map(|s| s.trim().to_owned()).collect();
        let mut seen = HashSet::new();
        if let Some(duplicate) = symbols.iter().find(|s| !seen.insert(s.as_str())) {
            return Err(flag_error("--symbols", &format!("duplicate symbol {duplicate:?}")));
        }
        let config = SimConfig {
            symbols,
            rate_per_symbol: self.rate,
            seed: self.seed,
            start_price: self.start_price,
            volatility_bps: self.volatility_bps,
            jump_probability: self.jump_probability,
            jump_bps: self.jump_bps,
            first_trade_id: self.first_trade_id,
            faults: Faults { malformed_every: self.malformed_every },
            format: match self.format {
                FormatArg::Shoal => Format::Shoal,
                FormatArg::Binance => Format::Binance,
                FormatArg::Coinbase => Format::Coinbase,
                FormatArg::Kraken => Format::Kraken,
            },
            required_header: self.require_header,
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsIdentity::load(cert, key).map_err(|error| {
                    let flag = match error.part {
                        TlsPart::Certificate => "--tls-cert",
                        TlsPart::Key => "--tls-key",
                    };
                    flag_error(flag, &error.to_string())
                })?),
                _ => None,
            },
        };
        config.validate().map_err(|error| {
            let flag = match error {
                ConfigError::NoSymbols | ConfigError::InvalidSymbol(_) | ConfigError::DuplicateSymbol(_) => "--symbols",
                ConfigError::Rate(_) => "--rate",
                ConfigError::JumpProbability(_) => "--jump-probability",
                ConfigError::StartPrice(_) => "--start-price",
                ConfigError::MalformedEvery => "--malformed-every",
                ConfigError::FirstTradeId => "--first-trade-id",
            };
            flag_error(flag, &error.to_string())
        })?;
        Ok(config)
    }
}

fn flag_error(flag: &str, message: &str) -> clap::Error {
    Cli::command().error(ErrorKind::ValueValidation, format!("invalid value for {flag}: {message}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    let listen = cli.listen;
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(error) => error.exit(),
    };
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    init_logging(log_format, "info");

    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%listen, %error, "cannot listen (--listen)");
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::error!(%error, "cannot read the bound address");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = announce(scheme, local) {
        tracing::error!(%error, "cannot write the listening line to stdout");
        return ExitCode::FAILURE;
    }

    let shutdown = shoal_app::shutdown::install_signal_handlers();
    match serve(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "simulator failed");
            ExitCode::FAILURE
        }
    }
}

/// Prints the single stdout line tests and scripts wait for, and flushes it.
// stdout carries exactly this machine-read line (port 0 resolves to a real
// port only here); all other output goes through `tracing` to stderr.
#[allow(clippy::print_stdout)]
fn announce(scheme: &str, local: SocketAddr) -> std::io::Result<()> {
    println!("shoal-sim listening on {scheme}://{local}");
    std::io::stdout().flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SimConfig, clap::Error> {
        let mut argv = vec!["shoal-sim"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)?.into_config()
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_library_defaults() {
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config, SimConfig::default());
    }

    #[test]
    fn parses_flags() {
        let config = parse(&[
            "--symbols",
            "X-1, X-2",
            "--rate",
            "2000",
            "--start-price",
            "5.5",
            "--malformed-every",
            "7",
            "--jump-probability",
            "1",
        ])
        .expect("valid flags");
        assert_eq!(config.symbols, ["X-1", "X-2"]);
        assert_eq!(config.rate_per_symbol, 2000.0);
        assert_eq!(config.start_price, Decimal::new(55, 1));
        assert_eq!(config.faults.malformed_every, Some(7));
        let config = parse(&["--format", "kraken", "--require-header", "X-Api-Key: s3cret"]).expect("valid flags");
        assert_eq!(config.format, Format::Kraken);
        assert_eq!(config.required_header, Some(("x-api-key".into(), "s3cret".into())));
        assert!(parse(&["--require-header", "no-colon"]).is_err());
    }

    #[test]
    fn tls_flags_load_the_identity_and_errors_name_the_flag() {
        let dir = std::env::temp_dir().join(format!("shoal-sim-cli-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let one = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let cert = write("cert.pem", &one.cert.pem());
        let key = write("key.pem", &one.signing_key.serialize_pem());
        let wrong_key = write("other-key.pem", &other.signing_key.serialize_pem());
        let missing = dir.join("missing.pem").display().to_string();

        let config = parse(&["--tls-cert", &cert, "--tls-key", &key]).expect("valid TLS flags");
        let tls = config.tls.expect("TLS configured");
        assert_eq!(tls.cert_file().display().to_string(), cert);
        for (args, flag, needle) in [
            (&["--tls-cert", cert.as_str()][..], "--tls-key", "--tls-key"),
            (&["--tls-key", key.as_str()][..], "--tls-cert", "--tls-cert"),
            (&["--tls-cert", missing.as_str(), "--tls-key", key.as_str()][..], "--tls-cert", "cannot read"),
            (&["--tls-cert", cert.as_str(), "--tls-key", cert.as_str()][..], "--tls-key", "no PEM private key"),
            (&["--tls-cert", cert.as_str(), "--tls-key", wrong_key.as_str()][..], "--tls-key", "not usable"),
        ] {
            let message = parse(args).expect_err(&format!("{args:?} must be rejected")).to_string();
            assert!(message.contains(flag) && message.contains(needle), "{args:?}: {message}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rejects_bad_values_naming_the_flag() {
        for (args, flag) in [
            (&["--rate", "0"][..], "--rate"),
            (&["--rate", "inf"][..], "--rate"),
            (&["--rate", "NaN"][..], "--rate"),
            (&["--jump-probability", "1.1"][..], "--jump-probability"),
            (&["--start-price", "0"][..], "--start-price"),
            (&["--start-price", "1.001"][..], "--start-price"),
            (&["--malformed-every", "0"][..], "--malformed-every"),
            (&["--symbols", "A,A"][..], "--symbols"),
            (&["--symbols", "A,*"][..], "--symbols"),
            (&["--symbols", ""][..], "--symbols"),
        ] {
            let error = parse(args).expect_err(&format!("{args:?} must be rejected"));
            let message = error.to_string();
            assert!(message.contains(flag), "{args:?}: {message}");
        }
    }
}
