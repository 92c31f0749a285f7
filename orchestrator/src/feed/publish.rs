//! The publisher: queued items to the ticks topic, each the root of a
//! decision's trace.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_kafka::outputs::{MessageMeta, Outputs};
use shoal_kafka::trace::Trace;
use shoal_protocol::messages::{BookTop, DataQuality, MarketTick, WireMessage};
use tokio::time::Instant;

use super::queue::{Item, Queue};
use super::{FeedStats, TickSink, sampled};

/// Publishes queued items to Kafka, at most `max_per_sec` per second if set.
pub(super) async fn publish_loop(queue: Arc<Queue>, sink: TickSink, stats: Arc<FeedStats>, max_per_sec: u64) {
    let pace = (max_per_sec > 0).then(|| Duration::from_secs_f64(1.0 / max_per_sec as f64));
    let mut next = Instant::now();
    while let Some(item) = queue.pop().await {
        if let Some(pace) = pace {
            next += pace;
            let now = Instant::now();
            if next > now {
                tokio::time::sleep_until(next).await;
            } else if now.duration_since(next) > Duration::from_secs(1) {
                next = now;
            }
        }
        publish(&sink, &item, &stats).await;
    }
}

async fn publish(sink: &TickSink, item: &Item, stats: &FeedStats) {
    // The root of a decision's trace: an item received from the feed and
    // written to the ticks topic.
    let (source, sequence, trade_id) = match item {
        Item::Tick(t) => (t.source.as_str(), t.sequence, t.trade_id.as_deref().unwrap_or_default()),
        Item::Book(b) => (b.source.as_str(), None, ""),
        Item::Quality(q) => (q.source.as_str(), None, ""),
    };
    let trace = Trace::root(&sink.sampler);
    let span = trace.span(|| {
        shoal_kafka::send_span!(
        "feed receive",
        None,
        "publish",
        messaging.destination.name = %sink.topic,
        messaging.kafka.message.key = %item.symbol(),
        shoal.feed.source = %source,
        shoal.feed.sequence = sequence,
        symbol = %item.symbol(),
        trade_id,
        )
    });
    let mut out = trace.outputs();
    let (counter, message_type) = match item {
        Item::Tick(_) => (&stats.ticks, "tick"),
        Item::Book(_) => (&stats.book_tops, "book_top"),
        Item::Quality(_) => (&stats.data_quality, "data_quality"),
    };
    let meta = MessageMeta { message_type, producer_id: &sink.producer_id, command_id: None };
    fn add<M: WireMessage>(
        out: &mut Outputs,
        sink: &TickSink,
        meta: &MessageMeta<'_>,
        m: &M,
        key: &str,
        span: &tracing::Span,
    ) {
        out.message(&sink.topic, key, meta, m, span);
    }
    match item {
        Item::Tick(t) => add::<MarketTick>(&mut out, sink, &meta, t, &t.symbol, &span),
        Item::Book(b) => add::<BookTop>(&mut out, sink, &meta, b, &b.symbol, &span),
        Item::Quality(q) => add::<DataQuality>(&mut out, sink, &meta, q, &q.symbol, &span),
    }
    let sent = match out.take().pop() {
        Some(output) => sink.producer.send(output, None).await,
        None => Ok(()),
    };
    match sent {
        Ok(()) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            let count = stats.produce_errors.fetch_add(1, Ordering::Relaxed) + 1;
            if sampled(count) {
                tracing::error!(%error, symbol = %item.symbol(), "cannot enqueue a feed record for Kafka");
            }
        }
    }
}
