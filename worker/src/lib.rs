//! Shoal worker: a member of the workers' consumer group on the commands
//! topic. It dispatches each command by kind to a handler, publishes a
//! result keyed like the command, and commits a command's offset only after
//! its result is acknowledged (at-least-once).

pub mod dedupe;
pub mod handlers;
pub mod processor;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use shoal_kafka as kafka;
use shoal_kafka::pipeline::{self, DrainReport, LoopSettings, PipelineStats};
use shoal_kafka::settings::DeliveryMode;
use tokio_util::sync::CancellationToken;

use crate::dedupe::{TailReader, Window};
use crate::handlers::Registry;
use crate::processor::{CommandProcessor, Dedupe, Executor, RetryPolicy, WorkerStats};
use crate::settings::WorkerSettings;

/// Runs a worker until `shutdown` is cancelled, then drains within the
/// configured bound. Counters are published into `stats` as it goes.
pub async fn run(
    settings: WorkerSettings,
    mut registry: Registry,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
) -> anyhow::Result<DrainReport> {
    use anyhow::Context as _;
    // Not ready until the stage registers its checks (after topics and
    // producer), whatever passes before then.
    shoal_telemetry::health::health().starting("worker.partitions");
    if settings.topics.create {
        kafka::ensure_topics(&settings.kafka, &settings.topics).await.context("creating topics")?;
    }
    let w = &settings.worker;
    if w.probe_handler {
        registry.register(handlers::PROBE_KIND, handlers::ProbeHandler);
    }
    let connected = pipeline::connect(
        &settings.kafka,
        &settings.delivery,
        "worker",
        &w.id,
        &w.group_id,
        &[&settings.topics.commands.name],
        settings.shutdown.timeout() / 2,
    )
    .context("joining the workers' consumer group")?;
    tracing::info!(worker_id = %w.id, group = %w.group_id, delivery = ?settings.delivery.mode, topic = %settings.topics.commands.name, kinds = ?registry.kinds(), "worker started");
    stats.register_metrics();
    let exec = Executor {
        worker_id: w.id.clone(),
        results_topic: settings.topics.results.name.clone(),
        dlq_topic: settings.topics.dlq.name.clone(),
        registry,
        handler_timeout: Duration::from_millis(w.handler_timeout_ms),
        retry: RetryPolicy {
            max_attempts: w.max_attempts,
            initial: Duration::from_millis(w.retry_initial_ms),
            max: Duration::from_millis(w.retry_max_ms),
        },
        stats,
    };
    let dedupe = match settings.delivery.mode {
        DeliveryMode::ExactlyOnce => None,
        DeliveryMode::AtLeastOnce => {
            let window = Window::new(w.dedupe_window);
            let reader = TailReader::new(
                &settings.kafka,
                &format!("{}-dedupe", w.id),
                &settings.topics.results.name,
                window.clone(),
            )
            .context("creating the dedupe window's reader")?;
            Some(Dedupe { window, reader, loaded_at: None })
        }
    };
    let mut processor = CommandProcessor::new(exec, connected.group.clone(), dedupe);
    let loop_settings = LoopSettings {
        name: "worker",
        commit_interval: Duration::from_millis(w.commit_interval_ms),
        status_interval: (settings.log.status_interval_secs > 0)
            .then(|| Duration::from_secs(settings.log.status_interval_secs)),
        shutdown_timeout: settings.shutdown.timeout(),
        max_concurrency: w.max_concurrency,
        max_in_flight: w.max_in_flight,
        session_timeout: Duration::from_millis(u64::from(settings.kafka.session_timeout_ms)),
    };
    let pipeline_stats = Arc::new(PipelineStats::default());
    Ok(pipeline::run(
        connected.consumer,
        connected.group,
        connected.delivery,
        &mut processor,
        shutdown,
        &loop_settings,
        pipeline_stats,
    )
    .await)
}
