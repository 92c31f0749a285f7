//! Property tests of the changelog over random input sequences: a state
//! restored from its changelog equals the state, byte for byte, and keeps
//! behaving the same.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use shoal_protocol::messages::{ResultStatus, kinds};
use uuid::Uuid;

use crate::changelog_tests::{keys_sorted, restored};
use crate::testkit::{book_top, command, event, input, quality, result, tick, ts};
use crate::*;

/// One step of a stream: an input, or a mark a rule leaves on an entity.
#[derive(Debug, Clone)]
enum Step {
    Input(Input),
    Mark(EntityKind, String, DateTime<Utc>),
}

/// What a step is made from: (what, key, command number, randomness).
type Op = (u8, u8, u8, u16);

const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

fn record(what: u8, key: &str, n: u8, r: u16, secs: i64) -> (&'static str, i32, Record) {
    let r64 = i64::from(r);
    let part = i32::from(r % 2);
    let n = u128::from(n);
    match what {
        0 | 1 => {
            let price = format!("{}.{}", 90 + r % 20, r % 100);
            // Up to 30 s back: some trades are older than their symbol's last.
            ("ticks", part, Record::Tick(tick(key, secs * 1_000 - r64 % 30_000, &price, "1.5")))
        }
        2 => ("ticks", part, Record::BookTop(book_top(key, secs, "99.5", "100.25"))),
        3 => ("ticks", part, Record::DataQuality(quality(key, secs))),
        4 => {
            let metric = ["t", "p"][usize::from(r % 2)];
            let attrs = json!({"amount": format!("{}", r % 500), "country": key, "value": r % 50, "metric": metric});
            let kind = ["card_transaction", "sensor_reading", "page_view"][usize::from(r % 3)];
            ("events", part, Record::Event(event(kind, key, secs - r64 % 100, attrs)))
        }
        5 => ("commands", part, Record::Command(command(n, key, 1, secs))),
        6 => {
            let mut cmd = command(n, key, 1, secs - 3);
            if !r.is_multiple_of(3) {
                cmd.kind = kinds::RAISE_ALERT.into();
            }
            let status = [ResultStatus::Succeeded, ResultStatus::Failed, ResultStatus::Expired][usize::from(r % 3)];
            let mut res = result(&cmd, status, secs * 1_000 - 50, secs * 1_000 - r64 % 4_000);
            let severity = ["info", "warning", "critical"][usize::from(r % 3)];
            res.output = json!({ "severity": severity });
            ("results", part, Record::Result(res))
        }
        _ => {
            let command_id = (!r.is_multiple_of(7)).then(|| Uuid::from_u128(n));
            let (reason, stage) = ("handler_failed".to_string(), "worker".to_string());
            ("dlq", 0, Record::DeadLetter { command_id, key: key.into(), reason, stage, at: ts(secs - r64 % 20) })
        }
    }
}

/// The steps `ops` make: inputs on a few partitions of each topic, with
/// offsets that grow per partition (sometimes skipping one), replays of the
/// previous input, and marks.
fn steps(ops: &[Op]) -> Vec<Step> {
    let mut offsets: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    let mut out: Vec<Step> = Vec::new();
    for (step, &(what, key, n, r)) in ops.iter().enumerate() {
        let secs = step as i64 * 7 + i64::from(r % 5);
        let key = KEYS[usize::from(key) % KEYS.len()];
        match what {
            9 => {
                let kind = [EntityKind::Symbol, EntityKind::Account, EntityKind::Device][usize::from(r % 3)];
                out.push(Step::Mark(kind, key.into(), ts(secs)));
            }
            10 => {
                if let Some(Step::Input(last)) = out.iter().rev().find(|s| matches!(s, Step::Input(_))).cloned() {
                    out.push(Step::Input(last));
                }
            }
            _ => {
                let (topic, partition, record) = record(what, key, n % 6, r, secs);
                let offset = offsets.entry((topic, partition)).or_insert(-1);
                *offset += 1 + i64::from(r % 2);
                out.push(Step::Input(input(topic, partition, *offset, record)));
            }
        }
    }
    out
}

