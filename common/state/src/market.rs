//! Market state per symbol: last trade, best bid and ask, bars, rolling VWAP
//! and realised volatility, trade counts and the last data-quality event.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use shoal_protocol::messages::{BookTop, DataQuality, MarketTick};

use crate::bars::Bars;
use crate::freshness::{Stamp, Stamped, minus};
use crate::table::Entity;

/// The last book top with its best bid and ask, and the spread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// The book top.
    #[serde(flatten)]
    pub top: BookTop,
    /// `ask - bid` (negative when the book is crossed).
    pub spread: Decimal,
    /// `(bid + ask) / 2`.
    pub mid: Decimal,
    /// `spread / mid × 10 000`, rounded to 4 decimal places (absent when
    /// the mid is zero).
    pub spread_bps: Option<Decimal>,
}

/// One trade in the rolling window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Exchange time.
    pub at: DateTime<Utc>,
    /// Price (exact).
    pub price: Decimal,
    /// Size.
    pub size: Decimal,
    /// `price × size`.
    pub notional: Decimal,
    /// Natural logarithm of the price (f64, see [`Rolling::volatility`]).
    #[serde(with = "float")]
    pub ln_price: f64,
}

/// Trades of the symbol's rolling window ([`StateConfig::rolling_window_secs`]
/// by exchange time, up to the newest trade; it excludes its start) and
/// what is derived from them.
///
/// [`StateConfig::rolling_window_secs`]: crate::StateConfig::rolling_window_secs
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rolling {
    /// The trades, oldest first; at most the configured number.
    pub samples: VecDeque<Sample>,
    /// Sum of sizes in the window (kept incrementally, exact).
    pub volume: Decimal,
    /// Sum of `price × size` in the window (kept incrementally, exact).
    pub notional: Decimal,
    /// `notional / volume`: the rolling VWAP (absent while the volume is 0).
    pub vwap: Option<Decimal>,
    /// Realised volatility: the sample standard deviation of the log returns
    /// between consecutive trades in the window, unscaled (per trade, not
    /// annualised). Absent below two returns. Computed in f64 from scratch
    /// on every trade (never accumulated), so it is deterministic for a
    /// given build and platform; serialised as a string holding the
    /// shortest text that parses back to the same f64.
    #[serde(with = "float::opt")]
    pub volatility: Option<f64>,
}

impl Rolling {
    fn push(&mut self, at: DateTime<Utc>, (price, size, notional): (Decimal, Decimal, Decimal), limits: MarketLimits) {
        if let Some(ln_price) = price.to_f64().map(f64::ln).filter(|l| l.is_finite()) {
            self.samples.push_back(Sample { at, price, size, notional, ln_price });
            self.volume = self.volume.saturating_add(size);
            self.notional = self.notional.saturating_add(notional);
        }
        let horizon = minus(at, limits.rolling_window);
        let max_samples = limits.max_window_samples.max(1);
        while self.samples.len() > max_samples || self.samples.front().is_some_and(|s| s.at <= horizon) {
            if let Some(old) = self.samples.pop_front() {
                self.volume = self.volume.saturating_sub(old.size);
                self.notional = self.notional.saturating_sub(old.notional);
            }
        }
        self.vwap = self.notional.checked_div(self.volume);
        self.volatility = volatility(&self.samples);
    }
}

fn volatility(samples: &VecDeque<Sample>) -> Option<f64> {
    let returns: Vec<f64> = samples.iter().zip(samples.iter().skip(1)).map(|(a, b)| b.ln_price - a.ln_price).collect();
    if returns.len() < 2 {
        return None;
    }
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let variance = returns.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / (n - 1.0);
    Some(variance.sqrt()).filter(|v| v.is_finite())
}

/// Everything known about one symbol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolState {
    /// Newest input that changed it.
    pub updated: Stamp,
    /// Trades applied.
    pub trades: u64,
    /// Trades older than the last trade, counted and otherwise not applied.
    pub late_trades: u64,
    /// The newest trade.
    pub last_trade: Option<Stamped<MarketTick>>,
    /// The last book top (stamped with its exchange time, else when Shoal
    /// received it).
    pub book: Option<Stamped<Book>>,
    /// OHLCV bars at 1 s, 1 min and 5 min.
    pub bars: Bars,
    /// The rolling window's trades: rolling VWAP and volatility.
    pub rolling: Rolling,
    /// The last data-quality event (symbol `*`: of a connection).
    pub last_quality: Option<Stamped<DataQuality>>,
    /// What the decision rules remember about it, by name (e.g. when a
    /// rule last fired), set with [`State::mark`](crate::State::mark).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, DateTime<Utc>>,
}

impl Entity for SymbolState {
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated.at
    }
}

