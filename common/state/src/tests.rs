//! Tests of the whole state: replays, snapshots, determinism, bounds.

use std::collections::BTreeMap;

use serde_json::json;
use shoal_protocol::messages::{ResultStatus, kinds};
use uuid::Uuid;

use crate::commands::Lifecycle;
use crate::testkit::{book_top, command, d, event, input, quality, result, tick, ts};
use crate::*;

/// A mixed stream: two symbols on two ticks partitions, accounts and
/// devices on two events partitions, commands, results (one before its
/// command, one duplicated), alerts, a dead letter, and inputs that are
/// untracked or invalid.
pub(crate) fn scenario() -> Vec<Input> {
    let cmd1 = command(1, "acct-1", 1, 2);
    let mut cmd2 = command(2, "SIM-A", 1, 3);
    cmd2.kind = kinds::RAISE_ALERT.into();
    let cmd3 = command(3, "dev-1", 1, 4);
    let res1 = result(&cmd1, ResultStatus::Succeeded, 2_100, 2_300);
    let mut res2 = result(&cmd2, ResultStatus::Succeeded, 3_050, 3_080);
    res2.output = json!({"symbol": "SIM-A", "severity": "critical", "message": "SIM-A crossed 101.00 up"});
    let mut inputs = vec![
        input("ticks", 0, 0, Record::Tick(tick("SIM-A", 1_000, "100.10", "2"))),
        input("ticks", 1, 0, Record::Tick(tick("SIM-B", 1_200, "20.5", "10"))),
        input(
            "events",
            0,
            0,
            Record::Event(event("card_transaction", "acct-1", 1, json!({"amount": "42.00", "country": "FR"}))),
        ),
        input("ticks", 0, 1, Record::BookTop(book_top("SIM-A", 1, "100.05", "100.15"))),
        input("commands", 3, 0, Record::Command(cmd1.clone())),
        input("results", 2, 0, Record::Result(res2.clone())),
        input("ticks", 0, 2, Record::Tick(tick("SIM-A", 1_500, "100.30", "1"))),
        input(
            "events",
            1,
            0,
            Record::Event(event(
                "sensor_reading",
                "dev-1",
                2,
                json!({"metric": "temp", "value": "79.5", "threshold": "80"}),
            )),
        ),
        input("ticks", 1, 1, Record::DataQuality(quality("SIM-B", 2))),
        input("results", 0, 0, Record::Result(res1.clone())),
        input("commands", 7, 0, Record::Command(cmd2.clone())),
        input("ticks", 0, 3, Record::Tick(tick("SIM-A", 62_000, "101.00", "3"))),
        input(
            "events",
            0,
            1,
            Record::Event(event("card_transaction", "acct-1", 30, json!({"amount": "8.5", "country": "DE"}))),
        ),
        input(
            "events",
            1,
            1,
            Record::Event(event(
                "sensor_reading",
                "dev-1",
                4,
                json!({"metric": "temp", "value": "81.5", "threshold": "80"}),
            )),
        ),
        input("results", 0, 1, Record::Result(res1)),
        input("commands", 3, 1, Record::Command(cmd3.clone())),
        input("events", 0, 2, Record::Event(event("page_view", "user-9", 31, json!({})))),
        input("ticks", 1, 2, Record::Tick(tick("SIM-B", 2_000, "0", "1"))),
    ];
    let dead = Record::DeadLetter {
        command_id: Some(cmd3.id),
        key: cmd3.key.clone(),
        reason: "handler_failed".into(),
        stage: "worker".into(),
        at: ts(9),
    };
    inputs.push(input("dlq", 0, 0, dead));
    let orphan = Record::DeadLetter {
        command_id: None,
        key: "x".into(),
        reason: "malformed".into(),
        stage: "results".into(),
        at: ts(10),
    };
    inputs.push(input("dlq", 0, 1, orphan));
    inputs.push(input("ticks", 0, 4, Record::Tick(tick("SIM-A", 63_000, "100.90", "1"))));
    inputs
}

pub(crate) fn apply_all(state: &mut State, inputs: &[Input]) -> Vec<Applied> {
    inputs.iter().map(|i| state.apply(i)).collect()
}

