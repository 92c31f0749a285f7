//! Human approval of commands: the records of the approvals topic, keyed
//! by command id.
//!
//! A command whose kind needs approval (`rules.approval_kinds`) is not
//! issued: the decisions stage writes an [`ApprovalChange::Requested`]
//! record holding it (id, kind, key, payload, deadline). A person approves
//! or rejects it through the API or MCP ([`ApprovalChange::Decided`]), or
//! nobody does and the orchestrator records [`ApprovalChange::Expired`]
//! once its deadline passed. The outcome is a function of the topic alone:
//! the first decision or expiry of a pending request, in the partition's
//! order, settles it; a decision dated after the deadline settles it as
//! expired; anything later changes nothing. An approved command is then
//! issued with the key's next `seq` and the id it was requested with.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::payloads::Requester;

/// One record of the approvals topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalEvent {
    /// Always [`SCHEMA_VERSION`](crate::messages::SCHEMA_VERSION) when
    /// written by this build.
    pub schema_version: u32,
    /// Unique id of this record.
    pub id: Uuid,
    /// The command it is about (also the record key).
    pub command_id: Uuid,
    /// When it happened (requested, decided, found expired).
    pub at: DateTime<Utc>,
    /// What happened.
    pub change: ApprovalChange,
}

impl crate::messages::WireMessage for ApprovalEvent {
    const TYPE_NAME: &'static str = "approval event";
}

/// What happened to a command's approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApprovalChange {
    /// The orchestrator would issue `command`, whose kind needs approval.
    Requested {
        /// The command held until approved.
        command: HeldCommand,
        /// It expires, unapproved, at this instant.
        deadline: DateTime<Utc>,
        /// Who asked for the command, when a person did
        /// (`POST /v1/command-requests`, MCP's `issue_command`).
        #[serde(default)]
        requested_by: Option<Requester>,
    },
    /// A person approved or rejected it.
    Decided {
        /// Approve or reject.
        decision: Decision,
        /// Who decided (a token's fingerprint, never the token).
        by: Requester,
        /// Why, in their words.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Its deadline passed with no decision.
    Expired,
}

/// A person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Issue the command.
    Approve,
    /// Do not issue it.
    Reject,
}

impl Decision {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }
}

/// A command waiting for approval: everything but its `seq`, which it is
/// given when issued, so per key `seq` stays gapless and in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldCommand {
    /// The id the command is issued with.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its key.
    pub key: String,
    /// When the orchestrator decided it.
    pub decided_at: DateTime<Utc>,
    /// The command's own deadline, if it has one.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// Its payload.
    pub payload: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{SCHEMA_VERSION, WireMessage};

    #[test]
    fn approval_events_travel_tagged_by_type() {
        let id = Uuid::from_u128(7);
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let by = Requester { via: "api".into(), role: "admin".into(), token_id: None, client: None };
        let event = ApprovalEvent {
            schema_version: SCHEMA_VERSION,
            id: Uuid::from_u128(1),
            command_id: id,
            at,
            change: ApprovalChange::Decided { decision: Decision::Reject, by, reason: Some("no".into()) },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["change"]["type"], "decided");
        assert_eq!(json["change"]["decision"], "reject");
        assert_eq!(ApprovalEvent::decode(&serde_json::to_vec(&event).unwrap()).unwrap(), event);
        let expired = serde_json::json!({"schema_version": 1, "id": id, "command_id": id, "at": at, "change": {"type": "expired"}});
        let decoded = ApprovalEvent::decode(&serde_json::to_vec(&expired).unwrap()).unwrap();
        assert_eq!(decoded.change, ApprovalChange::Expired);
    }
}
