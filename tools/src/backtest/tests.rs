use chrono::{DateTime, TimeDelta};

use super::recording::{Synth, default_walk, synthesize};
use super::*;

fn ticks(seed: u64, n: usize) -> Vec<MarketTick> {
    synthesize(&Synth {
        seed,
        symbols: vec!["SIM-A".into(), "SIM-B".into(), "SIM-C".into()],
        ticks: n,
        interval: TimeDelta::milliseconds(200),
        start: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
        walk: default_walk(),
    })
}

fn setup(limits: RiskLimits) -> Setup {
    Setup {
        state: StateSettings::default(),
        rules: RulesSettings::default(),
        account: AccountSettings {
            account: "paper-1".into(),
            cash: Decimal::from(100_000),
            quantity: Decimal::from(10),
            fill: FillModel::new(Decimal::ONE, Decimal::TWO),
            limits,
        },
    }
}

#[tokio::test]
async fn the_same_recording_and_settings_give_the_same_digest() {
    let recording = ticks(42, 6_000);
    let (a, b) =
        (run(&recording, &setup(RiskLimits::default())).await, run(&recording, &setup(RiskLimits::default())).await);
    let (a, b) = (a.expect("runs"), b.expect("runs"));
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.commands.len(), a.results.len());
    assert_eq!(a.equity.len(), recording.len(), "one equity point per tick");
    assert!(a.commands.iter().any(|c| c.kind == kinds::EVALUATE_STRATEGY), "the rules fired");
    assert!(a.fills > 0, "signals became fills: {}", a.summary(&setup(RiskLimits::default()).account));
    let other = run(&ticks(43, 6_000), &setup(RiskLimits::default())).await.expect("runs");
    assert_ne!(a.digest, other.digest, "another recording, another digest");
}

#[tokio::test]
async fn limits_refuse_orders_by_name_and_the_kill_switch_stops_the_account() {
    let recording = ticks(42, 6_000);
    let tight = RiskLimits {
        max_position_per_symbol: Decimal::from(10),
        max_drawdown: Decimal::new(1, 4), // 0.01 %
        ..RiskLimits::default()
    };
    let s = setup(tight);
    let out = run(&recording, &s).await.expect("runs");
    let summary = out.summary(&s.account);
    assert!(out.kill_switch.is_some(), "{summary}");
    assert!(summary.contains("kill_switch=tripped"), "{summary}");
    let rejections = out.broker.rejections();
    assert!(rejections.keys().any(|k| k == "kill_switch" || k == "max_drawdown"), "{rejections:?}");
    assert!(out.orders > out.fills, "some orders refused: {summary}");
}

#[test]
fn drawdown_is_measured_from_the_running_peak() {
    let t = DateTime::from_timestamp(0, 0).unwrap_or_default();
    let curve: Vec<EquityPoint> =
        [100, 120, 90, 130, 117].iter().map(|&e| EquityPoint { at: t, equity: Decimal::from(e) }).collect();
    assert_eq!(max_drawdown(&curve), Decimal::new(25, 2), "120 → 90");
}
