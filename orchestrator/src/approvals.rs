//! Human approval of commands (`docs/approval.md`).
//!
//! The decisions stage holds a command whose kind is in
//! `rules.approval_kinds`: instead of issuing it, it writes an
//! `approval requested` record ([`ApprovalEvent`]) to the approvals topic,
//! in the same transaction as the input that decided it. The stage also
//! reads the approvals topic: each record goes into its state (the
//! command's `approval`, served by the API), and a record that settles a
//! pending approval as approved releases the command, issued then with the
//! key's next `seq` and the id it was held with. Decisions are written by
//! the API (`POST /v1/approvals/{id}/approve|reject`, MCP); expiries by the
//! stage's timer ([`Expiry`]), once a pending approval's deadline passed,
//! from the state it restores after a restart like the rest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use futures::future::BoxFuture;
use shoal_api::http::approvals::ApprovalSink;
use shoal_kafka::polled::{AwaitedProducer, Outgoing};
use shoal_kafka::settings::KafkaSettings;
use shoal_protocol::approvals::{ApprovalChange, ApprovalEvent, HeldCommand};
use shoal_protocol::messages::{SCHEMA_VERSION, WireMessage};
use shoal_protocol::payloads::Requester;
use shoal_state::approvals::ApprovalStatus;
use shoal_state::{Record, State};
use uuid::Uuid;

/// How long a record waits for Kafka's acknowledgment.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the timer waits before writing an expiry again for an approval
/// still pending (the first one lost, or not read back yet).
const EXPIRY_RETRY: Duration = Duration::from_secs(5);

/// The approval rules of the decisions stage.
#[derive(Debug, Clone, Default)]
pub struct ApprovalRules {
    /// Kinds held for approval.
    pub kinds: Vec<String>,
    /// Deadline of a held command without one of its own.
    pub timeout: chrono::Duration,
    /// The approvals topic.
    pub topic: String,
}

impl ApprovalRules {
    /// Whether commands of `kind` wait for approval.
    pub fn needs(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }

    /// The request holding `command`: its deadline is the command's own,
    /// else `decided_at` plus the timeout.
    pub fn request(&self, command: HeldCommand, requested_by: Option<Requester>) -> ApprovalEvent {
        let deadline = command.deadline.unwrap_or(command.decided_at + self.timeout);
        ApprovalEvent {
            schema_version: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            command_id: command.id,
            at: command.decided_at,
            change: ApprovalChange::Requested { command, deadline, requested_by },
        }
    }
}

/// Whether `record` is a change to an approval pending in `state`.
pub fn pending_before(state: &State, record: &Record) -> bool {
    let Record::Approval(event) = record else { return false };
    state
        .command(event.command_id)
        .and_then(|c| c.approval.as_ref())
        .is_some_and(|a| a.status == ApprovalStatus::Pending)
}

/// The command to issue, when `event` (just applied to `state`) settled
/// its pending approval as approved.
pub fn released(state: &State, event: &ApprovalEvent) -> Option<HeldCommand> {
    let approval = state.command(event.command_id)?.approval.as_ref()?;
    (approval.status == ApprovalStatus::Approved).then(|| approval.command.clone())
}

/// The approvals pending in `state` whose deadline is at or before `now`.
pub fn overdue(state: &State, now: DateTime<Utc>) -> Vec<(Uuid, DateTime<Utc>)> {
    state
        .commands(None, Some(shoal_state::commands::Lifecycle::PendingApproval))
        .into_iter()
        .filter_map(|c| c.approval.as_ref().map(|a| (c.id, a.deadline)))
        .filter(|(_, deadline)| *deadline <= now)
        .collect()
}

/// The expiry timer: writes an `expired` record for each overdue approval,
/// at most every [`EXPIRY_RETRY`] per approval while it stays pending.
pub struct Expiry {
    sink: std::sync::Arc<ApprovalsSink>,
    written: HashMap<Uuid, Instant>,
}

impl std::fmt::Debug for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expiry").field("written", &self.written.len()).finish_non_exhaustive()
    }
}

impl Expiry {
    /// A timer writing through `sink`.
    pub fn new(sink: std::sync::Arc<ApprovalsSink>) -> Self {
        Self { sink, written: HashMap::new() }
    }

    /// Writes the expiries of `overdue` not written lately.
    pub fn expire(&mut self, overdue: Vec<(Uuid, DateTime<Utc>)>) {
        let due: std::collections::HashSet<Uuid> = overdue.iter().map(|(id, _)| *id).collect();
        self.written.retain(|id, at| due.contains(id) && at.elapsed() < EXPIRY_RETRY);
        for (command_id, deadline) in overdue {
            if self.written.contains_key(&command_id) {
                continue;
            }
            self.written.insert(command_id, Instant::now());
            let at = Utc::now().max(deadline);
            let event = ApprovalEvent {
                schema_version: SCHEMA_VERSION,
                id: Uuid::now_v7(),
                command_id,
                at,
                change: ApprovalChange::Expired,
            };
            let send = self.sink.submit(event);
            tokio::spawn(async move {
                match send.await {
                    Ok(()) => tracing::info!(%command_id, %deadline, "approval expired"),
                    Err(error) => {
                        tracing::warn!(%command_id, %error, "cannot write an approval's expiry; trying again")
                    }
                }
            });
        }
    }
}

