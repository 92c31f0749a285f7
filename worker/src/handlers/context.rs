//! What a handler gets besides its command: the attempt number, and the
//! journal its effects go through ([`HandlerContext::effect`]).

use std::future::Future;
use std::sync::atomic::Ordering;

use chrono::Utc;
use shoal_protocol::messages::Command;

use super::{Handler, HandlerError};
use crate::journal::{self, Journal, JournalRecord, StepState};

/// The context of one handler attempt.
pub struct HandlerContext<'a> {
    /// Starts at 1 and grows with each retry of a
    /// [`HandlerError::Retryable`] failure.
    pub attempt: u32,
    command: &'a Command,
    partition: i32,
    handler: &'a dyn Handler,
    journal: &'a Journal,
    /// The partition's revocation count the execution started under.
    assignment: u64,
}

impl std::fmt::Debug for HandlerContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerContext")
            .field("attempt", &self.attempt)
            .field("command_id", &self.command.id)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl<'a> HandlerContext<'a> {
    /// The context of attempt `attempt` of `command`, read from commands
    /// partition `partition`, run by `handler` (whose
    /// [`Handler::reconcile`] is called for steps started but not done).
    pub fn new(
        attempt: u32,
        command: &'a Command,
        partition: i32,
        handler: &'a dyn Handler,
        journal: &'a Journal,
    ) -> Self {
        let assignment = journal.assignment(partition);
        Self { attempt, command, partition, handler, journal, assignment }
    }

    /// The same context for an execution that started under `assignment`
    /// ([`Journal::assignment`] when the command started): its effects run
    /// only while the partition has not been revoked since, even if it is
    /// assigned to this worker again by then.
    pub fn started_under(mut self, assignment: u64) -> Self {
        self.assignment = assignment;
        self
    }

    /// Runs one effect step of the command at most once per command, as far
    /// as the journal can tell (`docs/journal.md`).
    ///
    /// - `step` names the step, unique within the command and the same on
    ///   every run of it (e.g. `"post/0"`, `"model/round-2"`): 1 to 128
    ///   characters of `[A-Za-z0-9._:/-]`.
    /// - `args` are the effect's arguments; their digest (SHA-256 of the
    ///   canonical JSON) is journalled. Pass everything that decides what the
    ///   effect does.
    /// - `run(idempotency_key)` makes the effect and returns its outcome.
    ///   `idempotency_key` is `<command id>/<step>`, the same on every run:
    ///   send it to the other side (an `Idempotency-Key` header, a client
    ///   order id) so that it can refuse a repeat.
    ///
    /// What happens, by what the journal holds for the step:
    /// - nothing: a `started` record is written (and acknowledged), `run`
    ///   runs, a `done` record with its outcome is written (and
    ///   acknowledged), and the outcome returned;
    /// - `done`: the recorded outcome is returned and `run` is not called;
    /// - `started` only: [`Handler::reconcile`] is asked; an outcome it finds
    ///   is recorded and returned, else `run` runs as above;
    /// - any record with a different argument digest:
    ///   [`HandlerError::NonDeterministic`] (not retried: the command fails
    ///   and is dead-lettered), counted and logged at `error`.
    ///
    /// An error from `run` is returned as it is and nothing is recorded (the
    /// step stays `started`: the next attempt reconciles). A journal that
    /// cannot be read or written gives [`HandlerError::Retryable`].
    pub async fn effect<F, Fut>(
        &self,
        step: &str,
        args: &serde_json::Value,
        run: F,
    ) -> Result<serde_json::Value, HandlerError>
    where
        F: FnOnce(String) -> Fut + Send,
        Fut: Future<Output = Result<serde_json::Value, HandlerError>> + Send,
    {
        if !journal::valid_step(step) {
            return Err(HandlerError::Rejected(format!(
                "effect step name {step:?} is not 1-128 characters of [A-Za-z0-9._:/-]"
            )));
        }
        let stats = &self.journal.stats;
        let id = self.command.id;
        let digest = journal::digest(args);
        let key = journal::idempotency_key(id, step);
        let recorded = self.journal.lookup(self.partition, &key).await.map_err(unavailable)?;
        match recorded {
            Some(record) if record.args_digest != digest => {
                stats.nondeterministic.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    command_id = %id, kind = %self.command.kind, step, recorded = %record.args_digest, now = %digest,
                    recorded_by = %record.worker_id,
                    "NON-DETERMINISM: a replayed effect step asks for other arguments than the journal recorded; the command fails"
                );
                return Err(HandlerError::NonDeterministic {
                    command_id: id,
                    step: step.to_string(),
                    recorded: record.args_digest,
                    now: digest,
                });
            }
            Some(record) if record.state == StepState::Done => {
                stats.replayed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(command_id = %id, step, recorded_by = %record.worker_id, "effect step replayed from the journal");
                return Ok(record.outcome.unwrap_or(serde_json::Value::Null));
            }
            Some(_started) => {
                if let Some(outcome) = self.handler.reconcile(self.command, step, &key).await? {
                    self.record(step, &digest, &key, StepState::Done, Some(outcome.clone())).await?;
                    stats.reconciled.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(command_id = %id, step, "effect step started earlier found done by reconcile; recorded");
                    return Ok(outcome);
                }
                stats.rerun.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(command_id = %id, step, "effect step started earlier and not found by reconcile; running it again with the same idempotency key");
            }
            None => self.record(step, &digest, &key, StepState::Started, None).await?,
        }
        if let Err(reason) = self.journal.admit(self.partition, self.assignment).await {
            tracing::warn!(command_id = %id, step, %reason, "effect not run: fenced");
            return Err(HandlerError::Retryable(reason));
        }
        let outcome = run(key.clone()).await?;
        self.record(step, &digest, &key, StepState::Done, Some(outcome.clone())).await?;
        stats.effects_run.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }

    /// The journal's records of this command's partition (the newest per
    /// step of every command), for a skill whose state is derived from its
    /// own recorded effects (`paper_order`'s ledgers). A journal that
    /// cannot be read gives [`HandlerError::Retryable`].
    pub async fn journal_records(&self) -> Result<Vec<JournalRecord>, HandlerError> {
        self.journal.partition_records(self.partition).await.map_err(unavailable)
    }

    async fn record(
        &self,
        step: &str,
        digest: &str,
        key: &str,
        state: StepState,
        outcome: Option<serde_json::Value>,
    ) -> Result<(), HandlerError> {
        let record = JournalRecord {
            command_id: self.command.id,
            step: step.to_string(),
            args_digest: digest.to_string(),
            idempotency_key: key.to_string(),
            state,
            outcome,
            worker_id: self.journal.worker_id().to_string(),
            at: Utc::now(),
        };
        self.journal.write(self.partition, record).await.map_err(unavailable)
    }
}

