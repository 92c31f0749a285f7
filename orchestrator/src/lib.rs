//! Shoal orchestrator: watches market data (WebSocket) and business events
//! (Kafka), keeps state derived from them, issues commands to the workers
//! through Kafka, and records the results they send back.
//!
//! Three stages, all in one process by default, each able to run alone:
//! - `ingest`: WebSocket feed → ticks topic ([`feed`]);
//! - `decisions`: ticks and events topics → commands topic ([`decisions`]);
//! - `results`: commands and results topics → recorded outcomes ([`results`]).

pub mod decisions;
pub mod feed;
pub mod results;
pub mod rules;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_kafka as kafka;
use shoal_kafka::offsets::OffsetTracker;
use shoal_kafka::pipeline::{self, LoopSettings, PipelineStats, Processor};
use shoal_kafka::producer::TrackedProducer;
use shoal_kafka::tail::TailReader;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::decisions::{DecisionProcessor, DecisionStats, SequenceRecovery};
use crate::feed::{FeedStats, TickSink};
use crate::results::{Recorder, ResultProcessor, ResultStats};
use crate::rules::MarketRules;
use crate::settings::OrchestratorSettings;

/// Counters of every stage, for status lines and tests.
#[derive(Debug, Default, Clone)]
pub struct OrchestratorStats {
    /// Feed ingest.
    pub feed: Arc<FeedStats>,
    /// Decisions.
    pub decisions: Arc<DecisionStats>,
    /// Results.
    pub results: Arc<ResultStats>,
}

/// Runs the configured stages until `shutdown` is cancelled and they have
/// drained. Returns whether every stage stopped cleanly.
pub async fn run(
    settings: OrchestratorSettings,
    shutdown: CancellationToken,
    stats: OrchestratorStats,
) -> anyhow::Result<bool> {
    // Not ready until each stage registers its checks (after topics,
    // producers and state recovery), whatever passes before then.
    for (stage, check) in
        [("ingest", "ingest.feed"), ("decisions", "decisions.partitions"), ("results", "results.partitions")]
    {
        if settings.orchestrator.runs(stage) {
            shoal_telemetry::health::health().starting(check);
        }
    }
    if settings.topics.create {
        kafka::ensure_topics(&settings.kafka, &settings.topics).await.context("creating topics")?;
    }
    let o = &settings.orchestrator;
    let commit_interval = Duration::from_millis(o.commit_interval_ms);
    let status_interval =
        (settings.log.status_interval_secs > 0).then(|| Duration::from_secs(settings.log.status_interval_secs));
    let shutdown_timeout = settings.shutdown.timeout();
    let mut stages: JoinSet<(&'static str, bool)> = JoinSet::new();

    if o.runs("ingest") {
        let producer =
            TrackedProducer::new(&settings.kafka, &format!("{}-ingest", o.id), Arc::new(OffsetTracker::new()))
                .context("creating the ticks producer")?;
        stats.feed.register_metrics();
        let feed_stats = stats.feed.clone();
        let health = shoal_telemetry::health::health();
        health.register("ingest.feed", move || {
            if feed_stats.connected.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(())
            } else {
                Err("market data feed not connected and subscribed".into())
            }
        });
        let producer_health = producer.health().clone();
        health.register("ingest.kafka", move || producer_health.connected());
        let sink = TickSink {
            producer: producer.clone(),
            topic: settings.topics.ticks.name.clone(),
            producer_id: o.id.clone(),
        };
        let (feed_settings, token, feed_stats) = (settings.feed.clone(), shutdown.child_token(), stats.feed.clone());
        let dedupe = recover_ingest_state(&settings).await?;
        if let Some(interval) = status_interval {
            spawn_feed_status(stats.feed.clone(), interval, shutdown.child_token());
        }
        stages.spawn(async move {
            feed::run_with(feed_settings, sink, token, feed_stats, dedupe).await;
            let flushed = producer.flush(shutdown_timeout).await;
            if let Err(error) = &flushed {
                tracing::warn!(%error, "ticks not all delivered before shutdown");
            }
            ("ingest", flushed.is_ok())
        });
    }

    let consuming = ConsumingStage { settings: &settings, commit_interval, status_interval, shutdown: &shutdown };
    if o.runs("decisions") {
        let deadline_ms = settings.rules.command_deadline_ms;
        let topics = [settings.topics.ticks.name.as_str(), settings.topics.events.name.as_str()];
        stats.decisions.register_metrics();
        let tail = TailReader::new(&settings.kafka, &format!("{}-sequences", o.id), &settings.topics.commands.name)
            .context("creating the commands topic reader")?;
        let recovery = SequenceRecovery { tail, current: false };
        consuming.spawn(&mut stages, "decisions", &o.decisions_group, &topics, || DecisionProcessor {
            producer_id: o.id.clone(),
            ticks_topic: settings.topics.ticks.name.clone(),
            commands_topic: settings.topics.commands.name.clone(),
            dlq_topic: settings.topics.dlq.name.clone(),
            deadline: (deadline_ms > 0)
                .then(|| chrono::Duration::milliseconds(i64::try_from(deadline_ms).unwrap_or(i64::MAX))),
            rules: MarketRules::new(settings.rules.clone()),
            sequences: HashMap::new(),
            recovery,
            stats: stats.decisions.clone(),
            consumer_group: o.decisions_group.clone(),
        })?;
    }

    if o.runs("results") {
        let record_file = if settings.results.record_path.is_empty() {
            None
        } else {
            let path = &settings.results.record_path;
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening results.record_path {path:?}"))?,
            )
        };
        let topics = [settings.topics.commands.name.as_str(), settings.topics.results.name.as_str()];
        stats.results.register_metrics();
        consuming.spawn(&mut stages, "results", &o.results_group, &topics, || ResultProcessor {
            commands_topic: settings.topics.commands.name.clone(),
            dlq_topic: settings.topics.dlq.name.clone(),
            recorder: Recorder::new(settings.results.max_pending, record_file, stats.results.clone()),
            stats: stats.results.clone(),
            consumer_group: o.results_group.clone(),
        })?;
    }

    tracing::info!(id = %o.id, stages = ?o.stages, delivery = ?settings.delivery.mode, "orchestrator started");
    let mut clean = true;
    while let Some(joined) = stages.join_next().await {
        match joined {
            Ok((stage, stage_clean)) => {
                tracing::info!(stage, clean = stage_clean, "stage finished");
                clean &= stage_clean;
            }
            Err(error) => {
                tracing::error!(%error, "stage task failed");
                clean = false;
            }
        }
        // A stage that ends on its own (not by shutdown) takes the rest down.
        shutdown.cancel();
    }
    Ok(clean)
}