/// Bounds of the market state (from the state's configuration).
#[derive(Debug, Clone, Copy)]
pub struct MarketLimits {
    /// Closed bars kept per resolution.
    pub max_closed_bars: usize,
    /// Trades kept in the rolling window at most.
    pub max_window_samples: usize,
    /// Length of the rolling window.
    pub rolling_window: TimeDelta,
}

/// A trade's notional (`price × size`) when the tick can be applied: a
/// positive price and a size that is not negative.
pub fn check_tick(tick: &MarketTick) -> Result<Decimal, String> {
    if tick.price <= Decimal::ZERO {
        return Err(format!("trade price {} is not positive", tick.price));
    }
    if tick.size < Decimal::ZERO {
        return Err(format!("trade size {} is negative", tick.size));
    }
    tick.price.checked_mul(tick.size).ok_or_else(|| format!("price × size overflows ({} × {})", tick.price, tick.size))
}

/// Event time of a book top: the exchange's, else when Shoal received it.
pub fn book_time(top: &BookTop) -> DateTime<Utc> {
    top.exchange_ts.unwrap_or(top.received_at)
}

impl SymbolState {
    /// An empty symbol, first changed by `stamp`.
    pub fn new(stamp: &Stamp) -> Self {
        Self {
            updated: stamp.clone(),
            trades: 0,
            late_trades: 0,
            last_trade: None,
            book: None,
            bars: Bars::default(),
            rolling: Rolling::default(),
            last_quality: None,
            marks: BTreeMap::new(),
        }
    }

    /// Applies a trade whose notional [`check_tick`] gave. A trade older
    /// than the last one is late: counted in `late_trades`, nothing else.
    pub fn apply_tick(&mut self, tick: &MarketTick, notional: Decimal, stamp: &Stamp, limits: MarketLimits) {
        self.updated.merge(stamp);
        let at = tick.exchange_ts;
        if self.last_trade.as_ref().is_some_and(|last| at < last.value.exchange_ts) {
            self.late_trades += 1;
            return;
        }
        self.trades += 1;
        self.last_trade = Some(Stamped::new(tick.clone(), stamp));
        let trade = (tick.price, tick.size, notional);
        self.bars.add(at, trade, limits.max_closed_bars);
        self.rolling.push(at, trade, limits);
    }

    /// Applies a book top: the best bid and ask and the spread.
    pub fn apply_book(&mut self, top: &BookTop, stamp: &Stamp) {
        self.updated.merge(stamp);
        let spread = top.ask_price.saturating_sub(top.bid_price);
        let mid = top.bid_price.saturating_add(top.ask_price) / Decimal::TWO;
        let spread_bps = spread.saturating_mul(Decimal::from(10_000)).checked_div(mid).map(|bps| bps.round_dp(4));
        self.book = Some(Stamped::new(Book { top: top.clone(), spread, mid, spread_bps }, stamp));
    }

    /// Applies a data-quality event.
    pub fn apply_quality(&mut self, dq: &DataQuality, stamp: &Stamp) {
        self.updated.merge(stamp);
        self.last_quality = Some(Stamped::new(dq.clone(), stamp));
    }
}

