//! The stream's messages: what clients send ([`Request`]) and the frames
//! they receive (built here as JSON text). See the module root for the
//! protocol.

use serde::Serialize;
use serde_json::{Map, Value, json};
use shoal_state::EntityKind;

use crate::error::quote;
use crate::hub::{EntityDoc, ShardId, Watermark};
use crate::params::kind_names;

const OPS: &str = "\"subscribe\", \"unsubscribe\" or \"ping\"";

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Start receiving changes of these entities.
    Subscribe(Vec<Spec>),
    /// Stop receiving them.
    Unsubscribe(Vec<Spec>),
    /// Answered with a `pong` frame.
    Ping,
}

/// One entry of `entities`: a kind and a key, or every entity of the kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Spec {
    /// The kind.
    pub kind: EntityKind,
    /// The key; `None` for every entity of the kind.
    pub key: Option<String>,
}

/// Why a client message is not served: sent back as an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Machine-readable code.
    pub code: &'static str,
    /// What was wrong and what was expected.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The `error` frame.
    pub(crate) fn frame(&self) -> String {
        json!({"type": "error", "code": self.code, "message": self.message}).to_string()
    }
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::new("bad_message", message)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Request {
    /// Parses a client's text message; the refusal names what was wrong.
    pub(crate) fn parse(text: &str) -> Result<Self, Refusal> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Refusal::new("malformed_json", format!("the message is not JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(bad(format!("expected a JSON object with an `op`, got {}", type_name(&value))));
        };
        let op = match fields.get("op") {
            Some(Value::String(op)) => op.as_str(),
            Some(other) => return Err(bad(format!("`op` must be a string ({OPS}), got {}", type_name(other)))),
            None => return Err(bad(format!("missing `op` (expected {OPS})"))),
        };
        match op {
            "ping" => only(&fields, &["op"], op).map(|()| Self::Ping),
            "subscribe" => specs(&fields, op).map(Self::Subscribe),
            "unsubscribe" => specs(&fields, op).map(Self::Unsubscribe),
            other => Err(Refusal::new("unknown_op", format!("unknown op {} (expected {OPS})", quote(other)))),
        }
    }
}

/// Refuses fields other than `allowed`.
fn only(fields: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), Refusal> {
    match fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => {
            let expected = allowed.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", ");
            Err(bad(format!("unknown field {} in {what} (expected {expected})", quote(unknown))))
        }
        None => Ok(()),
    }
}

fn specs(fields: &Map<String, Value>, op: &str) -> Result<Vec<Spec>, Refusal> {
    only(fields, &["op", "entities"], op)?;
    let entities = match fields.get("entities") {
        Some(Value::Array(entities)) if !entities.is_empty() => entities,
        Some(Value::Array(_)) => return Err(bad(format!("`entities` of {op} is empty"))),
        Some(other) => return Err(bad(format!("`entities` must be an array, got {}", type_name(other)))),
        None => {
            return Err(bad(format!(
                "missing `entities` in {op} (expected [{{\"kind\": \"symbol\", \"key\": \"...\"}}, ...]; \
                 without `key`, every entity of the kind)"
            )));
        }
    };
    entities.iter().enumerate().map(|(i, entry)| spec(i, entry)).collect()
}

fn spec(index: usize, entry: &Value) -> Result<Spec, Refusal> {
    let at = format!("`entities[{index}]`");
    let Value::Object(fields) = entry else {
        return Err(bad(format!("{at} must be an object with `kind` and `key`, got {}", type_name(entry))));
    };
    only(fields, &["kind", "key"], &at)?;
    let kind = match fields.get("kind") {
        Some(Value::String(name)) => EntityKind::parse(name).ok_or_else(|| {
            let expected = kind_names().join(", ");
            Refusal::new("unknown_kind", format!("{at}: unknown kind {} (expected one of {expected})", quote(name)))
        })?,
        Some(other) => return Err(bad(format!("{at}: `kind` must be a string, got {}", type_name(other)))),
        None => return Err(bad(format!("{at}: missing `kind`"))),
    };
    let key = match fields.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if !key.is_empty() => Some(key.clone()),
        Some(Value::String(_)) => return Err(bad(format!("{at}: `key` is empty (omit it for every {kind})"))),
        Some(other) => return Err(bad(format!("{at}: `key` must be a string, got {}", type_name(other)))),
    };
    Ok(Spec { kind, key })
}

/// What an entity frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FrameType {
    /// The entity as it was when subscribing.
    Snapshot,
    /// A change.
    Update,
    /// The entity is gone.
    Removed,
}

/// A `snapshot`, `update` or `removed` frame.
#[derive(Debug, Serialize)]
pub(crate) struct EntityFrame<'a> {
    #[serde(rename = "type")]
    pub frame: FrameType,
    pub kind: EntityKind,
    pub key: &'a str,
    /// The shard holding this document (`null` in the snapshot of a key
    /// that exists nowhere).
    pub shard: Option<&'a ShardId>,
    pub seq: u64,
    pub doc: Option<&'a EntityDoc>,
    /// Absent in snapshots; `null` when unknown (after a lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<Option<u64>>,
    /// Change batches this subscriber lost before this frame was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lagged: Option<u64>,
    pub watermark: Option<&'a Watermark>,
}

