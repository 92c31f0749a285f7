//! One account's books: cash, signed positions at average cost, realised
//! P&L, fees, the equity peak that drawdown is measured from, and the ids of
//! the orders that have filled (so a retried order never fills twice).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::order::{Fill, Order, Side};

/// Why, and when, an account was halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    /// When it tripped (the `now` of the check that tripped it).
    pub at: DateTime<Utc>,
    /// The drawdown that tripped it.
    pub drawdown: Decimal,
    /// A sentence for people.
    pub reason: String,
}

/// Prices by symbol. A `BTreeMap` so that anything built from it iterates,
/// and serialises, in the same order every time.
pub type Prices = BTreeMap<String, Decimal>;

/// A holding in one symbol.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    /// Signed quantity: positive long, negative short, zero flat.
    pub quantity: Decimal,
    /// The average price the open quantity was entered at; zero when flat.
    pub average_cost: Decimal,
    /// P&L realised by trades in this symbol, before fees.
    pub realised_pnl: Decimal,
}

impl Position {
    /// Applies a trade of signed `delta` at `price` and returns the P&L it
    /// realised. Adding to a position (or opening one) moves the average
    /// cost; reducing it realises `closed * (price - average_cost)` (the sign
    /// flipped for a short) and keeps the average cost; going through flat
    /// opens the remainder at `price`.
    fn apply(&mut self, delta: Decimal, price: Decimal) -> Decimal {
        let old = self.quantity;
        let new = old + delta;
        let adds = old.is_zero() || (old > Decimal::ZERO) == (delta > Decimal::ZERO);
        if adds {
            self.average_cost = (old.abs() * self.average_cost + delta.abs() * price) / new.abs();
            self.quantity = new;
            return Decimal::ZERO;
        }
        let closed = delta.abs().min(old.abs());
        let direction = if old > Decimal::ZERO { Decimal::ONE } else { Decimal::NEGATIVE_ONE };
        let realised = closed * (price - self.average_cost) * direction;
        self.realised_pnl += realised;
        self.quantity = new;
        if new.is_zero() {
            self.average_cost = Decimal::ZERO;
        } else if (new > Decimal::ZERO) != (old > Decimal::ZERO) {
            self.average_cost = price;
        }
        realised
    }
}

/// What filling an order did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillOutcome {
    /// The order filled now.
    Filled(Fill),
    /// The order's `client_order_id` had already filled: nothing changed, and
    /// this is the earlier fill.
    AlreadyFilled(Fill),
    /// The order filled now, and the drawdown after it tripped the account's
    /// kill switch (only [`crate::PaperBroker::submit`] returns this).
    FilledAndHalted {
        /// The fill.
        fill: Fill,
        /// The kill switch it tripped.
        kill_switch: KillSwitch,
    },
}

impl FillOutcome {
    /// The fill, new or earlier.
    #[must_use]
    pub fn fill(&self) -> &Fill {
        match self {
            FillOutcome::Filled(fill) | FillOutcome::AlreadyFilled(fill) => fill,
            FillOutcome::FilledAndHalted { fill, .. } => fill,
        }
    }

    /// Whether the order filled now (rather than earlier).
    #[must_use]
    pub fn is_new(&self) -> bool {
        !matches!(self, FillOutcome::AlreadyFilled(_))
    }

    /// The kill switch this fill tripped, if it did.
    #[must_use]
    pub fn kill_switch(&self) -> Option<&KillSwitch> {
        match self {
            FillOutcome::FilledAndHalted { kill_switch, .. } => Some(kill_switch),
            _ => None,
        }
    }
}

/// Why a ledger refused a fill.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LedgerError {
    /// The order is for another account.
    #[error("order is for account {order:?}, but this ledger is account {ledger:?}")]
    WrongAccount {
        /// This ledger's account.
        ledger: String,
        /// The order's account.
        order: String,
    },
    /// The fill does not belong to the order.
    #[error("the fill's {field} does not match the order's")]
    MismatchedFill {
        /// The first field that differs.
        field: &'static str,
    },
    /// The fill's quantity or price is not positive.
    #[error("the fill's quantity {quantity} and price {price} must be positive")]
    InvalidFill {
        /// The fill's quantity.
        quantity: Decimal,
        /// The fill's price.
        price: Decimal,
    },
}

/// An account valued at some prices.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mark {
    /// Cash plus the value of every position: `cash + sum(quantity * price)`.
    pub equity: Decimal,
    /// `sum(quantity * (price - average_cost))` over open positions.
    pub unrealised_pnl: Decimal,
    /// `sum(|quantity * price|)`: the gross exposure.
    pub gross_notional: Decimal,
    /// Open positions with no price, valued at their average cost.
    pub unpriced: Vec<String>,
}

