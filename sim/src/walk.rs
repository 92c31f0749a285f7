//! Deterministic market generation: a seeded random walk in integer price
//! ticks per symbol, and a [`Market`] that cycles through every symbol.
//!
//! Everything here is pure (no clocks, no I/O): the same seed and parameters
//! always produce the same sequence of prices, sizes, sides and trade ids, so
//! tests can predict what the simulator will stream. Only the timestamp is
//! supplied by the caller.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

/// Decimal places of a price: prices move in ticks of 0.01.
pub const PRICE_DP: u32 = 2;

/// Decimal places of a trade size: sizes are multiples of 0.001.
pub const SIZE_DP: u32 = 3;

/// Largest price the walk can reach, in ticks (10 trillion units). Keeps the
/// integer and floating-point arithmetic far from overflow and rounding loss.
pub const MAX_PRICE_TICKS: i64 = 1_000_000_000_000_000;

/// Largest trade size, in thousandths (5.000).
const MAX_SIZE_MILLIS: i64 = 5_000;

/// Converts a price to whole ticks, or `None` if it is not strictly positive,
/// has more than [`PRICE_DP`] decimal places, or exceeds [`MAX_PRICE_TICKS`].
pub fn price_to_ticks(price: Decimal) -> Option<i64> {
    if price <= Decimal::ZERO || price.normalize().scale() > PRICE_DP {
        return None;
    }
    let ticks = (price * Decimal::ONE_HUNDRED).trunc().to_i64()?;
    (1..=MAX_PRICE_TICKS).contains(&ticks).then_some(ticks)
}

/// Converts whole ticks to an exact price with [`PRICE_DP`] decimal places.
pub fn ticks_to_price(ticks: i64) -> Decimal {
    Decimal::new(ticks, PRICE_DP)
}

/// The aggressor (taker) side of a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The taker bought (lifted an offer).
    Buy,
    /// The taker sold (hit a bid).
    Sell,
}

impl Side {
    /// The wire name: `"buy"` or `"sell"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// One step of a [`PriceWalk`]: the price, size and side of the next trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStep {
    /// Trade price, exact, with [`PRICE_DP`] decimal places; always ≥ 0.01.
    pub price: Decimal,
    /// Trade size, exact, with [`SIZE_DP`] decimal places; in `0.001..=5.000`.
    pub size: Decimal,
    /// Taker side: `Buy` when the price ticked up, `Sell` when it ticked
    /// down, random when unchanged.
    pub side: Side,
}

/// A seeded random walk of one instrument's trade prices, in integer ticks.
///
/// Each step moves the price by a roughly normal amount whose standard
/// deviation is `volatility_bps` basis points of the current price
/// (stochastically rounded to whole ticks, so low prices still move), plus,
/// with probability `jump_probability`, a jump of `jump_bps` basis points
/// (at least one tick) up or down. The price never falls below one tick
/// (0.01) nor rises above [`MAX_PRICE_TICKS`].
///
/// Iterating yields an endless sequence of [`WalkStep`]s; the same seed and
/// parameters always yield the same sequence.
#[derive(Debug, Clone)]
pub struct PriceWalk {
    rng: StdRng,
    price_ticks: i64,
    volatility_bps: u32,
    jump_probability: f64,
    jump_bps: u32,
}

impl PriceWalk {
    /// Creates a walk starting at `start_price`.
    ///
    /// `start_price` is rounded to whole ticks and clamped to
    /// `0.01..=MAX_PRICE_TICKS`; `jump_probability` is clamped to `[0, 1]`
    /// (a NaN counts as 0). Validate beforehand (see
    /// [`SimConfig::validate`](super::SimConfig::validate)) to reject such
    /// values instead.
    pub fn new(seed: u64, start_price: Decimal, volatility_bps: u32, jump_probability: f64, jump_bps: u32) -> Self {
        let price_ticks = (start_price * Decimal::ONE_HUNDRED)
            .round()
            .to_i64()
            .unwrap_or(if start_price > Decimal::ZERO { MAX_PRICE_TICKS } else { 1 })
            .clamp(1, MAX_PRICE_TICKS);
        let jump_probability = if jump_probability.is_nan() { 0.0 } else { jump_probability.clamp(0.0, 1.0) };
        Self { rng: StdRng::seed_from_u64(seed), price_ticks, volatility_bps, jump_probability, jump_bps }
    }