/// f64 as the shortest string that parses back to the same value, so a
/// snapshot restores it bit for bit (a JSON number would go through
/// serde_json's float parser, which does not promise that).
mod float {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }

    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&v.to_string()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
            Option::<String>::deserialize(d)?.map(|raw| raw.parse().map_err(D::Error::custom)).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{book_top, d, prov, tick, ts};

    const LIMITS: MarketLimits =
        MarketLimits { max_closed_bars: 60, max_window_samples: 1_000, rolling_window: TimeDelta::seconds(60) };

    fn apply(s: &mut SymbolState, secs: i64, price: &str, size: &str) {
        let t = tick("SIM-A", secs * 1_000, price, size);
        let notional = check_tick(&t).unwrap();
        s.apply_tick(&t, notional, &Stamp::new(t.exchange_ts, prov("ticks", 0, secs)), LIMITS);
    }

    fn fresh() -> SymbolState {
        SymbolState::new(&Stamp::new(ts(0), prov("ticks", 0, 0)))
    }

    #[test]
    fn last_trade_counts_and_rolling_vwap_over_the_last_minute() {
        let mut s = fresh();
        apply(&mut s, 0, "100", "1");
        apply(&mut s, 30, "102", "3");
        assert_eq!(s.rolling.vwap, Some(d("101.5")), "(100 + 306) / 4");
        apply(&mut s, 60, "104", "1");
        // the trade at 0 s left the window (60 s, exclusive at its start)
        assert_eq!(s.rolling.samples.len(), 2);
        assert_eq!((s.rolling.volume, s.rolling.notional), (d("4"), d("410")));
        assert_eq!(s.rolling.vwap, Some(d("102.5")));
        assert_eq!(s.trades, 3);
        let last = s.last_trade.clone().unwrap();
        assert_eq!((last.value.price, last.stamp.at, last.stamp.provenance.offset), (d("104"), ts(60), 60));
        assert_eq!(s.updated.at, ts(60));
    }

    #[test]
    fn samples_keep_exact_prices_and_the_window_length_is_configured() {
        let mut s = fresh();
        let limits = MarketLimits { rolling_window: TimeDelta::seconds(120), ..LIMITS };
        for (secs, price) in [(0, "100.10"), (60, "100.25"), (119, "99.90"), (121, "100")] {
            let t = tick("SIM-A", secs * 1_000, price, "1");
            s.apply_tick(&t, check_tick(&t).unwrap(), &Stamp::new(t.exchange_ts, prov("ticks", 0, secs)), limits);
        }
        let prices: Vec<_> = s.rolling.samples.iter().map(|x| x.price.to_string()).collect();
        assert_eq!(prices, ["100.25", "99.90", "100"], "the trade at 0 s left the 120 s window at 121 s");
        let json = serde_json::to_value(&s.rolling.samples[1]).unwrap();
        assert_eq!(json["price"], "99.90", "scale kept");
    }

    #[test]
    fn late_trades_are_counted_only() {
        let mut s = fresh();
        apply(&mut s, 10, "100", "1");
        let before = s.clone();
        apply(&mut s, 5, "90", "1");
        assert_eq!(s.late_trades, 1);
        assert_eq!(
            (s.trades, &s.last_trade, &s.bars, &s.rolling),
            (1, &before.last_trade, &before.bars, &before.rolling)
        );
    }

    #[test]
    fn volatility_of_a_known_series() {
        let mut s = fresh();
        // prices 100, 110, 99: log returns ln(1.1) and ln(0.9)
        apply(&mut s, 0, "100", "1");
        apply(&mut s, 1, "110", "1");
        assert_eq!(s.rolling.volatility, None, "one return is not enough");
        apply(&mut s, 2, "99", "1");
        let (r1, r2) = (1.1_f64.ln(), 0.9_f64.ln());
        let mean = (r1 + r2) / 2.0;
        let expected = ((r1 - mean).powi(2) + (r2 - mean).powi(2)).sqrt();
        let got = s.rolling.volatility.unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert!((got - 0.141_895_6).abs() < 1e-6, "{got}");
        // a constant price has none
        let mut flat = fresh();
        for i in 0..5 {
            apply(&mut flat, i, "42.5", "1");
        }
        assert_eq!(flat.rolling.volatility, Some(0.0));
    }

    #[test]
    fn the_window_is_bounded_in_samples() {
        let mut s = fresh();
        let limits = MarketLimits { max_window_samples: 2, ..LIMITS };
        for (i, price) in ["1", "2", "3"].iter().enumerate() {
            let t = tick("SIM-A", i as i64, price, "1");
            s.apply_tick(&t, check_tick(&t).unwrap(), &Stamp::new(t.exchange_ts, prov("ticks", 0, 1)), limits);
        }
        assert_eq!((s.rolling.samples.len(), s.rolling.volume, s.rolling.notional), (2, d("2"), d("5")));
    }

    #[test]
    fn spread_from_book_tops() {
        let mut s = fresh();
        let top = book_top("SIM-A", 5, "99.5", "100.5");
        s.apply_book(&top, &Stamp::new(book_time(&top), prov("ticks", 0, 1)));
        let book = s.book.clone().unwrap();
        assert_eq!((book.value.spread, book.value.mid, book.value.spread_bps), (d("1.0"), d("100"), Some(d("100"))));
        let top = book_top("SIM-A", 6, "100", "100.03");
        s.apply_book(&top, &Stamp::new(book_time(&top), prov("ticks", 0, 2)));
        let book = s.book.unwrap();
        assert_eq!((book.value.spread, book.value.spread_bps), (d("0.03"), Some(d("2.9996"))));
        assert_eq!((book.stamp.at, book.stamp.provenance.offset), (ts(6), 2));
    }

    #[test]
    fn bad_ticks_are_refused() {
        assert!(check_tick(&tick("X", 0, "0", "1")).unwrap_err().contains("not positive"));
        assert!(check_tick(&tick("X", 0, "1", "-1")).unwrap_err().contains("negative"));
        let huge = "79228162514264337593543950335";
        assert!(check_tick(&tick("X", 0, huge, "10")).unwrap_err().contains("overflows"));
        assert_eq!(check_tick(&tick("X", 0, "2.5", "4")).unwrap(), d("10"));
    }

    #[test]
    fn floats_round_trip_exactly_as_strings() {
        let mut s = fresh();
        for (i, p) in ["100.1", "100.7", "99.3", "101.9"].iter().enumerate() {
            apply(&mut s, i as i64, p, "0.3");
        }
        let json = serde_json::to_string(&s).unwrap();
        let back: SymbolState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.rolling.volatility.map(f64::to_bits), s.rolling.volatility.map(f64::to_bits));
    }
}
