//! One stage layer: a Kafka-to-Kafka stage is declared once ([`StageSpec`]:
//! its name, consumer group, input topics and concurrency), and
//! [`StageEnv::connect`] joins its group with the producer side its delivery
//! mode needs, derives its loop and transaction settings from the typed
//! settings, and registers its metrics and readiness checks with the
//! application's [`Telemetry`]; [`Stage::run`] then runs the
//! [`pipeline`](crate::pipeline) until shutdown and drains it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_telemetry::Telemetry;
use shoal_telemetry::metrics::Metrics;
use shoal_telemetry::settings::LogSettings;
use tokio_util::sync::CancellationToken;

use crate::KafkaSetupError;
use crate::consumer::GroupStats;
use crate::offsets::OffsetTracker;
use crate::pipeline::{self, Delivery, DrainReport, LoopSettings, PipelineStats, Processor, TxSettings};
use crate::producer::TrackedProducer;
use crate::settings::{DeliveryMode, DeliverySettings, KafkaSettings};

/// What the stages of one application share.
#[derive(Debug, Clone)]
pub struct StageEnv {
    /// The cluster.
    pub kafka: KafkaSettings,
    /// Delivery mode and transaction bounds.
    pub delivery: DeliverySettings,
    /// This instance's id: client ids are `<instance>-<stage>`, transactional
    /// ids `<prefix>-<stage>-<instance>` (stable across restarts, so a
    /// restarted instance fences its zombie).
    pub instance: String,
    /// How often each stage logs its status line; `None` for never.
    pub status_interval: Option<Duration>,
    /// Bound on each stage's drain after shutdown is requested.
    pub shutdown_timeout: Duration,
    /// Where the stages' metrics and readiness checks go.
    pub telemetry: Telemetry,
}

/// One stage, declared once.
#[derive(Debug, Clone)]
pub struct StageSpec<'a> {
    /// Stage name: logs, metrics' `stage` label, readiness checks
    /// (`<name>.kafka`, `<name>.partitions`, `<name>.producer`).
    pub name: &'static str,
    /// Consumer group.
    pub group: &'a str,
    /// Input topics.
    pub topics: &'a [&'a str],
    /// Keys whose work runs at the same time.
    pub max_concurrency: usize,
    /// Records started but not finished (at most [`pipeline::MAX_IN_FLIGHT`]).
    pub max_in_flight: usize,
    /// How often finished offsets are committed (at-least-once).
    pub commit_interval: Duration,
}

impl StageEnv {
    /// The environment of an application's stages, from its typed settings.
    pub fn new(
        kafka: &KafkaSettings,
        delivery: &DeliverySettings,
        instance: &str,
        log: &LogSettings,
        shutdown_timeout: Duration,
        telemetry: &Telemetry,
    ) -> Self {
        Self {
            kafka: kafka.clone(),
            delivery: delivery.clone(),
            instance: instance.to_string(),
            status_interval: log.status_interval(),
            shutdown_timeout,
            telemetry: telemetry.clone(),
        }
    }

    /// Marks `stage` as starting: the application is not ready until the
    /// stage has joined its group and registered its real checks (otherwise,
    /// in the seconds before they exist, the checks registered so far could
    /// all pass).
    pub fn announce(&self, stage: &str) {
        self.telemetry.health.starting(format!("{stage}.partitions"));
    }

    /// Creates the producer side for the delivery mode, joins the stage's
    /// group and registers its metrics and readiness checks.
    pub fn connect(&self, spec: &StageSpec<'_>) -> Result<Stage, KafkaSetupError> {
        let client_id = format!("{}-{}", self.instance, spec.name);
        let (delivery, tracked) = match self.delivery.mode {
            DeliveryMode::AtLeastOnce => {
                let producer = TrackedProducer::in_order(&self.kafka, &client_id, Arc::new(OffsetTracker::new()))?;
                (Delivery::AtLeastOnce(producer.clone()), Some(producer))
            }
            DeliveryMode::ExactlyOnce => {
                let d = &self.delivery;
                let tx = TxSettings {
                    kafka: self.kafka.clone(),
                    client_id: client_id.clone(),
                    transactional_id: d.transactional_id(spec.name, &self.instance),
                    max_records: d.transaction_max_records,
                    max_age: Duration::from_millis(d.transaction_max_ms),
                    call_timeout: Duration::from_millis(d.transaction_call_timeout_ms),
                    history: (!d.history_path.is_empty()).then(|| d.history_path.clone().into()),
                    inject_abort_every: d.inject_abort_every,
                };
                (Delivery::ExactlyOnce(tx), None)
            }
        };
        let flush_timeout = self.shutdown_timeout / 2;
        let (consumer, group) =
            crate::consumer::subscribe(&self.kafka, spec.group, &client_id, spec.topics, tracked, flush_timeout)?;
        let settings = LoopSettings {
            name: spec.name,
            commit_interval: spec.commit_interval,
            status_interval: self.status_interval,
            shutdown_timeout: self.shutdown_timeout,
            max_concurrency: spec.max_concurrency,
            max_in_flight: spec.max_in_flight.min(pipeline::MAX_IN_FLIGHT),
            session_timeout: Duration::from_millis(u64::from(self.kafka.session_timeout_ms)),
        };
        let stats = Arc::new(PipelineStats::default());
        register(&self.telemetry, spec.name, &group, &delivery, &stats);
        Ok(Stage { consumer, group, delivery, settings, stats })
    }
}

