//! OHLCV bars at fixed resolutions, aligned to the Unix epoch, with the
//! volume-weighted average price of each bar.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A bar resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// Five minutes.
    FiveMinutes,
}

impl Resolution {
    /// Every resolution kept, finest first.
    pub const ALL: [Resolution; 3] = [Resolution::Second, Resolution::Minute, Resolution::FiveMinutes];

    /// Length of a bar, milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Self::Second => 1_000,
            Self::Minute => 60_000,
            Self::FiveMinutes => 300_000,
        }
    }

    /// The label used in JSON (`1s`, `1m`, `5m`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Second => "1s",
            Self::Minute => "1m",
            Self::FiveMinutes => "5m",
        }
    }

    /// Start of the bar holding `at`: `at` rounded down to a multiple of the
    /// resolution since the Unix epoch.
    pub fn bar_start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let ms = self.millis();
        DateTime::from_timestamp_millis(at.timestamp_millis().div_euclid(ms) * ms).unwrap_or(at)
    }
}

/// One bar: open, high, low, close, volume, and what the VWAP needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar {
    /// Start of the bar (inclusive); it ends one resolution later (exclusive).
    pub start: DateTime<Utc>,
    /// First trade's price.
    pub open: Decimal,
    /// Highest price.
    pub high: Decimal,
    /// Lowest price.
    pub low: Decimal,
    /// Last trade's price.
    pub close: Decimal,
    /// Sum of trade sizes.
    pub volume: Decimal,
    /// Sum of price × size.
    pub notional: Decimal,
    /// Trades in the bar.
    pub trades: u64,
    /// Volume-weighted average price, `notional / volume` (absent while the
    /// volume is zero).
    pub vwap: Option<Decimal>,
}

impl Bar {
    fn open_at(start: DateTime<Utc>, price: Decimal, size: Decimal, notional: Decimal) -> Self {
        Self {
            start,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: size,
            notional,
            trades: 1,
            vwap: notional.checked_div(size),
        }
    }

    fn add(&mut self, price: Decimal, size: Decimal, notional: Decimal) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.volume = self.volume.saturating_add(size);
        self.notional = self.notional.saturating_add(notional);
        self.trades += 1;
        self.vwap = self.notional.checked_div(self.volume);
    }
}

/// The bars of one resolution: the one being built and the last closed ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarSeries {
    /// The bar holding the newest trade.
    pub current: Option<Bar>,
    /// Closed bars, oldest first, at most the configured number. Intervals
    /// without trades have no bar.
    pub closed: VecDeque<Bar>,
}

impl BarSeries {
    /// Adds a trade at `at`. A trade past the current bar closes it.
    /// `notional` is `price × size`, computed once by the caller.
    pub fn add(
        &mut self,
        resolution: Resolution,
        at: DateTime<Utc>,
        (price, size, notional): (Decimal, Decimal, Decimal),
        max_closed: usize,
    ) {
        let start = resolution.bar_start(at);
        match &mut self.current {
            // A trade before the current bar (callers drop late trades, so
            // only defensively) is folded into the current bar.
            Some(bar) if start <= bar.start => bar.add(price, size, notional),
            current => {
                if let Some(closed) = current.replace(Bar::open_at(start, price, size, notional)) {
                    self.closed.push_back(closed);
                }
                while self.closed.len() > max_closed {
                    self.closed.pop_front();
                }
            }
        }
    }
}

/// Bars at every [`Resolution`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bars {
    /// One-second bars.
    #[serde(rename = "1s")]
    pub second: BarSeries,
    /// One-minute bars.
    #[serde(rename = "1m")]
    pub minute: BarSeries,
    /// Five-minute bars.
    #[serde(rename = "5m")]
    pub five_minutes: BarSeries,
}

impl Bars {
    /// The series of one resolution.
    pub fn series(&self, resolution: Resolution) -> &BarSeries {
        match resolution {
            Resolution::Second => &self.second,
            Resolution::Minute => &self.minute,
            Resolution::FiveMinutes => &self.five_minutes,
        }
    }

