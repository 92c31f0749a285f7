use serde_json::{Value, json};
use shoal_state::Provenance;

use super::*;
use crate::hub::{Change, ShardView};

fn shard() -> ShardId {
    ShardId { topic: "t".into(), partition: 0 }
}

fn doc(key: &str, n: i64) -> Arc<EntityDoc> {
    Arc::new(EntityDoc {
        kind: EntityKind::Symbol,
        key: key.into(),
        shard: shard(),
        updated_at: chrono::DateTime::from_timestamp(n, 0).unwrap(),
        provenance: Provenance::new("t", 0, n),
        state: json!({"n": n}),
    })
}

fn watermark(offset: i64) -> Watermark {
    Watermark { topic: "t".into(), partition: 0, offset, event_time: None }
}

fn view(docs: &[Arc<EntityDoc>]) -> StateView {
    let entities = docs.iter().map(|d| ((d.kind, d.key.clone()), d.clone())).collect();
    let shard = ShardView { id: shard(), watermark: watermark(99), entities };
    StateView { shards: std::iter::once((shard.id.clone(), Arc::new(shard))).collect(), version: 1 }
}

fn batch(changes: &[(&str, Option<i64>)]) -> ChangeBatch {
    let changes = changes
        .iter()
        .map(|(key, n)| Change { kind: EntityKind::Symbol, key: (*key).into(), doc: n.map(|n| doc(key, n)) })
        .collect();
    ChangeBatch { shard: shard(), watermark: watermark(1), changes }
}

fn symbol(key: Option<&str>) -> Spec {
    Spec { kind: EntityKind::Symbol, key: key.map(str::to_string) }
}

fn frames(s: &mut Subscriber) -> Vec<Value> {
    std::iter::from_fn(|| s.next_frame()).map(|f| serde_json::from_str(&f).unwrap()).collect()
}

/// (type, key, seq, missed) of each frame.
fn summary(frames: &[Value]) -> Vec<(String, String, u64, Value)> {
    frames
        .iter()
        .map(|f| {
            let missed = f.get("missed").cloned().unwrap_or(json!("-"));
            (f["type"].as_str().unwrap().into(), f["key"].as_str().unwrap().into(), f["seq"].as_u64().unwrap(), missed)
        })
        .collect()
}

#[test]
fn snapshot_then_updates_of_subscribed_entities_only() {
    let mut s = Subscriber::new(8);
    s.subscribe(vec![symbol(Some("A")), symbol(Some("A"))], &view(&[doc("A", 1), doc("B", 1)]));
    let f = frames(&mut s);
    assert_eq!(summary(&f), vec![("snapshot".into(), "A".into(), 0, json!("-"))]);
    assert_eq!(f[0]["doc"]["state"], json!({"n": 1}));
    assert_eq!(f[0]["watermark"]["offset"], 99);
    s.apply(&batch(&[("A", Some(2)), ("B", Some(2))]));
    let f = frames(&mut s);
    assert_eq!(summary(&f), vec![("update".into(), "A".into(), 1, json!(0))]);
    assert_eq!((f[0]["watermark"]["offset"].clone(), f[0]["shard"]["topic"].clone()), (json!(1), json!("t")));
}

#[test]
fn changes_coalesce_per_entity_and_count_in_seq() {
    let mut s = Subscriber::new(8);
    s.subscribe(vec![symbol(None)], &view(&[]));
    s.apply(&batch(&[("A", Some(1)), ("B", Some(1)), ("A", Some(2))]));
    s.apply(&batch(&[("A", Some(3))]));
    let f = frames(&mut s);
    assert_eq!(
        summary(&f),
        vec![("update".into(), "A".into(), 3, json!(2)), ("update".into(), "B".into(), 1, json!(0))]
    );
    assert_eq!(f[0]["doc"]["state"], json!({"n": 3}));
}

