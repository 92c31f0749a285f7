//! A producer whose delivery reports complete records in an
//! [`OffsetTracker`](super::offsets::OffsetTracker).
//!
//! Its events are polled on a thread of its own
//! ([`PolledProducer`](crate::polled::PolledProducer)), so delivery callbacks
//! never run on the async runtime and the consuming task is never blocked by
//! them.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::KafkaSetupError;
use super::offsets::{OffsetTracker, Origin};
use super::outputs::Output;
use super::stats::{ClientHealth, STATS_INTERVAL};
use crate::settings::KafkaSettings;

/// The configuration of an at-least-once stage's producer: the idempotent
/// producer of [`super::producer_config`] whose records never time out
/// (`message.timeout.ms=0`); librdkafka retries each until the broker
/// acknowledges it, and a stage that cannot deliver stops reading at its
/// in-flight bound.
///
/// A record that times out is what breaks per-key order without
/// transactions: the idempotent producer bumps its epoch and delivers the
/// records queued behind the failed one, the same key's later results
/// among them, and the failed record's input is processed again only after
/// the rewind that follows, so its result lands after theirs. librdkafka's
/// `enable.gapless.guarantee` does not cover timeouts.
pub fn in_order_config(kafka: &KafkaSettings, client_id: &str) -> rdkafka::ClientConfig {
    let mut config = super::producer_config(kafka, client_id);
    config.set("message.timeout.ms", "0");
    config
}

/// Producer context that reports deliveries to the tracker.
#[derive(Debug)]
pub struct TrackingContext {
    tracker: Arc<OffsetTracker>,
    health: Arc<ClientHealth>,
}

impl ClientContext for TrackingContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer error");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.health.observe(statistics);
    }
}

impl ProducerContext for TrackingContext {
    type DeliveryOpaque = Box<Option<Origin>>;

    fn delivery(&self, result: &DeliveryResult<'_>, origin: Self::DeliveryOpaque) {
        self.health.note_delivery(result.is_ok());
        match result {
            Ok(_) => {
                if let Some(origin) = origin.as_ref() {
                    self.tracker.complete(origin);
                }
            }
            Err((error, message)) => {
                tracing::error!(
                    %error,
                    topic = message.topic(),
                    origin = ?origin,
                    "record could not be delivered; its input will not be committed and is processed again after a restart or rebalance"
                );
                if matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed)
                ) {
                    self.tracker.refuse(format!("Write on topic {} ({error})", message.topic()));
                }
                if let Some(origin) = origin.as_ref() {
                    self.tracker.fail(origin);
                }
            }
        }
    }
}

/// An idempotent producer that ties each output record to the input record
/// it was produced for.
#[derive(Clone)]
pub struct TrackedProducer {
    inner: crate::polled::PolledProducer<TrackingContext>,
    tracker: Arc<OffsetTracker>,
    health: Arc<ClientHealth>,
}

impl std::fmt::Debug for TrackedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedProducer").field("in_flight", &self.tracker.in_flight()).finish_non_exhaustive()
    }
}

impl TrackedProducer {
    /// Creates the producer; `tracker` receives its delivery reports. A
    /// record that is not acknowledged within `kafka.message_timeout_ms`
    /// fails.
    pub fn new(kafka: &KafkaSettings, client_id: &str, tracker: Arc<OffsetTracker>) -> Result<Self, KafkaSetupError> {
        Self::with_config(super::producer_config(kafka, client_id), tracker)
    }

    /// Creates the producer of an at-least-once stage, whose records never
    /// time out ([`in_order_config`]); `tracker` receives its delivery
    /// reports.
    pub fn in_order(
        kafka: &KafkaSettings,
        client_id: &str,
        tracker: Arc<OffsetTracker>,
    ) -> Result<Self, KafkaSetupError> {
        Self::with_config(in_order_config(kafka, client_id), tracker)
    }

    fn with_config(mut config: rdkafka::ClientConfig, tracker: Arc<OffsetTracker>) -> Result<Self, KafkaSetupError> {
        let health = Arc::new(ClientHealth::default());
        let context = TrackingContext { tracker: tracker.clone(), health: health.clone() };
        // Connectivity for /readyz (TrackingContext::stats_raw).
        config.set("statistics.interval.ms", STATS_INTERVAL.as_millis().to_string());
        let inner = crate::polled::PolledProducer::create(&config, context)
            .map_err(|source| KafkaSetupError::Client { what: "producer", source })?;
        Ok(Self { inner, tracker, health })
    }

    /// Connectivity, from the producer's statistics.
    pub fn health(&self) -> &Arc<ClientHealth> {
        &self.health
    }

    /// The tracker deliveries are reported to.
    pub fn tracker(&self) -> &Arc<OffsetTracker> {
        &self.tracker
    }

    /// Enqueues a record. When librdkafka's queue is full this waits for room
    /// (backpressure) instead of growing memory. `origin`, if given, is
    /// completed in the tracker once the record is acknowledged.
    pub async fn send(&self, output: Output, origin: Option<Origin>) -> Result<(), KafkaError> {
        if let Some(origin) = &origin {
            self.tracker.add_output(origin);
        }
        let mut base = BaseRecord::with_opaque_to(&output.topic, Box::new(origin)).headers(output.headers);
        if let Some(payload) = &output.payload {
            base = base.payload(payload);
        }
        if let Some(key) = &output.key {
            base = base.key(key);
        }
        if let Some(partition) = output.partition {
            base = base.partition(partition);
        }
        // No deadline: backpressure, for as long as the queue stays full.
        crate::polled::send_when_room(&self.inner, base, None).await.map_err(|(error, returned)| {
            if let Some(origin) = returned.delivery_opaque.as_ref() {
                self.tracker.fail(origin);
            }
            error
        })
    }

    /// Waits (blocking) until every enqueued record is acknowledged or
    /// `timeout` passes. Call from a blocking context.
    pub fn flush_blocking(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(timeout)
    }

    /// [`TrackedProducer::flush_blocking`] off the async runtime's threads.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.clone();
        tokio::task::spawn_blocking(move || producer.flush_blocking(timeout)).await.unwrap_or(Err(KafkaError::Canceled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_at_least_once_stage_never_times_a_record_out() {
        let mut kafka = KafkaSettings { message_timeout_ms: 10_000, ..KafkaSettings::default() };
        kafka.options.insert("message.timeout.ms".into(), "5000".into());
        let config = in_order_config(&kafka, "test");
        assert_eq!(config.get("message.timeout.ms"), Some("0"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        // Other producers keep the configured bound.
        assert_eq!(crate::producer_config(&kafka, "test").get("message.timeout.ms"), Some("5000"));
    }
}
