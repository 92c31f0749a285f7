//! Property tests: a digest never exceeds its budget, is the same for the
//! same state, and holds whole items in rank order.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use shoal_state::{EntityKind, Provenance};

use super::*;
use crate::hub::{EntityDoc, ShardId, ShardView, Watermark};

const KINDS: [EntityKind; 6] = EntityKind::ALL;
const STATUSES: [&str; 6] = ["issued", "succeeded", "failed", "expired", "unsupported", "dead_lettered"];

fn base() -> DateTime<Utc> {
    "2026-12-05T10:00:00Z".parse().unwrap()
}

/// A served state of `kind`, shaped as the state model writes it, from
/// drawn numbers (`words` makes free text of varying length and script).
fn state(kind: EntityKind, n: u32, words: &str) -> Value {
    let price = format!("{}.{:02}", 50 + n % 100, n % 97);
    match kind {
        EntityKind::Symbol => json!({
            "trades": n,
            "last_trade": {"price": price},
            "rolling": {"vwap": format!("{}.5", 50 + (n / 3) % 100), "volatility": format!("{}", f64::from(n % 13) * 1e-4)},
            "last_quality": {"kind": "gap", "detail": words, "at": (base() - TimeDelta::seconds(i64::from(n % 120))).to_rfc3339()},
        }),
        EntityKind::Command => json!({
            "status": STATUSES[n as usize % STATUSES.len()],
            "kind": "raise_alert",
            "key": words,
            "seq": n,
            "result": {"output": {"error": words}},
        }),
        EntityKind::Alerts => {
            let severity = |i: u32| if i.is_multiple_of(2) { "low" } else { "high" };
            json!((0..n % 4).map(|i| json!({"severity": severity(i), "message": words})).collect::<Vec<_>>())
        }
        EntityKind::Outcomes => {
            json!({"recent": (0..n % 5).map(|i| json!({"status": STATUSES[(n + i) as usize % 6]})).collect::<Vec<_>>()})
        }
        EntityKind::Account | EntityKind::Device => json!({"recent": (0..n % 3).collect::<Vec<_>>()}),
    }
}

type Drawn = Vec<(usize, u8, u32, String)>;

/// A view of up to three shards from drawn entities: (kind, shard, number,
/// free text); keys repeat across kinds and shards.
fn view(drawn: &Drawn) -> StateView {
    let mut shards: Vec<ShardView> = (0..3)
        .map(|p| ShardView {
            id: ShardId { topic: "in".into(), partition: p },
            watermark: Watermark {
                topic: "in".into(),
                partition: p,
                offset: 100 + i64::from(p),
                event_time: Some(base() - TimeDelta::seconds(i64::from(p))),
            },
            entities: Default::default(),
        })
        .collect();
    for (i, (kind, shard, n, words)) in drawn.iter().enumerate() {
        let kind = KINDS[*kind % KINDS.len()];
        let shard = &mut shards[usize::from(*shard % 3)];
        let key = format!("K{}", n % 17);
        let doc = EntityDoc {
            kind,
            key: key.clone(),
            shard: shard.id.clone(),
            updated_at: base() - TimeDelta::milliseconds(i64::from(*n) * 37),
            provenance: Provenance::new("in", shard.id.partition, i as i64),
            state: state(kind, *n, words),
        };
        shard.entities.insert((kind, key), Arc::new(doc));
    }
    StateView { shards: shards.into_iter().map(|s| (s.id.clone(), Arc::new(s))).collect(), version: 1 }
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::All),
        (0..6usize).prop_map(|k| Scope::Kind(KINDS[k])),
        prop::collection::vec(0..17u32, 1..4).prop_map(|ks| Scope::Keys(ks.iter().map(|k| format!("K{k}")).collect())),
        (0..6usize, prop::collection::vec(0..17u32, 1..4))
            .prop_map(|(k, ks)| Scope::KeysOfKind(KINDS[k], ks.iter().map(|k| format!("K{k}")).collect())),
    ]
}