    /// The current (last traded) price.
    pub fn price(&self) -> Decimal {
        ticks_to_price(self.price_ticks)
    }

    /// The current price in whole ticks.
    pub fn price_ticks(&self) -> i64 {
        self.price_ticks
    }

    /// Advances the walk by one trade.
    pub fn step(&mut self) -> WalkStep {
        let current = self.price_ticks as f64;

        // Approximately standard normal: the sum of three uniforms on [-1, 1)
        // has mean 0 and variance 3 * 1/3 = 1.
        let z: f64 = (0..3).map(|_| self.rng.random_range(-1.0..1.0)).sum();
        let step = current * f64::from(self.volatility_bps) / 10_000.0 * z;
        // Stochastic rounding keeps small steps unbiased instead of always 0.
        let mut delta = (step + self.rng.random::<f64>()).floor() as i64;

        if self.jump_probability > 0.0 && self.rng.random_bool(self.jump_probability) {
            let size = ((current * f64::from(self.jump_bps) / 10_000.0).round() as i64).max(1);
            delta += if self.rng.random_bool(0.5) { size } else { -size };
        }

        let next = self.price_ticks.saturating_add(delta).clamp(1, MAX_PRICE_TICKS);
        let side = match next.cmp(&self.price_ticks) {
            std::cmp::Ordering::Greater => Side::Buy,
            std::cmp::Ordering::Less => Side::Sell,
            std::cmp::Ordering::Equal => {
                if self.rng.random_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                }
            }
        };
        self.price_ticks = next;

        // Skewed towards small trades: u^3 puts most mass near zero.
        let u: f64 = self.rng.random();
        let size_millis = (1 + (u * u * u * (MAX_SIZE_MILLIS - 1) as f64) as i64).min(MAX_SIZE_MILLIS);

        WalkStep { price: ticks_to_price(next), size: Decimal::new(size_millis, SIZE_DP), side }
    }
}

impl Iterator for PriceWalk {
    type Item = WalkStep;

    fn next(&mut self) -> Option<WalkStep> {
        Some(self.step())
    }
}

/// One simulated trade, as broadcast to every connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    /// Position of the symbol in the configured symbol list.
    pub symbol_index: usize,
    /// The symbol name, e.g. `SIM-A`.
    pub symbol: Arc<str>,
    /// Per-symbol trade id: 1 for the first trade of the symbol, then +1.
    pub trade_id: u64,
    /// Exact price with [`PRICE_DP`] decimal places.
    pub price: Decimal,
    /// Exact size with [`SIZE_DP`] decimal places.
    pub size: Decimal,
    /// Taker side.
    pub side: Side,
    /// Time the trade was generated.
    pub ts: DateTime<Utc>,
}

/// Parameters of a [`Market`]; a subset of
/// [`SimConfig`](super::SimConfig).
#[derive(Debug, Clone, PartialEq)]
pub struct WalkParams {
    /// Price every symbol starts at.
    pub start_price: Decimal,
    /// Typical step, in basis points of the price.
    pub volatility_bps: u32,
    /// Probability that a step includes a jump.
    pub jump_probability: f64,
    /// Size of a jump, in basis points of the price.
    pub jump_bps: u32,
    /// Trade id of every symbol's first trade.
    pub first_trade_id: u64,
}

#[derive(Debug, Clone)]
struct Instrument {
    symbol: Arc<str>,
    walk: PriceWalk,
    next_trade_id: u64,
}