pub(crate) fn built(inputs: &[Input]) -> State {
    let mut state = State::default();
    apply_all(&mut state, inputs);
    state
}

#[test]
fn the_scenario_builds_the_expected_state() {
    let state = built(&scenario());
    let a = state.symbol("SIM-A").unwrap();
    assert_eq!((a.trades, a.last_trade.as_ref().unwrap().value.price), (4, d("100.90")));
    assert_eq!(a.book.as_ref().unwrap().value.spread, d("0.10"));
    assert_eq!(a.bars.minute.closed.len(), 1);
    assert_eq!(a.updated.provenance, Provenance::new("ticks", 0, 4));
    let b = state.symbol("SIM-B").unwrap();
    assert_eq!(
        (b.trades, b.last_quality.as_ref().unwrap().value.missing),
        (1, Some(2)),
        "the zero-price tick was refused"
    );
    let acct = state.account("acct-1").unwrap();
    assert_eq!((acct.velocity.minute.count, acct.velocity.minute.sum), (2, d("50.50")));
    assert_eq!(acct.countries.keys().collect::<Vec<_>>(), ["DE", "FR"]);
    assert_eq!(state.device("dev-1").unwrap().metrics["temp"].rate_per_sec, Some(d("1")));
    let c1 = state.command(Uuid::from_u128(1)).unwrap();
    assert_eq!((c1.status, c1.duplicates, c1.timings.end_to_end_ms), (Lifecycle::Succeeded, 1, Some(300)));
    let c2 = state.command(Uuid::from_u128(2)).unwrap();
    assert_eq!((c2.status, c2.timings.end_to_end_ms), (Lifecycle::Succeeded, Some(80)), "joined late");
    assert_eq!(state.command(Uuid::from_u128(3)).unwrap().status, Lifecycle::DeadLettered);
    assert_eq!(state.commands(None, Some(Lifecycle::Succeeded)).len(), 2);
    assert_eq!(state.commands(Some("dev-1"), None).len(), 1);
    assert_eq!(state.outcomes("SIM-A").unwrap().recent[0].end_to_end_ms, Some(80));
    let critical = state.alerts().query(None, Some("critical"), Some("SIM-A"));
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0].stamp.provenance, Provenance::new("results", 2, 0));
    assert!(state.account("user-9").is_none());
    let mark = state.watermarks().mark("ticks", 0).unwrap();
    assert_eq!((mark.offset, mark.event_time, mark.inputs), (4, Some(ts(63)), 5));
    assert_eq!(state.freshness(), Some(ts(63)));
}

#[test]
fn applied_names_what_changed_and_why_not() {
    let mut state = State::default();
    let applied = apply_all(&mut state, &scenario());
    let refs = |a: &Applied| a.changed.iter().map(|r| (r.kind, r.key.clone())).collect::<Vec<_>>();
    assert_eq!(refs(&applied[0]), [(EntityKind::Symbol, "SIM-A".to_string())]);
    let id2 = Uuid::from_u128(2).to_string();
    assert_eq!(
        refs(&applied[5]),
        [(EntityKind::Command, id2), (EntityKind::Outcomes, "SIM-A".into()), (EntityKind::Alerts, "SIM-A".into())]
    );
    let reasons: BTreeMap<usize, &str> =
        applied.iter().enumerate().filter_map(|(i, a)| a.ignored.as_ref().map(|r| (i, r.reason()))).collect();
    assert_eq!(reasons, BTreeMap::from([(16, "untracked"), (17, "invalid"), (19, "untracked")]));
    assert!(applied[16].changed.is_empty() && applied[17].changed.is_empty());
    assert!(applied.iter().all(|a| a.evicted.is_empty()));
    let invalid = applied[17].ignored.as_ref().unwrap().to_string();
    assert!(invalid.starts_with("invalid: trade price 0"), "{invalid}");
}

