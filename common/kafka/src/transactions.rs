//! Exactly-once delivery: a transactional producer that writes a batch of
//! outputs and the consumed offsets that caused them in one Kafka
//! transaction, so either both become visible (to `read_committed` readers
//! and to the group) or neither does.
//!
//! librdkafka's transactional calls block, so every method here is
//! `*_blocking` and is called from `spawn_blocking` or `block_in_place`,
//! never directly on the async runtime's threads.

use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer};

use super::outputs::Output;
use crate::settings::KafkaSettings;

/// How a transactional failure must be handled, per librdkafka's error
/// classes.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// Abort the transaction and rewind the input to the last committed
    /// position (e.g. a rebalance changed the group generation).
    #[error("transaction must be aborted: {0}")]
    Abortable(KafkaError),
    /// The producer is unusable; create a new one (a timed-out commit or
    /// abort is treated as fatal too: its outcome is unknown).
    #[error("fatal producer error: {0}")]
    Fatal(KafkaError),
    /// A newer instance with the same transactional id exists: this one is a
    /// zombie and must stop.
    #[error("fenced by a newer producer with the same transactional id: {0}")]
    Fenced(KafkaError),
    /// The principal lacks an ACL the transaction needs: retrying cannot
    /// help until an administrator grants it, so the stage stops (nothing
    /// of the transaction is committed).
    #[error(
        "not authorized: {operation} on {resource} refused by the broker ({error}); \
         grant it to this process's principal (`shoal-acl --role <role>` prints what each role needs)"
    )]
    NotAuthorized {
        /// The Kafka ACL operation refused (`Write`, `Read`, ...).
        operation: &'static str,
        /// What it was refused on, named.
        resource: String,
        /// The broker's answer.
        error: KafkaError,
    },
}

impl TxError {
    /// Whether the transaction failed because the consumer group moved on
    /// (a rebalance): the broker refuses offsets sent for an old generation
    /// or for a member it no longer knows.
    pub fn group_moved_on(&self) -> bool {
        let Self::Abortable(error) = self else { return false };
        matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::IllegalGeneration
                    | RDKafkaErrorCode::UnknownMemberId
                    | RDKafkaErrorCode::RebalanceInProgress
            )
        )
    }
}

fn classify(error: KafkaError) -> TxError {
    let Some(code) = error.rdkafka_error_code() else { return TxError::Abortable(error) };
    // `_FENCED` is librdkafka's local code for "a newer instance with this
    // transactional id exists"; the broker's codes say the same.
    let fenced = matches!(
        code,
        RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
    );
    match &error {
        _ if fenced => TxError::Fenced(error),
        KafkaError::Transaction(rd) if rd.is_fatal() => TxError::Fatal(error),
        KafkaError::Transaction(rd) if rd.txn_requires_abort() => TxError::Abortable(error),
        _ if code == RDKafkaErrorCode::OperationTimedOut || code == RDKafkaErrorCode::MessageTimedOut => {
            TxError::Fatal(error)
        }
        _ => TxError::Abortable(error),
    }
}

/// The ACL refused, and on what, when `error` is an authorization failure:
/// the topics are the transaction's output topics (the broker names no
/// topic in its answer to AddPartitionsToTxn, only librdkafka's log does).
fn not_authorized(error: KafkaError, output_topics: &[&str], transactional_id: &str) -> Result<TxError, KafkaError> {
    let (operation, resource) = match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => ("Write", format!("topic(s) {}", output_topics.join(", "))),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed) => ("Read", "the consumer group (committing offsets)".into()),
        Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed) => {
            ("Write", format!("transactional id {transactional_id:?}"))
        }
        Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => ("IdempotentWrite", "the cluster".into()),
        _ => return Err(error),
    };
    Ok(TxError::NotAuthorized { operation, resource, error })
}

fn is_retriable(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(rd) if rd.is_retriable())
}

/// A producer with a stable `transactional.id`.
pub struct TransactionalProducer {
    inner: crate::polled::PolledProducer<DefaultProducerContext>,
    transactional_id: String,
    timeout: Duration,
    /// `transaction.timeout.ms`: the coordinator aborts a transaction open
    /// longer.
    transaction_timeout: Duration,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.transactional_id)
            .finish_non_exhaustive()
    }
}

/// Retries of a retriable `send_offsets_to_transaction` or commit.
const RETRIES: u32 = 5;

