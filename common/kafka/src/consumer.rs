//! Consumer-group membership: commit what is done before partitions move,
//! and close within a bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;

use super::KafkaSetupError;
use super::offsets::OffsetTracker;
use super::producer::TrackedProducer;
use super::stats::{ClientHealth, STATS_INTERVAL};
use crate::settings::KafkaSettings;

shoal_telemetry::counters! {
    /// Group membership counters.
    pub struct GroupStats {
        /// Rebalances this member took part in (assign or revoke events).
        rebalances => counter("shoal_consumer_rebalances", "Partition assignments and revocations this member took part in"),
        /// Commits that failed.
        commit_failures => counter("shoal_consumer_commit_failures", "Offset commits that failed"),
    }
    with {
        /// The consumer group.
        pub group_id: String,
        /// Partitions currently assigned to this member.
        pub assigned: AtomicI64,
        /// Connectivity and per-partition lag, from librdkafka's statistics.
        pub client: ClientHealth,
        /// Partitions revoked since the pipeline last looked; an exactly-once
        /// pipeline drops their uncommitted records from its open batch.
        revoked: std::sync::Mutex<Vec<(String, i32)>>,
        /// Partitions assigned since the pipeline last looked.
        added: std::sync::Mutex<Vec<(String, i32)>>,
        /// Partitions assigned to this member now, as far as librdkafka
        /// has told it.
        owned: std::sync::Mutex<std::collections::BTreeSet<(String, i32)>>,
        /// How many times each partition was revoked from or lost by this
        /// member: work started under an older count belongs to a previous
        /// assignment.
        /// By topic, then partition: looked up per record read, without
        /// building a key.
        revocations: std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<i32, u64>>>,
    }
}

