//! Command lifecycles: issued (the command), handled (its result), expired
//! (a result with status `expired`) or dead-lettered, with timings; and the
//! recent outcomes per command key.
//!
//! A command's state is a function of the three parts seen for its id (the
//! command, its first result, its first dead letter), whatever order they
//! arrive in: a result read before its command is kept and joined when the
//! command comes.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_protocol::messages::{Command, CommandResult, ResultStatus};
use uuid::Uuid;

use crate::approvals::{Approval, ApprovalStatus};
use crate::freshness::{Stamp, Stamped};
use crate::recent::insert_bounded;
use crate::table::{Entity, Table};
use crate::{Applied, EntityKind};

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Issued, no result yet.
    Issued,
    /// A result with status `succeeded`.
    Succeeded,
    /// A result with status `failed`.
    Failed,
    /// A result with status `expired`: the deadline had passed.
    Expired,
    /// A result with status `unsupported`.
    Unsupported,
    /// Dead-lettered without a result.
    DeadLettered,
    /// Held until a person approves it (`docs/approval.md`).
    PendingApproval,
    /// Approved, not yet read from the commands topic.
    Approved,
    /// Rejected by a person: never issued.
    Rejected,
}

impl Lifecycle {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Unsupported => "unsupported",
            Self::DeadLettered => "dead_lettered",
            Self::PendingApproval => "pending_approval",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

impl From<ResultStatus> for Lifecycle {
    fn from(status: ResultStatus) -> Self {
        match status {
            ResultStatus::Succeeded => Self::Succeeded,
            ResultStatus::Failed => Self::Failed,
            ResultStatus::Expired => Self::Expired,
            ResultStatus::Unsupported => Self::Unsupported,
        }
    }
}

/// Its (first) dead letter, as the record's headers say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Short machine-readable reason.
    pub reason: String,
    /// The stage that gave up.
    pub stage: String,
}

/// Durations between the parts, milliseconds (absent until both ends are
/// known; negative when the clocks of issuer and worker disagree).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// From issued to the worker starting.
    pub queue_ms: Option<i64>,
    /// From the worker starting to finishing.
    pub handling_ms: Option<i64>,
    /// End to end: from issued to finished.
    pub end_to_end_ms: Option<i64>,
}

/// Everything known about one command id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandState {
    /// The command id.
    pub id: Uuid,
    /// Kind (from the command, else its result; absent for a dead letter
    /// alone).
    pub kind: Option<String>,
    /// Key (from the command, else its result or dead letter).
    pub key: String,
    /// Per-key sequence number (from the command, else its result).
    pub seq: Option<u64>,
    /// Where it is in its life.
    pub status: Lifecycle,
    /// The command, once seen.
    pub issued: Option<Stamped<Command>>,
    /// The first result, once seen.
    pub result: Option<Stamped<CommandResult>>,
    /// The first dead letter, once seen (stamped with its record time).
    pub dead_letter: Option<Stamped<DeadLetter>>,
    /// Durations.
    pub timings: Timings,
    /// Its approval, when its kind needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Parts seen again (a second result, a replayed command) and ignored.
    pub duplicates: u64,
    /// Newest input that changed it.
    pub updated: Stamp,
}

impl Entity for CommandState {
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated.at
    }
}

impl CommandState {
    pub(crate) fn new(id: Uuid, key: &str, stamp: &Stamp) -> Self {
        Self {
            id,
            kind: None,
            key: key.to_string(),
            seq: None,
            status: Lifecycle::Issued,
            issued: None,
            result: None,
            dead_letter: None,
            approval: None,
            timings: Timings::default(),
            duplicates: 0,
            updated: stamp.clone(),
        }
    }

    /// Derives status and timings from the parts.
    pub(crate) fn refresh(&mut self) {
        self.status = match (&self.result, &self.dead_letter) {
            (Some(result), _) => result.value.status.into(),
            (None, Some(_)) => Lifecycle::DeadLettered,
            (None, None) if self.issued.is_some() => Lifecycle::Issued,
            (None, None) => match self.approval.as_ref().map(|a| a.status) {
                Some(ApprovalStatus::Pending) => Lifecycle::PendingApproval,
                Some(ApprovalStatus::Approved) => Lifecycle::Approved,
                Some(ApprovalStatus::Rejected) => Lifecycle::Rejected,
                Some(ApprovalStatus::Expired) => Lifecycle::Expired,
                None => Lifecycle::Issued,
            },
        };
        let ms = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).num_milliseconds();
        let issued = self.issued.as_ref().map(|i| i.value.issued_at);
        let result = self.result.as_ref().map(|r| (r.value.started_at, r.value.finished_at));
        self.timings = Timings {
            queue_ms: issued.zip(result).map(|(i, (s, _))| ms(i, s)),
            handling_ms: result.map(|(s, f)| ms(s, f)),
            end_to_end_ms: issued.zip(result).map(|(i, (_, f))| ms(i, f)),
        };
    }
}

