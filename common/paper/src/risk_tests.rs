#![allow(clippy::unwrap_used)]
use std::str::FromStr;

use super::*;
use crate::order::{FillModel, Side, simulate_fill};

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn t(seconds: f64) -> DateTime<Utc> {
    let millis = (seconds * 1000.0).round() as i64;
    DateTime::from_timestamp_millis(1_700_000_000_000 + millis).unwrap()
}

fn order(symbol: &str, side: Side, quantity: &str) -> Order {
    Order {
        client_order_id: format!("{symbol}-{side}-{quantity}"),
        account: "acct".into(),
        symbol: symbol.into(),
        side,
        quantity: d(quantity),
        limit_price: None,
    }
}

/// A ledger with `cash` that bought `quantity` of `symbol` at `price`, free.
fn holding(cash: &str, symbol: &str, quantity: &str, price: &str) -> Ledger {
    let mut ledger = Ledger::new("acct", d(cash));
    let buy = order(symbol, Side::Buy, quantity);
    let fill = simulate_fill(&buy, d(price), &FillModel::default()).unwrap();
    ledger.fill(&buy, &fill).unwrap();
    ledger
}

fn generous() -> RiskLimits {
    RiskLimits {
        max_position_per_symbol: d("1000000"),
        max_notional_per_symbol: d("1000000"),
        max_total_notional: d("1000000"),
        max_orders_per_minute: 1000,
        max_drawdown: d("0.5"),
    }
}

#[test]
fn the_position_limit_refuses_growth_beyond_it() {
    let mut risk = RiskCheck::new(RiskLimits { max_position_per_symbol: d("100"), ..generous() });
    let ledger = Ledger::new("acct", d("1000000"));
    let rejection = risk.check(&ledger, &order("SIM-A", Side::Buy, "101"), d("10"), t(0.0)).unwrap_err();
    assert_eq!(
        rejection,
        RiskRejection::MaxPositionPerSymbol { symbol: "SIM-A".into(), limit: d("100"), reached: d("101") }
    );
    assert_eq!(rejection.limit(), "max_position_per_symbol");
    assert_eq!(rejection.to_string(), "max_position_per_symbol: SIM-A would reach 101 against a limit of 100");
    assert!(risk.check(&ledger, &order("SIM-A", Side::Sell, "101"), d("10"), t(0.0)).is_err());
    assert!(risk.check(&ledger, &order("SIM-A", Side::Buy, "100"), d("10"), t(0.0)).is_ok());
    assert_eq!(risk.orders_in_window(t(0.0)), 1, "only the accepted order is counted");
}

#[test]
fn the_notional_limit_per_symbol_uses_the_order_price() {
    let mut risk = RiskCheck::new(RiskLimits { max_notional_per_symbol: d("1000"), ..generous() });
    let ledger = holding("100000", "SIM-A", "50", "10");
    let rejection = risk.check(&ledger, &order("SIM-A", Side::Buy, "45"), d("11"), t(0.0)).unwrap_err();
    assert_eq!(
        rejection,
        RiskRejection::MaxNotionalPerSymbol { symbol: "SIM-A".into(), limit: d("1000"), reached: d("1045") }
    );
    assert_eq!(rejection.limit(), "max_notional_per_symbol");
    assert!(rejection.to_string().contains("SIM-A would reach 1045 against a limit of 1000"));
    assert!(risk.check(&ledger, &order("SIM-A", Side::Buy, "40"), d("11"), t(0.0)).is_ok());
}

#[test]
fn the_total_notional_limit_counts_every_symbol_gross() {
    let mut risk = RiskCheck::new(RiskLimits { max_total_notional: d("1000"), ..generous() });
    // Short 50 SIM-A at 10: 500 of gross notional.
    let mut ledger = Ledger::new("acct", d("100000"));
    let short = order("SIM-A", Side::Sell, "50");
    ledger.fill(&short, &simulate_fill(&short, d("10"), &FillModel::default()).unwrap()).unwrap();
    let rejection = risk.check(&ledger, &order("SIM-B", Side::Buy, "60"), d("10"), t(0.0)).unwrap_err();
    assert_eq!(rejection, RiskRejection::MaxTotalNotional { limit: d("1000"), reached: d("1100") });
    assert_eq!(rejection.limit(), "max_total_notional");
    assert_eq!(rejection.to_string(), "max_total_notional: gross notional would reach 1100 against a limit of 1000");
    assert!(risk.check(&ledger, &order("SIM-B", Side::Buy, "50"), d("10"), t(0.0)).is_ok());
}

#[test]
fn orders_per_minute_slide_out_after_60_seconds() {
    let mut risk = RiskCheck::new(RiskLimits { max_orders_per_minute: 3, ..generous() });
    let ledger = Ledger::new("acct", d("100000"));
    let buy = order("SIM-A", Side::Buy, "1");
    for at in [0.0, 10.0, 20.0] {
        risk.check(&ledger, &buy, d("10"), t(at)).unwrap();
    }
    let rejection = risk.check(&ledger, &buy, d("10"), t(30.0)).unwrap_err();
    assert_eq!(rejection, RiskRejection::MaxOrdersPerMinute { limit: 3, reached: 4 });
    assert_eq!(rejection.limit(), "max_orders_per_minute");
    assert_eq!(rejection.to_string(), "max_orders_per_minute: this would be order 4 in 60 s against a limit of 3");
    assert!(risk.check(&ledger, &buy, d("10"), t(59.999)).is_err());
    // At 60 s the order at 0 s has left the window.
    assert_eq!(risk.orders_in_window(t(60.0)), 2);
    risk.check(&ledger, &buy, d("10"), t(60.0)).unwrap();
    assert!(risk.check(&ledger, &buy, d("10"), t(61.0)).is_err());
    risk.check(&ledger, &buy, d("10"), t(70.0)).unwrap();
}

