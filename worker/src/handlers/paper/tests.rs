use chrono::TimeDelta;
use shoal_protocol::messages::SCHEMA_VERSION;

use super::*;
use crate::handlers::{Handler, SkillHandler};
use crate::journal::{Journal, JournalStats, MemoryStore};

fn order(seq: u64, side: &str, quantity: i64, mid: &str) -> Command {
    let start = DateTime::from_timestamp(1_767_600_000, 0).unwrap_or_default();
    Command {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        kind: KIND.into(),
        key: "acct-1".into(),
        seq,
        issued_at: start + TimeDelta::seconds(i64::try_from(seq).unwrap_or(0) * 10),
        deadline: None,
        payload: serde_json::json!({ "symbol": "SIM-A", "side": side, "quantity": quantity.to_string(), "mid_price": mid }),
    }
}

fn limits() -> RiskLimits {
    RiskLimits {
        max_position_per_symbol: Decimal::from(100),
        max_notional_per_symbol: Decimal::from(50_000),
        max_total_notional: Decimal::from(80_000),
        max_orders_per_minute: 5,
        max_drawdown: Decimal::new(5, 2),
    }
}

fn skill() -> SkillHandler<PaperSkill> {
    SkillHandler(PaperSkill::new(PaperSettings { enabled: true, limits: limits(), ..PaperSettings::default() }))
}

/// A worker's journal over a shared store: a new one is a restarted worker.
fn journal(store: &Arc<MemoryStore>, id: &str) -> Journal {
    Journal::new(store.clone(), id, || 1, Arc::new(JournalStats::default()))
}

use std::sync::Arc;

async fn run(skill: &SkillHandler<PaperSkill>, journal: &Journal, c: &Command) -> serde_json::Value {
    let ctx = HandlerContext::new(1, c, 0, skill, journal);
    skill.handle_with(c, &ctx).await.expect("decided")
}

#[tokio::test]
async fn an_order_run_again_is_not_filled_again_even_after_a_restart() {
    let store = Arc::new(MemoryStore::default());
    let (skill, first) = (skill(), journal(&store, "w-1"));
    let buy = order(1, "buy", 10, "100");
    let out = run(&skill, &first, &buy).await;
    assert_eq!(out["decision"]["status"], "filled", "{out}");
    assert_eq!(out["decision"]["order"]["client_order_id"], format!("{}/order", buy.id));
    for _ in 0..2 {
        assert_eq!(run(&skill, &first, &buy).await, out, "a retry gets the recorded decision");
    }
    let restarted = journal(&store, "w-2");
    assert_eq!(run(&skill, &restarted, &buy).await, out, "a restarted worker too");
    assert_eq!(out["ledger"]["fills"], 1);
    assert_eq!(out["ledger"]["positions"]["SIM-A"]["quantity"], "10");
    let done = store.records(0).iter().filter(|r| r.step == "order" && r.state == StepState::Done).count();
    assert_eq!(done, 1, "one order decision in the journal");
}

#[tokio::test]
async fn the_book_is_rebuilt_from_the_journal_and_limits_name_themselves() {
    let store = Arc::new(MemoryStore::default());
    let skill = skill();
    // 60 + 40 = 100 (the limit), then 1 more is refused.
    run(&skill, &journal(&store, "w-1"), &order(1, "buy", 60, "100")).await;
    let second = run(&skill, &journal(&store, "w-2"), &order(2, "buy", 40, "100")).await;
    assert_eq!(second["ledger"]["positions"]["SIM-A"]["quantity"], "100", "w-2 saw w-1's fill: {second}");
    let refused = run(&skill, &journal(&store, "w-3"), &order(3, "buy", 1, "100")).await;
    assert_eq!(refused["decision"]["status"], "rejected");
    assert_eq!(refused["decision"]["rejected_by"], "max_position_per_symbol", "{refused}");
    let reduce = run(&skill, &journal(&store, "w-3"), &order(4, "sell", 30, "100")).await;
    assert_eq!(reduce["decision"]["status"], "filled", "a reduction passes at the limit: {reduce}");
}

#[tokio::test]
async fn a_fall_in_price_trips_the_kill_switch_and_stops_the_account() {
    let store = Arc::new(MemoryStore::default());
    let (skill, j) = (skill(), journal(&store, "w-1"));
    run(&skill, &j, &order(1, "buy", 100, "500")).await;
    // Marked at 400, the 50,000 position lost 10,000 of 100,000: 10 % > 5 %.
    let tripped = run(&skill, &j, &order(2, "sell", 1, "400")).await;
    assert_eq!(tripped["halted"], true, "{tripped}");
    let after = run(&skill, &j, &order(3, "sell", 1, "400")).await;
    assert_eq!(after["decision"]["status"], "rejected");
    assert_eq!(after["decision"]["rejected_by"], "kill_switch", "{after}");
    let restarted = run(&skill, &journal(&store, "w-2"), &order(4, "buy", 1, "400")).await;
    assert_eq!(restarted["decision"]["rejected_by"], "kill_switch", "still halted after a restart: {restarted}");
}

#[tokio::test]
async fn orders_per_minute_count_decision_time() {
    let store = Arc::new(MemoryStore::default());
    let (skill, j) = (skill(), journal(&store, "w-1"));
    let start = DateTime::from_timestamp(1_767_600_000, 0).unwrap_or_default();
    let mut statuses = Vec::new();
    for i in 0..7u64 {
        let c = Command {
            issued_at: start + TimeDelta::seconds(i64::try_from(i).unwrap_or(0)),
            ..order(i + 1, "buy", 1, "100")
        };
        statuses.push(run(&skill, &j, &c).await["decision"]["rejected_by"].clone());
    }
    assert_eq!(statuses.iter().filter(|s| s.is_null()).count(), 5, "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| s == "max_orders_per_minute"), "{statuses:?}");
}

#[test]
fn settings_errors_name_the_key() {
    let bad = PaperSettings { cash: Decimal::ZERO, ..PaperSettings::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("worker.paper.cash"));
    let bad = PaperSettings {
        limits: RiskLimits { max_drawdown: Decimal::from(2), ..RiskLimits::default() },
        ..PaperSettings::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("worker.paper.limits.max_drawdown"));
    assert!(PaperSettings::default().validate().is_ok());
}
