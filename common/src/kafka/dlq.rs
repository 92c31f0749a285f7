//! Dead letters: records that cannot be handled for good are published to
//! the dead-letter topic with their original key, body and headers, plus
//! headers saying why and where they came from. Nothing is silently dropped.

use rdkafka::Message;
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;

use super::headers::HeaderView;
use super::offsets::Origin;
use super::producer::{OutRecord, TrackedProducer};

/// Header: short machine-readable reason (e.g. `malformed`).
pub const REASON: &str = "shoal-dlq-reason";
/// Header: human-readable error text.
pub const ERROR: &str = "shoal-dlq-error";
/// Header: the Shoal stage that gave up (e.g. `worker`).
pub const STAGE: &str = "shoal-dlq-stage";
/// Header: topic the record was read from.
pub const ORIGIN_TOPIC: &str = "shoal-origin-topic";
/// Header: partition it was read from.
pub const ORIGIN_PARTITION: &str = "shoal-origin-partition";
/// Header: offset it was read from.
pub const ORIGIN_OFFSET: &str = "shoal-origin-offset";
/// Header: how many attempts were made.
pub const ATTEMPTS: &str = "shoal-dlq-attempts";

/// Why a record is being dead-lettered.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// Short reason code.
    pub reason: &'a str,
    /// Error text.
    pub error: String,
    /// Stage name.
    pub stage: &'a str,
    /// Attempts made.
    pub attempts: u32,
}

/// Logs why `message` is being dead-lettered (with its origin) and publishes
/// it; returns `false`, after logging, if it could not even be enqueued (the
/// record then stays uncommitted and is processed again).
pub async fn route(
    producer: &TrackedProducer,
    dlq_topic: &str,
    message: &BorrowedMessage<'_>,
    letter: DeadLetter<'_>,
) -> bool {
    tracing::warn!(
        stage = letter.stage,
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        reason = letter.reason,
        error = %letter.error,
        "record sent to the dead-letter topic"
    );
    match publish(producer, dlq_topic, message, letter).await {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(%error, offset = message.offset(), "cannot enqueue dead letter; the record will be processed again");
            false
        }
    }
}

/// Publishes `message` to `dlq_topic`; the consumed record's offset is
/// completed in the tracker only once the dead letter is acknowledged.
pub async fn publish(
    producer: &TrackedProducer,
    dlq_topic: &str,
    message: &BorrowedMessage<'_>,
    letter: DeadLetter<'_>,
) -> Result<(), KafkaError> {
    let mut headers = HeaderView(message.headers()).to_set();
    headers
        .insert(REASON, letter.reason)
        .insert(ERROR, &letter.error)
        .insert(STAGE, letter.stage)
        .insert(ORIGIN_TOPIC, message.topic())
        .insert(ORIGIN_PARTITION, &message.partition().to_string())
        .insert(ORIGIN_OFFSET, &message.offset().to_string())
        .insert(ATTEMPTS, &letter.attempts.to_string());
    let key = message.key().map(String::from_utf8_lossy);
    let origin =
        Origin { topic: message.topic().to_string(), partition: message.partition(), offset: message.offset() };
    producer
        .send(
            OutRecord {
                topic: dlq_topic,
                key: key.as_deref(),
                payload: message.payload().unwrap_or_default(),
                headers: headers.into_owned(),
            },
            Some(origin),
        )
        .await
}