/// Reads the tail of the ticks topic so ingest does not write again the
/// trades a previous run already wrote (see [`feed::dedupe`]).
async fn recover_ingest_state(settings: &OrchestratorSettings) -> anyhow::Result<feed::dedupe::Dedupe> {
    let tail = settings.feed.recover_tail_records;
    if tail == 0 {
        return Ok(feed::dedupe::Dedupe::new());
    }
    let (kafka, topic) = (settings.kafka.clone(), settings.topics.ticks.name.clone());
    let tail = i64::try_from(tail).unwrap_or(i64::MAX);
    let timeout = settings.shutdown.timeout().max(Duration::from_secs(10));
    // A topic created a moment ago may not have partition leaders yet
    // (NotLeaderForPartition): try again for a while before giving up.
    let deadline = tokio::time::Instant::now() + timeout;
    let recovered = loop {
        let (kafka, topic) = (kafka.clone(), topic.clone());
        let attempt = tokio::task::spawn_blocking(move || feed::dedupe::recover(&kafka, &topic, tail, timeout))
            .await
            .context("recovery task failed")?;
        match attempt {
            Ok(recovered) => break recovered,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "cannot read the ticks topic's tail yet; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error).context("recovering the last trade ids from the ticks topic"),
        }
    };
    let (dedupe, report) = recovered;
    tracing::info!(
        ticks_read = report.ticks_read,
        keys = report.keys,
        "ingest dedupe state recovered from the ticks topic"
    );
    Ok(dedupe)
}

/// Logs the feed counters every `interval`.
fn spawn_feed_status(stats: Arc<FeedStats>, interval: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                connected = stats.connected.load(std::sync::atomic::Ordering::Relaxed),
                frames = load(&stats.frames),
                ticks = load(&stats.ticks),
                book_tops = load(&stats.book_tops),
                data_quality = load(&stats.data_quality),
                malformed = load(&stats.malformed),
                sequence_gaps = load(&stats.sequence_gaps),
                duplicates = load(&stats.duplicates),
                out_of_order = load(&stats.out_of_order),
                coalesced = load(&stats.coalesced),
                queue_high_water = load(&stats.queue_high_water),
                reconnects = load(&stats.reconnects),
                stale_reconnects = load(&stats.stale_reconnects),
                produce_errors = load(&stats.produce_errors),
                "feed status"
            );
        }
    });
}

/// What the two Kafka-consuming stages share: a tracked producer, a group
/// consumer that commits before revocation, and the pipeline loop.
struct ConsumingStage<'a> {
    settings: &'a OrchestratorSettings,
    commit_interval: Duration,
    status_interval: Option<Duration>,
    shutdown: &'a CancellationToken,
}

impl ConsumingStage<'_> {
    fn spawn<P: Processor + 'static>(
        &self,
        stages: &mut JoinSet<(&'static str, bool)>,
        name: &'static str,
        group: &str,
        topics: &[&str],
        processor: impl FnOnce() -> P,
    ) -> anyhow::Result<()> {
        let s = self.settings;
        let shutdown_timeout = s.shutdown.timeout();
        let connected =
            pipeline::connect(&s.kafka, &s.delivery, name, &s.orchestrator.id, group, topics, shutdown_timeout / 2)
                .with_context(|| format!("joining the {name} consumer group"))?;
        let mut processor = processor();
        let loop_settings = LoopSettings {
            name,
            commit_interval: self.commit_interval,
            status_interval: self.status_interval,
            shutdown_timeout,
            // The orchestrator's stages do their work as records arrive, in
            // order; the bounds only matter for the commit metadata.
            max_concurrency: pipeline::MAX_IN_FLIGHT,
            max_in_flight: pipeline::MAX_IN_FLIGHT,
            session_timeout: Duration::from_millis(u64::from(s.kafka.session_timeout_ms)),
        };
        let token = self.shutdown.child_token();
        stages.spawn(async move {
            let report = pipeline::run(
                connected.consumer,
                connected.group,
                connected.delivery,
                &mut processor,
                token,
                &loop_settings,
                Arc::new(PipelineStats::default()),
            )
            .await;
            (name, report.clean())
        });
        Ok(())
    }
}
