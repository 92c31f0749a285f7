//! Agent levels: a skill's result can carry commands for the next level
//! (`"next": [{"kind", "key", "payload"}]` in its output); with
//! `worker.next_topic` set, the worker publishes them there, keyed by their
//! key, in the same transaction as the result, with the decision's trace
//! context in their headers. A worker group reading that topic is the next
//! level, and one trace spans every level (docs/levels.md).

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use shoal_kafka::outputs::{MessageMeta, Outputs};
use shoal_kafka::trace;
use shoal_protocol::messages::{Command, SCHEMA_VERSION};
use uuid::Uuid;

/// The output field holding the commands for the next level.
pub const NEXT_FIELD: &str = "next";

shoal_telemetry::counters! {
    /// What the worker passed to the next level.
    pub struct LevelStats {
        /// Commands published to the next level.
        emitted => counter("shoal_worker_next_commands", "Commands a skill emitted that were published to the next level"),
        /// Results whose `next` field is not a list of commands: nothing
        /// of it is published (logged with the command id).
        invalid => counter("shoal_worker_next_invalid", "Results whose next-level commands could not be read (none published)"),
        /// Commands emitted while no `worker.next_topic` is set: kept in the
        /// result, not published.
        unrouted => counter("shoal_worker_next_unrouted", "Next-level commands kept in the result because worker.next_topic is empty"),
    }
}

/// One command for the next level, as a skill writes it in its output's
/// `next` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextCommand {
    /// The command's kind.
    pub kind: String,
    /// Its key (the next level's per-key order).
    pub key: String,
    /// Its payload.
    pub payload: serde_json::Value,
}

impl NextCommand {
    /// A command of `kind` for `key` with `payload` (serialised; a payload
    /// that is not JSON becomes `null` and fails the next level's decode).
    pub fn new<P: Serialize>(kind: &str, key: &str, payload: &P) -> Self {
        Self { kind: kind.into(), key: key.into(), payload: serde_json::to_value(payload).unwrap_or_default() }
    }
}

/// The commands `output` asks for, made from `parent`: ids derived from
/// the parent's (so a replayed decision emits the same ids), `seq` 0 (not
/// sequenced: a level's commands for one key may come from several parent
/// keys; Kafka's per-key order still holds), the parent's issue time and
/// deadline. `Ok(empty)` when the output has no `next`.
pub fn next_commands(parent: &Command, output: &serde_json::Value) -> Result<Vec<Command>, String> {
    let Some(next) = output.get(NEXT_FIELD) else { return Ok(Vec::new()) };
    let wanted = Vec::<NextCommand>::deserialize(next)
        .map_err(|e| format!("`{NEXT_FIELD}` is not a list of {{kind, key, payload}}: {e}"))?;
    wanted
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            if c.kind.is_empty() || c.key.is_empty() {
                return Err(format!("`{NEXT_FIELD}[{index}]`: kind and key must not be empty"));
            }
            Ok(Command {
                schema_version: SCHEMA_VERSION,
                id: child_id(parent.id, index),
                kind: c.kind,
                key: c.key,
                seq: 0,
                issued_at: parent.issued_at,
                deadline: parent.deadline,
                payload: c.payload,
            })
        })
        .collect()
}

/// A stable id for the `index`th command emitted while handling `parent`.
fn child_id(parent: Uuid, index: usize) -> Uuid {
    let mut hash = sha2::Sha256::new();
    hash.update(parent.as_bytes());
    hash.update(b"/next/");
    hash.update(index.to_le_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Where emitted commands go, and what is counted.
#[derive(Debug)]
pub struct NextLevel {
    /// `worker.next_topic`; `None`: emitted commands stay in the result.
    pub topic: Option<String>,
    /// Counters.
    pub stats: std::sync::Arc<LevelStats>,
}

impl NextLevel {
    /// Adds the commands `output` asks for to `out`, each with a `publish
    /// command` span under `span` (so the next level continues the trace).
    pub fn publish(
        &self,
        parent: &Command,
        output: &serde_json::Value,
        producer_id: &str,
        span: &tracing::Span,
        out: &mut Outputs,
    ) {
        use std::sync::atomic::Ordering;
        let commands = match next_commands(parent, output) {
            Ok(commands) => commands,
            Err(error) => {
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                span.in_scope(|| tracing::warn!(command_id = %parent.id, kind = %parent.kind, %error, "next-level commands not published"));
                return;
            }
        };
        if commands.is_empty() {
            return;
        }
        let Some(topic) = &self.topic else {
            self.stats.unrouted.fetch_add(commands.len() as u64, Ordering::Relaxed);
            tracing::debug!(command_id = %parent.id, commands = commands.len(), "next-level commands kept in the result: worker.next_topic is empty");
            return;
        };
        for command in &commands {
            let publish = trace::child(span, || {
                let id = command.id.to_string();
                shoal_kafka::send_span!(
                    "publish command",
                    span,
                    "publish",
                    messaging.destination.name = topic.as_str(),
                    messaging.kafka.message.key = command.key.as_str(),
                    messaging.message.id = id.as_str(),
                    command.id = id.as_str(),
                    command.kind = command.kind.as_str(),
                )
            });
            let meta = MessageMeta { message_type: "command", producer_id, command_id: Some(command.id) };
            out.message(topic, &command.key, &meta, command, &publish);
        }
        self.stats.emitted.fetch_add(commands.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parent() -> Command {
        Command {
            schema_version: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            kind: "evaluate_strategy".into(),
            key: "SIM-A".into(),
            seq: 7,
            issued_at: chrono::Utc::now(),
            deadline: None,
            payload: serde_json::json!({}),
        }
    }

    #[test]
    fn emitted_commands_take_stable_ids_and_no_seq() {
        let p = parent();
        let output = serde_json::json!({"signal": "buy", "next": [
            {"kind": "paper_order", "key": "paper-1", "payload": {"symbol": "SIM-A"}},
            {"kind": "raise_alert", "key": "SIM-A", "payload": {}},
        ]});
        let a = next_commands(&p, &output).unwrap();
        let b = next_commands(&p, &output).unwrap();
        assert_eq!(a, b, "the same decision emits the same ids");
        assert_eq!(a.len(), 2);
        assert_ne!(a[0].id, a[1].id);
        assert_ne!(a[0].id, p.id);
        assert_eq!((a[0].kind.as_str(), a[0].key.as_str(), a[0].seq), ("paper_order", "paper-1", 0));
        assert_eq!(a[0].issued_at, p.issued_at);
        let other = next_commands(&parent(), &output).unwrap();
        assert_ne!(other[0].id, a[0].id, "another parent, other ids");
    }

    #[test]
    fn no_next_is_nothing_and_a_bad_next_is_an_error() {
        let p = parent();
        assert!(next_commands(&p, &serde_json::json!({"signal": "hold"})).unwrap().is_empty());
        let error = next_commands(&p, &serde_json::json!({"next": {"kind": "x"}})).unwrap_err();
        assert!(error.contains("not a list"), "{error}");
        let error =
            next_commands(&p, &serde_json::json!({"next": [{"kind": "", "key": "k", "payload": {}}]})).unwrap_err();
        assert!(error.contains("next[0]"), "{error}");
    }
}