impl TransactionalProducer {
    /// Creates the producer and initialises transactions, which fences any
    /// older instance with the same transactional id and aborts its open
    /// transaction. Blocking.
    pub fn create_blocking(
        kafka: &KafkaSettings,
        client_id: &str,
        transactional_id: &str,
        timeout: Duration,
    ) -> Result<Self, TxError> {
        let mut cfg = super::producer_config(kafka, client_id);
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        let transaction_timeout =
            timeout.saturating_mul(2).max(Duration::from_millis(u64::from(kafka.message_timeout_ms)));
        cfg.set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", transaction_timeout.as_millis().to_string());
        // A transaction begun right after the previous commit often finds
        // the coordinator still writing that commit's markers: its
        // AddOffsetsToTxn is refused (CONCURRENT_TRANSACTIONS) and retried
        // after retry.backoff.ms, 100 ms by default, a whole batch window.
        // The Java client retries this case after 20 ms; so does Shoal
        // (a raw option still overrides it).
        if !kafka.normalised_options().any(|(key, _)| key == "retry.backoff.ms") {
            cfg.set("retry.backoff.ms", "20");
        }
        let inner = crate::polled::PolledProducer::create(&cfg, DefaultProducerContext).map_err(TxError::Fatal)?;
        let mut attempt = 0;
        loop {
            match inner.init_transactions(timeout) {
                Ok(()) => break,
                Err(error) if is_retriable(&error) && attempt < RETRIES => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "init_transactions failed; retrying");
                }
                Err(error) => return Err(not_authorized(error, &[], transactional_id).unwrap_or_else(classify)),
            }
        }
        tracing::info!(transactional_id, "transactional producer ready");
        Ok(Self { inner, transactional_id: transactional_id.to_string(), timeout, transaction_timeout })
    }

    /// How long a commit (produce, offsets, commit, with their retries) may
    /// take before the loop gives up on it: by then the coordinator has
    /// aborted the transaction for its timeout, so it can no longer commit.
    pub fn commit_bound(&self) -> Duration {
        self.transaction_timeout.saturating_mul(2)
    }

    /// `transaction.timeout.ms`: a transaction open longer is aborted by
    /// the coordinator, which bumps the producer's epoch (the producer then
    /// reads as fenced).
    pub fn transaction_timeout(&self) -> Duration {
        self.transaction_timeout
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Waits, within the API timeout, until every produced record is
    /// acknowledged and its report served. `commit_transaction` of the
    /// `rdkafka` crate flushes first by polling for up to 100 ms at a time;
    /// with a threaded producer the reports go to its polling thread, so
    /// that poll waited out its 100 ms on every commit (the commit of a
    /// single record took 100 ms). Waiting here leaves nothing to flush.
    fn wait_delivered(&self) {
        let deadline = std::time::Instant::now() + self.timeout;
        while self.inner.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Produces `outputs` and commits them together with `offsets` (the next
    /// offset to read per partition) for the consumer group in `group`.
    /// Blocking.
    pub fn commit_batch_blocking(
        &self,
        outputs: Vec<Output>,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), TxError> {
        self.inner.begin_transaction().map_err(classify)?;
        // Named in an ACL error; taken first, since the records are moved
        // into the producer (headers and all, not copied).
        let mut topics: Vec<String> = Vec::new();
        for output in &outputs {
            if !topics.contains(&output.topic) {
                topics.push(output.topic.clone());
            }
        }
        topics.sort_unstable();
        for output in outputs {
            let mut record = BaseRecord::to(&output.topic).headers(output.headers);
            if let Some(payload) = &output.payload {
                record = record.payload(payload);
            }
            if let Some(key) = &output.key {
                record = record.key(key);
            }
            if let Some(partition) = output.partition {
                record = record.partition(partition);
            }
            loop {
                match self.inner.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        // Blocking context: wait for the producer thread to
                        // make room.
                        record = returned;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((error, _)) => return Err(TxError::Abortable(error)),
                }
            }
        }
        let failed = |error: KafkaError| {
            let error = self.cause(error, offsets, group);
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            not_authorized(error, &topics, &self.transactional_id).unwrap_or_else(classify)
        };
        let mut attempt = 0;
        loop {
            match self.inner.send_offsets_to_transaction(offsets, group, self.timeout) {
                Ok(()) => break,
                Err(error) if is_retriable(&error) && attempt < RETRIES => attempt += 1,
                Err(error) => return Err(failed(error)),
            }
        }
        self.wait_delivered();
        let mut attempt = 0;
        loop {
            match self.inner.commit_transaction(self.timeout) {
                Ok(()) => return Ok(()),
                Err(error) if is_retriable(&error) && attempt < RETRIES => attempt += 1,
                Err(error) => return Err(failed(error)),
            }
        }
    }

    /// The transaction's own error behind `error`. A call can fail with a
    /// local error ("Erroneous state") because the transaction already
    /// failed for another reason, e.g. AddPartitionsToTxn refused with
    /// TOPIC_AUTHORIZATION_FAILED; librdkafka keeps that reason in the
    /// transaction's state and returns it from any call made in that
    /// state. Only asked when the transaction must be aborted anyway (the
    /// call then changes nothing).
    fn cause(&self, error: KafkaError, offsets: &TopicPartitionList, group: &ConsumerGroupMetadata) -> KafkaError {
        let KafkaError::Transaction(rd) = &error else { return error };
        if !rd.txn_requires_abort() || rd.code() != RDKafkaErrorCode::State {
            return error;
        }
        match self.inner.send_offsets_to_transaction(offsets, group, self.timeout) {
            Err(cause @ KafkaError::Transaction(_)) if cause.rdkafka_error_code() != Some(RDKafkaErrorCode::State) => {
                cause
            }
            _ => error,
        }
    }

    /// Fault injection: begins a transaction and produces `outputs` in it,
    /// then reports an abortable error instead of committing (the caller
    /// aborts, as after a real failure). Blocking.
    pub fn produce_then_fail_blocking(&self, outputs: Vec<Output>) -> Result<(), TxError> {
        self.inner.begin_transaction().map_err(classify)?;
        for output in &outputs {
            let mut record = BaseRecord::to(&output.topic).headers(output.headers.clone());
            if let Some(payload) = &output.payload {
                record = record.payload(payload);
            }
            if let Some(key) = &output.key {
                record = record.key(key);
            }
            if let Some(partition) = output.partition {
                record = record.partition(partition);
            }
            if let Err((error, _)) = self.inner.send(record) {
                return Err(TxError::Abortable(error));
            }
        }
        tracing::warn!(transactional_id = %self.transactional_id, outputs = outputs.len(), "injected fault: failing the transaction instead of committing it");
        Err(TxError::Abortable(KafkaError::MessageProduction(RDKafkaErrorCode::Fail)))
    }

    /// Aborts the open transaction. Blocking.
    pub fn abort_blocking(&self) -> Result<(), TxError> {
        let mut attempt = 0;
        loop {
            match self.inner.abort_transaction(self.timeout) {
                Ok(()) => return Ok(()),
                Err(error) if is_retriable(&error) && attempt < RETRIES => attempt += 1,
                Err(error) => {
                    return Err(match classify(error) {
                        TxError::Abortable(e) => TxError::Fatal(e),
                        other => other,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebalance_is_the_group_moving_on_and_other_errors_are_not() {
        let abortable = |code| TxError::Abortable(KafkaError::MessageProduction(code));
        assert!(abortable(RDKafkaErrorCode::IllegalGeneration).group_moved_on());
        assert!(abortable(RDKafkaErrorCode::UnknownMemberId).group_moved_on());
        assert!(abortable(RDKafkaErrorCode::RebalanceInProgress).group_moved_on());
        assert!(!abortable(RDKafkaErrorCode::RequestTimedOut).group_moved_on());
        let fatal = TxError::Fatal(KafkaError::MessageProduction(RDKafkaErrorCode::IllegalGeneration));
        assert!(!fatal.group_moved_on());
    }

    #[test]
    fn authorization_failures_name_the_operation_and_what_it_was_refused_on() {
        let refused = |code| not_authorized(KafkaError::MessageProduction(code), &["a.results", "a.dlq"], "tx-w-1");
        let Ok(TxError::NotAuthorized { operation, resource, .. }) =
            refused(RDKafkaErrorCode::TopicAuthorizationFailed)
        else {
            panic!("a topic authorization failure is NotAuthorized")
        };
        assert_eq!((operation, resource.as_str()), ("Write", "topic(s) a.results, a.dlq"));
        let Ok(TxError::NotAuthorized { resource, .. }) = refused(RDKafkaErrorCode::TransactionalIdAuthorizationFailed)
        else {
            panic!("a transactional id authorization failure is NotAuthorized")
        };
        assert!(resource.contains("tx-w-1"));
        assert!(matches!(
            refused(RDKafkaErrorCode::GroupAuthorizationFailed),
            Ok(TxError::NotAuthorized { operation: "Read", .. })
        ));
        assert!(refused(RDKafkaErrorCode::IllegalGeneration).is_err(), "other errors are classified as before");
    }
}
