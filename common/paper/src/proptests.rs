//! Properties over random runs of orders and price moves: limits hold after
//! every accepted order, a replay serialises to the same bytes, and equity
//! is cash plus the positions at the prices.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::Config;
use rust_decimal::Decimal;

use crate::{FillModel, FillOutcome, Order, PaperBroker, Prices, RiskLimits, Side};

const ACCOUNTS: [&str; 2] = ["alpha", "beta"];
const SYMBOLS: [&str; 3] = ["SIM-A", "SIM-B", "SIM-C"];

#[derive(Debug, Clone)]
enum Op {
    Submit { account: usize, symbol: usize, buy: bool, hundredths: i64, limit: Option<i64>, id: u8, after_ms: i64 },
    Price { symbol: usize, cents: i64, after_ms: i64 },
    Reset { account: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..3usize, any::<bool>(), 1..15_000i64, prop::option::of(-300..300i64), 0..40u8, 0..1_500i64)
            .prop_map(|(account, symbol, buy, hundredths, limit, id, after_ms)| Op::Submit {
                account, symbol, buy, hundredths, limit, id, after_ms
            }),
        3 => (0..3usize, 8_000..12_500i64, 0..5_000i64)
            .prop_map(|(symbol, cents, after_ms)| Op::Price { symbol, cents, after_ms }),
        1 => (0..2usize).prop_map(|account| Op::Reset { account }),
    ]
}

fn limits() -> RiskLimits {
    RiskLimits {
        max_position_per_symbol: Decimal::from(250),
        max_notional_per_symbol: Decimal::from(20_000),
        max_total_notional: Decimal::from(35_000),
        max_orders_per_minute: 8,
        max_drawdown: Decimal::new(15, 2),
    }
}

/// The state of a run besides the broker: the clock and the last prices.
struct Run {
    broker: PaperBroker,
    now: DateTime<Utc>,
    prices: Prices,
}

impl Run {
    fn new() -> Self {
        let mut broker = PaperBroker::new(FillModel::new(Decimal::new(15, 1), Decimal::new(3, 0)), limits());
        for account in ACCOUNTS {
            broker.open_account(account, Decimal::from(50_000));
        }
        let prices = SYMBOLS.iter().map(|symbol| ((*symbol).to_owned(), Decimal::from(100))).collect();
        Run { broker, now: DateTime::from_timestamp(1_700_000_000, 0).unwrap(), prices }
    }

    /// Applies `op`; returns the order and its outcome if it was accepted.
    fn step(&mut self, op: &Op) -> Option<(Order, FillOutcome)> {
        match *op {
            Op::Submit { account, symbol, buy, hundredths, limit, id, after_ms } => {
                self.now += TimeDelta::milliseconds(after_ms);
                let mid = self.prices[SYMBOLS[symbol]];
                let order = Order {
                    client_order_id: format!("o-{id}"),
                    account: ACCOUNTS[account].to_owned(),
                    symbol: SYMBOLS[symbol].to_owned(),
                    side: if buy { Side::Buy } else { Side::Sell },
                    quantity: Decimal::new(hundredths, 2),
                    // Limits around the mid, some not marketable.
                    limit_price: limit.map(|bps| mid * (Decimal::ONE + Decimal::new(bps, 4))),
                };
                let outcome = self.broker.submit(&order, mid, self.now).ok()?;
                Some((order, outcome))
            }
            Op::Price { symbol, cents, after_ms } => {
                self.now += TimeDelta::milliseconds(after_ms);
                let price = Decimal::new(cents, 2);
                self.prices.insert(SYMBOLS[symbol].to_owned(), price);
                self.broker.update_price(SYMBOLS[symbol], price, self.now);
                None
            }
            Op::Reset { account } => {
                self.broker.reset_kill_switch(ACCOUNTS[account]);
                None
            }
        }
    }

    fn snapshot(&self) -> String {
        serde_json::to_string(self.broker.snapshot()).unwrap()
    }
}

proptest! {
    #![proptest_config(Config { cases: 256, ..Config::default() })]

    #[test]
    fn no_accepted_order_leaves_a_position_beyond_its_limit(ops in prop::collection::vec(op(), 1..120)) {
        let mut run = Run::new();
        let max = limits().max_position_per_symbol;
        for op in &ops {
            if let Some((order, outcome)) = run.step(op) {
                let ledger = run.broker.ledger(&order.account).unwrap();
                prop_assert!(ledger.quantity(&order.symbol).abs() <= max, "{order:?} -> {outcome:?}");
                prop_assert_eq!(ledger.filled(&order.client_order_id), Some(outcome.fill()));
            }
            for account in ACCOUNTS {
                let ledger = run.broker.ledger(account).unwrap();
                for position in ledger.positions().values() {
                    prop_assert!(position.quantity.abs() <= max);
                }
            }
        }
    }

    #[test]
    fn a_replay_serialises_to_the_same_bytes(ops in prop::collection::vec(op(), 1..120)) {
        let mut first = Run::new();
        let mut second = Run::new();
        let mut outcomes = Vec::new();
        for op in &ops {
            outcomes.push(first.step(op));
        }
        for (op, outcome) in ops.iter().zip(&outcomes) {
            prop_assert_eq!(&second.step(op), outcome);
        }
        prop_assert_eq!(first.snapshot(), second.snapshot());
        // And a broker resumed from the snapshot is the same broker.
        let resumed = PaperBroker::from_snapshot(serde_json::from_str(&first.snapshot()).unwrap());
        prop_assert_eq!(&resumed, &first.broker);
    }

    #[test]
    fn equity_is_cash_plus_positions_at_the_prices(ops in prop::collection::vec(op(), 1..120)) {
        let mut run = Run::new();
        for op in &ops {
            run.step(op);
            for account in ACCOUNTS {
                let ledger = run.broker.ledger(account).unwrap();
                let positions: Decimal = ledger
                    .positions()
                    .iter()
                    .map(|(symbol, position)| position.quantity * run.prices[symbol])
                    .sum();
                let mark = ledger.mark(&run.prices);
                prop_assert_eq!(mark.equity, ledger.cash() + positions);
                prop_assert_eq!(ledger.equity(&run.prices), mark.equity);
                prop_assert!(mark.unpriced.is_empty());
                // The P&L view of the same number, up to average-cost rounding.
                let pnl = ledger.initial_cash() + ledger.realised_pnl() - ledger.fees_paid() + mark.unrealised_pnl;
                prop_assert!((pnl - mark.equity).abs() < Decimal::new(1, 12), "{pnl} vs {}", mark.equity);
                let drawdown = ledger.drawdown(&run.prices);
                prop_assert!(drawdown >= Decimal::ZERO);
            }
        }
    }
}