/// One account's books.
///
/// Cash may go negative (there is no buying-power check; the notional limits
/// of [`crate::RiskLimits`] bound exposure instead), and positions may be
/// short. Every order id that filled is remembered for the ledger's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    account: String,
    initial_cash: Decimal,
    cash: Decimal,
    positions: BTreeMap<String, Position>,
    realised_pnl: Decimal,
    fees_paid: Decimal,
    equity_peak: Decimal,
    fill_count: u64,
    marks: Prices,
    filled: BTreeMap<String, Fill>,
}

impl Ledger {
    /// An account holding `cash` and nothing else. The equity peak starts at
    /// `cash`.
    #[must_use]
    pub fn new(account: impl Into<String>, cash: Decimal) -> Self {
        Ledger {
            account: account.into(),
            initial_cash: cash,
            cash,
            positions: BTreeMap::new(),
            realised_pnl: Decimal::ZERO,
            fees_paid: Decimal::ZERO,
            equity_peak: cash,
            fill_count: 0,
            marks: Prices::new(),
            filled: BTreeMap::new(),
        }
    }

    /// The account's name.
    #[must_use]
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The cash the account was opened with.
    #[must_use]
    pub fn initial_cash(&self) -> Decimal {
        self.initial_cash
    }

    /// The cash now: initial cash, less what buys paid, plus what sells got,
    /// less fees.
    #[must_use]
    pub fn cash(&self) -> Decimal {
        self.cash
    }

    /// Every symbol ever traded, flat ones included.
    #[must_use]
    pub fn positions(&self) -> &BTreeMap<String, Position> {
        &self.positions
    }

    /// The position in `symbol`, if it was ever traded.
    #[must_use]
    pub fn position(&self, symbol: &str) -> Option<&Position> {
        self.positions.get(symbol)
    }

    /// The signed quantity held in `symbol` (zero if none).
    #[must_use]
    pub fn quantity(&self, symbol: &str) -> Decimal {
        self.positions.get(symbol).map_or(Decimal::ZERO, |position| position.quantity)
    }

    /// P&L realised across all symbols, before fees.
    #[must_use]
    pub fn realised_pnl(&self) -> Decimal {
        self.realised_pnl
    }

    /// Fees paid across all fills.
    #[must_use]
    pub fn fees_paid(&self) -> Decimal {
        self.fees_paid
    }

    /// The highest equity observed (at a fill or a price update).
    #[must_use]
    pub fn equity_peak(&self) -> Decimal {
        self.equity_peak
    }

    /// How many fills the ledger has taken.
    #[must_use]
    pub fn fill_count(&self) -> u64 {
        self.fill_count
    }

    /// The last price seen per symbol (from fills and [`Ledger::update_mark`]).
    #[must_use]
    pub fn marks(&self) -> &Prices {
        &self.marks
    }

    /// The fill of order `client_order_id`, if it filled.
    #[must_use]
    pub fn filled(&self, client_order_id: &str) -> Option<&Fill> {
        self.filled.get(client_order_id)
    }

    /// The price of `symbol`: from `prices` if there, else the ledger's last
    /// mark for it.
    #[must_use]
    pub fn price_of(&self, symbol: &str, prices: &Prices) -> Option<Decimal> {
        prices.get(symbol).or_else(|| self.marks.get(symbol)).copied()
    }

    /// Values the account. Each open position is priced from `prices`, else
    /// from the ledger's last mark, else at its average cost (and listed in
    /// [`Mark::unpriced`]).
    #[must_use]
    pub fn mark(&self, prices: &Prices) -> Mark {
        let mut mark = Mark { equity: self.cash, ..Mark::default() };
        for (symbol, position) in &self.positions {
            if position.quantity.is_zero() {
                continue;
            }
            let price = self.price_of(symbol, prices).unwrap_or_else(|| {
                mark.unpriced.push(symbol.clone());
                position.average_cost
            });
            let value = position.quantity * price;
            mark.equity += value;
            mark.unrealised_pnl += position.quantity * (price - position.average_cost);
            mark.gross_notional += value.abs();
        }
        mark
    }

    /// `cash + sum(quantity * price)`, priced as [`Ledger::mark`] does.
    #[must_use]
    pub fn equity(&self, prices: &Prices) -> Decimal {
        self.mark(prices).equity
    }

    /// How far equity at `prices` is below the peak, as a fraction of the
    /// peak: `(peak - equity) / peak`, where the peak is the higher of the
    /// recorded peak and the equity now. Zero at a new high, and zero when
    /// the peak is not positive (a drawdown from nothing is undefined).
    #[must_use]
    pub fn drawdown(&self, prices: &Prices) -> Decimal {
        let equity = self.equity(prices);
        let peak = self.equity_peak.max(equity);
        if peak <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        ((peak - equity) / peak).normalize()
    }