#[test]
fn a_full_queue_overflows_then_resyncs_the_stale_entities_from_the_view() {
    let mut s = Subscriber::new(2);
    s.subscribe(vec![symbol(None)], &view(&[]));
    s.apply(&batch(&[("A", Some(1)), ("B", Some(1)), ("C", Some(1)), ("D", Some(1)), ("B", Some(2))]));
    assert!(!s.wants_resync(), "queued frames go first");
    let f = frames(&mut s);
    assert_eq!(
        summary(&f),
        vec![("update".into(), "A".into(), 1, json!(0)), ("update".into(), "B".into(), 2, json!(1))]
    );
    s.apply(&batch(&[("A", Some(2)), ("C", None)]));
    assert!(s.wants_resync());
    s.resync(&view(&[doc("A", 2), doc("B", 2), doc("D", 1)]));
    let f = frames(&mut s);
    assert_eq!(f[0], json!({"type": "overflow", "dropped": 4}));
    // C came and went unseen: nothing to say about it.
    assert_eq!(
        summary(&f[1..]),
        vec![("update".into(), "A".into(), 2, json!(0)), ("update".into(), "D".into(), 1, json!(0))]
    );
    assert!(!s.wants_resync());
    s.apply(&batch(&[("D", Some(2))]));
    assert_eq!(summary(&frames(&mut s)), vec![("update".into(), "D".into(), 2, json!(0))]);
}

#[test]
fn a_lag_resends_every_subscribed_entity_with_missed_unknown() {
    let mut s = Subscriber::new(8);
    s.subscribe(vec![symbol(None)], &view(&[doc("A", 1), doc("Z", 1)]));
    assert_eq!(frames(&mut s).len(), 2);
    s.apply(&batch(&[("A", Some(2))]));
    s.lagged(5);
    s.apply(&batch(&[("A", Some(3))]));
    assert!(s.wants_resync());
    s.resync(&view(&[doc("A", 3), doc("B", 1)]));
    let f = frames(&mut s);
    assert_eq!(
        summary(&f),
        vec![
            ("update".into(), "A".into(), 3, Value::Null),
            ("update".into(), "B".into(), 1, Value::Null),
            ("removed".into(), "Z".into(), 1, Value::Null),
        ]
    );
    assert!(f.iter().all(|f| f["lagged"] == 5));
    assert_eq!(f[0]["doc"]["state"], json!({"n": 3}));
}

#[test]
fn removal_is_sent_and_a_recreated_entity_starts_again() {
    let mut s = Subscriber::new(8);
    s.subscribe(vec![symbol(Some("A"))], &view(&[]));
    let f = frames(&mut s);
    assert_eq!(
        f,
        vec![
            json!({"type": "snapshot", "kind": "symbol", "key": "A", "shard": null, "seq": 0, "doc": null, "watermark": null})
        ]
    );
    s.apply(&batch(&[("A", Some(1)), ("A", Some(2))]));
    s.apply(&batch(&[("A", None)]));
    let f = frames(&mut s);
    assert_eq!(summary(&f), vec![("removed".into(), "A".into(), 3, json!(2))]);
    assert_eq!(f[0]["doc"], Value::Null);
    s.apply(&batch(&[("A", Some(4))]));
    assert_eq!(summary(&frames(&mut s)), vec![("update".into(), "A".into(), 1, json!(0))]);
}

#[test]
fn unsubscribing_drops_what_is_queued_and_resubscribing_snapshots_again() {
    let mut s = Subscriber::new(8);
    let v = view(&[doc("A", 1)]);
    s.subscribe(vec![symbol(None)], &v);
    s.subscribe(vec![symbol(Some("A"))], &v);
    assert_eq!(frames(&mut s).len(), 1, "A is already subscribed through its kind");
    s.apply(&batch(&[("A", Some(2))]));
    s.unsubscribe(&[symbol(None)]);
    assert_eq!(summary(&frames(&mut s)), vec![("update".into(), "A".into(), 1, json!(0))], "still subscribed by key");
    s.apply(&batch(&[("A", Some(3))]));
    s.unsubscribe(&[symbol(Some("A"))]);
    assert!(frames(&mut s).is_empty());
    s.apply(&batch(&[("A", Some(4))]));
    assert!(frames(&mut s).is_empty());
    s.subscribe(vec![symbol(Some("A"))], &v);
    assert_eq!(summary(&frames(&mut s)), vec![("snapshot".into(), "A".into(), 0, json!("-"))]);
}

#[test]
fn subscriptions_are_capped_and_control_frames_pause_input() {
    let mut s = Subscriber::new(8);
    let specs = |n: usize| (0..n).map(|i| symbol(Some(&format!("K{i}")))).collect::<Vec<_>>();
    s.subscribe(specs(MAX_ENTITIES + 1), &StateView::default());
    let f = frames(&mut s);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["code"], "too_many_entities");
    assert!(f[0]["message"].as_str().unwrap().contains("10001 subscriptions on this connection (limit 10000)"));
    s.subscribe(specs(MAX_ENTITIES), &StateView::default());
    assert!(!s.accepts_input());
    assert_eq!(frames(&mut s).len(), MAX_ENTITIES);
    assert!(s.accepts_input());
}