#[test]
fn reductions_pass_near_and_above_the_limits() {
    let limits = RiskLimits { max_position_per_symbol: d("100"), max_notional_per_symbol: d("1000"), ..generous() };
    let mut risk = RiskCheck::new(limits.clone());
    let ledger = holding("100000", "SIM-A", "100", "10");
    assert!(risk.check(&ledger, &order("SIM-A", Side::Buy, "1"), d("10"), t(0.0)).is_err());
    risk.check(&ledger, &order("SIM-A", Side::Sell, "30"), d("10"), t(0.0)).unwrap();
    // Through flat to a short of 100 is no growth; to 150 is.
    risk.check(&ledger, &order("SIM-A", Side::Sell, "200"), d("10"), t(0.0)).unwrap();
    let flip = risk.check(&ledger, &order("SIM-A", Side::Sell, "250"), d("10"), t(0.0)).unwrap_err();
    assert_eq!(flip.limit(), "max_position_per_symbol");
    // With the limits lowered below the position, reducing still passes.
    let mut tighter = RiskCheck::new(RiskLimits {
        max_position_per_symbol: d("50"),
        max_notional_per_symbol: d("100"),
        max_total_notional: d("100"),
        ..limits
    });
    tighter.check(&ledger, &order("SIM-A", Side::Sell, "10"), d("20"), t(0.0)).unwrap();
    assert!(tighter.check(&ledger, &order("SIM-A", Side::Buy, "1"), d("20"), t(0.0)).is_err());
}

#[test]
fn drawdown_trips_the_kill_switch_until_reset() {
    let mut risk = RiskCheck::new(RiskLimits { max_drawdown: d("0.10"), ..generous() });
    // All-in at 10: equity 1000, and 9 is a 10 % drawdown.
    let mut ledger = holding("1000", "SIM-A", "100", "10");
    let sell = order("SIM-A", Side::Sell, "1");
    risk.check(&ledger, &sell, d("9.01"), t(0.0)).unwrap();
    let rejection = risk.check(&ledger, &sell, d("9"), t(1.0)).unwrap_err();
    assert_eq!(rejection, RiskRejection::MaxDrawdown { limit: d("0.10"), reached: d("0.1") });
    assert_eq!(rejection.limit(), "max_drawdown");
    let halted = risk.halted().unwrap().clone();
    assert_eq!((halted.at, halted.drawdown), (t(1.0), d("0.1")));
    assert_eq!(halted.reason, "drawdown 0.1 reached max_drawdown 0.10");
    // Halted: even a reducing order at a recovered price is refused.
    let later = risk.check(&ledger, &sell, d("12"), t(2.0)).unwrap_err();
    assert_eq!(later, RiskRejection::KillSwitch(halted.clone()));
    assert_eq!(later.limit(), "kill_switch");
    assert!(later.to_string().starts_with("kill_switch: the account is halted since"), "{later}");
    assert_eq!(risk.reset_kill_switch(), Some(halted));
    assert_eq!(risk.reset_kill_switch(), None);
    // Still 10 % below the old peak, so it trips again unless rebased.
    assert_eq!(risk.check(&ledger, &sell, d("9"), t(3.0)).unwrap_err().limit(), "max_drawdown");
    risk.reset_kill_switch();
    ledger.update_mark("SIM-A", d("9"));
    ledger.rebase_peak();
    risk.check(&ledger, &sell, d("9"), t(4.0)).unwrap();
}

#[test]
fn invalid_orders_are_named() {
    let mut risk = RiskCheck::new(generous());
    let ledger = Ledger::new("acct", d("1000"));
    let mut bad = order("SIM-A", Side::Buy, "0");
    assert_eq!(risk.check(&ledger, &bad, d("10"), t(0.0)).unwrap_err().limit(), "invalid_order");
    bad.quantity = d("1");
    assert!(risk.check(&ledger, &bad, d("0"), t(0.0)).unwrap_err().to_string().contains("price 0 is not positive"));
    bad.account = "other".into();
    assert_eq!(risk.check(&ledger, &bad, d("10"), t(0.0)).unwrap_err().limit(), "invalid_order");
    bad.account = "acct".into();
    bad.client_order_id.clear();
    assert_eq!(risk.check(&ledger, &bad, d("10"), t(0.0)).unwrap_err().limit(), "invalid_order");
    assert_eq!(risk.orders_in_window(t(0.0)), 0);
}

#[test]
fn limits_default_and_read_back() {
    let limits = RiskLimits::default();
    assert_eq!(limits.max_drawdown, d("0.10"));
    assert_eq!(limits.max_orders_per_minute, 60);
    let partial: RiskLimits = serde_json::from_str(r#"{"max_drawdown": "0.2"}"#).unwrap();
    assert_eq!(partial, RiskLimits { max_drawdown: d("0.2"), ..RiskLimits::default() });
    assert!(serde_json::from_str::<RiskLimits>(r#"{"max_drawdon": "0.2"}"#).is_err());
    let text = serde_json::to_string(&limits).unwrap();
    assert_eq!(serde_json::from_str::<RiskLimits>(&text).unwrap(), limits);
    let rejection = RiskRejection::MaxTotalNotional { limit: d("1"), reached: d("2") };
    let json = serde_json::to_value(&rejection).unwrap();
    assert_eq!(json["kind"], "max_total_notional");
}