/// Deterministic trade generator for a set of symbols.
///
/// Each symbol has its own [`PriceWalk`], seeded from the market seed and the
/// symbol's position, so adding symbols at the end does not change the walks
/// of the existing ones. [`Market::next_trade`] cycles through the symbols in
/// order, so every symbol trades at the same rate.
#[derive(Debug, Clone)]
pub struct Market {
    instruments: Vec<Instrument>,
    cursor: usize,
}

impl Market {
    /// Creates a market over `symbols` (which must be non-empty for
    /// [`Market::next_trade`] to be callable).
    pub fn new(symbols: &[Arc<str>], seed: u64, params: &WalkParams) -> Self {
        let instruments = symbols
            .iter()
            .enumerate()
            .map(|(index, symbol)| Instrument {
                symbol: Arc::clone(symbol),
                walk: PriceWalk::new(
                    symbol_seed(seed, index),
                    params.start_price,
                    params.volatility_bps,
                    params.jump_probability,
                    params.jump_bps,
                ),
                next_trade_id: params.first_trade_id,
            })
            .collect();
        Self { instruments, cursor: 0 }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.instruments.len()
    }

    /// Whether the market has no symbols.
    pub fn is_empty(&self) -> bool {
        self.instruments.is_empty()
    }

    /// Generates the next trade (of the next symbol in turn), stamped `ts`.
    ///
    /// # Panics
    ///
    /// If the market has no symbols.
    pub fn next_trade(&mut self, ts: DateTime<Utc>) -> Trade {
        assert!(!self.instruments.is_empty(), "Market::next_trade on an empty market");
        let symbol_index = self.cursor;
        self.cursor = (self.cursor + 1) % self.instruments.len();
        let instrument = &mut self.instruments[symbol_index];
        let step = instrument.walk.step();
        let trade_id = instrument.next_trade_id;
        instrument.next_trade_id += 1;
        Trade {
            symbol_index,
            symbol: Arc::clone(&instrument.symbol),
            trade_id,
            price: step.price,
            size: step.size,
            side: step.side,
            ts,
        }
    }
}