impl EntityFrame<'_> {
    /// The frame as JSON text.
    pub(crate) fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            Refusal::new("internal", format!("could not encode the {} {} frame: {e}", self.kind, quote(self.key)))
                .frame()
        })
    }
}

/// The `snapshot` frame of a key that no shard holds.
pub(crate) fn absent_snapshot(kind: EntityKind, key: &str) -> String {
    EntityFrame {
        frame: FrameType::Snapshot,
        kind,
        key,
        shard: None,
        seq: 0,
        doc: None,
        missed: None,
        lagged: None,
        watermark: None,
    }
    .text()
}

/// The `pong` frame.
pub(crate) fn pong() -> String {
    json!({"type": "pong"}).to_string()
}

/// The `overflow` frame: `dropped` changes were not queued.
pub(crate) fn overflow(dropped: u64) -> String {
    json!({"type": "overflow", "dropped": dropped}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Refusal {
        Request::parse(text).unwrap_err()
    }

    #[test]
    fn parses_the_three_ops() {
        assert_eq!(Request::parse(r#"{"op":"ping"}"#).unwrap(), Request::Ping);
        let sub = Request::parse(r#"{"op":"subscribe","entities":[{"kind":"symbol","key":"A"},{"kind":"device"}]}"#);
        let specs = vec![
            Spec { kind: EntityKind::Symbol, key: Some("A".into()) },
            Spec { kind: EntityKind::Device, key: None },
        ];
        assert_eq!(sub.unwrap(), Request::Subscribe(specs));
        let unsub = Request::parse(r#"{"op":"unsubscribe","entities":[{"kind":"account","key":null}]}"#).unwrap();
        assert_eq!(unsub, Request::Unsubscribe(vec![Spec { kind: EntityKind::Account, key: None }]));
    }

    #[test]
    fn refusals_name_what_was_wrong() {
        let r = refused("{nope");
        assert_eq!(r.code, "malformed_json");
        let r = refused(r#"{"op":"dance"}"#);
        assert_eq!(
            (r.code, r.message.as_str()),
            ("unknown_op", r#"unknown op "dance" (expected "subscribe", "unsubscribe" or "ping")"#)
        );
        let r = refused(r#"{"op":"subscribe","entities":[{"kind":"symbol"},{"kind":"planet"}]}"#);
        assert_eq!(r.code, "unknown_kind");
        assert!(
            r.message.starts_with("`entities[1]`: unknown kind \"planet\" (expected one of symbol,"),
            "{}",
            r.message
        );
        assert!(refused("[1]").message.contains("got an array"));
        assert!(refused(r#"{"op":1}"#).message.contains("`op` must be a string"));
        assert!(refused(r#"{"entities":[]}"#).message.contains("missing `op`"));
        assert!(refused(r#"{"op":"subscribe"}"#).message.contains("missing `entities`"));
        assert!(refused(r#"{"op":"subscribe","entities":[]}"#).message.contains("is empty"));
        assert!(
            refused(r#"{"op":"subscribe","entities":[{"kind":"symbol","keys":"A"}]}"#).message.contains("\"keys\"")
        );
        assert!(refused(r#"{"op":"subscribe","entities":[{"key":"A"}]}"#).message.contains("missing `kind`"));
        assert!(refused(r#"{"op":"subscribe","entities":[{"kind":"symbol","key":""}]}"#).message.contains("empty"));
        assert!(refused(r#"{"op":"ping","x":1}"#).message.contains("unknown field \"x\" in ping"));
    }

    #[test]
    fn frames_are_json() {
        let v: Value = serde_json::from_str(&absent_snapshot(EntityKind::Symbol, "A")).unwrap();
        assert_eq!(
            v,
            json!({"type": "snapshot", "kind": "symbol", "key": "A", "shard": null, "seq": 0, "doc": null, "watermark": null})
        );
        let frame = EntityFrame { missed: Some(None), lagged: Some(3), frame: FrameType::Update, ..base() };
        let v: Value = serde_json::from_str(&frame.text()).unwrap();
        assert_eq!(
            (v["missed"].clone(), v["lagged"].clone(), v["type"].clone()),
            (Value::Null, json!(3), json!("update"))
        );
        assert_eq!(serde_json::from_str::<Value>(&overflow(7)).unwrap(), json!({"type": "overflow", "dropped": 7}));
    }

    fn base() -> EntityFrame<'static> {
        EntityFrame {
            frame: FrameType::Snapshot,
            kind: EntityKind::Symbol,
            key: "A",
            shard: None,
            seq: 1,
            doc: None,
            missed: None,
            lagged: None,
            watermark: None,
        }
    }
}
