//! Tests of merging the values of one entity from several shards.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shoal_protocol::messages::ResultStatus;
use uuid::Uuid;

use crate::commands::Lifecycle;
use crate::testkit::{command, input, result};
use crate::tests::{built, scenario};
use crate::*;

/// One state per (topic, partition), each applying its partition's inputs.
fn shards(inputs: &[Input]) -> BTreeMap<(String, i32), State> {
    let mut shards: BTreeMap<(String, i32), State> = BTreeMap::new();
    for i in inputs {
        shards.entry((i.provenance.topic.clone(), i.provenance.partition)).or_default().apply(i);
    }
    shards
}

fn values(shards: &BTreeMap<(String, i32), State>, entity: &EntityRef) -> Vec<Value> {
    shards.values().filter_map(|s| s.entity_value(entity)).collect()
}

/// The scenario, and a result for the dead-lettered command (on another
/// results partition, earlier than its dead letter): a command with parts
/// from three topics.
fn inputs() -> Vec<Input> {
    let mut inputs = scenario();
    let cmd3 = command(3, "dev-1", 1, 4);
    inputs.push(input("results", 1, 0, Record::Result(result(&cmd3, ResultStatus::Failed, 4_500, 8_000))));
    inputs
}

#[test]
fn shards_merged_equal_the_whole_state() {
    let inputs = inputs();
    let whole = built(&inputs);
    let shards = shards(&inputs);
    let c3 = EntityRef { kind: EntityKind::Command, key: Uuid::from_u128(3).to_string() };
    assert_eq!(values(&shards, &c3).len(), 3, "command, result and dead letter in three shards");
    let commands: Vec<Value> = whole
        .entity_refs()
        .iter()
        .filter(|e| e.kind == EntityKind::Command)
        .map(|e| merge_entities(e.kind, &values(&shards, e)).unwrap())
        .collect();
    for e in whole.entity_refs() {
        let parts = values(&shards, &e);
        let mut merged = merge_entities(e.kind, &parts).unwrap();
        if e.kind == EntityKind::Outcomes {
            let partial = merged.clone();
            merged = complete_outcomes(&merged, &commands).unwrap();
            assert_eq!(complete_outcomes(&merged, &commands).unwrap(), merged, "completing twice changes nothing");
            if e.key == "SIM-A" {
                assert_eq!(partial["recent"][0]["end_to_end_ms"], Value::Null, "no shard knows the latency");
            }
        }
        assert_eq!(Some(merged), whole.entity_value(&e), "{e:?} from {} shards", parts.len());
    }
    let c3 = whole.command(Uuid::from_u128(3)).unwrap();
    assert_eq!((c3.status, c3.timings.end_to_end_ms), (Lifecycle::Failed, Some(4_000)), "a result beats a dead letter");
    for shard in shards.values() {
        assert!(shard.entity_refs().iter().all(|e| whole.entity_value(e).is_some()), "no entity only in a shard");
    }
}

#[test]
fn merging_is_independent_of_order_and_idempotent() {
    let inputs = inputs();
    let whole = built(&inputs);
    let shards = shards(&inputs);
    for e in whole.entity_refs() {
        let mut parts = values(&shards, &e);
        let merged = merge_entities(e.kind, &parts).unwrap();
        parts.reverse();
        assert_eq!(merge_entities(e.kind, &parts).unwrap(), merged, "{e:?}");
        assert_eq!(merge_entities(e.kind, std::slice::from_ref(&merged)).unwrap(), merged, "{e:?}");
        parts.push(merged.clone());
        if e.kind != EntityKind::Command {
            assert_eq!(merge_entities(e.kind, &parts).unwrap(), merged, "{e:?}: merged with its parts");
        }
    }
}

#[test]
fn the_newest_value_of_a_single_partition_entity_stands() {
    let inputs = scenario();
    let (early, late) = (built(&inputs[..3]), built(&inputs));
    for (kind, key) in [(EntityKind::Symbol, "SIM-A"), (EntityKind::Account, "acct-1")] {
        let e = EntityRef { kind, key: key.into() };
        let (old, new) = (early.entity_value(&e).unwrap(), late.entity_value(&e).unwrap());
        assert_eq!(merge_entities(kind, &[old.clone(), new.clone()]).unwrap(), new);
        assert_eq!(merge_entities(kind, &[new.clone(), old]).unwrap(), new);
    }
}

#[test]
fn results_in_two_shards_count_as_a_duplicate() {
    let cmd = command(7, "acct-9", 1, 10);
    let res = result(&cmd, ResultStatus::Succeeded, 10_100, 10_200);
    let inputs = [
        input("commands", 0, 0, Record::Command(cmd.clone())),
        input("results", 0, 0, Record::Result(res.clone())),
        input("results", 2, 5, Record::Result(res)),
    ];
    let whole = built(&inputs);
    let e = EntityRef { kind: EntityKind::Command, key: cmd.id.to_string() };
    let merged = merge_entities(e.kind, &values(&shards(&inputs), &e)).unwrap();
    assert_eq!(Some(&merged), whole.entity_value(&e).as_ref());
    assert_eq!(
        (merged["duplicates"].as_u64(), merged["result"]["provenance"]["partition"].as_i64()),
        (Some(1), Some(0))
    );
}

#[test]
fn merge_errors_name_what_is_wrong() {
    let state = built(&inputs());
    let value = |kind, key: &str| state.entity_value(&EntityRef { kind, key: key.into() }).unwrap();
    let err = |kind, values: &[Value]| merge_entities(kind, values).unwrap_err().to_string();
    assert_eq!(err(EntityKind::Symbol, &[]), "cannot merge symbol values: no values");
    let (c1, c2) = (
        value(EntityKind::Command, &Uuid::from_u128(1).to_string()),
        value(EntityKind::Command, &Uuid::from_u128(2).to_string()),
    );
    assert!(
        err(EntityKind::Command, &[c1.clone(), c2])
            .contains("values of commands 00000000-0000-0000-0000-000000000001 and")
    );
    assert!(
        err(EntityKind::Command, &[c1, json!({})]).starts_with("cannot merge command values: value 1: missing field")
    );
    assert!(err(EntityKind::Device, &[json!({"readings": 1})]).contains("value 0 has no `updated` stamp"));
    let mut other = value(EntityKind::Alerts, "SIM-A");
    other[0]["entity"] = json!("SIM-B");
    other[0]["command_id"] = json!(Uuid::from_u128(9));
    let message = err(EntityKind::Alerts, &[value(EntityKind::Alerts, "SIM-A"), other]);
    assert!(message.contains("alerts about \"SIM-A\" and \"SIM-B\""), "{message}");
    let outcomes = value(EntityKind::Outcomes, "SIM-A");
    assert!(
        complete_outcomes(&json!([]), &[])
            .unwrap_err()
            .to_string()
            .starts_with("cannot merge outcomes values: not outcomes")
    );
    assert!(
        complete_outcomes(&outcomes, &[json!(1)]).unwrap_err().to_string().starts_with("cannot merge command values")
    );
    assert_eq!(complete_outcomes(&outcomes, &[]).unwrap(), outcomes);
}
