//! Tests of the changelog: per-entity values, meta, restore, marks.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::testkit::{input, tick, ts};
use crate::tests::{apply_all, built, scenario};
use crate::*;

/// `state` rebuilt from its changelog: its meta record and every entity's
/// value.
pub(crate) fn restored(state: &State) -> State {
    let entities = state.entity_refs().into_iter().map(|e| {
        let value = state.entity_value(&e).unwrap();
        (e, value)
    });
    State::restore(&state.meta_value(), entities).unwrap()
}

fn entity(kind: EntityKind, key: &str) -> EntityRef {
    EntityRef { kind, key: key.into() }
}

/// Whether every object in `value` lists its keys in sorted order.
pub(crate) fn keys_sorted(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b) && map.values().all(keys_sorted),
        Value::Array(items) => items.iter().all(keys_sorted),
        _ => true,
    }
}

/// The scenario, with marks on a symbol and an account.
fn marked() -> State {
    let mut state = built(&scenario());
    assert!(state.mark(EntityKind::Symbol, "SIM-A", "move", ts(62)));
    assert!(state.mark(EntityKind::Account, "acct-1", "review", ts(30)));
    state
}

#[test]
fn changelog_keys_name_kind_and_key() {
    let e = entity(EntityKind::Device, "boiler-7/temperature");
    assert_eq!(changelog_key(&e), "device/boiler-7/temperature");
    assert_eq!(parse_changelog_key("device/boiler-7/temperature"), Some(e), "split at the first '/'");
    for kind in EntityKind::ALL {
        let e = entity(kind, "k");
        assert_eq!(parse_changelog_key(&changelog_key(&e)), Some(e));
    }
    assert_eq!(parse_changelog_key("symbol/"), Some(entity(EntityKind::Symbol, "")));
    assert_eq!(parse_changelog_key("symbol"), None);
    assert_eq!(parse_changelog_key("widget/x"), None);
    assert_eq!(parse_changelog_key("/x"), None);
}

#[test]
fn entity_refs_list_every_entity_in_order() {
    let state = built(&scenario());
    let id = |n: u128| Uuid::from_u128(n).to_string();
    let expected = [
        entity(EntityKind::Symbol, "SIM-A"),
        entity(EntityKind::Symbol, "SIM-B"),
        entity(EntityKind::Account, "acct-1"),
        entity(EntityKind::Device, "dev-1"),
        entity(EntityKind::Command, &id(1)),
        entity(EntityKind::Command, &id(2)),
        entity(EntityKind::Command, &id(3)),
        entity(EntityKind::Outcomes, "SIM-A"),
        entity(EntityKind::Outcomes, "acct-1"),
        entity(EntityKind::Outcomes, "dev-1"),
        entity(EntityKind::Alerts, "SIM-A"),
    ];
    assert_eq!(state.entity_refs(), expected);
    assert!(State::default().entity_refs().is_empty());
}

#[test]
fn entity_values_are_what_the_whole_state_holds() {
    let state = marked();
    let whole: Value = serde_json::from_str(&state.to_canonical_json()).unwrap();
    for e in state.entity_refs() {
        let value = state.entity_value(&e).unwrap();
        let expected = match e.kind {
            EntityKind::Symbol => whole["symbols"]["entries"][&e.key].clone(),
            EntityKind::Account => whole["accounts"]["entries"][&e.key].clone(),
            EntityKind::Device => whole["devices"]["entries"][&e.key].clone(),
            EntityKind::Command => whole["commands"]["by_id"]["entries"][&e.key].clone(),
            EntityKind::Outcomes => whole["commands"]["by_key"]["entries"][&e.key].clone(),
            EntityKind::Alerts => {
                let about = whole["alerts"].as_array().unwrap().iter().filter(|a| a["entity"] == e.key.as_str());
                Value::Array(about.rev().cloned().collect())
            }
        };
        assert_eq!(value, expected, "{e:?}");
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(bytes, serde_json::to_vec(&state.entity_value(&e).unwrap()).unwrap(), "deterministic");
        assert!(keys_sorted(&serde_json::from_slice(&bytes).unwrap()), "{e:?}: keys sorted");
        let json = state.entity_json(e.kind, &e.key).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), value, "the same as entity_json, keys aside");
    }
    let meta = state.meta_value();
    assert!(keys_sorted(&meta));
    assert_eq!(
        (&meta["format"], &meta["config"], &meta["watermarks"]),
        (&whole["format"], &whole["config"], &whole["watermarks"])
    );
    assert_eq!(meta["evicted"], json!({"symbol": 0, "account": 0, "device": 0, "command": 0, "outcomes": 0}));
    assert_eq!(
        state.entity_value(&entity(EntityKind::Symbol, "SIM-A")).unwrap()["marks"],
        json!({"move": "1970-01-01T00:01:02Z"})
    );
    assert!(
        state.entity_value(&entity(EntityKind::Symbol, "SIM-B")).unwrap().get("marks").is_none(),
        "no marks: no field"
    );
}

