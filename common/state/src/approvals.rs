//! A command's approval (`docs/approval.md`): requested, then settled by
//! the first decision or expiry read from the approvals topic.
//!
//! The state machine is a function of the approvals partition alone:
//! `pending` → `approved` | `rejected` | `expired`. A decision dated after
//! the deadline settles it as `expired`; a decision or expiry read after
//! it settled changes nothing but the count of `ignored` records. The
//! deadline is data (in the request), never a clock reading, so a replay
//! settles every approval the same way.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_protocol::approvals::{ApprovalChange, ApprovalEvent, Decision, HeldCommand};
use shoal_protocol::payloads::Requester;

use crate::freshness::Stamp;

/// Where an approval is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved: the command is issued.
    Approved,
    /// Rejected: the command is not issued.
    Rejected,
    /// Its deadline passed first: the command is not issued.
    Expired,
}

impl ApprovalStatus {
    /// Every status.
    pub const ALL: [ApprovalStatus; 4] = [Self::Pending, Self::Approved, Self::Rejected, Self::Expired];

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// What settled an approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settlement {
    /// The decision, `None` for an expiry.
    pub decision: Option<Decision>,
    /// Who decided.
    pub by: Option<Requester>,
    /// Why, in their words.
    pub reason: Option<String>,
    /// When (the record's `at`), and the record that settled it.
    #[serde(flatten)]
    pub stamp: Stamp,
}

/// A command's approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Where it is.
    pub status: ApprovalStatus,
    /// The command held until approved.
    pub command: HeldCommand,
    /// It expires, unapproved, at this instant.
    pub deadline: DateTime<Utc>,
    /// Who asked for the command, when a person did.
    pub requested_by: Option<Requester>,
    /// The request's record.
    pub requested: Stamp,
    /// What settled it, once settled.
    pub settled: Option<Settlement>,
    /// Decisions or expiries read after it settled, ignored.
    pub ignored: u64,
    /// Newest record that changed it.
    pub updated: Stamp,
}

impl Approval {
    /// A pending approval, from its request; `None` if `event` is not one.
    pub fn requested(event: &ApprovalEvent, stamp: &Stamp) -> Option<Self> {
        let ApprovalChange::Requested { command, deadline, requested_by } = &event.change else {
            return None;
        };
        Some(Self {
            status: ApprovalStatus::Pending,
            command: command.clone(),
            deadline: *deadline,
            requested_by: requested_by.clone(),
            requested: stamp.clone(),
            settled: None,
            ignored: 0,
            updated: stamp.clone(),
        })
    }

    /// Applies a decision or an expiry; the status it moved to, `None`
    /// when it changed nothing (settled already, or a second request).
    pub fn apply(&mut self, event: &ApprovalEvent, stamp: &Stamp) -> Option<ApprovalStatus> {
        self.updated = self.updated.clone().max(stamp.clone());
        if self.status != ApprovalStatus::Pending {
            self.ignored += 1;
            return None;
        }
        let (status, decision, by, reason) = match &event.change {
            ApprovalChange::Requested { .. } => {
                self.ignored += 1;
                return None;
            }
            ApprovalChange::Decided { decision, by, reason } => {
                let status = match decision {
                    _ if event.at > self.deadline => ApprovalStatus::Expired,
                    Decision::Approve => ApprovalStatus::Approved,
                    Decision::Reject => ApprovalStatus::Rejected,
                };
                (status, Some(*decision), Some(by.clone()), reason.clone())
            }
            ApprovalChange::Expired if event.at < self.deadline => {
                // Written before the deadline (a clock ahead): not yet.
                self.ignored += 1;
                return None;
            }
            ApprovalChange::Expired => (ApprovalStatus::Expired, None, None, None),
        };
        self.status = status;
        self.settled = Some(Settlement { decision, by, reason, stamp: stamp.clone() });
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{prov, ts};
    use shoal_protocol::messages::SCHEMA_VERSION;
    use uuid::Uuid;

    fn event(secs: i64, change: ApprovalChange) -> ApprovalEvent {
        ApprovalEvent {
            schema_version: SCHEMA_VERSION,
            id: Uuid::new_v4(),
            command_id: Uuid::from_u128(5),
            at: ts(secs),
            change,
        }
    }

    fn held() -> HeldCommand {
        HeldCommand {
            id: Uuid::from_u128(5),
            kind: "raise_alert".into(),
            key: "A".into(),
            decided_at: ts(0),
            deadline: None,
            payload: serde_json::json!({}),
        }
    }

    fn request(deadline: i64) -> Approval {
        let change = ApprovalChange::Requested { command: held(), deadline: ts(deadline), requested_by: None };
        Approval::requested(&event(0, change), &Stamp::new(ts(0), prov("approvals", 0, 0))).unwrap()
    }

    fn decided(secs: i64, decision: Decision) -> ApprovalEvent {
        let by = Requester { via: "api".into(), role: "admin".into(), token_id: Some("abc".into()), client: None };
        event(secs, ApprovalChange::Decided { decision, by, reason: Some("because".into()) })
    }

    fn stamp(secs: i64, offset: i64) -> Stamp {
        Stamp::new(ts(secs), prov("approvals", 0, offset))
    }

    #[test]
    fn the_first_decision_settles_and_later_ones_are_ignored() {
        let mut a = request(60);
        assert_eq!(a.apply(&decided(10, Decision::Approve), &stamp(10, 1)), Some(ApprovalStatus::Approved));
        assert_eq!(a.apply(&decided(11, Decision::Approve), &stamp(11, 2)), None, "approving twice");
        assert_eq!(a.apply(&decided(12, Decision::Reject), &stamp(12, 3)), None);
        assert_eq!(a.apply(&event(61, ApprovalChange::Expired), &stamp(61, 4)), None, "expiry after approval");
        assert_eq!((a.status, a.ignored), (ApprovalStatus::Approved, 3));
        let back: Approval = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(back, a, "a settled approval reads back as written");
        let settled = a.settled.unwrap();
        assert_eq!((settled.decision, settled.reason.as_deref()), (Some(Decision::Approve), Some("because")));
        assert_eq!(settled.stamp.provenance.offset, 1);
    }

    #[test]
    fn rejection_records_who_and_why() {
        let mut a = request(60);
        assert_eq!(a.apply(&decided(5, Decision::Reject), &stamp(5, 1)), Some(ApprovalStatus::Rejected));
        let by = a.settled.and_then(|s| s.by).unwrap();
        assert_eq!(by.token_id.as_deref(), Some("abc"));
    }

    #[test]
    fn expiry_wins_over_a_late_decision_and_never_comes_early() {
        let mut a = request(60);
        assert_eq!(a.apply(&event(59, ApprovalChange::Expired), &stamp(59, 1)), None, "before the deadline");
        assert_eq!(a.status, ApprovalStatus::Pending);
        assert_eq!(a.apply(&event(60, ApprovalChange::Expired), &stamp(60, 2)), Some(ApprovalStatus::Expired));
        assert_eq!(a.apply(&decided(61, Decision::Approve), &stamp(61, 3)), None, "approving after expiry");
        let mut late = request(60);
        assert_eq!(late.apply(&decided(61, Decision::Approve), &stamp(61, 1)), Some(ApprovalStatus::Expired));
        assert_eq!(late.settled.and_then(|s| s.decision), Some(Decision::Approve), "the late decision is kept");
    }
}