    /// Adds a trade to every resolution.
    pub fn add(&mut self, at: DateTime<Utc>, trade: (Decimal, Decimal, Decimal), max_closed: usize) {
        self.second.add(Resolution::Second, at, trade, max_closed);
        self.minute.add(Resolution::Minute, at, trade, max_closed);
        self.five_minutes.add(Resolution::FiveMinutes, at, trade, max_closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{d, ts, ts_ms};

    fn trade(price: &str, size: &str) -> (Decimal, Decimal, Decimal) {
        (d(price), d(size), d(price) * d(size))
    }

    #[test]
    fn bar_starts_align_to_the_epoch() {
        assert_eq!(Resolution::Second.bar_start(ts_ms(1_999)), ts(1));
        assert_eq!(Resolution::Minute.bar_start(ts(119)), ts(60));
        assert_eq!(Resolution::FiveMinutes.bar_start(ts(599)), ts(300));
        assert_eq!(Resolution::Second.bar_start(ts_ms(-1)), ts(-1), "before the epoch: still rounded down");
        assert_eq!(Resolution::ALL.map(Resolution::label), ["1s", "1m", "5m"]);
    }

    #[test]
    fn ohlcv_and_vwap_are_exact() {
        let mut s = BarSeries::default();
        s.add(Resolution::Minute, ts(60), trade("100.10", "2"), 60);
        s.add(Resolution::Minute, ts(70), trade("101.30", "1"), 60);
        s.add(Resolution::Minute, ts(80), trade("99.90", "0.5"), 60);
        s.add(Resolution::Minute, ts(119), trade("100.00", "1.5"), 60);
        let bar = s.current.clone().unwrap();
        assert_eq!((bar.open, bar.high, bar.low, bar.close), (d("100.10"), d("101.30"), d("99.90"), d("100.00")));
        assert_eq!(bar.volume, d("5"));
        // 200.20 + 101.30 + 49.95 + 150.00 = 501.45; / 5 = 100.29
        assert_eq!(bar.notional, d("501.45"));
        assert_eq!(bar.vwap, Some(d("100.29")));
        assert_eq!((bar.trades, bar.start), (4, ts(60)));
        assert!(s.closed.is_empty());
    }

    #[test]
    fn bars_roll_over_at_each_resolution() {
        let mut bars = Bars::default();
        bars.add(ts_ms(0), trade("1", "1"), 60);
        bars.add(ts_ms(999), trade("2", "1"), 60);
        bars.add(ts_ms(1_000), trade("3", "1"), 60);
        assert_eq!(bars.second.closed.len(), 1, "1 s bar closed at 1.000 s");
        assert_eq!(bars.second.closed[0].close, d("2"));
        assert!(bars.minute.closed.is_empty());
        bars.add(ts(60), trade("4", "1"), 60);
        assert_eq!((bars.second.closed.len(), bars.minute.closed.len()), (2, 1));
        assert_eq!(bars.minute.closed[0].trades, 3);
        assert_eq!(bars.minute.current.as_ref().unwrap().start, ts(60));
        assert!(bars.five_minutes.closed.is_empty());
        bars.add(ts(300), trade("5", "1"), 60);
        let five = bars.series(Resolution::FiveMinutes);
        assert_eq!((five.closed.len(), five.closed[0].trades, five.closed[0].high), (1, 4, d("4")));
        assert_eq!(five.current.as_ref().unwrap().start, ts(300));
        assert_eq!(bars.minute.closed.len(), 2, "an empty interval has no bar");
    }

    #[test]
    fn closed_bars_are_bounded() {
        let mut s = BarSeries::default();
        for i in 0..10 {
            s.add(Resolution::Second, ts(i), trade("1", "1"), 3);
        }
        assert_eq!(s.closed.iter().map(|b| b.start).collect::<Vec<_>>(), [ts(6), ts(7), ts(8)]);
        assert_eq!(s.current.unwrap().start, ts(9));
    }

    #[test]
    fn zero_volume_has_no_vwap() {
        let mut s = BarSeries::default();
        s.add(Resolution::Second, ts(0), trade("5", "0"), 3);
        assert_eq!(s.current.unwrap().vwap, None);
    }
}