/// A connected stage, ready to [`run`](Stage::run).
pub struct Stage {
    consumer: crate::consumer::GroupConsumer,
    group: Arc<GroupStats>,
    delivery: Delivery,
    settings: LoopSettings,
    stats: Arc<PipelineStats>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("settings", &self.settings)
            .field("group", &self.group)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl Stage {
    /// Its group membership counters (rebalances, assignment).
    pub fn group(&self) -> &Arc<GroupStats> {
        &self.group
    }

    /// Its pipeline counters.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// Runs the pipeline until `shutdown` is cancelled (or, exactly-once,
    /// the producer is fenced), then drains within the shutdown bound.
    pub async fn run<P: Processor>(self, processor: &mut P, shutdown: CancellationToken) -> DrainReport {
        pipeline::run(self.consumer, self.group, self.delivery, processor, shutdown, &self.settings, self.stats).await
    }
}

/// Metrics of the stage, and its readiness: connected to Kafka, partitions
/// assigned, producer usable.
fn register(
    telemetry: &Telemetry,
    stage: &'static str,
    group: &Arc<GroupStats>,
    delivery: &Delivery,
    stats: &Arc<PipelineStats>,
) {
    register_metrics(&telemetry.metrics, stage, stats, group);
    let health = &telemetry.health;
    let g = group.clone();
    health.register(format!("{stage}.kafka"), move || g.client.connected());
    let g = group.clone();
    health.register(format!("{stage}.partitions"), move || {
        if g.assigned.load(Ordering::Relaxed) > 0 {
            Ok(())
        } else {
            Err(format!(
                "no partitions assigned in group {} (not joined yet, or more members than partitions)",
                g.group_id
            ))
        }
    });
    match delivery {
        Delivery::AtLeastOnce(producer) => {
            let producer = producer.health().clone();
            health.register(format!("{stage}.producer"), move || producer.connected());
        }
        Delivery::ExactlyOnce(_) => {
            let s = stats.clone();
            health.register(format!("{stage}.producer"), move || {
                if s.producer_ready.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("transactional producer not initialised (starting, recreating after an error, or fenced)"
                        .into())
                }
            });
        }
    }
}

/// The stage's pipeline and group counters as metrics, and its group's
/// assignment, connectivity and lag.
fn register_metrics(metrics: &Metrics, stage: &'static str, pipeline: &Arc<PipelineStats>, group: &Arc<GroupStats>) {
    pipeline.register_metrics(metrics, &[("stage", stage.to_string())]);
    let group_labels = || vec![("stage", stage.to_string()), ("group", group.group_id.clone())];
    group.register_metrics(metrics, &group_labels());
    let g = group.clone();
    metrics.gauge(
        "shoal_consumer_assigned_partitions",
        "Partitions assigned to this member",
        group_labels(),
        move || g.assigned.load(Ordering::Relaxed),
    );
    let g = group.clone();
    metrics.gauge(
        "shoal_kafka_brokers_up",
        "Brokers the client is connected to (librdkafka statistics)",
        group_labels(),
        move || g.client.brokers().0,
    );
    let g = group.clone();
    metrics.gauges(
        "shoal_consumer_lag",
        "Messages between the consumer's position and the end (last stable offset) of each assigned partition, from librdkafka statistics",
        move |out| {
            for ((topic, partition), lag) in g.client.lag() {
                let labels = vec![
                    ("stage", stage.to_string()),
                    ("group", g.group_id.clone()),
                    ("topic", topic),
                    ("partition", partition.to_string()),
                ];
                out.push((labels, lag));
            }
        },
    );
}
