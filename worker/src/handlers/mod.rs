//! Command handlers: a small trait and a registry keyed by command kind.

pub mod alert;
pub mod cases;
mod context;
pub mod fraud;
pub mod incidents;
pub mod iot;
pub mod llm;
pub mod paper;
mod probe;
pub mod skill;
pub mod strategy;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use shoal_protocol::messages::{Command, kinds};

pub use context::HandlerContext;
pub use probe::{PROBE_KIND, ProbeHandler};
pub use skill::{Skill, SkillHandler};

/// Why a handler could not produce an output.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The payload does not match the kind's schema.
    #[error("invalid payload for {kind}: {source}")]
    InvalidPayload {
        /// Command kind.
        kind: String,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The payload decoded but its values cannot be worked on.
    #[error("cannot handle command: {0}")]
    Rejected(String),
    /// A transient failure (a dependency timed out, a rate limit): the
    /// worker retries with backoff up to `worker.max_attempts`.
    #[error("transient failure: {0}")]
    Retryable(String),
    /// A replayed effect step asked for other arguments than the journal
    /// recorded for it: the handler is not deterministic, and reusing the
    /// recorded outcome (or repeating the effect) would be wrong. Not
    /// retried; the command fails and is dead-lettered
    /// (`non_deterministic`).
    #[error(
        "non-determinism: step {step:?} of command {command_id} was journalled with arguments {recorded} and is now asked with {now}"
    )]
    NonDeterministic {
        /// The command.
        command_id: uuid::Uuid,
        /// The step.
        step: String,
        /// Digest of the arguments in the journal.
        recorded: String,
        /// Digest of the arguments asked now.
        now: String,
    },
}

impl HandlerError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// Executes commands of one kind.
///
/// A handler without effects outside Kafka implements [`Handler::handle`]
/// only. A handler with effects (an HTTP call, a model call, an order)
/// implements [`Handler::handle_with`] and runs each effect through
/// [`HandlerContext::effect`], so that a command run again after a crash, a
/// rebalance or an aborted transaction reuses the recorded outcome instead
/// of repeating the effect; it may implement [`Handler::reconcile`] to look
/// up an effect that was started but not recorded (`docs/journal.md`).
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    /// Does the work and returns the result's `output`. `attempt` starts at 1
    /// and grows with each retry of a [`HandlerError::Retryable`] failure.
    async fn handle(&self, command: &Command, attempt: u32) -> Result<serde_json::Value, HandlerError>;

    /// What the worker calls: [`Handler::handle`] with `ctx.attempt`, unless
    /// the handler overrides it to journal its effects through `ctx`.
    async fn handle_with(
        &self,
        command: &Command,
        ctx: &HandlerContext<'_>,
    ) -> Result<serde_json::Value, HandlerError> {
        self.handle(command, ctx.attempt).await
    }

    /// Called for a step the journal shows started but not done (the
    /// worker stopped, or the attempt failed, between the two): look the
    /// effect up by `idempotency_key` (the key it was made with) and return
    /// its outcome if it happened (`Some`, recorded and reused), or `None`
    /// to run the effect again, with the same key. The default cannot look
    /// anything up and returns `None`, so an effect without a lookup may
    /// happen twice when a worker dies during it.
    async fn reconcile(
        &self,
        command: &Command,
        step: &str,
        idempotency_key: &str,
    ) -> Result<Option<serde_json::Value>, HandlerError> {
        let _ = (command, step, idempotency_key);
        Ok(None)
    }

    /// A stateful handler's per-key state, restored from the results topic
    /// (`crate::keyed`); `None` (the default) for a stateless one.
    fn keyed_state(&self) -> Option<Arc<dyn crate::keyed::Restorable>> {
        None
    }
}

/// Decodes a command's payload into the kind's typed payload.
pub fn payload<T: serde::de::DeserializeOwned>(command: &Command) -> Result<T, HandlerError> {
    T::deserialize(&command.payload)
        .map_err(|source| HandlerError::InvalidPayload { kind: command.kind.clone(), source })
}

/// A handler that is a pure function of its command's typed payload (the
/// bundled skills are): the payload is decoded, an invalid one rejected
/// naming the kind, and `skill` runs on it.
pub fn pure<P>(skill: fn(&P) -> Result<serde_json::Value, HandlerError>) -> impl Handler
where
    P: serde::de::DeserializeOwned + 'static,
{
    Pure(skill)
}

struct Pure<P>(fn(&P) -> Result<serde_json::Value, HandlerError>);

#[async_trait::async_trait]
impl<P: serde::de::DeserializeOwned + 'static> Handler for Pure<P> {
    async fn handle(&self, command: &Command, _attempt: u32) -> Result<serde_json::Value, HandlerError> {
        (self.0)(&payload(command)?)
    }
}

/// Handlers by command kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bundled handlers: `evaluate_strategy`, `raise_alert`,
    /// `score_transaction`.
    pub fn with_builtin() -> Self {
        let mut r = Self::new();
        r.register(kinds::EVALUATE_STRATEGY, pure(strategy::evaluate));
        r.register(kinds::RAISE_ALERT, pure(alert::alert));
        r.register(kinds::SCORE_TRANSACTION, pure(fraud::score));
        r
    }

    /// Adds or replaces the handler for `kind`.
    pub fn register(&mut self, kind: &str, handler: impl Handler + 'static) -> &mut Self {
        self.handlers.insert(kind.to_string(), Arc::new(handler));
        self
    }

    /// The handler for `kind`, if any.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }

    /// The stores of the stateful handlers, to restore from the results
    /// topic.
    pub fn keyed_states(&self) -> Vec<Arc<dyn crate::keyed::Restorable>> {
        let mut stores: Vec<_> = self.handlers.values().filter_map(|h| h.keyed_state()).collect();
        stores.sort_by(|a, b| a.kind().cmp(b.kind()));
        stores
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }
}
