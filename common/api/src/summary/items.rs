//! One summary item per entity: its salience and the few facts a model
//! needs, read from the entity's served JSON.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use shoal_state::EntityKind;

use crate::hub::EntityDoc;

/// A data-quality event this recent (before the summary's `as_of`) makes
/// its symbol salient.
const QUALITY_RECENT_SECS: i64 = 60;

/// An entity, ready to be ranked and rendered.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Item {
    pub kind: EntityKind,
    pub key: String,
    /// Higher first.
    pub salience: u32,
    /// `name=value` facts, in order.
    pub facts: Vec<(&'static str, String)>,
    pub updated_at: DateTime<Utc>,
    /// `topic/partition@offset` of the input that last changed it.
    pub source: String,
}

impl Item {
    /// From a served entity; `as_of` is the summary's reference time.
    pub fn of(doc: &EntityDoc, as_of: DateTime<Utc>) -> Self {
        let (salience, facts) = match doc.kind {
            EntityKind::Symbol => symbol(&doc.state, as_of),
            EntityKind::Command => command(&doc.state),
            EntityKind::Alerts => alerts(&doc.state),
            EntityKind::Outcomes => outcomes(&doc.state),
            EntityKind::Account | EntityKind::Device => other(&doc.state),
        };
        let p = &doc.provenance;
        Self {
            kind: doc.kind,
            key: doc.key.clone(),
            salience,
            facts,
            updated_at: doc.updated_at,
            source: format!("{}/{}@{}", p.topic, p.partition, p.offset),
        }
    }

    /// Age at `as_of`, in seconds with one decimal (never negative).
    fn age(&self, as_of: DateTime<Utc>) -> String {
        let ms = (as_of - self.updated_at).num_milliseconds().max(0);
        format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
    }

    /// One line of the text form (no newline).
    pub fn line(&self, as_of: DateTime<Utc>) -> String {
        let mut line = format!("- {} {}", self.kind, self.key);
        for (name, value) in &self.facts {
            line.push_str(&format!(" {name}={value}"));
        }
        line.push_str(&format!(" | age={} at={} src={}", self.age(as_of), time(self.updated_at), self.source));
        line
    }

    /// The JSON form.
    pub fn json(&self, as_of: DateTime<Utc>) -> Value {
        let facts: serde_json::Map<String, Value> =
            self.facts.iter().map(|(n, v)| ((*n).to_string(), Value::String(v.clone()))).collect();
        json!({
            "kind": self.kind.as_str(),
            "key": self.key,
            "facts": facts,
            "age": self.age(as_of),
            "at": time(self.updated_at),
            "src": self.source,
        })
    }
}