fn counter() -> TokenCounter {
    TokenCounter::new(Encoding::O200kBase).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn never_over_budget_and_deterministic(
        drawn in prop::collection::vec((0..6usize, 0..3u8, 0..5000u32, "[a-zA-Zé€ 0-9]{0,40}"), 0..120),
        budget in MIN_TOKENS..4_000usize,
        scope in scope(),
        json in any::<bool>(),
    ) {
        let counter = counter();
        let view = view(&drawn);
        let format = if json { Format::Json } else { Format::Text };
        let summary = summarize(&view, &scope, budget, format, &counter).unwrap();
        let counted = counter.count(&summary.text);
        prop_assert_eq!(counted, summary.tokens);
        prop_assert!(counted <= budget, "{} tokens over a budget of {}:\n{}", counted, budget, summary.text);
        // Same state, same digest (a second view built from the same draw).
        let again = summarize(&self::view(&drawn), &scope, budget, format, &counter).unwrap();
        prop_assert_eq!(&again, &summary);
        // Included and omitted add up to what is in scope.
        let in_scope: std::collections::BTreeSet<_> = view.shards.values().flat_map(|s| s.entities.values())
            .filter(|d| scope.covers(d.kind, &d.key)).map(|d| (d.kind, d.key.clone())).collect();
        let in_scope = in_scope.len();
        prop_assert_eq!(summary.included + summary.omitted.values().sum::<usize>(), in_scope);
        if json {
            let parsed: Value = serde_json::from_str(&summary.text).unwrap();
            let items = parsed["items"].as_array().map(Vec::len).unwrap_or(0);
            prop_assert_eq!(items, summary.included);
        } else {
            let lines = summary.text.lines().filter(|l| l.starts_with("- ")).count();
            prop_assert_eq!(lines, summary.included);
        }
    }
}

#[test]
fn ranks_failing_commands_and_alerts_first_and_says_what_was_left_out() {
    let drawn: Drawn = vec![
        (3, 0, 1, "ok".into()),     // command, succeeded
        (3, 1, 2, "boom".into()),   // command, failed
        (0, 0, 70, "".into()),      // symbol, its quality event 70 s old
        (5, 2, 3, "over 9".into()), // alerts: 3
        (4, 1, 5, "".into()),       // outcomes
        (1, 0, 9, "".into()),       // account
    ];
    let view = view(&drawn);
    let counter = counter();
    let full = summarize(&view, &Scope::All, 4_000, Format::Text, &counter).unwrap();
    let kinds: Vec<&str> = full.text.lines().filter_map(|l| l.strip_prefix("- ")?.split(' ').next()).collect();
    assert_eq!(kinds[..2], ["command", "alerts"], "{}", full.text);
    assert_eq!(full.included, 6);
    assert!(full.text.contains("# left out: none"), "{}", full.text);
    let tight = summarize(&view, &Scope::All, 110, Format::Text, &counter).unwrap();
    assert!(tight.included < 6 && tight.tokens <= 110, "{}", tight.text);
    assert!(tight.text.contains("# left out: "), "{}", tight.text);
    assert_eq!(summarize(&view, &Scope::All, 10, Format::Text, &counter), Err(SummaryError::BudgetTooSmall(10)));
}

/// A command issued from one partition and answered from another is one
/// item, settled, not a pending one and a settled one.
#[test]
fn a_command_served_by_two_shards_is_one_merged_item() {
    use shoal_protocol::messages::{Command, CommandResult, ResultStatus, SCHEMA_VERSION};
    use shoal_state::{EntityRef, Input, Record, State, StateConfig};

    let command = Command {
        schema_version: SCHEMA_VERSION,
        id: uuid::Uuid::from_u128(7),
        kind: "raise_alert".into(),
        key: "SIM-AAA".into(),
        seq: 3,
        issued_at: base(),
        deadline: None,
        payload: json!({}),
    };
    let at = base() + TimeDelta::milliseconds(400);
    let result = CommandResult::answering(&command, "w1", ResultStatus::Succeeded, json!({}), (at, at));
    let entity = EntityRef { kind: EntityKind::Command, key: command.id.to_string() };
    let mut shards = Vec::new();
    for (p, (topic, record)) in
        [("commands", Record::Command(command.clone())), ("results", Record::Result(result))].into_iter().enumerate()
    {
        let mut state = State::new(StateConfig::default());
        let input = Input { provenance: Provenance::new(topic, 0, 5), record };
        state.apply(&input);
        let doc = EntityDoc {
            kind: EntityKind::Command,
            key: entity.key.clone(),
            shard: ShardId { topic: topic.into(), partition: 0 },
            updated_at: base() + TimeDelta::milliseconds(p as i64 * 400),
            provenance: input.provenance.clone(),
            state: state.entity_value(&entity).unwrap(),
        };
        let watermark = Watermark { topic: topic.into(), partition: 0, offset: 5, event_time: Some(at) };
        let mut view = ShardView { id: doc.shard.clone(), watermark, entities: Default::default() };
        view.entities.insert((EntityKind::Command, entity.key.clone()), Arc::new(doc));
        shards.push(view);
    }
    let view = StateView { shards: shards.into_iter().map(|s| (s.id.clone(), Arc::new(s))).collect(), version: 1 };
    let summary = summarize(&view, &Scope::All, 500, Format::Text, &counter()).unwrap();
    assert_eq!(summary.included, 1, "{}", summary.text);
    assert!(summary.text.contains("status=succeeded") && summary.text.contains("src=results/0@5"), "{}", summary.text);
}