/// Runs `steps` on `state`: what each input did, and whether each mark took.
fn run(state: &mut State, steps: &[Step]) -> Vec<String> {
    let name = |at: &DateTime<Utc>| if at.timestamp() % 2 == 0 { "even" } else { "odd" };
    steps
        .iter()
        .map(|step| match step {
            Step::Input(i) => format!("{:?}", state.apply(i)),
            Step::Mark(kind, key, at) => format!("{}", state.mark(*kind, key, name(at), *at)),
        })
        .collect()
}

fn config(window: u8) -> StateConfig {
    StateConfig {
        max_entities: 3,
        max_recent: 2,
        max_closed_bars: 2,
        max_window_samples: 4,
        max_alerts: 3,
        rolling_window_secs: [30, 60, 90][usize::from(window % 3)],
        command_retention_secs: [0, 40, 120][usize::from(window / 3 % 3)],
        ..StateConfig::default()
    }
}

fn stream() -> impl Strategy<Value = (Vec<Op>, Index, u8)> {
    (prop::collection::vec((0..11u8, 0..4u8, any::<u8>(), any::<u16>()), 0..90), any::<Index>(), any::<u8>())
}

proptest! {
    #![proptest_config(Config { cases: 256, ..Config::default() })]

    #[test]
    fn a_state_restored_from_its_changelog_is_the_same_and_behaves_the_same((ops, split, window) in stream()) {
        let steps = steps(&ops);
        let k = split.index(steps.len() + 1);
        let mut state = State::new(config(window));
        run(&mut state, &steps[..k]);
        let mut back = restored(&state);
        prop_assert_eq!(back.to_canonical_json(), state.to_canonical_json());
        for e in state.entity_refs() {
            let value = state.entity_value(&e);
            prop_assert!(value.is_some() && state.entity_stamp(&e).is_some(), "{:?}", e);
            let bytes = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(&bytes, &serde_json::to_vec(&state.entity_value(&e)).unwrap());
            prop_assert!(keys_sorted(&serde_json::from_slice(&bytes).unwrap()));
        }
        prop_assert_eq!(run(&mut back, &steps[k..]), run(&mut state, &steps[k..]));
        prop_assert_eq!(back.to_canonical_json(), state.to_canonical_json());
        prop_assert_eq!(restored(&state).to_canonical_json(), state.to_canonical_json());
    }
}

/// The streams exercise what they are meant to: evictions, late trades,
/// bounded alerts, marks, replays.
#[test]
fn the_random_streams_cover_the_interesting_cases() {
    let mut runner = TestRunner::deterministic();
    let (mut evictions, mut late, mut alerts_full, mut marked, mut replays) = (0, 0, 0, 0, 0);
    let late_trades = |s: &State| -> u64 {
        s.entities(EntityKind::Symbol).iter().map(|(k, _)| s.symbol(k).unwrap().late_trades).sum()
    };
    for _ in 0..64 {
        let (ops, _, window) = stream().new_tree(&mut runner).unwrap().current();
        let mut state = State::new(config(window));
        for step in steps(&ops) {
            let before = late_trades(&state);
            let outcome = run(&mut state, std::slice::from_ref(&step)).concat();
            late += u64::from(late_trades(&state) > before);
            marked += usize::from(outcome == "true");
            replays += usize::from(outcome.contains("Replay"));
        }
        evictions += EntityKind::ALL.iter().map(|k| state.evictions(*k)).sum::<u64>();
        alerts_full += usize::from(state.alerts().len() == 3);
    }
    assert!(
        evictions > 0 && late > 0 && alerts_full > 0 && marked > 0 && replays > 0,
        "{evictions} {late} {alerts_full} {marked} {replays}"
    );
}