#[test]
fn missing_entities_have_no_value_nor_stamp() {
    let state = built(&scenario());
    for kind in EntityKind::ALL {
        assert_eq!(state.entity_value(&entity(kind, "nope")), None, "{kind}");
        assert_eq!(state.entity_stamp(&entity(kind, "nope")), None, "{kind}");
    }
    assert_eq!(state.entity_value(&entity(EntityKind::Alerts, "acct-1")), None, "an entity without alerts");
}

#[test]
fn entity_stamps_are_the_inputs_that_last_changed_them() {
    let state = built(&scenario());
    let stamp = |kind, key: &str| state.entity_stamp(&entity(kind, key)).unwrap();
    assert_eq!(stamp(EntityKind::Symbol, "SIM-A"), Stamp::new(ts(63), Provenance::new("ticks", 0, 4)));
    assert_eq!(stamp(EntityKind::Account, "acct-1"), Stamp::new(ts(30), Provenance::new("events", 0, 1)));
    assert_eq!(stamp(EntityKind::Device, "dev-1"), Stamp::new(ts(4), Provenance::new("events", 1, 1)));
    let c1 = stamp(EntityKind::Command, &Uuid::from_u128(1).to_string());
    assert_eq!(c1.provenance, Provenance::new("results", 0, 1), "the duplicate result is the newest input");
    assert_eq!(stamp(EntityKind::Outcomes, "dev-1"), Stamp::new(ts(9), Provenance::new("dlq", 0, 0)));
    let alerts = stamp(EntityKind::Alerts, "SIM-A");
    assert_eq!((alerts.at, alerts.provenance), (crate::testkit::ts_ms(3_080), Provenance::new("results", 2, 0)));
}

#[test]
fn the_scenario_restores_from_its_changelog_and_behaves_the_same() {
    let inputs = scenario();
    for k in 0..=inputs.len() {
        let mut state = built(&inputs[..k]);
        state.mark(EntityKind::Symbol, "SIM-A", "move", ts(1));
        let mut back = restored(&state);
        assert_eq!(back.to_canonical_json(), state.to_canonical_json(), "restored at {k}");
        assert_eq!(back, state, "indexes rebuilt too");
        let (a, b) = (apply_all(&mut state, &inputs[k..]), apply_all(&mut back, &inputs[k..]));
        assert_eq!(a, b, "the same changes after {k}");
        assert_eq!(back.to_canonical_json(), state.to_canonical_json(), "then the rest after {k}");
    }
    let empty = State::new(StateConfig { max_alerts: 7, ..StateConfig::default() });
    assert_eq!(restored(&empty), empty);
}

#[test]
fn evictions_and_the_recency_index_survive_a_restore() {
    let mut state = State::new(StateConfig { max_entities: 2, ..StateConfig::default() });
    let t =
        |offset, symbol: &str, secs: i64| input("ticks", 0, offset, Record::Tick(tick(symbol, secs * 1_000, "1", "1")));
    apply_all(&mut state, &[t(0, "Z", 5), t(1, "B", 2), t(2, "C", 9)]);
    assert_eq!(state.evictions(EntityKind::Symbol), 1);
    let mut back = restored(&state);
    assert_eq!(back.evictions(EntityKind::Symbol), 1);
    let next = t(3, "D", 11);
    let applied = back.apply(&next);
    assert_eq!(applied.evicted, [entity(EntityKind::Symbol, "Z")], "Z is the least recently updated");
    assert_eq!(state.apply(&next), applied);
    assert_eq!(back.to_canonical_json(), state.to_canonical_json());
}

