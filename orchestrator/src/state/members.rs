//! Membership: which instance owns which shards and where its API listens.
//! Each instance writes one record, keyed by its id, to the compacted
//! members topic when its shards change and every
//! [`ANNOUNCE_EVERY`] besides; every instance reads the topic and keeps
//! the members heard from within [`MEMBER_TTL`] (a killed instance's last
//! record stays in the topic, but goes stale).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use shoal_api::{Directory, Member, ShardId};
use shoal_kafka::polled::{AwaitedProducer, Outgoing};
use shoal_kafka::settings::KafkaSettings;
use tokio_util::sync::CancellationToken;

/// How often an instance announces itself even when nothing changed.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);
/// Members not heard from for this long are ignored.
pub const MEMBER_TTL: Duration = Duration::from_secs(20);

/// One membership record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Announcement {
    #[serde(flatten)]
    member: Member,
    at: DateTime<Utc>,
}

/// This instance's side: announcing its shards.
pub struct Announcer {
    producer: AwaitedProducer,
    topic: String,
    instance: String,
    api_url: String,
    last: Option<Instant>,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer").field("instance", &self.instance).finish_non_exhaustive()
    }
}

impl Announcer {
    /// An announcer for `instance`, whose API is at `api_url`.
    pub fn new(kafka: &KafkaSettings, topic: &str, instance: &str, api_url: &str) -> anyhow::Result<Self> {
        let producer = AwaitedProducer::create(&shoal_kafka::producer_config(kafka, &format!("{instance}-members")))?;
        Ok(Self { producer, topic: topic.into(), instance: instance.into(), api_url: api_url.into(), last: None })
    }

    /// Announces `shards` if they changed or the last announcement is old.
    /// Does not wait for delivery (membership is advisory).
    pub fn announce(&mut self, shards: Vec<ShardId>, changed: bool) {
        if !changed && self.last.is_some_and(|t| t.elapsed() < ANNOUNCE_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let record = Announcement {
            member: Member { instance: self.instance.clone(), api_url: self.api_url.clone(), shards },
            at: Utc::now(),
        };
        let Ok(body) = serde_json::to_vec(&record) else { return };
        let record = Outgoing { topic: &self.topic, partition: None, key: self.instance.as_bytes(), payload: &body };
        if let Err(error) = self.producer.enqueue(record) {
            tracing::warn!(%error, topic = %self.topic, "cannot announce this instance's shards");
        }
    }
}

/// Announces the shards published to `hub` (by every stage of this
/// instance) until `shutdown`: at once when they change, and every
/// [`ANNOUNCE_EVERY`] besides.
pub async fn announce(mut announcer: Announcer, hub: Arc<shoal_api::Hub>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut last: Vec<ShardId> = Vec::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                let shards: Vec<ShardId> = hub.view().shards.keys().cloned().collect();
                let changed = shards != last;
                announcer.announce(shards.clone(), changed);
                last = shards;
            }
        }
    }
}

/// The members heard from, kept from the members topic.
#[derive(Debug)]
pub struct KafkaDirectory {
    instance: String,
    members: ArcSwap<HashMap<String, (Member, Instant)>>,
}

impl Directory for KafkaDirectory {
    fn peers(&self) -> Vec<Member> {
        let mut peers: Vec<Member> = self
            .members
            .load()
            .values()
            .filter(|(m, seen)| m.instance != self.instance && seen.elapsed() < MEMBER_TTL)
            .map(|(m, _)| m.clone())
            .collect();
        peers.sort_by(|a, b| a.instance.cmp(&b.instance));
        peers
    }
}

impl KafkaDirectory {
    /// Starts reading the members topic on a blocking thread until
    /// `shutdown`.
    pub fn start(
        kafka: &KafkaSettings,
        topic: &str,
        instance: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let mut cfg = shoal_kafka::client_config(kafka, &format!("{instance}-directory"));
        cfg.set("group.id", format!("{instance}-directory")).set("enable.auto.commit", "false");
        let consumer: BaseConsumer = cfg.create()?;
        let directory = Arc::new(Self { instance: instance.into(), members: ArcSwap::from_pointee(HashMap::new()) });
        let (dir, topic) = (directory.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || dir.follow(&consumer, &topic, &shutdown));
        Ok(directory)
    }

    fn follow(&self, consumer: &BaseConsumer, topic: &str, shutdown: &CancellationToken) {
        let mut assigned = false;
        while !shutdown.is_cancelled() {
            if !assigned {
                assigned = assign_all(consumer, topic);
                if !assigned {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    let heard = message.payload().and_then(|p| serde_json::from_slice::<Announcement>(p).ok());
                    if let Some(a) = heard {
                        let age = (Utc::now() - a.at).to_std().unwrap_or_default();
                        let seen = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                        let mut next = HashMap::clone(&self.members.load());
                        next.insert(a.member.instance.clone(), (a.member, seen));
                        self.members.store(Arc::new(next));
                    }
                }
                Some(Err(error)) => tracing::debug!(%error, topic, "reading the members topic"),
                None => {}
            }
        }
    }
}

fn assign_all(consumer: &BaseConsumer, topic: &str) -> bool {
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else { return false };
    let mut list = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic && t.error().is_none()) {
        for p in t.partitions() {
            let _ = list.add_partition_offset(topic, p.id(), Offset::Beginning);
        }
    }
    list.count() > 0 && consumer.assign(&list).is_ok()
}