/// A timestamp as the summary writes it (RFC 3339, milliseconds, `Z`).
pub(super) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn number(v: &Value, pointer: &str) -> Option<f64> {
    match v.pointer(pointer)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// At most `max` characters of `s` (whole characters), `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

/// Symbols: the move of the last trade from the rolling VWAP ranks them
/// (in basis points, capped), a recent data-quality event above all moves.
fn symbol(state: &Value, as_of: DateTime<Utc>) -> (u32, Vec<(&'static str, String)>) {
    let mut facts = Vec::new();
    let last = number(state, "/last_trade/price");
    let vwap = number(state, "/rolling/vwap");
    if let Some(price) = text(state, "/last_trade/price") {
        facts.push(("last", price));
    }
    let mut salience = 400;
    if let (Some(last), Some(vwap)) = (last, vwap)
        && vwap != 0.0
    {
        let bp = (last - vwap) / vwap * 10_000.0;
        facts.push(("vs_vwap_bp", format!("{bp:+.0}")));
        salience += bp.abs().min(399.0) as u32;
    }
    if let Some(vol) = number(state, "/rolling/volatility") {
        facts.push(("volatility", format!("{vol:.2e}")));
    }
    if let Some(trades) = text(state, "/trades") {
        facts.push(("trades", trades));
    }
    let quality_at = text(state, "/last_quality/at").and_then(|t| t.parse::<DateTime<Utc>>().ok());
    if let (Some(kind), Some(at)) = (text(state, "/last_quality/kind"), quality_at)
        && (as_of - at).num_seconds() <= QUALITY_RECENT_SECS
    {
        facts.push(("quality", kind));
        if let Some(detail) = text(state, "/last_quality/detail") {
            facts.push(("detail", clip(&detail, 60)));
        }
        salience = 850;
    }
    (salience, facts)
}

/// Commands: failed, expired or dead-lettered first, then pending, then
/// the rest.
fn command(state: &Value) -> (u32, Vec<(&'static str, String)>) {
    let status = text(state, "/status").unwrap_or_else(|| "unknown".into());
    let salience = match status.as_str() {
        "pending_approval" => 950,
        "failed" | "dead_lettered" | "expired" | "rejected" => 900,
        "issued" => 700,
        "unsupported" => 600,
        _ => 100,
    };
    let mut facts = vec![("status", status)];
    for (name, pointer) in [("kind", "/kind"), ("key", "/key"), ("seq", "/seq")] {
        if let Some(v) = text(state, pointer) {
            facts.push((name, v));
        }
    }
    if let Some(error) = text(state, "/result/output/error") {
        facts.push(("error", clip(&error, 80)));
    }
    (salience, facts)
}

/// Alerts about one entity (newest first): ranked by their number, the
/// newest one shown.
fn alerts(state: &Value) -> (u32, Vec<(&'static str, String)>) {
    let list = state.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut facts = vec![("alerts", list.len().to_string())];
    if let Some(newest) = list.first() {
        if let Some(severity) = text(newest, "/severity") {
            facts.push(("newest_severity", severity));
        }
        if let Some(message) = text(newest, "/message") {
            facts.push(("newest", clip(&message, 80)));
        }
    }
    (800 + list.len().min(99) as u32, facts)
}

/// Recent outcomes of one key: ranked by failures among them.
fn outcomes(state: &Value) -> (u32, Vec<(&'static str, String)>) {
    let recent = state.pointer("/recent").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let failed = recent.iter().filter(|o| text(o, "/status").is_some_and(|s| s != "succeeded")).count();
    let mut facts = vec![("recent", recent.len().to_string()), ("not_succeeded", failed.to_string())];
    if let Some(last) = recent.last().and_then(|o| text(o, "/status")) {
        facts.push(("last", last));
    }
    let salience = if failed > 0 { 650 + failed.min(99) as u32 } else { 200 };
    (salience, facts)
}

/// Accounts and devices: present, updated.
fn other(state: &Value) -> (u32, Vec<(&'static str, String)>) {
    let mut facts = Vec::new();
    for (name, pointer) in [("recent", "/recent"), ("readings", "/readings")] {
        if let Some(list) = state.pointer(pointer).and_then(Value::as_array) {
            facts.push((name, list.len().to_string()));
        }
    }
    (300, facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::ShardId;
    use shoal_state::Provenance;

    fn doc(kind: EntityKind, key: &str, state: Value) -> EntityDoc {
        EntityDoc {
            kind,
            key: key.into(),
            shard: ShardId { topic: "t".into(), partition: 0 },
            updated_at: "2026-12-05T10:00:00Z".parse().unwrap(),
            provenance: Provenance::new("shoal.ticks", 2, 41),
            state,
        }
    }

    #[test]
    fn failing_commands_outrank_pending_and_settled_ones() {
        let as_of = "2026-12-05T10:00:01.25Z".parse().unwrap();
        let failed = Item::of(&doc(EntityKind::Command, "c1", json!({"status": "failed", "kind": "k"})), as_of);
        let pending = Item::of(&doc(EntityKind::Command, "c2", json!({"status": "issued"})), as_of);
        let done = Item::of(&doc(EntityKind::Command, "c3", json!({"status": "succeeded"})), as_of);
        assert!(failed.salience > pending.salience && pending.salience > done.salience);
        assert_eq!(
            failed.line(as_of),
            "- command c1 status=failed kind=k | age=1.2s at=2026-12-05T10:00:00.000Z src=shoal.ticks/2@41"
        );
    }

    #[test]
    fn a_symbol_ranks_by_its_move_from_vwap() {
        let as_of = "2026-12-05T10:00:00Z".parse().unwrap();
        let calm = json!({"last_trade": {"price": "100.1"}, "rolling": {"vwap": "100"}});
        let moved = json!({"last_trade": {"price": "103"}, "rolling": {"vwap": "100"}});
        let calm = Item::of(&doc(EntityKind::Symbol, "A", calm), as_of);
        let moved = Item::of(&doc(EntityKind::Symbol, "B", moved), as_of);
        assert!(moved.salience > calm.salience);
        assert!(moved.line(as_of).contains("vs_vwap_bp=+300"), "{}", moved.line(as_of));
    }
}