/// A settled command, as listed in its key's recent outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The command id.
    pub command_id: Uuid,
    /// Kind, when known.
    pub kind: Option<String>,
    /// Per-key sequence number, when known.
    pub seq: Option<u64>,
    /// Its status (never `issued`).
    pub status: Lifecycle,
    /// When it settled (the result's `finished_at`, else the dead letter's
    /// time), and the record that settled it.
    #[serde(flatten)]
    pub stamp: Stamp,
    /// End-to-end latency, once the command is known.
    pub end_to_end_ms: Option<i64>,
}

impl Outcome {
    /// The outcome of `c`, once settled.
    pub(crate) fn of(c: &CommandState) -> Option<Self> {
        let stamp = match (&c.result, &c.dead_letter) {
            (Some(r), _) => Stamp::new(r.value.finished_at, r.stamp.provenance.clone()),
            (None, Some(d)) => d.stamp.clone(),
            (None, None) => return None,
        };
        Some(Self {
            command_id: c.id,
            kind: c.kind.clone(),
            seq: c.seq,
            status: c.status,
            stamp,
            end_to_end_ms: c.timings.end_to_end_ms,
        })
    }
}

/// The recent outcomes of one command key.
///
/// Its stamp is the newest settling record (result or dead letter) among
/// its outcomes, not the input that last touched it: a command joined
/// late fills in its outcome's latency without moving the stamp, so the
/// stamp does not depend on the order of commands and results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOutcomes {
    /// Newest input that changed it.
    pub updated: Stamp,
    /// Outcomes ordered by (time, command id), oldest first, at most the
    /// configured number; one per command.
    pub recent: VecDeque<Outcome>,
}

impl Entity for KeyOutcomes {
    fn updated_at(&self) -> DateTime<Utc> {
        self.updated.at
    }
}

impl KeyOutcomes {
    fn upsert(&mut self, outcome: Outcome, max_recent: usize) {
        self.updated.merge(&outcome.stamp);
        self.recent.retain(|o| o.command_id != outcome.command_id);
        // Never a duplicate: the command's previous outcome was just removed.
        let _ = insert_bounded(&mut self.recent, outcome, max_recent.max(1), |o| (o.stamp.at, o.command_id));
    }
}

/// Bounds of the command state (from the state's configuration).
#[derive(Debug, Clone, Copy)]
pub struct CommandLimits {
    /// Commands (and command keys) kept at most.
    pub max_entities: usize,
    /// Outcomes kept per key.
    pub max_recent: usize,
    /// Commands last updated before this event time are expired
    /// ([`StateConfig::command_retention_secs`](crate::StateConfig)).
    pub expire_before: Option<DateTime<Utc>>,
}

/// The commands by id and the outcomes by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Commands {
    /// By command id.
    pub by_id: Table<CommandState>,
    /// Recent outcomes by command key.
    pub by_key: Table<KeyOutcomes>,
}