    /// Records `price` as the last price of `symbol` and raises the equity
    /// peak if equity is now higher. Non-positive prices are ignored.
    pub fn update_mark(&mut self, symbol: &str, price: Decimal) {
        if price <= Decimal::ZERO {
            return;
        }
        self.marks.insert(symbol.to_owned(), price);
        self.raise_peak();
    }

    /// Sets the equity peak to the equity at the ledger's marks, so that
    /// drawdown is measured afresh from now (used when a kill switch is
    /// reset).
    pub fn rebase_peak(&mut self) {
        self.equity_peak = self.equity(&Prices::new());
    }

    fn raise_peak(&mut self) {
        self.equity_peak = self.equity_peak.max(self.equity(&Prices::new()));
    }

    /// Books `fill` of `order`.
    ///
    /// If `order.client_order_id` has filled before, nothing changes and the
    /// earlier fill comes back as [`FillOutcome::AlreadyFilled`]. Otherwise
    /// the fill's mid becomes the symbol's mark (raising the peak if equity
    /// rose), cash moves by the notional and the fee, the position and
    /// realised P&L are updated, and the order id is remembered.
    ///
    /// # Errors
    ///
    /// A [`LedgerError`] if the order is for another account, or the fill is
    /// not of this order or not positive.
    pub fn fill(&mut self, order: &Order, fill: &Fill) -> Result<FillOutcome, LedgerError> {
        if order.account != self.account {
            return Err(LedgerError::WrongAccount { ledger: self.account.clone(), order: order.account.clone() });
        }
        if let Some(previous) = self.filled.get(&order.client_order_id) {
            return Ok(FillOutcome::AlreadyFilled(previous.clone()));
        }
        check_fill(order, fill)?;
        self.update_mark(&fill.symbol, fill.mid_price);
        match fill.side {
            Side::Buy => self.cash -= fill.notional,
            Side::Sell => self.cash += fill.notional,
        }
        self.cash -= fill.fee;
        self.fees_paid += fill.fee;
        let position = self.positions.entry(fill.symbol.clone()).or_default();
        self.realised_pnl += position.apply(fill.side.signed(fill.quantity), fill.price);
        self.fill_count += 1;
        self.filled.insert(order.client_order_id.clone(), fill.clone());
        self.raise_peak();
        Ok(FillOutcome::Filled(fill.clone()))
    }
}