/// Writes approval records (decisions from the API, expiries) to the
/// approvals topic, keyed by command id, with the idempotent producer.
pub struct ApprovalsSink {
    producer: AwaitedProducer,
    topic: String,
}

impl std::fmt::Debug for ApprovalsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalsSink").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl ApprovalsSink {
    /// A sink writing to `topic` as client `<instance>-<role>`.
    pub fn new(kafka: &KafkaSettings, topic: &str, instance: &str, role: &str) -> anyhow::Result<Self> {
        let producer = AwaitedProducer::create(&shoal_kafka::producer_config(kafka, &format!("{instance}-{role}")))?;
        Ok(Self { producer, topic: topic.into() })
    }
}

impl ApprovalSink for ApprovalsSink {
    fn submit(&self, event: ApprovalEvent) -> BoxFuture<'static, Result<(), String>> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        async move {
            let body = event.encode();
            let key = event.command_id.to_string();
            let record = Outgoing { topic: &topic, partition: None, key: key.as_bytes(), payload: &body };
            match producer.send(record, SEND_TIMEOUT).await {
                Ok(_) => Ok(()),
                Err(error) => Err(format!("{error} (topic {topic})")),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::approvals::Decision;
    use shoal_state::{Input, Provenance};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn rules() -> ApprovalRules {
        ApprovalRules { kinds: vec!["raise_alert".into()], timeout: chrono::Duration::seconds(30), topic: "a".into() }
    }

    fn held(n: u128, deadline: Option<DateTime<Utc>>) -> HeldCommand {
        HeldCommand {
            id: Uuid::from_u128(n),
            kind: "raise_alert".into(),
            key: "K".into(),
            decided_at: at(100),
            deadline,
            payload: serde_json::json!({}),
        }
    }

    fn apply(state: &mut State, offset: i64, event: ApprovalEvent) -> (bool, Option<HeldCommand>) {
        let record = Record::Approval(Box::new(event.clone()));
        let before = pending_before(state, &record);
        state.apply(&Input { provenance: Provenance::new("a", 0, offset), record });
        (before, released(state, &event).filter(|_| before))
    }

    fn decided(n: u128, secs: i64, decision: Decision) -> ApprovalEvent {
        let by = Requester { via: "api".into(), role: "admin".into(), token_id: None, client: None };
        ApprovalEvent {
            schema_version: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            command_id: Uuid::from_u128(n),
            at: at(secs),
            change: ApprovalChange::Decided { decision, by, reason: None },
        }
    }

    #[test]
    fn the_deadline_is_the_commands_own_else_the_timeout() {
        let own = rules().request(held(1, Some(at(110))), None);
        let timed = rules().request(held(2, None), None);
        let deadline = |e: &ApprovalEvent| match &e.change {
            ApprovalChange::Requested { deadline, .. } => *deadline,
            _ => panic!("not a request"),
        };
        assert_eq!((deadline(&own), deadline(&timed)), (at(110), at(130)));
        assert!(rules().needs("raise_alert") && !rules().needs("score_transaction"));
    }

    #[test]
    fn an_approval_releases_its_command_once() {
        let mut state = State::default();
        apply(&mut state, 0, rules().request(held(1, None), None));
        assert_eq!(overdue(&state, at(129)), []);
        let (was_pending, released) = apply(&mut state, 1, decided(1, 110, Decision::Approve));
        assert!(was_pending);
        assert_eq!(released.map(|h| h.id), Some(Uuid::from_u128(1)));
        assert_eq!(apply(&mut state, 2, decided(1, 111, Decision::Approve)).1, None, "approving twice");
        assert_eq!(overdue(&state, at(500)), [], "settled: nothing to expire");
    }

    #[test]
    fn overdue_approvals_come_in_deadline_order_of_the_state_and_expire() {
        let mut state = State::default();
        apply(&mut state, 0, rules().request(held(1, Some(at(120))), None));
        apply(&mut state, 1, rules().request(held(2, None), None));
        apply(&mut state, 2, rules().request(held(3, None), None));
        apply(&mut state, 3, decided(3, 105, Decision::Reject));
        assert_eq!(overdue(&state, at(119)), []);
        assert_eq!(overdue(&state, at(120)), [(Uuid::from_u128(1), at(120))]);
        let mut due = overdue(&state, at(130));
        due.sort_by_key(|(_, deadline)| *deadline);
        assert_eq!(due, [(Uuid::from_u128(1), at(120)), (Uuid::from_u128(2), at(130))]);
        let expired =
            ApprovalEvent { change: ApprovalChange::Expired, at: at(130), ..decided(2, 130, Decision::Approve) };
        assert_eq!(apply(&mut state, 4, expired).1, None);
        assert_eq!(apply(&mut state, 5, decided(2, 131, Decision::Approve)).1, None, "approving after expiry");
        assert_eq!(overdue(&state, at(130)), [(Uuid::from_u128(1), at(120))]);
    }
}
