//! The interface for user-defined skills: a command kind with a typed
//! payload and a typed output, registered by kind, with the journal (and
//! through it, effects that never run twice) at hand.
//!
//! A skill is the typed face of a [`Handler`]: the worker decodes the
//! command's payload into [`Skill::Payload`] (an invalid payload is rejected
//! and dead-lettered, naming the kind and the serde error), runs
//! [`Skill::run`], and encodes [`Skill::Output`] as the result's `output`.
//! See `examples/skills` for a skill with an external effect, its tests, and
//! a worker binary that serves it beside the bundled skills.

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_protocol::messages::Command;

use super::{Handler, HandlerContext, HandlerError, Registry, payload};

/// A command kind's work, typed.
#[async_trait::async_trait]
pub trait Skill: Send + Sync + 'static {
    /// The command kind it handles (`snake_case`, e.g. `"open_ticket"`).
    const KIND: &'static str;
    /// The command's payload.
    type Payload: DeserializeOwned + Send;
    /// What goes into the result's `output`.
    type Output: Serialize + Send;

    /// Does the work. Run each effect outside Kafka (an HTTP call, an order,
    /// a message) through [`HandlerContext::effect`], so that a command run
    /// again after a crash, a rebalance or an abort reuses its outcome
    /// instead of repeating it. `command` gives the id, key and sequence
    /// number; `ctx.attempt` the attempt (retries of
    /// [`HandlerError::Retryable`]).
    async fn run(
        &self,
        payload: Self::Payload,
        command: &Command,
        ctx: &HandlerContext<'_>,
    ) -> Result<Self::Output, HandlerError>;

    /// Looks up an effect step started but not recorded (see
    /// [`Handler::reconcile`]); `None` runs it again with the same
    /// idempotency key. The default cannot look anything up.
    async fn reconcile(
        &self,
        command: &Command,
        step: &str,
        idempotency_key: &str,
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let _ = (command, step, idempotency_key);
        Ok(None)
    }

    /// A stateful skill's per-key state: each result carries the key's
    /// state under `state` in its output (`crate::keyed::Versioned`), and
    /// the worker restores this store from the results topic when it starts,
    /// when its partitions change and after a rewind. `None` (the default)
    /// for a stateless skill.
    fn keyed_state(&self) -> Option<std::sync::Arc<dyn crate::keyed::Restorable>> {
        None
    }
}

/// A [`Skill`] served as a [`Handler`].
#[derive(Debug)]
pub struct SkillHandler<S>(pub S);

#[async_trait::async_trait]
impl<S: Skill> Handler for SkillHandler<S> {
    async fn handle(&self, _command: &Command, _attempt: u32) -> Result<serde_json::Value, HandlerError> {
        // The worker always calls `handle_with`; a skill needs its context.
        Err(HandlerError::Rejected(format!("skill {} must be run with a handler context", S::KIND)))
    }

    async fn handle_with(
        &self,
        command: &Command,
        ctx: &HandlerContext<'_>,
    ) -> Result<serde_json::Value, HandlerError> {
        let typed: S::Payload = payload(command)?;
        let output = self.0.run(typed, command, ctx).await?;
        serde_json::to_value(output)
            .map_err(|e| HandlerError::Rejected(format!("skill {} produced an output that is not JSON: {e}", S::KIND)))
    }

    async fn reconcile(
        &self,
        command: &Command,
        step: &str,
        idempotency_key: &str,
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        self.0.reconcile(command, step, idempotency_key).await
    }

    fn keyed_state(&self) -> Option<std::sync::Arc<dyn crate::keyed::Restorable>> {
        self.0.keyed_state()
    }
}

impl Registry {
    /// Registers `skill` for its kind, [`Skill::KIND`] (replacing any
    /// handler registered for it).
    pub fn register_skill<S: Skill>(&mut self, skill: S) -> &mut Self {
        self.register(S::KIND, SkillHandler(skill))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::journal::Journal;

    /// Doubles a number, with one journalled effect (a counter standing in
    /// for an external call).
    #[derive(Default)]
    struct Double {
        calls: AtomicU32,
    }

    #[derive(serde::Deserialize)]
    struct In {
        n: i64,
    }

    #[derive(Serialize)]
    struct Out {
        doubled: i64,
        receipt: String,
    }

    #[async_trait::async_trait]
    impl Skill for Double {
        const KIND: &'static str = "double";
        type Payload = In;
        type Output = Out;

        async fn run(&self, p: In, _command: &Command, ctx: &HandlerContext<'_>) -> Result<Out, HandlerError> {
            let receipt = ctx
                .effect("notify", &serde_json::json!({ "n": p.n }), |key| async move {
                    self.calls.fetch_add(1, Ordering::SeqCst);
                    Ok(serde_json::json!(key))
                })
                .await?;
            Ok(Out { doubled: p.n * 2, receipt: receipt.as_str().unwrap_or_default().to_string() })
        }
    }

    fn command(payload: serde_json::Value) -> Command {
        Command {
            schema_version: shoal_protocol::messages::SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            kind: "double".into(),
            key: "k".into(),
            seq: 1,
            issued_at: chrono::Utc::now(),
            deadline: None,
            payload,
        }
    }

    #[tokio::test]
    async fn a_skill_is_served_by_kind_with_typed_payload_and_output() {
        let mut registry = Registry::new();
        registry.register_skill(Double::default());
        assert_eq!(registry.kinds(), vec!["double"]);
        let handler = registry.get("double").expect("registered");
        let journal = Journal::in_memory("w");
        let c = command(serde_json::json!({ "n": 21 }));
        let ctx = HandlerContext::new(1, &c, 0, handler.as_ref(), &journal);
        let output = handler.handle_with(&c, &ctx).await.expect("runs");
        assert_eq!(output["doubled"], 42);
        assert_eq!(output["receipt"], format!("{}/notify", c.id), "the effect got the idempotency key");
    }

    #[tokio::test]
    async fn a_rerun_reuses_the_effect_and_a_bad_payload_names_the_kind() {
        let skill = SkillHandler(Double::default());
        let journal = Journal::in_memory("w");
        let c = command(serde_json::json!({ "n": 1 }));
        for attempt in 1..=3 {
            let ctx = HandlerContext::new(attempt, &c, 0, &skill, &journal);
            skill.handle_with(&c, &ctx).await.expect("runs");
        }
        assert_eq!(skill.0.calls.load(Ordering::SeqCst), 1, "the effect ran once in three runs");
        let bad = command(serde_json::json!({ "n": "one" }));
        let ctx = HandlerContext::new(1, &bad, 0, &skill, &journal);
        let error = skill.handle_with(&bad, &ctx).await.expect_err("invalid payload");
        assert!(matches!(&error, HandlerError::InvalidPayload { kind, .. } if kind == "double"), "{error}");
    }
}
