#![allow(clippy::unwrap_used)]
use std::str::FromStr;

use super::*;
use crate::order::Side;

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn t(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
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

fn broker(model: FillModel, limits: RiskLimits) -> PaperBroker {
    let mut broker = PaperBroker::new(model, limits);
    assert!(broker.open_account("acct", d("1000")));
    broker
}

#[test]
fn an_order_fills_and_is_booked() {
    let mut broker = broker(FillModel::new(d("10"), d("5")), RiskLimits::default());
    let outcome = broker.submit(&order("1", Side::Buy, "5"), d("100"), t(0)).unwrap();
    let FillOutcome::Filled(fill) = &outcome else { panic!("{outcome:?}") };
    assert_eq!((fill.price, fill.notional, fill.fee), (d("100.05"), d("500.25"), d("0.500250")));
    let ledger = broker.ledger("acct").unwrap();
    assert_eq!(ledger.cash(), d("1000") - d("500.25") - d("0.50025"));
    assert_eq!(ledger.quantity("SIM-A"), d("5"));
    assert_eq!(ledger.marks()["SIM-A"], d("100"));
    let cash = ledger.cash();
    assert!(broker.rejections().is_empty());
    assert!(!broker.open_account("acct", d("5")), "an open account is not reopened");
    assert_eq!(broker.ledger("acct").unwrap().cash(), cash);
}

#[test]
fn a_retried_order_fills_once_and_does_not_count_against_limits() {
    let limits = RiskLimits { max_orders_per_minute: 1, ..RiskLimits::default() };
    let mut broker = broker(FillModel::default(), limits);
    let first = broker.submit(&order("same", Side::Buy, "1"), d("100"), t(0)).unwrap();
    assert!(first.is_new());
    for _ in 0..3 {
        let again = broker.submit(&order("same", Side::Buy, "1"), d("105"), t(1)).unwrap();
        assert_eq!(again, FillOutcome::AlreadyFilled(first.fill().clone()));
    }
    let ledger = broker.ledger("acct").unwrap();
    assert_eq!((ledger.quantity("SIM-A"), ledger.fill_count()), (d("1"), 1));
    assert!(broker.rejections().is_empty());
    // The window holds only the first order: a new id is the second.
    let other = broker.submit(&order("other", Side::Buy, "1"), d("100"), t(2)).unwrap_err();
    assert_eq!(other.name(), "max_orders_per_minute");
}

#[test]
fn a_fill_that_reaches_the_drawdown_halts_the_account_until_reset() {
    // 10 % slippage on an all-in buy: equity falls from 1000 to 900.
    let limits = RiskLimits { max_drawdown: d("0.10"), ..RiskLimits::default() };
    let mut broker = broker(FillModel::new(Decimal::ZERO, d("1000")), limits);
    let outcome = broker.submit(&order("1", Side::Buy, "90"), d("10"), t(0)).unwrap();
    assert_eq!(broker.ledger("acct").unwrap().equity(&Prices::new()), d("910"));
    assert!(outcome.kill_switch().is_none());
    let outcome = broker.submit(&order("2", Side::Buy, "10"), d("10"), t(1)).unwrap();
    let FillOutcome::FilledAndHalted { fill, kill_switch } = &outcome else { panic!("{outcome:?}") };
    assert_eq!((fill.quantity, kill_switch.at, kill_switch.drawdown), (d("10"), t(1), d("0.1")));
    assert!(outcome.is_new());
    assert_eq!(broker.halted("acct"), Some(kill_switch));
    // Every later order is refused, reductions included; retries still answer.
    for (id, side) in [("3", Side::Buy), ("4", Side::Sell)] {
        let refused = broker.submit(&order(id, side, "1"), d("10"), t(2)).unwrap_err();
        assert_eq!(refused, SubmitError::Risk(RiskRejection::KillSwitch(kill_switch.clone())));
    }
    assert!(!broker.submit(&order("1", Side::Buy, "90"), d("10"), t(3)).unwrap().is_new());
    assert_eq!(broker.rejections(), &BTreeMap::from([("kill_switch".to_owned(), 2)]));
    assert_eq!(broker.reset_kill_switch("acct"), Some(kill_switch.clone()));
    assert_eq!(broker.reset_kill_switch("acct"), None);
    assert_eq!(broker.ledger("acct").unwrap().equity_peak(), d("900"));
    assert!(broker.submit(&order("4", Side::Sell, "1"), d("10"), t(4)).unwrap().is_new());
}

#[test]
fn a_price_fall_alone_halts_the_account() {
    let mut broker = broker(FillModel::default(), RiskLimits::default());
    broker.submit(&order("1", Side::Buy, "50"), d("10"), t(0)).unwrap();
    assert!(broker.update_price("SIM-A", d("14"), t(1)).is_empty());
    assert_eq!(broker.ledger("acct").unwrap().equity_peak(), d("1200"));
    assert!(broker.update_price("SIM-A", d("-1"), t(2)).is_empty());
    let tripped = broker.update_price("SIM-A", d("11.6"), t(3));
    assert_eq!(tripped.len(), 1);
    assert_eq!((tripped[0].0.as_str(), tripped[0].1.drawdown), ("acct", d("0.1")));
    let refused = broker.submit(&order("2", Side::Sell, "50"), d("12"), t(4)).unwrap_err();
    assert_eq!(refused.name(), "kill_switch");
    assert!(broker.update_price("SIM-A", d("5"), t(5)).is_empty(), "a halted account trips once");
}

#[test]
fn rejections_are_counted_by_name() {
    let limits = RiskLimits { max_position_per_symbol: d("10"), ..RiskLimits::default() };
    let mut broker = broker(FillModel::new(Decimal::ZERO, d("10")), limits);
    let mut stranger = order("1", Side::Buy, "1");
    stranger.account = "nobody".into();
    let unknown = broker.submit(&stranger, d("10"), t(0)).unwrap_err();
    assert_eq!(unknown.to_string(), "unknown account \"nobody\"");
    let mut limited = order("2", Side::Buy, "1");
    limited.limit_price = Some(d("10"));
    let reject = broker.submit(&limited, d("10"), t(0)).unwrap_err();
    assert_eq!(reject.to_string(), "buy limit 10 is not marketable: it would fill at 10.01");
    for id in ["3", "4"] {
        let refused = broker.submit(&order(id, Side::Buy, "11"), d("10"), t(0)).unwrap_err();
        assert_eq!(refused.name(), "max_position_per_symbol");
    }
    let counts: Vec<_> = broker.rejections().iter().map(|(name, count)| (name.as_str(), *count)).collect();
    assert_eq!(counts, [("limit_not_marketable", 1), ("max_position_per_symbol", 2), ("unknown_account", 1)]);
    // A rejected id may be retried and fill.
    limited.limit_price = Some(d("10.01"));
    assert!(broker.submit(&limited, d("10"), t(1)).unwrap().is_new());
}

#[test]
fn the_snapshot_reads_back_to_the_same_broker() {
    let mut broker = broker(FillModel::new(d("1"), d("2")), RiskLimits::default());
    broker.open_account_with_limits(
        "second",
        d("50"),
        RiskLimits { max_orders_per_minute: 1, ..RiskLimits::default() },
    );
    broker.submit(&order("1", Side::Buy, "3"), d("100"), t(0)).unwrap();
    broker.submit(&order("2", Side::Sell, "4"), d("101"), t(1)).unwrap();
    broker.update_price("SIM-B", d("7"), t(2));
    let text = serde_json::to_string(broker.snapshot()).unwrap();
    let back = PaperBroker::from_snapshot(serde_json::from_str(&text).unwrap());
    assert_eq!(back, broker);
    assert_eq!(serde_json::to_string(back.snapshot()).unwrap(), text);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["accounts"]["acct"]["ledger"]["positions"]["SIM-A"]["quantity"], "-1");
    assert_eq!(json["accounts"]["second"]["risk"]["halted"], serde_json::Value::Null);
    assert_eq!(back.account("second").unwrap().risk.limits().max_orders_per_minute, 1);
}