fn check_fill(order: &Order, fill: &Fill) -> Result<(), LedgerError> {
    let field = if fill.client_order_id != order.client_order_id {
        Some("client_order_id")
    } else if fill.account != order.account {
        Some("account")
    } else if fill.symbol != order.symbol {
        Some("symbol")
    } else if fill.side != order.side {
        Some("side")
    } else if fill.quantity != order.quantity {
        Some("quantity")
    } else {
        None
    };
    if let Some(field) = field {
        return Err(LedgerError::MismatchedFill { field });
    }
    if fill.quantity <= Decimal::ZERO || fill.price <= Decimal::ZERO {
        return Err(LedgerError::InvalidFill { quantity: fill.quantity, price: fill.price });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::str::FromStr;

    use super::*;
    use crate::order::{FillModel, simulate_fill};

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn order(id: &str, side: Side, quantity: &str) -> Order {
        Order {
            client_order_id: id.into(),
            account: "acct".into(),
            symbol: "SIM-A".into(),
            side,
            quantity: d(quantity),
            limit_price: None,
        }
    }

    fn trade(ledger: &mut Ledger, id: &str, side: Side, quantity: &str, mid: &str, model: &FillModel) -> FillOutcome {
        let order = order(id, side, quantity);
        let fill = simulate_fill(&order, d(mid), model).unwrap();
        ledger.fill(&order, &fill).unwrap()
    }

    fn prices(price: &str) -> Prices {
        Prices::from([("SIM-A".to_owned(), d(price))])
    }

    #[test]
    fn a_round_trip_realises_pnl_and_pays_fees() {
        let model = FillModel::new(d("10"), Decimal::ZERO);
        let mut ledger = Ledger::new("acct", d("10000"));
        trade(&mut ledger, "1", Side::Buy, "10", "100", &model);
        assert_eq!(ledger.cash(), d("10000") - d("1000") - d("1"));
        assert_eq!(ledger.position("SIM-A").unwrap().average_cost, d("100"));
        let mark = ledger.mark(&prices("105"));
        assert_eq!((mark.unrealised_pnl, mark.equity, mark.gross_notional), (d("50"), d("10049"), d("1050")));
        trade(&mut ledger, "2", Side::Sell, "10", "110", &model);
        assert_eq!(ledger.realised_pnl(), d("100"));
        assert_eq!(ledger.fees_paid(), d("2.1"));
        assert_eq!(ledger.cash(), d("10097.9"));
        assert_eq!(ledger.quantity("SIM-A"), Decimal::ZERO);
        assert_eq!(ledger.position("SIM-A").unwrap().average_cost, Decimal::ZERO);
        assert_eq!(ledger.equity(&prices("1")), d("10097.9"));
        assert_eq!(ledger.fill_count(), 2);
    }

    #[test]
    fn adding_averages_the_cost_and_reducing_keeps_it() {
        let mut ledger = Ledger::new("acct", d("10000"));
        let free = FillModel::default();
        trade(&mut ledger, "1", Side::Buy, "10", "100", &free);
        trade(&mut ledger, "2", Side::Buy, "30", "120", &free);
        assert_eq!(ledger.position("SIM-A").unwrap().average_cost, d("115"));
        trade(&mut ledger, "3", Side::Sell, "20", "110", &free);
        let position = ledger.position("SIM-A").unwrap();
        assert_eq!((position.quantity, position.average_cost, position.realised_pnl), (d("20"), d("115"), d("-100")));
    }

    #[test]
    fn a_sell_through_flat_flips_long_to_short() {
        let mut ledger = Ledger::new("acct", d("10000"));
        let free = FillModel::default();
        trade(&mut ledger, "1", Side::Buy, "10", "100", &free);
        trade(&mut ledger, "2", Side::Sell, "25", "90", &free);
        let position = ledger.position("SIM-A").unwrap();
        assert_eq!((position.quantity, position.average_cost), (d("-15"), d("90")));
        assert_eq!(ledger.realised_pnl(), d("-100"));
        // Short 15 at 90: a fall to 80 gains 150; covering there realises it.
        assert_eq!(ledger.mark(&prices("80")).unrealised_pnl, d("150"));
        trade(&mut ledger, "3", Side::Buy, "15", "80", &free);
        assert_eq!(ledger.realised_pnl(), d("50"));
        assert_eq!(ledger.cash(), d("10050"));
    }

    #[test]
    fn the_same_order_id_fills_once() {
        let mut ledger = Ledger::new("acct", d("1000"));
        let free = FillModel::default();
        let first = trade(&mut ledger, "dup", Side::Buy, "1", "100", &free);
        assert!(first.is_new());
        let before = ledger.clone();
        let again = trade(&mut ledger, "dup", Side::Buy, "1", "120", &free);
        assert_eq!(again, FillOutcome::AlreadyFilled(first.fill().clone()));
        assert!(!again.is_new() && again.kill_switch().is_none());
        assert_eq!(ledger, before);
        assert_eq!(ledger.filled("dup").unwrap().price, d("100"));
    }

    #[test]
    fn drawdown_is_measured_from_the_peak() {
        let mut ledger = Ledger::new("acct", d("1000"));
        trade(&mut ledger, "1", Side::Buy, "10", "100", &FillModel::default());
        ledger.update_mark("SIM-A", d("120"));
        assert_eq!(ledger.equity_peak(), d("1200"));
        assert_eq!(ledger.drawdown(&prices("108")), d("0.1"));
        assert_eq!(ledger.drawdown(&prices("130")), Decimal::ZERO);
        assert_eq!(ledger.drawdown(&Prices::new()), Decimal::ZERO);
        ledger.update_mark("SIM-A", d("90"));
        assert_eq!(ledger.equity_peak(), d("1200"));
        ledger.rebase_peak();
        assert_eq!(ledger.equity_peak(), d("900"));
        assert!(Ledger::new("empty", Decimal::ZERO).drawdown(&Prices::new()).is_zero());
    }

    #[test]
    fn unpriced_positions_are_valued_at_cost() {
        let mut ledger = Ledger::new("acct", d("1000"));
        trade(&mut ledger, "1", Side::Buy, "2", "100", &FillModel::default());
        ledger.marks.clear();
        let mark = ledger.mark(&Prices::new());
        assert_eq!((mark.equity, mark.unpriced), (d("1000"), vec!["SIM-A".to_owned()]));
    }

    #[test]
    fn fills_that_do_not_belong_are_refused() {
        let mut ledger = Ledger::new("other", d("1000"));
        let buy = order("1", Side::Buy, "1");
        let fill = simulate_fill(&buy, d("10"), &FillModel::default()).unwrap();
        assert!(matches!(ledger.fill(&buy, &fill), Err(LedgerError::WrongAccount { .. })));
        let mut ledger = Ledger::new("acct", d("1000"));
        let mut wrong = fill.clone();
        wrong.symbol = "SIM-B".into();
        assert_eq!(ledger.fill(&buy, &wrong), Err(LedgerError::MismatchedFill { field: "symbol" }));
        wrong = fill;
        wrong.price = Decimal::ZERO;
        assert!(matches!(ledger.fill(&buy, &wrong), Err(LedgerError::InvalidFill { .. })));
        assert_eq!(ledger.fill_count(), 0);
    }
}
