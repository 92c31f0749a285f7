//! Recordings: market ticks as JSON lines (one `MarketTick` per line, in
//! feed order), read for a backtest, written from the simulator's price walk
//! or from the ticks topic.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use shoal_protocol::messages::{MarketTick, SCHEMA_VERSION, Side};
use shoal_sim::{Market, WalkParams};

/// Why a recording could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file could not be opened, read or written.
    #[error("recording {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a market tick.
    #[error("recording {path} line {line}: not a MarketTick ({source})")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The file holds no tick.
    #[error("recording {path} holds no tick")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Reads a recording; blank lines and lines starting with `#` are skipped.
pub fn read(path: &Path) -> Result<Vec<MarketTick>, RecordingError> {
    let shown = path.display().to_string();
    let io = |source| RecordingError::Io { path: shown.clone(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut ticks = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let tick = serde_json::from_str(line).map_err(|source| RecordingError::Line {
            path: shown.clone(),
            line: n + 1,
            source,
        })?;
        ticks.push(tick);
    }
    if ticks.is_empty() {
        return Err(RecordingError::Empty { path: shown });
    }
    Ok(ticks)
}

/// Writes `ticks` as a recording.
pub fn write(path: &Path, ticks: &[MarketTick]) -> Result<(), RecordingError> {
    let io = |source| RecordingError::Io { path: path.display().to_string(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for tick in ticks {
        let line = serde_json::to_string(tick).map_err(|e| io(std::io::Error::other(e)))?;
        writeln!(out, "{line}").map_err(io)?;
    }
    out.flush().map_err(io)
}

/// What a synthetic recording is made of.
#[derive(Debug, Clone)]
pub struct Synth {
    /// The walk's seed: the same seed, the same ticks.
    pub seed: u64,
    /// Symbols.
    pub symbols: Vec<String>,
    /// Ticks in all.
    pub ticks: usize,
    /// Time between two ticks (of any symbol).
    pub interval: TimeDelta,
    /// Time of the first tick.
    pub start: DateTime<Utc>,
    /// The simulator's walk parameters.
    pub walk: WalkParams,
}

/// `shoal-sim`'s default walk: 100.00, 10 bps steps, a 150 bps jump with
/// probability 0.002.
pub fn default_walk() -> WalkParams {
    WalkParams {
        start_price: rust_decimal::Decimal::new(10_000, 2),
        volatility_bps: 10,
        jump_probability: 0.002,
        jump_bps: 150,
        first_trade_id: 1,
    }
}

/// Ticks from the simulator's price walk (the same walk `shoal-sim` serves),
/// timed on a virtual clock from `start`.
pub fn synthesize(s: &Synth) -> Vec<MarketTick> {
    let symbols: Vec<Arc<str>> = s.symbols.iter().map(|x| Arc::from(x.as_str())).collect();
    let mut market = Market::new(&symbols, s.seed, &s.walk);
    (0..s.ticks)
        .map(|i| {
            let at = s.start + s.interval * i32::try_from(i).unwrap_or(i32::MAX);
            let trade = market.next_trade(at);
            MarketTick {
                schema_version: SCHEMA_VERSION,
                source: "shoal-sim".into(),
                symbol: trade.symbol.to_string(),
                price: trade.price,
                size: trade.size,
                side: Some(match trade.side {
                    shoal_sim::Side::Buy => Side::Buy,
                    shoal_sim::Side::Sell => Side::Sell,
                }),
                trade_id: Some(trade.trade_id.to_string()),
                sequence: Some(u64::try_from(i).unwrap_or(u64::MAX) + 1),
                exchange_ts: trade.ts,
                received_at: trade.ts,
                channel: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synth(seed: u64) -> Synth {
        Synth {
            seed,
            symbols: vec!["SIM-A".into(), "SIM-B".into()],
            ticks: 50,
            interval: TimeDelta::milliseconds(250),
            start: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
            walk: default_walk(),
        }
    }

    #[test]
    fn a_synthetic_recording_is_a_function_of_its_seed_and_round_trips() {
        let (a, b, c) = (synthesize(&synth(1)), synthesize(&synth(1)), synthesize(&synth(2)));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let dir = std::env::temp_dir().join(format!("shoal-recording-{}", std::process::id()));
        let path = dir.join("r.jsonl");
        write(&path, &a).unwrap();
        assert_eq!(read(&path).unwrap(), a);
        std::fs::write(&path, "# comment\n\n{\"not\": \"a tick\"}\n").unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(error.contains("line 3") && error.contains("MarketTick"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
