//! Records between consumption and completion: the work of each key in
//! order, the work running now, and what each partition's commit says is
//! already done.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use foldhash::fast::RandomState;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::chains::Chains;
use super::{PipelineStats, Processor, Work};
use crate::consumer::GroupConsumer;
use crate::offsets::{DoneAbove, OffsetTracker, Origin};
use crate::outputs::Outputs;

pub(super) type PartitionKey = (String, i32);
/// Topic, partition, the partition's epoch when the record was read, key.
type ChainKey = (String, i32, u64, Option<Vec<u8>>);

pub(super) struct Job {
    origin: Origin,
    epoch: u64,
    work: Work,
}

pub(super) struct Finished {
    chain: ChainKey,
    origin: Origin,
    epoch: u64,
    outputs: Outputs,
}

/// What became of a consumed record.
pub(super) enum Dispatched {
    /// Its work started or waits behind its key.
    Started,
    /// An earlier owner finished it: nothing to do but pass its offset.
    AlreadyDone(Origin),
    /// Its partition's commit metadata could not be read: the partition was
    /// rewound to this record, to try again shortly.
    Retry,
}

/// Records between consumption and completion: per-key chains of work, the
/// work running now, and per-partition epochs. A partition's epoch changes
/// when it is revoked or the input is rewound; work finished under an older
/// epoch is discarded, since the record will be (or was) read again.
pub(super) struct InFlight {
    pub(super) chains: Chains<ChainKey, Job>,
    pub(super) running: FuturesUnordered<BoxFuture<'static, Finished>>,
    epochs: HashMap<PartitionKey, u64, RandomState>,
    /// Committed position and metadata of partitions read since they were
    /// assigned.
    progress: HashMap<PartitionKey, Committed, RandomState>,
    tracker: Arc<OffsetTracker>,
}

impl InFlight {
    pub(super) fn new(max_concurrency: usize, tracker: Arc<OffsetTracker>) -> Self {
        Self {
            chains: Chains::new(max_concurrency),
            running: FuturesUnordered::new(),
            epochs: HashMap::default(),
            progress: HashMap::default(),
            tracker,
        }
    }

    /// Records started and not finished (or, at-least-once, not yet
    /// acknowledged).
    pub(super) fn unfinished(&self) -> usize {
        self.tracker.in_flight()
    }

    /// Records whose work is running or waiting behind their key.
    pub(super) fn processing(&self) -> usize {
        self.running.len() + self.chains.queued()
    }

    pub(super) fn idle(&self) -> bool {
        self.running.is_empty() && self.chains.queued() == 0
    }

    pub(super) fn dispatch<P: Processor>(
        &mut self,
        consumer: &GroupConsumer,
        processor: &mut P,
        record: OwnedMessage,
        stage: &str,
    ) -> Dispatched {
        let partition: PartitionKey = (record.topic().to_string(), record.partition());
        let origin = Origin { topic: partition.0.clone(), partition: partition.1, offset: record.offset() };
        if !self.progress.contains_key(&partition) && !self.load_progress(consumer, &partition, stage) {
            let seek = tokio::task::block_in_place(|| {
                consumer.seek(&origin.topic, origin.partition, Offset::Offset(origin.offset), Duration::from_secs(10))
            });
            if let Err(error) = seek {
                tracing::warn!(stage, ?origin, %error, "cannot rewind the partition to retry reading its commit metadata");
            }
            return Dispatched::Retry;
        }
        self.tracker.begin(&origin);
        if self.progress.get(&partition).is_some_and(|c| c.is_done(origin.offset)) {
            return Dispatched::AlreadyDone(origin);
        }
        let epoch = *self.epochs.entry(partition.clone()).or_default();
        let chain: ChainKey = (partition.0, partition.1, epoch, record.key().map(<[u8]>::to_vec));
        let work = processor.start(record);
        if let Some(job) = self.chains.push(chain.clone(), Job { origin, epoch, work }) {
            self.launch(chain, job);
        }
        Dispatched::Started
    }

    fn launch(&mut self, chain: ChainKey, job: Job) {
        let Job { origin, epoch, work } = job;
        self.running.push(Box::pin(async move { Finished { chain, origin, epoch, outputs: work.await } }));
    }

    /// Starts what may start now that `done` finished; returns its record
    /// and outputs unless they belong to an older epoch.
    pub(super) fn finish(&mut self, done: Finished, stats: &PipelineStats) -> Option<(Origin, Outputs)> {
        for (chain, job) in self.chains.finished(&done.chain) {
            self.launch(chain, job);
        }
        let partition = (done.origin.topic.clone(), done.origin.partition);
        if self.epochs.get(&partition).copied().unwrap_or_default() == done.epoch {
            Some((done.origin, done.outputs))
        } else {
            stats.discarded.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Reads the committed offsets and metadata of `partition` and of every
    /// other assigned partition not read yet (one round trip per assignment).
    fn load_progress(&mut self, consumer: &GroupConsumer, partition: &PartitionKey, stage: &str) -> bool {
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&partition.0, partition.1);
        if let Ok(assigned) = consumer.assignment() {
            for e in assigned.elements() {
                let key = (e.topic().to_string(), e.partition());
                if key != *partition && !self.progress.contains_key(&key) {
                    wanted.add_partition(&key.0, key.1);
                }
            }
        }
        let fetched = tokio::task::block_in_place(|| consumer.committed_offsets(wanted, Duration::from_secs(10)));
        match fetched {
            Ok(list) => {
                for e in list.elements() {
                    let committed = match e.offset() {
                        Offset::Offset(offset) => Committed { offset, above: DoneAbove::decode(offset, e.metadata()) },
                        _ => Committed { offset: 0, above: None },
                    };
                    tracing::info!(
                        stage,
                        topic = e.topic(),
                        partition = e.partition(),
                        offset = committed.offset,
                        done_above = committed.above.as_ref().map_or(0, DoneAbove::count),
                        metadata_bytes = e.metadata().len(),
                        "committed progress loaded"
                    );
                    self.progress.insert((e.topic().to_string(), e.partition()), committed);
                }
                self.progress.contains_key(partition)
            }
            Err(error) => {
                tracing::warn!(stage, topic = %partition.0, partition = partition.1, %error, "cannot read committed offsets");
                false
            }
        }
    }

    /// Forgets revoked partitions: their waiting work is dropped and their
    /// running work discarded when it finishes.
    pub(super) fn revoke(&mut self, partitions: &[PartitionKey]) {
        if partitions.is_empty() {
            return;
        }
        for p in partitions {
            *self.epochs.entry(p.clone()).or_default() += 1;
            self.progress.remove(p);
        }
        self.chains.retain(|(topic, partition, _, _), _| !partitions.iter().any(|(t, p)| t == topic && p == partition));
        self.tracker.forget(partitions);
    }

    /// Forgets everything, before the input is rewound.
    pub(super) fn reset(&mut self) {
        for epoch in self.epochs.values_mut() {
            *epoch += 1;
        }
        self.chains.clear();
        self.progress.clear();
        self.tracker.clear();
    }
}

/// A partition's committed position as read when it was assigned.
#[derive(Debug)]
struct Committed {
    offset: i64,
    above: Option<DoneAbove>,
}

impl Committed {
    /// Whether a record is already done: below the committed position (read
    /// again only if a commit landed after the consumer's position was
    /// fetched), or finished above it per the metadata.
    fn is_done(&self, offset: i64) -> bool {
        offset < self.offset || self.above.as_ref().is_some_and(|a| a.is_done(offset))
    }
}