#[test]
fn a_replay_after_an_abort_is_ignored_and_changes_nothing() {
    let inputs = scenario();
    let mut state = built(&inputs);
    let json = state.to_canonical_json();
    for applied in apply_all(&mut state, &inputs) {
        assert!(matches!(applied.ignored, Some(Ignored::Replay { .. })), "{applied:?}");
        assert!(applied.changed.is_empty());
    }
    assert_eq!(state.to_canonical_json(), json);
    // An abort after k inputs rewinds to the last commit j < k: the inputs
    // from j are delivered again, then the rest.
    for (j, k) in [(0, 5), (3, 11), (10, 20), (7, 7)] {
        let mut state = State::default();
        apply_all(&mut state, &inputs[..k]);
        let again = apply_all(&mut state, &inputs[j..]);
        assert!(again[..k - j].iter().all(Applied::is_ignored), "the first {} are replays", k - j);
        assert_eq!(state.to_canonical_json(), json, "rewound from {k} to {j}");
    }
}

#[test]
fn a_snapshot_at_any_point_then_the_rest_equals_all_at_once() {
    let inputs = scenario();
    let json = built(&inputs).to_canonical_json();
    for k in 0..=inputs.len() {
        let snapshot = built(&inputs[..k]).to_canonical_json();
        let mut restored = State::from_snapshot(&snapshot).unwrap();
        assert_eq!(restored.to_canonical_json(), snapshot, "restored at {k}");
        apply_all(&mut restored, &inputs[k..]);
        assert_eq!(restored.to_canonical_json(), json, "split at {k}");
    }
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let inputs = scenario();
    assert_eq!(built(&inputs).to_canonical_json(), built(&inputs).to_canonical_json());
    assert_eq!(built(&inputs), built(&inputs));
}

#[test]
fn the_interleaving_of_partitions_does_not_matter() {
    let inputs = scenario();
    let json = built(&inputs).to_canonical_json();
    // Partition by partition, in both orders, each partition in offset order.
    let mut by_partition: BTreeMap<(String, i32), Vec<Input>> = BTreeMap::new();
    for i in &inputs {
        by_partition.entry((i.provenance.topic.clone(), i.provenance.partition)).or_default().push(i.clone());
    }
    let forward: Vec<Input> = by_partition.values().flatten().cloned().collect();
    let backward: Vec<Input> = by_partition.values().rev().flatten().cloned().collect();
    assert_eq!(built(&forward).to_canonical_json(), json);
    assert_eq!(built(&backward).to_canonical_json(), json);
}

#[test]
fn entities_are_bounded_per_kind_and_evictions_counted() {
    let mut state = State::new(StateConfig { max_entities: 2, ..StateConfig::default() });
    let t =
        |offset, symbol: &str, secs: i64| input("ticks", 0, offset, Record::Tick(tick(symbol, secs * 1_000, "1", "1")));
    assert!(state.apply(&t(0, "A", 1)).evicted.is_empty());
    state.apply(&t(1, "B", 2));
    let applied = state.apply(&t(2, "C", 3));
    assert_eq!(applied.evicted, [EntityRef { kind: EntityKind::Symbol, key: "A".into() }]);
    state.apply(&t(3, "B", 4));
    let applied = state.apply(&t(4, "A", 5));
    assert_eq!(applied.evicted, [EntityRef { kind: EntityKind::Symbol, key: "C".into() }], "C is now the oldest");
    assert_eq!(state.evictions(EntityKind::Symbol), 2);
    assert_eq!(state.evictions(EntityKind::Account), 0);
    let keys: Vec<_> = state.entities(EntityKind::Symbol).into_iter().map(|(k, at)| (k.to_string(), at)).collect();
    assert_eq!(keys, [("A".to_string(), ts(5)), ("B".to_string(), ts(4))]);
    assert_eq!(state.symbol("A").unwrap().trades, 1, "an evicted entity starts afresh");
    let restored = State::from_snapshot(&state.to_canonical_json()).unwrap();
    assert_eq!(restored.evictions(EntityKind::Symbol), 2, "the counter is part of the state");
}