/// One part of a command's life, as read from a topic.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// The command.
    Command(&'a Command),
    /// A result.
    Result(&'a CommandResult),
    /// A dead letter of the command: id, key, reason, stage.
    DeadLetter(Uuid, &'a str, &'a str, &'a str),
    /// A change to its approval.
    Approval(&'a shoal_protocol::approvals::ApprovalEvent),
}

impl Part<'_> {
    fn id_and_key(&self) -> (Uuid, &str) {
        match self {
            Part::Command(c) => (c.id, c.key.as_str()),
            Part::Result(r) => (r.command_id, r.key.as_str()),
            Part::DeadLetter(id, key, _, _) => (*id, key),
            Part::Approval(event) => match &event.change {
                shoal_protocol::approvals::ApprovalChange::Requested { command, .. } => {
                    (event.command_id, command.key.as_str())
                }
                _ => (event.command_id, ""),
            },
        }
    }
}

impl Commands {
    /// Applies one part of a command's life, noting in `applied` the
    /// command, the key whose outcomes changed (if any) and what was evicted
    /// to keep the bounds. Whether this was the first part of its type for
    /// the id (false: a duplicate, counted only).
    pub fn apply(&mut self, part: Part<'_>, stamp: &Stamp, limits: CommandLimits, applied: &mut Applied) -> bool {
        let (id, key) = part.id_and_key();
        let create = || CommandState::new(id, key, stamp);
        let ((first, outcome), evicted) = self.by_id.upsert(&id.to_string(), limits.max_entities, create, |c| {
            c.updated.merge(stamp);
            let first = record(c, part, stamp);
            if first {
                c.refresh();
            } else {
                c.duplicates += 1;
            }
            (first, Outcome::of(c).map(|o| (c.key.clone(), o)))
        });
        applied.change(EntityKind::Command, &id.to_string());
        applied.evict(EntityKind::Command, evicted);
        if let Some(cutoff) = limits.expire_before {
            applied.evict(EntityKind::Command, self.by_id.expire_before(cutoff, &id.to_string()));
        }
        if let (true, Some((key, outcome))) = (first, outcome) {
            let settled = outcome.stamp.clone();
            let create = || KeyOutcomes { updated: settled, recent: VecDeque::new() };
            let ((), evicted) = self.by_key.upsert(&key, limits.max_entities, create, |o| {
                o.upsert(outcome, limits.max_recent);
            });
            applied.change(EntityKind::Outcomes, &key);
            applied.evict(EntityKind::Outcomes, evicted);
        }
        first
    }
}

/// Records `part` into `c` unless a part of its type is there already;
/// whether it was recorded.
pub(crate) fn record(c: &mut CommandState, part: Part<'_>, stamp: &Stamp) -> bool {
    match part {
        Part::Command(cmd) if c.issued.is_none() => {
            c.kind = Some(cmd.kind.clone());
            c.key.clone_from(&cmd.key);
            c.seq = Some(cmd.seq);
            c.issued = Some(Stamped::new(cmd.clone(), stamp));
        }
        Part::Result(r) if c.result.is_none() => {
            if c.issued.is_none() {
                c.kind = Some(r.kind.clone());
                c.key.clone_from(&r.key);
                c.seq = Some(r.seq);
            }
            c.result = Some(Stamped::new(r.clone(), stamp));
        }
        Part::DeadLetter(_, _, reason, stage) if c.dead_letter.is_none() => {
            c.dead_letter = Some(Stamped::new(DeadLetter { reason: reason.into(), stage: stage.into() }, stamp));
        }
        Part::Approval(event) => return record_approval(c, event, stamp),
        _ => return false,
    }
    true
}

/// Records an approval change into `c`: a request when it has none, a
/// decision or expiry while it is pending. Whether it changed anything.
fn record_approval(c: &mut CommandState, event: &shoal_protocol::approvals::ApprovalEvent, stamp: &Stamp) -> bool {
    match &mut c.approval {
        Some(approval) => approval.apply(event, stamp).is_some(),
        None => match Approval::requested(event, stamp) {
            Some(approval) => {
                set_held(c, &approval);
                c.approval = Some(approval);
                true
            }
            None => false,
        },
    }
}

/// Kind and key from a held command, unless the command was read.
pub(crate) fn set_held(c: &mut CommandState, approval: &Approval) {
    if c.issued.is_none() && c.result.is_none() {
        c.kind = Some(approval.command.kind.clone());
        c.key.clone_from(&approval.command.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{command, prov, result, ts};

    const LIMITS: CommandLimits = CommandLimits { max_entities: 100, max_recent: 2, expire_before: None };

    /// Applies `part`: whether it was the first of its type, and the key
    /// whose outcomes changed.
    fn put(s: &mut Commands, part: Part<'_>, stamp: &Stamp) -> (bool, Option<String>) {
        let mut applied = Applied::default();
        let first = s.apply(part, stamp, LIMITS, &mut applied);
        assert_eq!(
            applied.changed[0],
            crate::EntityRef { kind: EntityKind::Command, key: part.id_and_key().0.to_string() }
        );
        let outcomes = applied.changed.iter().find(|e| e.kind == EntityKind::Outcomes);
        (first, outcomes.map(|e| e.key.clone()))
    }

    fn stamp(at: DateTime<Utc>, topic: &str, offset: i64) -> Stamp {
        Stamp::new(at, prov(topic, 0, offset))
    }

    #[test]
    fn command_then_result_then_duplicate() {
        let mut s = Commands::default();
        let cmd = command(1, "acct-1", 1, 10);
        let t = put(&mut s, Part::Command(&cmd), &stamp(cmd.issued_at, "commands", 0));
        assert!(t.0 && t.1.is_none());
        let c = s.by_id.get(&cmd.id.to_string()).unwrap();
        assert_eq!((c.status, c.timings.end_to_end_ms), (Lifecycle::Issued, None));
        let res = result(&cmd, ResultStatus::Succeeded, 10_250, 10_400);
        let t = put(&mut s, Part::Result(&res), &stamp(res.finished_at, "results", 0));
        assert_eq!(t.1.as_deref(), Some("acct-1"));
        let c = s.by_id.get(&cmd.id.to_string()).unwrap();
        assert_eq!(c.status, Lifecycle::Succeeded);
        assert_eq!(c.timings, Timings { queue_ms: Some(250), handling_ms: Some(150), end_to_end_ms: Some(400) });
        assert_eq!(c.updated.provenance.topic, "results");
        let t = put(&mut s, Part::Result(&res), &stamp(res.finished_at, "results", 1));
        assert!(!t.0);
        assert_eq!(s.by_id.get(&cmd.id.to_string()).unwrap().duplicates, 1);
        let outcomes = &s.by_key.get("acct-1").unwrap().recent;
        assert_eq!(outcomes.len(), 1);
        assert_eq!((outcomes[0].status, outcomes[0].end_to_end_ms), (Lifecycle::Succeeded, Some(400)));
    }

    #[test]
    fn a_result_before_its_command_is_joined() {
        let cmd = command(2, "dev-1", 4, 20);
        let res = result(&cmd, ResultStatus::Failed, 20_100, 20_300);
        let mut a = Commands::default();
        put(&mut a, Part::Command(&cmd), &stamp(cmd.issued_at, "commands", 5));
        put(&mut a, Part::Result(&res), &stamp(res.finished_at, "results", 9));
        let mut b = Commands::default();
        put(&mut b, Part::Result(&res), &stamp(res.finished_at, "results", 9));
        let early = b.by_id.get(&cmd.id.to_string()).unwrap();
        assert_eq!(
            (early.status, early.issued.is_none(), early.timings.end_to_end_ms),
            (Lifecycle::Failed, true, None)
        );
        assert_eq!(b.by_key.get("dev-1").unwrap().recent[0].end_to_end_ms, None);
        put(&mut b, Part::Command(&cmd), &stamp(cmd.issued_at, "commands", 5));
        assert_eq!(a, b, "the same state in either order");
        assert_eq!(b.by_key.get("dev-1").unwrap().recent[0].end_to_end_ms, Some(300));
    }

    #[test]
    fn expired_and_dead_lettered() {
        let mut s = Commands::default();
        let late = command(3, "k", 1, 0);
        let res = result(&late, ResultStatus::Expired, 90_000, 90_000);
        put(&mut s, Part::Command(&late), &stamp(late.issued_at, "commands", 0));
        put(&mut s, Part::Result(&res), &stamp(res.finished_at, "results", 0));
        assert_eq!(s.by_id.get(&late.id.to_string()).unwrap().status, Lifecycle::Expired);
        let lost = command(4, "k", 2, 1);
        put(&mut s, Part::Command(&lost), &stamp(lost.issued_at, "commands", 1));
        put(&mut s, Part::DeadLetter(lost.id, "k", "handler_failed", "worker"), &stamp(ts(95), "dlq", 0));
        let c = s.by_id.get(&lost.id.to_string()).unwrap();
        assert_eq!(c.status, Lifecycle::DeadLettered);
        let dl = c.dead_letter.as_ref().unwrap();
        assert_eq!(
            (dl.value.reason.as_str(), dl.value.stage.as_str(), dl.stamp.at),
            ("handler_failed", "worker", ts(95))
        );
        let recent: Vec<_> = s.by_key.get("k").unwrap().recent.iter().map(|o| o.status).collect();
        assert_eq!(recent, [Lifecycle::Expired, Lifecycle::DeadLettered]);
        // a dead letter alone
        let orphan = Uuid::from_u128(99);
        put(&mut s, Part::DeadLetter(orphan, "k", "malformed", "results"), &stamp(ts(96), "dlq", 1));
        let c = s.by_id.get(&orphan.to_string()).unwrap();
        assert_eq!((c.status, c.kind.as_deref()), (Lifecycle::DeadLettered, None));
        assert_eq!(s.by_key.get("k").unwrap().recent.len(), 2, "bounded per key");
    }
}
