//! The journal's record: what one effect step of one command did, and the
//! digest that tells a replay whether it asks for the same effect.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Written (and acknowledged) before the effect runs: the effect may
    /// have happened, or not.
    Started,
    /// Written (and acknowledged) after the effect completed, with its
    /// outcome.
    Done,
}

/// One journal record, the JSON value of a record of the journal topic
/// keyed [`record_key`]. Compaction keeps the newest per key, so `done`
/// replaces `started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// The command the step belongs to.
    pub command_id: Uuid,
    /// The step's name, unique within the command.
    pub step: String,
    /// [`digest`] of the step's arguments.
    pub args_digest: String,
    /// The key the effect was (or is to be) made with: [`idempotency_key`].
    pub idempotency_key: String,
    /// Started or done.
    pub state: StepState,
    /// With `done`: what the effect returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<serde_json::Value>,
    /// The worker that wrote the record.
    pub worker_id: String,
    /// When it was written.
    pub at: DateTime<Utc>,
}

/// Longest step name.
pub const MAX_STEP_LEN: usize = 128;

/// Whether `step` is a usable step name: 1 to [`MAX_STEP_LEN`] characters
/// of `[A-Za-z0-9._:/-]` (so that it can go into a record key and an HTTP
/// header unchanged).
pub fn valid_step(step: &str) -> bool {
    !step.is_empty()
        && step.len() <= MAX_STEP_LEN
        && step.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-'))
}

/// The idempotency key of a step: `<command id>/<step>`. It is also the
/// record's key in the journal topic. The same command and step always give
/// the same key, in any worker, on any attempt.
pub fn idempotency_key(command_id: Uuid, step: &str) -> String {
    format!("{command_id}/{step}")
}

/// The record key of a step; the same as its [`idempotency_key`].
pub fn record_key(command_id: Uuid, step: &str) -> String {
    idempotency_key(command_id, step)
}

/// `sha256:<hex>` of the canonical JSON of `args`: object keys sorted, no
/// insignificant white space, numbers and strings as `serde_json` writes
/// them. Equal values give equal digests whatever order their keys were
/// built in.
pub fn digest(args: &serde_json::Value) -> String {
    let mut text = String::new();
    canonical(args, &mut text);
    let hash = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_key_order_and_sees_every_value() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "s"}], "a": null}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"s","y":2}]}"#).unwrap();
        assert_eq!(digest(&a), digest(&b));
        assert!(digest(&a).starts_with("sha256:") && digest(&a).len() == 7 + 64);
        let c: serde_json::Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"s","y":3}]}"#).unwrap();
        assert_ne!(digest(&a), digest(&c));
        assert_ne!(digest(&serde_json::json!("1")), digest(&serde_json::json!(1)));
    }

    #[test]
    fn step_names_are_checked_and_keys_are_stable() {
        assert!(valid_step("post/0") && valid_step("model:round-3"));
        assert!(!valid_step("") && !valid_step("has space") && !valid_step(&"x".repeat(129)));
        let id = Uuid::now_v7();
        assert_eq!(idempotency_key(id, "post/0"), format!("{id}/post/0"));
        assert_eq!(record_key(id, "post/0"), idempotency_key(id, "post/0"));
    }

    #[test]
    fn records_round_trip_as_json() {
        let record = JournalRecord {
            command_id: Uuid::now_v7(),
            step: "post/0".into(),
            args_digest: digest(&serde_json::json!({"a": 1})),
            idempotency_key: "k".into(),
            state: StepState::Done,
            outcome: Some(serde_json::json!({"status": 200})),
            worker_id: "w".into(),
            at: Utc::now(),
        };
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains(r#""state":"done""#), "{text}");
        assert_eq!(serde_json::from_str::<JournalRecord>(&text).unwrap(), record);
    }
}