#[test]
fn restore_errors_name_what_is_wrong() {
    let state = built(&scenario());
    let entities = || state.entity_refs().into_iter().map(|e| (e.clone(), state.entity_value(&e).unwrap()));
    let err = |meta: &Value, list: Vec<(EntityRef, Value)>| State::restore(meta, list).unwrap_err().to_string();
    let meta = state.meta_value();
    let mut newer = meta.clone();
    newer["format"] = json!(2);
    assert!(matches!(State::restore(&newer, []), Err(StateError::UnsupportedFormat { found: 2, supported: 1 })));
    let mut extra = meta.clone();
    extra["extra"] = json!(1);
    assert!(err(&extra, vec![]).contains("unknown field `extra`"));
    assert!(err(&json!({"format": 1}), vec![]).starts_with("not a state changelog meta record: missing field"));
    let id1 = Uuid::from_u128(1).to_string();
    let cases = [
        (entity(EntityKind::Symbol, "SIM-A"), json!(1), "changelog record symbol/SIM-A: not the shape of its kind"),
        (
            entity(EntityKind::Command, "x"),
            state.entity_value(&entity(EntityKind::Command, &id1)).unwrap(),
            "changelog record command/x: holds command 00000000-0000-0000-0000-000000000001",
        ),
        (
            entity(EntityKind::Alerts, "SIM-B"),
            state.entity_value(&entity(EntityKind::Alerts, "SIM-A")).unwrap(),
            "changelog record alerts/SIM-B: holds an alert about \"SIM-A\"",
        ),
        (
            entity(EntityKind::Device, "dev-1"),
            state.entity_value(&entity(EntityKind::Device, "dev-1")).unwrap(),
            "changelog record device/dev-1: given twice",
        ),
    ];
    for (e, value, expected) in cases {
        let twice = e.kind == EntityKind::Device;
        let mut list: Vec<_> = entities().filter(|(other, _)| *other != e || twice).collect();
        list.push((e, value));
        let message = err(&meta, list);
        assert!(message.starts_with(expected), "{message}");
    }
    let alerts = state.entity_value(&entity(EntityKind::Alerts, "SIM-A")).unwrap();
    let twice = Value::Array([alerts.as_array().unwrap().clone(), alerts.as_array().unwrap().clone()].concat());
    let message = err(&meta, vec![(entity(EntityKind::Alerts, "SIM-A"), twice)]);
    assert!(
        message
            .starts_with("changelog record alerts/SIM-A: command 00000000-0000-0000-0000-000000000002 has two alerts"),
        "{message}"
    );
}

#[test]
fn marks_are_kept_with_symbols_accounts_and_devices_only() {
    let mut state = marked();
    let before = state.entity_stamp(&entity(EntityKind::Symbol, "SIM-A"));
    assert!(state.mark(EntityKind::Symbol, "SIM-A", "move", ts(70)), "marks are overwritten");
    assert_eq!(state.symbol("SIM-A").unwrap().marks.get("move"), Some(&ts(70)));
    assert_eq!(state.entity_stamp(&entity(EntityKind::Symbol, "SIM-A")), before, "a mark is no input");
    assert!(state.mark(EntityKind::Device, "dev-1", "alerted", ts(4)));
    assert_eq!(state.device("dev-1").unwrap().marks.len(), 1);
    assert_eq!(state.account("acct-1").unwrap().marks.get("review"), Some(&ts(30)));
    assert!(!state.mark(EntityKind::Symbol, "nope", "move", ts(1)), "no such symbol");
    assert!(!state.mark(EntityKind::Command, &Uuid::from_u128(1).to_string(), "x", ts(1)), "commands have no marks");
    assert!(!state.mark(EntityKind::Alerts, "SIM-A", "x", ts(1)));
    let back = State::from_snapshot(&state.to_canonical_json()).unwrap();
    assert_eq!(back, state, "marks are in the snapshot");
    assert_eq!(restored(&state), state, "and in the changelog");
}
