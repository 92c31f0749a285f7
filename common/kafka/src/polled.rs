//! Producers whose events (delivery reports, errors) are served by a thread
//! of their own, as rdkafka's `ThreadedProducer` and `FutureProducer` do,
//! without their idle spin.
//!
//! rdkafka's `BaseProducer::poll(timeout)` loops until its deadline, asking
//! librdkafka for events with the time left in whole milliseconds. In the
//! deadline's last millisecond that rounds down to zero, and the loop asks
//! again and again without waiting until the deadline passes: up to a
//! millisecond of spinning per call. `ThreadedProducer` (and
//! `FutureProducer`, built on it) polls 100 ms at a time, so each of its
//! threads spins about 1% of a core, idle or busy: 1.4% per producer was
//! measured on an idle worker. [`PolledProducer`] polls a second at a time,
//! which cuts that tenfold; the price is that its thread ends up to a
//! second after the last handle is dropped (the producer is destroyed then,
//! on that thread) instead of being joined.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message, ToBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use tokio::sync::oneshot;

/// How long one poll of the producer's events waits.
const POLL: Duration = Duration::from_secs(1);

/// Thread names are cut to 15 bytes by Linux.
const THREAD_NAME: &str = "shoal-producer";

/// A [`BaseProducer`] with a thread serving its events. Cheap to clone;
/// the thread stops (within [`POLL`]) once the last clone is dropped.
pub struct PolledProducer<C: ProducerContext + 'static> {
    shared: Arc<Shared<C>>,
}

struct Shared<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
}

impl<C: ProducerContext + 'static> Drop for Shared<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl<C: ProducerContext + 'static> std::fmt::Debug for PolledProducer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledProducer").field("in_flight", &self.shared.producer.in_flight_count()).finish()
    }
}

impl<C: ProducerContext + 'static> Clone for PolledProducer<C> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<C: ProducerContext + 'static> PolledProducer<C> {
    /// Creates the producer from `config` with `context`, and its thread.
    pub fn create(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let producer: Arc<BaseProducer<C>> = Arc::new(config.create_with_context(context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (Arc::clone(&producer), Arc::clone(&stop));
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("cannot start the producer's polling thread: {e}")))?;
        Ok(Self { shared: Arc::new(Shared { producer, stop }) })
    }
}

impl<C: ProducerContext + 'static> Deref for PolledProducer<C> {
    type Target = BaseProducer<C>;

    fn deref(&self) -> &BaseProducer<C> {
        &self.shared.producer
    }
}

/// Where a record landed.
pub type Delivered = (i32, i64);

/// Completes each record's waiting sender with its delivery report.
#[derive(Debug, Default, Clone, Copy)]
pub struct AwaitContext;

impl ClientContext for AwaitContext {}

impl ProducerContext for AwaitContext {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<Delivered>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, sender: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        // The sender's future may have been dropped: nobody is waiting.
        let _ = sender.send(outcome);
    }
}

/// A producer whose sends are awaited one by one (in place of rdkafka's
/// `FutureProducer`, for records written alone: journal steps, requests,
/// approvals).
#[derive(Clone)]
pub struct AwaitedProducer {
    inner: PolledProducer<AwaitContext>,
}

impl std::fmt::Debug for AwaitedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwaitedProducer").finish_non_exhaustive()
    }
}

/// One record for [`AwaitedProducer::send`].
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Destination topic.
    pub topic: &'a str,
    /// Partition; `None` to let the partitioner choose by key.
    pub partition: Option<i32>,
    /// Key.
    pub key: &'a [u8],
    /// Value.
    pub payload: &'a [u8],
}

impl AwaitedProducer {
    /// Creates the producer from `config`.
    pub fn create(config: &ClientConfig) -> KafkaResult<Self> {
        Ok(Self { inner: PolledProducer::create(config, AwaitContext)? })
    }

    /// Enqueues `record` (waiting while librdkafka's queue is full, at most
    /// `queue_timeout`) and waits for its delivery report: where it landed,
    /// or why it was not delivered (bounded by `message.timeout.ms`).
    pub async fn send(&self, record: Outgoing<'_>, queue_timeout: Duration) -> KafkaResult<Delivered> {
        let (sender, receiver) = oneshot::channel();
        // `None`: no bound (a `queue_timeout` too long to add to now).
        let deadline = tokio::time::Instant::now().checked_add(queue_timeout);
        send_when_room(&self.inner, record.base(sender), deadline).await.map_err(|(error, _)| error)?;
        receiver.await.unwrap_or(Err(KafkaError::Canceled))
    }

    /// Enqueues `record` without waiting for room or for its delivery (for
    /// advisory records): an error says it could not even be enqueued.
    pub fn enqueue(&self, record: Outgoing<'_>) -> KafkaResult<()> {
        // Nobody waits on the receiver: the report is dropped.
        let (sender, _) = oneshot::channel();
        self.inner.send(record.base(sender)).map_err(|(error, _)| error)
    }
}

impl<'a> Outgoing<'a> {
    fn base(self, sender: oneshot::Sender<KafkaResult<Delivered>>) -> AwaitedRecord<'a> {
        let base = BaseRecord::with_opaque_to(self.topic, Box::new(sender)).key(self.key).payload(self.payload);
        match self.partition {
            Some(partition) => base.partition(partition),
            None => base,
        }
    }
}

type AwaitedRecord<'a> = BaseRecord<'a, [u8], [u8], <AwaitContext as ProducerContext>::DeliveryOpaque>;

/// A record handed back by [`send_when_room`], with why it was not enqueued.
pub(crate) type Refused<'a, C, K, P> = (KafkaError, BaseRecord<'a, K, P, <C as ProducerContext>::DeliveryOpaque>);

/// Enqueues `record`, waiting (1 ms, doubling up to 100 ms) while
/// librdkafka's queue is full, until `deadline` (`None`: no bound). Any
/// other error, or a queue still full at the deadline, hands the record
/// back with the error.
pub(crate) async fn send_when_room<'a, C, K, P>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), Refused<'a, C, K, P>>
where
    C: ProducerContext,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let mut backoff = Duration::from_millis(1);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                if deadline.is_none_or(|deadline| tokio::time::Instant::now() < deadline) =>
            {
                record = returned;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
            Err(refused) => return Err(refused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No broker: a record that cannot be delivered fails within
    /// `message.timeout.ms`, and the thread is gone after the producer.
    #[tokio::test]
    async fn an_undeliverable_record_fails_and_the_thread_stops_after_the_last_handle() {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1").set("message.timeout.ms", "300");
        let producer = AwaitedProducer::create(&config).unwrap();
        let record = Outgoing { topic: "t", partition: None, key: b"k", payload: b"v" };
        let outcome = producer.send(record, Duration::from_secs(1)).await;
        assert!(matches!(outcome, Err(KafkaError::MessageProduction(_))), "{outcome:?}");
        // Waiting for room without a bound is `Duration::MAX`.
        let outcome = producer.send(record, Duration::MAX).await;
        assert!(matches!(outcome, Err(KafkaError::MessageProduction(_))), "{outcome:?}");
        let stop = Arc::clone(&producer.inner.shared.stop);
        let copy = producer.clone();
        drop(producer);
        assert!(!stop.load(Ordering::Relaxed), "a clone still holds it");
        drop(copy);
        assert!(stop.load(Ordering::Relaxed));
    }
}