fn unavailable(error: journal::JournalError) -> HandlerError {
    HandlerError::Retryable(format!("side-effect journal unavailable: {error}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use shoal_protocol::messages::SCHEMA_VERSION;

    use super::*;
    use crate::journal::{JournalStats, MemoryStore};

    /// A handler whose single effect step counts its calls; `reconcile`
    /// answers what `found` holds.
    #[derive(Default)]
    struct Counting {
        calls: AtomicU32,
        reconciles: AtomicU32,
        found: Option<serde_json::Value>,
    }

    #[async_trait::async_trait]
    impl Handler for Counting {
        async fn handle(&self, _: &Command, _: u32) -> Result<serde_json::Value, HandlerError> {
            unreachable!("handle_with is called")
        }

        async fn handle_with(
            &self,
            command: &Command,
            ctx: &HandlerContext<'_>,
        ) -> Result<serde_json::Value, HandlerError> {
            let args = command.payload.clone();
            let fail = args["fail"] == true;
            ctx.effect("post/0", &args, |key| async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                if fail {
                    return Err(HandlerError::Retryable("endpoint down".into()));
                }
                Ok(serde_json::json!({"call": n, "key": key}))
            })
            .await
        }

        async fn reconcile(
            &self,
            _: &Command,
            step: &str,
            key: &str,
        ) -> Result<Option<serde_json::Value>, HandlerError> {
            assert_eq!(step, "post/0");
            assert!(key.ends_with("/post/0"));
            self.reconciles.fetch_add(1, Ordering::SeqCst);
            Ok(self.found.clone())
        }
    }

    fn command(payload: serde_json::Value) -> Command {
        Command {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            kind: "k".into(),
            key: "a".into(),
            seq: 1,
            issued_at: Utc::now(),
            deadline: None,
            payload,
        }
    }

    /// A worker's journal over `store`: a new one is a restarted worker.
    fn worker(store: &Arc<MemoryStore>) -> Journal {
        Journal::new(store.clone(), "w", || 1, Arc::new(JournalStats::default()))
    }

    async fn run(handler: &Counting, command: &Command, journal: &Journal) -> Result<serde_json::Value, HandlerError> {
        handler.handle_with(command, &HandlerContext::new(1, command, 3, handler, journal)).await
    }

    #[tokio::test]
    async fn an_effect_runs_once_and_a_restarted_worker_reuses_its_outcome() {
        let store = Arc::new(MemoryStore::default());
        let handler = Counting::default();
        let c = command(serde_json::json!({"to": "x"}));
        let first = run(&handler, &c, &worker(&store)).await.unwrap();
        let states: Vec<StepState> = store.records(3).iter().map(|r| r.state).collect();
        assert_eq!(states, [StepState::Started, StepState::Done], "started before, done after the effect");
        assert_eq!(first["key"], format!("{}/post/0", c.id));
        let restarted = worker(&store);
        let again = run(&handler, &c, &restarted).await.unwrap();
        assert_eq!(again, first, "the recorded outcome");
        assert_eq!(handler.calls.load(Ordering::SeqCst), 1, "the effect ran once");
        assert_eq!(restarted.stats.replayed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn changed_arguments_on_replay_are_non_determinism() {
        let store = Arc::new(MemoryStore::default());
        let handler = Counting::default();
        let mut c = command(serde_json::json!({"to": "x"}));
        run(&handler, &c, &worker(&store)).await.unwrap();
        c.payload = serde_json::json!({"to": "y"});
        let restarted = worker(&store);
        let error = run(&handler, &c, &restarted).await.unwrap_err();
        assert!(matches!(&error, HandlerError::NonDeterministic { step, .. } if step == "post/0"), "{error:?}");
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("non-determinism"), "{error}");
        assert_eq!(restarted.stats.nondeterministic.load(Ordering::SeqCst), 1);
        assert_eq!(handler.calls.load(Ordering::SeqCst), 1, "not run again");
    }

    #[tokio::test]
    async fn a_step_started_but_not_recorded_is_reconciled_before_it_runs_again() {
        // The first attempt's effect fails after `started` was written.
        let store = Arc::new(MemoryStore::default());
        let c = command(serde_json::json!({"fail": true}));
        let handler = Counting::default();
        assert!(run(&handler, &c, &worker(&store)).await.unwrap_err().is_retryable());
        assert_eq!(store.records(3).len(), 1, "started only");

        // Reconcile finds it: recorded, not run.
        let found = Counting { found: Some(serde_json::json!({"status": 200})), ..Counting::default() };
        let journal = worker(&store);
        assert_eq!(run(&found, &c, &journal).await.unwrap(), serde_json::json!({"status": 200}));
        assert_eq!((found.calls.load(Ordering::SeqCst), found.reconciles.load(Ordering::SeqCst)), (0, 1));
        assert_eq!(journal.stats.reconciled.load(Ordering::SeqCst), 1);
        assert_eq!(store.records(3).last().map(|r| r.state), Some(StepState::Done));

        // Reconcile does not find it: run again, with the same key.
        let store = Arc::new(MemoryStore::default());
        let c = command(serde_json::json!({"fail": true}));
        let _ = run(&Counting::default(), &c, &worker(&store)).await;
        let mut records = store.records(3);
        records[0].args_digest = journal::digest(&serde_json::json!({"fail": false}));
        let store = Arc::new(MemoryStore::default());
        journal::JournalStore::append(store.as_ref(), 3, &records[0]).await.unwrap();
        let c = Command { payload: serde_json::json!({"fail": false}), ..c };
        let missing = Counting::default();
        let journal = worker(&store);
        let out = run(&missing, &c, &journal).await.unwrap();
        assert_eq!(out["key"], format!("{}/post/0", c.id));
        assert_eq!((missing.calls.load(Ordering::SeqCst), missing.reconciles.load(Ordering::SeqCst)), (1, 1));
        assert_eq!(journal.stats.rerun.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_execution_from_before_a_revocation_runs_no_effect_even_once_reassigned() {
        use std::sync::atomic::AtomicU64;
        let revocations = Arc::new(AtomicU64::new(0));
        let counted = revocations.clone();
        let fence = Arc::new(crate::journal::Fence::new(std::time::Duration::from_secs(6)));
        let journal = worker(&Arc::new(MemoryStore::default())).with_membership(
            fence,
            |_| true,
            move |_| counted.load(Ordering::SeqCst),
        );
        let handler = Counting::default();
        let c = command(serde_json::json!({}));
        // Read under the first assignment; the partition is revoked and
        // assigned to this worker again before the effect.
        let old = HandlerContext::new(1, &c, 3, &handler, &journal);
        revocations.store(1, Ordering::SeqCst);
        let refused = handler.handle_with(&c, &old).await.unwrap_err();
        assert!(matches!(&refused, HandlerError::Retryable(r) if r.contains("revoked")), "{refused}");
        assert_eq!(handler.calls.load(Ordering::SeqCst), 0, "no call from the old execution");
        assert_eq!(journal.stats.fenced.load(Ordering::SeqCst), 1);
        // A retry of the old execution is still fenced; the new one runs.
        let retry = HandlerContext::new(2, &c, 3, &handler, &journal).started_under(0);
        assert!(handler.handle_with(&c, &retry).await.is_err());
        let new = HandlerContext::new(1, &c, 3, &handler, &journal);
        assert_eq!(handler.handle_with(&c, &new).await.unwrap()["call"], 1);
    }

    #[tokio::test]
    async fn bad_step_names_are_refused() {
        let journal = Journal::in_memory("w");
        let handler = Counting::default();
        let c = command(serde_json::json!({}));
        let ctx = HandlerContext::new(1, &c, 0, &handler, &journal);
        let error = ctx.effect("no spaces", &serde_json::json!({}), |_| async { Ok(serde_json::Value::Null) }).await;
        assert!(matches!(error, Err(HandlerError::Rejected(_))));
    }
}