#[test]
fn commands_expire_after_their_retention_in_event_time_and_a_restore_agrees() {
    let config = StateConfig { command_retention_secs: 60, ..StateConfig::default() };
    let c = |offset: i64, n, secs| {
        input("commands", 0, offset, Record::Command(command(n, "SIM-A", offset.unsigned_abs() + 1, secs)))
    };
    let inputs = [c(0, 1, 10), c(1, 2, 50), c(2, 3, 70), c(3, 4, 71), c(4, 5, 200)];
    let mut state = State::new(config.clone());
    let evicted: Vec<Vec<EntityRef>> = inputs.iter().map(|i| state.apply(i).evicted).collect();
    let cmd = |n: u128| EntityRef { kind: EntityKind::Command, key: Uuid::from_u128(n).to_string() };
    assert!(evicted[..3].iter().all(Vec::is_empty), "command 1 is 60 s old at 70 s: at the cutoff, kept");
    assert_eq!(evicted[3], [cmd(1)], "71 s: command 1 is past its retention");
    assert_eq!(evicted[4], [cmd(2), cmd(3), cmd(4)], "oldest first; the command just applied stays");
    assert_eq!(state.evictions(EntityKind::Command), 4, "expiries are counted as evictions");
    assert!(state.command(Uuid::from_u128(5)).is_some() && state.command(Uuid::from_u128(4)).is_none());
    let mut forever = State::new(StateConfig { command_retention_secs: 0, ..config.clone() });
    assert!(inputs.iter().all(|i| forever.apply(i).evicted.is_empty()), "0 keeps commands by count only");
    // A state restored from a checkpoint after the second input and given
    // the rest ends byte for byte as the one that applied them all.
    let mut partial = State::new(config);
    inputs[..2].iter().for_each(|i| drop(partial.apply(i)));
    let mut back = crate::changelog_tests::restored(&partial);
    inputs[2..].iter().for_each(|i| drop(back.apply(i)));
    assert_eq!(back.to_canonical_json(), state.to_canonical_json());
}

#[test]
fn entity_json_is_the_entity_in_canonical_form() {
    let state = built(&scenario());
    let json = state.entity_json(EntityKind::Symbol, "SIM-A").unwrap();
    assert_eq!(json, serde_json::to_string(state.symbol("SIM-A").unwrap()).unwrap());
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["last_trade"]["price"], "100.90", "decimals as strings, scale kept");
    assert_eq!(value["last_trade"]["provenance"], json!({"topic": "ticks", "partition": 0, "offset": 4}));
    assert_eq!(value["updated"]["at"], "1970-01-01T00:01:03Z");
    assert_eq!(value["rolling"]["volume"], "4", "the last minute: 3 + 1");
    assert_eq!(value["rolling"]["volatility"], serde_json::Value::Null, "one return in the last minute");
    let alerts: serde_json::Value =
        serde_json::from_str(&state.entity_json(EntityKind::Alerts, "SIM-A").unwrap()).unwrap();
    assert_eq!(alerts[0]["severity"], "critical");
    let id = Uuid::from_u128(1).to_string();
    assert!(state.entity_json(EntityKind::Command, &id).unwrap().contains("\"status\":\"succeeded\""));
    assert!(state.entity_json(EntityKind::Outcomes, "acct-1").is_some());
    assert!(state.entity_json(EntityKind::Account, "acct-1").is_some());
    assert!(state.entity_json(EntityKind::Device, "dev-1").is_some());
    assert_eq!(state.entity_json(EntityKind::Symbol, "nope"), None);
    assert_eq!(state.entity_json(EntityKind::Alerts, "acct-1"), None);
    let kinds: Vec<_> = EntityKind::ALL.iter().map(|k| EntityKind::parse(k.as_str())).collect();
    assert_eq!(kinds, EntityKind::ALL.map(Some));
}

#[test]
fn events_become_accounts_or_devices_by_type() {
    let events = BTreeMap::from([
        ("card_auth".to_string(), kinds::SCORE_TRANSACTION.to_string()),
        ("meter".to_string(), kinds::RAISE_ALERT.to_string()),
    ]);
    let mut state = State::new(StateConfig::from_rule_events(&events));
    let e = |offset, t: &str| {
        input("events", 0, offset, Record::Event(event(t, "k", offset, json!({"amount": "1", "value": "2"}))))
    };
    assert_eq!(state.apply(&e(0, "card_auth")).changed[0].kind, EntityKind::Account);
    assert_eq!(state.apply(&e(1, "meter")).changed[0].kind, EntityKind::Device);
    assert!(state.apply(&e(2, "card_transaction")).is_ignored(), "not in this mapping");
}