impl GroupStats {
    /// Whether `partition` of `topic` is assigned to this member now. A
    /// member paused past its session timeout still says yes until
    /// librdkafka reports the loss.
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).contains(&(topic.to_string(), partition))
    }

    /// How many times `partition` of `topic` was revoked from or lost by
    /// this member. Work started under a smaller count was started under an
    /// earlier assignment, whose uncommitted work is the new owner's (even
    /// when the new owner is this member again).
    pub fn revocations(&self, topic: &str, partition: i32) -> u64 {
        let revocations = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        revocations.get(topic).and_then(|by_partition| by_partition.get(&partition)).copied().unwrap_or(0)
    }

    fn disown(&self, partitions: &[(String, i32)]) {
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        let mut revocations = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        for p in partitions {
            owned.remove(p);
            *revocations.entry(p.0.clone()).or_default().entry(p.1).or_insert(0) += 1;
        }
    }

    /// Takes the partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes the partitions assigned since the last call.
    pub fn take_assigned(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.added.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Consumer context that, before partitions are revoked, waits for the
/// producer to deliver what was produced for them and commits their offsets,
/// so the next owner neither loses nor repeats work. With exactly-once
/// delivery there is no such producer (offsets travel in transactions) and
/// the context only records what was revoked.
#[derive(Debug)]
pub struct GroupContext {
    name: String,
    tracker: Arc<OffsetTracker>,
    producer: Option<TrackedProducer>,
    flush_timeout: Duration,
    stats: Arc<GroupStats>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(consumer = %self.name, %error, reason, "kafka consumer error");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.stats.client.observe(statistics);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl GroupContext {
    /// Partitions lost, not handed over: the session timed out (the
    /// coordinator was unreachable, or this process was paused), so the
    /// group has already given them to another member. Nothing is flushed
    /// or committed: a commit would be refused (the generation is gone) and,
    /// with the coordinator away, would block the thread that must answer
    /// the rebalance, keeping this member out of the group. Their
    /// uncommitted records are processed again by their next owner.
    fn lose(&self, lost: Vec<(String, i32)>) {
        self.stats.disown(&lost);
        self.stats.revoked.lock().unwrap_or_else(|p| p.into_inner()).extend(lost.iter().cloned());
        self.stats.added.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| !lost.contains(p));
        self.tracker.forget(&lost);
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(consumer = %self.name, partitions = ?lost, "partitions lost (session timed out): not committing; their uncommitted records go to the next owner");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            if consumer.assignment_lost() {
                self.lose(revoked);
                return;
            }
            self.stats.disown(&revoked);
            // Blocks the thread polling this consumer, bounded by the flush
            // timeout: the handover must not start before outputs are acked.
            if let Some(producer) = &self.producer
                && let Err(error) = producer.flush_blocking(self.flush_timeout)
            {
                tracing::warn!(consumer = %self.name, %error, "flush before revoke did not finish; uncommitted records will be processed again by the next owner");
            }
            self.stats.revoked.lock().unwrap_or_else(|p| p.into_inner()).extend(revoked.iter().cloned());
            // Assigned and revoked before the pipeline looked: not assigned.
            self.stats.added.lock().unwrap_or_else(|p| p.into_inner()).retain(|p| !revoked.contains(p));
            let commit = self.tracker.commit_list(Some(&revoked));
            if commit.count() > 0 {
                match consumer.commit(&commit, CommitMode::Sync) {
                    Ok(()) => self.tracker.mark_committed(&commit),
                    Err(error) => {
                        self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(consumer = %self.name, %error, "commit on revoke failed");
                    }
                }
            }
            self.tracker.forget(&revoked);
            self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
            tracing::info!(consumer = %self.name, partitions = ?revoked, committed = commit.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.stats.assigned.store(i64::try_from(assigned).unwrap_or(i64::MAX), Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.stats.owned.lock().unwrap_or_else(|p| p.into_inner()).extend(partitions(tpl));
                self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
                self.stats.added.lock().unwrap_or_else(|p| p.into_inner()).extend(partitions(tpl));
                tracing::info!(consumer = %self.name, added = ?partitions(tpl), total = assigned, "partitions assigned");
            }
            Rebalance::Revoke(_) => {
                tracing::debug!(consumer = %self.name, total = assigned, "assignment after revoke");
            }
            Rebalance::Error(error) => tracing::warn!(consumer = %self.name, %error, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            self.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(consumer = %self.name, %error, "offset commit failed");
        }
    }
}

/// A consumer-group member whose commits follow an [`OffsetTracker`].
pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Creates a group consumer subscribed to `topics`.
pub fn subscribe(
    kafka: &KafkaSettings,
    group_id: &str,
    client_id: &str,
    topics: &[&str],
    producer: Option<TrackedProducer>,
    flush_timeout: Duration,
) -> Result<(GroupConsumer, Arc<GroupStats>), KafkaSetupError> {
    let stats = Arc::new(GroupStats { group_id: group_id.to_string(), ..GroupStats::default() });
    let context = GroupContext {
        name: format!("{group_id}/{client_id}"),
        tracker: producer.as_ref().map(|p| p.tracker().clone()).unwrap_or_default(),
        producer,
        flush_timeout,
        stats: stats.clone(),
    };
    let mut config = super::consumer_config(kafka, group_id, client_id);
    // Connectivity and lag for /readyz and /metrics (GroupContext::stats_raw).
    config.set("statistics.interval.ms", STATS_INTERVAL.as_millis().to_string());
    let consumer: GroupConsumer =
        config.create_with_context(context).map_err(|source| KafkaSetupError::Client { what: "consumer", source })?;
    consumer.subscribe(topics).map_err(|source| KafkaSetupError::Client { what: "consumer subscription", source })?;
    Ok((consumer, stats))
}

/// Commits every offset the tracker says is done.
pub fn commit_done(consumer: &GroupConsumer, tracker: &OffsetTracker, mode: CommitMode) -> KafkaResult<usize> {
    let tpl = tracker.commit_list(None);
    if tpl.count() == 0 {
        return Ok(0);
    }
    consumer.commit(&tpl, mode)?;
    tracker.mark_committed(&tpl);
    Ok(tpl.count())
}

/// Closes the consumer (leaving the group so its partitions move at once),
/// but gives up after `bound`: librdkafka's close can hang when the cluster
/// is unreachable. Returns whether the close finished in time.
pub async fn close_bounded(consumer: GroupConsumer, bound: Duration) -> bool {
    // Unsubscribing first leaves the group at once (LeaveGroup), so the
    // other members get the partitions without waiting for this member's
    // session to time out; dropping then runs librdkafka's consumer close
    // (revoke callback, commit). Both block: off the async threads.
    let closing = tokio::task::spawn_blocking(move || {
        consumer.unsubscribe();
        tracing::info!("consumer unsubscribed: leaving the group");
        drop(consumer);
    });
    match tokio::time::timeout(bound, closing).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(?bound, "consumer close did not finish in time; abandoning it");
            false
        }
    }
}
