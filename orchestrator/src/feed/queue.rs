//! The bounded queue between the socket reader and the Kafka publisher, with
//! per-symbol coalescing when the publisher falls behind.
//!
//! Policy: items queue in arrival order up to `capacity`. Once the queue is
//! full, further items go to an overflow that keeps only the **latest** item
//! per (symbol, kind); an item replacing an older one there is counted as
//! coalesced. While the overflow holds anything, new items also go there, so
//! one symbol's items never overtake each other. The publisher drains the
//! ordered part first, then the overflow in first-arrival order of its keys.
//! Memory is therefore bounded by `capacity` plus one item per (symbol,
//! kind), however fast the feed is; the reader never waits on Kafka.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use shoal_protocol::messages::{BookTop, DataQuality, MarketTick};
use tokio::sync::Notify;

/// What travels from the reader to the publisher.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A trade.
    Tick(MarketTick),
    /// A best bid and offer.
    Book(BookTop),
    /// A data-quality event.
    Quality(DataQuality),
}

impl Item {
    /// The Kafka key: the symbol.
    pub fn symbol(&self) -> &str {
        match self {
            Item::Tick(t) => &t.symbol,
            Item::Book(b) => &b.symbol,
            Item::Quality(q) => &q.symbol,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Item::Tick(_) => 0,
            Item::Book(_) => 1,
            Item::Quality(_) => 2,
        }
    }
}

/// What [`Queue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued (in order, or as the first overflow item of its key).
    Queued,
    /// Replaced an older overflow item of the same symbol and kind.
    Coalesced,
    /// The queue is closed; the item was dropped.
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    ordered: VecDeque<Item>,
    overflow: HashMap<(String, u8), Item>,
    overflow_order: VecDeque<(String, u8)>,
    closed: bool,
    high_water: usize,
}

/// Bounded, coalescing, single-consumer queue.
#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    inner: Mutex<Inner>,
    ready: Notify,
}

impl Queue {
    /// A queue holding `capacity` items in order (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::new(Inner::default()), ready: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue invalid:
        // every operation is a plain push or pop.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds an item without waiting.
    pub fn push(&self, item: Item) -> Pushed {
        let pushed = {
            let mut inner = self.lock();
            if inner.closed {
                return Pushed::Closed;
            }
            if inner.overflow.is_empty() && inner.ordered.len() < self.capacity {
                inner.ordered.push_back(item);
                Pushed::Queued
            } else {
                let key = (item.symbol().to_owned(), item.kind());
                if inner.overflow.insert(key.clone(), item).is_some() {
                    Pushed::Coalesced
                } else {
                    inner.overflow_order.push_back(key);
                    Pushed::Queued
                }
            }
        };
        let mut inner = self.lock();
        let len = inner.ordered.len() + inner.overflow.len();
        inner.high_water = inner.high_water.max(len);
        drop(inner);
        self.ready.notify_one();
        pushed
    }

    /// The next item, waiting for one; `None` once closed and empty.
    pub async fn pop(&self) -> Option<Item> {
        loop {
            {
                let mut inner = self.lock();
                if let Some(item) = inner.ordered.pop_front() {
                    return Some(item);
                }
                while let Some(key) = inner.overflow_order.pop_front() {
                    if let Some(item) = inner.overflow.remove(&key) {
                        return Some(item);
                    }
                }
                if inner.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Refuses further items; [`Queue::pop`] drains what is left, then ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.ordered.len() + inner.overflow.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items ever waiting at once.
    pub fn high_water(&self) -> usize {
        self.lock().high_water
    }

    /// Capacity of the ordered part.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use shoal_protocol::messages::SCHEMA_VERSION;

    use super::*;

    fn tick(symbol: &str, id: u64) -> Item {
        Item::Tick(MarketTick {
            schema_version: SCHEMA_VERSION,
            source: "t".into(),
            symbol: symbol.into(),
            price: id.into(),
            size: 1.into(),
            side: None,
            trade_id: Some(id.to_string()),
            sequence: None,
            exchange_ts: Utc::now(),
            received_at: Utc::now(),
            channel: None,
        })
    }

    fn id(item: &Item) -> String {
        match item {
            Item::Tick(t) => format!("{}:{}", t.symbol, t.trade_id.as_deref().unwrap_or_default()),
            _ => String::new(),
        }
    }

    #[tokio::test]
    async fn coalesces_to_the_latest_per_symbol_once_full_and_keeps_order() {
        let q = Queue::new(2);
        assert_eq!(q.push(tick("A", 1)), Pushed::Queued);
        assert_eq!(q.push(tick("B", 1)), Pushed::Queued);
        assert_eq!(q.push(tick("A", 2)), Pushed::Queued, "first overflow item of A");
        assert_eq!(q.push(tick("B", 2)), Pushed::Queued);
        assert_eq!(q.push(tick("A", 3)), Pushed::Coalesced, "replaces A:2");
        assert_eq!(q.len(), 4);
        assert_eq!(q.high_water(), 4);
        // After one pop there is room again, but the overflow is not empty,
        // so A:4 must not overtake A:3.
        assert_eq!(id(&q.pop().await.unwrap()), "A:1");
        assert_eq!(q.push(tick("A", 4)), Pushed::Coalesced);
        q.close();
        let mut rest = Vec::new();
        while let Some(item) = q.pop().await {
            rest.push(id(&item));
        }
        assert_eq!(rest, ["B:1", "A:4", "B:2"]);
        assert_eq!(q.push(tick("A", 5)), Pushed::Closed);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(Queue::new(4));
        let popper = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await.map(|i| id(&i)) }
        });
        tokio::task::yield_now().await;
        q.push(tick("A", 9));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), popper).await.unwrap().unwrap();
        assert_eq!(got.as_deref(), Some("A:9"));
    }
}