/// A small deterministic generator (64-bit LCG), for the property test.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A random stream over few keys, so entities collide, get evicted,
/// commands meet their results in either order and bounded lists overflow.
fn random_stream(seed: u64, len: usize) -> Vec<Input> {
    let mut rng = Lcg(seed);
    let mut offsets: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    let mut out = Vec::new();
    for step in 0..len as i64 {
        let secs = step * 7 + rng.below(5) as i64;
        let n = u128::from(rng.below(6));
        let key = ["k0", "k1", "k2", "k3"][rng.below(4) as usize];
        let (topic, partition, record) = match rng.below(7) {
            0 | 1 => {
                let price = format!("{}.{}", 90 + rng.below(20), rng.below(100));
                ("ticks", 0, Record::Tick(tick(key, secs * 1_000 - rng.below(9_000) as i64, &price, "1.5")))
            }
            2 => ("ticks", 1, Record::BookTop(book_top(key, secs, "99.5", "100.25"))),
            3 => {
                let attrs = json!({"amount": format!("{}", rng.below(500)), "country": key, "value": rng.below(50)});
                let t = ["card_transaction", "sensor_reading"][rng.below(2) as usize];
                ("events", 0, Record::Event(event(t, key, secs - rng.below(100) as i64, attrs)))
            }
            4 => ("commands", 0, Record::Command(command(n, key, 1, secs))),
            5 => {
                let mut cmd = command(n, key, 1, secs - 3);
                cmd.kind = kinds::RAISE_ALERT.into();
                let mut r = result(&cmd, ResultStatus::Succeeded, secs * 1_000 - 50, secs * 1_000);
                let severity = ["info", "warning", "critical"][rng.below(3) as usize];
                r.output = json!({ "severity": severity });
                ("results", rng.below(2) as i32, Record::Result(r))
            }
            _ => {
                let at = chrono::DateTime::from_timestamp(secs, 0).unwrap();
                let (reason, stage) = ("handler_failed".to_string(), "worker".to_string());
                (
                    "dlq",
                    0,
                    Record::DeadLetter { command_id: Some(Uuid::from_u128(n)), key: key.into(), reason, stage, at },
                )
            }
        };
        let offset = offsets.entry((topic, partition)).or_insert(0);
        *offset += 1 + rng.below(2) as i64;
        out.push(input(topic, partition, *offset, record));
    }
    out
}

#[test]
fn property_snapshot_anywhere_and_replays_equal_all_at_once() {
    let config =
        StateConfig { max_entities: 3, max_recent: 2, max_closed_bars: 2, max_alerts: 3, ..StateConfig::default() };
    let (mut evictions, mut late, mut joined_late, mut alerts) = (0, 0, 0, 0);
    for seed in 0..40 {
        let inputs = random_stream(seed, 60);
        let build = |inputs: &[Input]| {
            let mut s = State::new(config.clone());
            apply_all(&mut s, inputs);
            s
        };
        let all = build(&inputs);
        let json = all.to_canonical_json();
        assert_eq!(build(&inputs).to_canonical_json(), json, "seed {seed}: determinism");
        let mut rng = Lcg(seed ^ 0xabcd);
        for _ in 0..5 {
            let k = rng.below(inputs.len() as u64 + 1) as usize;
            let mut restored = State::from_snapshot(&build(&inputs[..k]).to_canonical_json()).unwrap();
            let j = rng.below(k as u64 + 1) as usize;
            apply_all(&mut restored, &inputs[j..]);
            assert_eq!(restored.to_canonical_json(), json, "seed {seed}: snapshot at {k}, rewound to {j}");
        }
        evictions += EntityKind::ALL.iter().map(|k| all.evictions(*k)).sum::<u64>();
        late += all.entities(EntityKind::Symbol).iter().map(|(k, _)| all.symbol(k).unwrap().late_trades).sum::<u64>();
        let mut answered = std::collections::BTreeSet::new();
        for i in &inputs {
            match &i.record {
                Record::Result(r) => {
                    answered.insert(r.command_id);
                }
                Record::Command(c) if answered.contains(&c.id) => joined_late += 1,
                _ => {}
            }
        }
        alerts += all.alerts().len();
    }
    // The streams exercise what they are meant to.
    assert!(evictions > 0 && late > 0 && joined_late > 0 && alerts > 0, "{evictions} {late} {joined_late} {alerts}");
}