/// Derives the seed of one symbol's walk from the market seed.
fn symbol_seed(seed: u64, index: usize) -> u64 {
    // SplitMix64 finaliser over (seed, index): distinct, well-mixed seeds.
    let mut z = seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(seed: u64) -> PriceWalk {
        PriceWalk::new(seed, Decimal::new(10_000, 2), 10, 0.002, 150)
    }

    #[test]
    fn same_seed_same_sequence() {
        let a: Vec<WalkStep> = walk(42).take(5_000).collect();
        let b: Vec<WalkStep> = walk(42).take(5_000).collect();
        assert_eq!(a, b);
        let c: Vec<WalkStep> = walk(43).take(5_000).collect();
        assert_ne!(a, c, "different seeds should give different walks");
    }

    #[test]
    fn prices_positive_exact_two_dp_and_moving() {
        // Very volatile, jumpy, and starting at one tick: must never go to 0.
        let mut walk = PriceWalk::new(7, Decimal::new(1, 2), 2_000, 0.2, 5_000);
        let mut distinct = std::collections::HashSet::new();
        for step in walk.by_ref().take(20_000) {
            assert!(step.price > Decimal::ZERO, "price {} not positive", step.price);
            assert_eq!(step.price.scale(), PRICE_DP, "price {} not 2dp", step.price);
            assert_eq!(step.size.scale(), SIZE_DP, "size {} not 3dp", step.size);
            assert!(step.size >= Decimal::new(1, 3) && step.size <= Decimal::new(5_000, 3));
            distinct.insert(step.price);
        }
        assert!(distinct.len() > 10, "walk barely moved: {distinct:?}");

        // The usual parameters: exact 2dp string rendering.
        for step in walk_default_strings() {
            let (_, fraction) = step.split_once('.').expect("price has a decimal point");
            assert_eq!(fraction.len(), 2, "price {step} not rendered with 2dp");
        }
    }

    fn walk_default_strings() -> Vec<String> {
        walk(1).take(1_000).map(|s| s.price.to_string()).collect()
    }

    #[test]
    fn side_follows_price_direction() {
        let walk = walk(9);
        let mut previous = walk.price();
        for step in walk.take(2_000) {
            if step.price > previous {
                assert_eq!(step.side, Side::Buy);
            } else if step.price < previous {
                assert_eq!(step.side, Side::Sell);
            }
            previous = step.price;
        }
    }

    #[test]
    fn jumps_happen_with_probability_one() {
        let mut walk = PriceWalk::new(3, Decimal::new(10_000, 2), 0, 1.0, 150);
        for _ in 0..100 {
            let before = walk.price_ticks();
            walk.step();
            let moved = (walk.price_ticks() - before).abs();
            // Volatility is zero, so every move is exactly one jump of
            // 150 bps of the previous price.
            let jump = ((before as f64) * 0.015).round() as i64;
            assert_eq!(moved, jump.max(1), "step from {before} ticks is not a jump");
        }
    }

    #[test]
    fn market_cycles_symbols_with_per_symbol_trade_ids() {
        let symbols: Vec<Arc<str>> = vec!["SIM-A".into(), "SIM-B".into()];
        let params = WalkParams {
            start_price: Decimal::new(10_000, 2),
            volatility_bps: 10,
            jump_probability: 0.002,
            jump_bps: 150,
            first_trade_id: 1,
        };
        let ts = DateTime::<Utc>::UNIX_EPOCH;
        let mut market = Market::new(&symbols, 42, &params);
        let trades: Vec<Trade> = (0..6).map(|_| market.next_trade(ts)).collect();
        let summary: Vec<(&str, u64)> = trades.iter().map(|t| (&*t.symbol, t.trade_id)).collect();
        assert_eq!(summary, [("SIM-A", 1), ("SIM-B", 1), ("SIM-A", 2), ("SIM-B", 2), ("SIM-A", 3), ("SIM-B", 3)]);

        let mut again = Market::new(&symbols, 42, &params);
        let replay: Vec<Trade> = (0..6).map(|_| again.next_trade(ts)).collect();
        assert_eq!(trades, replay);

        // Adding a symbol does not change the existing symbols' walks.
        let more: Vec<Arc<str>> = vec!["SIM-A".into(), "SIM-B".into(), "SIM-C".into()];
        let mut bigger = Market::new(&more, 42, &params);
        let first_a = bigger.next_trade(ts);
        assert_eq!(first_a.price, trades[0].price);
        assert_eq!(first_a.size, trades[0].size);

        // A later first trade id moves the ids, not the trades.
        let mut restarted = Market::new(&symbols, 42, &WalkParams { first_trade_id: 1_000, ..params });
        let later: Vec<Trade> = (0..6).map(|_| restarted.next_trade(ts)).collect();
        let ids: Vec<u64> = later.iter().map(|t| t.trade_id).collect();
        assert_eq!(ids, [1_000, 1_000, 1_001, 1_001, 1_002, 1_002]);
        assert!(later.iter().zip(&trades).all(|(l, t)| (l.price, l.size, l.side) == (t.price, t.size, t.side)));
    }

    #[test]
    fn price_tick_conversion() {
        assert_eq!(price_to_ticks(Decimal::new(10_025, 2)), Some(10_025));
        assert_eq!(price_to_ticks(Decimal::new(1_000, 1)), Some(10_000));
        assert_eq!(price_to_ticks(Decimal::new(100_000, 3)), Some(10_000));
        assert_eq!(price_to_ticks(Decimal::new(1_001, 3)), None);
        assert_eq!(price_to_ticks(Decimal::ZERO), None);
        assert_eq!(price_to_ticks(Decimal::new(-1, 0)), None);
        assert_eq!(ticks_to_price(10_000).to_string(), "100.00");
    }
}
