//! Shoal orchestrator: watches market data (WebSocket) and business events
//! (Kafka), keeps state derived from them, issues commands to the workers
//! through Kafka, and records the results they send back.
//!
//! Three stages, all in one process by default, each able to run alone:
//! - `ingest`: WebSocket feed → ticks topic ([`feed`]);
//! - `decisions`: ticks and events topics → commands topic ([`decisions`]);
//! - `results`: commands and results topics → recorded outcomes ([`results`]).
//!
//! The bundled market simulator lives here too ([`simulator`]).

pub mod decisions;
pub mod feed;
pub mod results;
pub mod rules;
pub mod settings;
pub mod simulator;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_common::kafka;
use shoal_common::kafka::offsets::OffsetTracker;
use shoal_common::kafka::pipeline::{self, LoopSettings, PipelineStats, Processor};
use shoal_common::kafka::producer::TrackedProducer;
use shoal_common::kafka::tail::TailReader;
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
        let sink = TickSink {
            producer: producer.clone(),
            topic: settings.topics.ticks.name.clone(),
            producer_id: o.id.clone(),
        };
        let (feed_settings, token, feed_stats) = (settings.feed.clone(), shutdown.child_token(), stats.feed.clone());
        stages.spawn(async move {
            feed::run(feed_settings, sink, token, feed_stats).await;
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
        consuming.spawn(&mut stages, "results", &o.results_group, &topics, || ResultProcessor {
            commands_topic: settings.topics.commands.name.clone(),
            dlq_topic: settings.topics.dlq.name.clone(),
            recorder: Recorder::new(settings.results.max_pending, record_file, stats.results.clone()),
            stats: stats.results.clone(),
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
