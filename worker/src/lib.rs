//! Shoal worker: a member of the workers' consumer group on the commands
//! topic. It dispatches each command by kind to a handler, publishes a
//! result keyed like the command, and commits a command's offset only after
//! its result is acknowledged (at-least-once).

pub mod dedupe;
pub mod flow;
pub mod handlers;
pub mod journal;
pub mod keyed;
pub mod levels;
pub mod processor;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use shoal_kafka as kafka;
use shoal_kafka::pipeline::DrainReport;
use shoal_kafka::settings::DeliveryMode;
use shoal_kafka::stage::StageSpec;
use shoal_protocol::messages::kinds;
use shoal_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use crate::dedupe::{TailReader, Window};
use crate::handlers::Registry;
use crate::journal::{Journal, JournalStats, KafkaStore};
use crate::processor::{CommandProcessor, Dedupe, Executor, RetryPolicy, WorkerStats};
use crate::settings::WorkerSettings;

/// The worker's stage name (logs, metrics, readiness checks).
pub const STAGE: &str = "worker";

/// Runs a worker until `shutdown` is cancelled, then drains within the
/// configured bound. Counters are published into `stats` as it goes, and
/// metrics and readiness checks into `telemetry`.
pub async fn run(
    settings: WorkerSettings,
    mut registry: Registry,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
    telemetry: Telemetry,
) -> anyhow::Result<DrainReport> {
    use anyhow::Context as _;
    let w = &settings.worker;
    let flow_stats = Arc::new(flow::FlowStats::default());
    let env = settings.stage_env(&w.id, &telemetry);
    env.announce(STAGE);
    kafka::access::check_credentials(&settings.kafka).await?;
    if settings.topics.create {
        kafka::ensure_topics(&settings.kafka, &settings.topics).await.context("creating topics")?;
    }
    register_configured(&settings, &mut registry, &flow_stats)?;
    let stage = env
        .connect(&StageSpec {
            name: STAGE,
            group: &w.group_id,
            topics: &[&settings.topics.commands.name],
            max_concurrency: w.max_concurrency,
            max_in_flight: w.max_in_flight,
            commit_interval: Duration::from_millis(w.commit_interval_ms),
        })
        .context("joining the workers' consumer group")?;
    tracing::info!(worker_id = %w.id, group = %w.group_id, delivery = ?settings.delivery.mode, topic = %settings.topics.commands.name, kinds = ?registry.kinds(), "worker started");
    stats.register_metrics(&telemetry.metrics, &[]);
    flow_stats.register_metrics(&telemetry.metrics, &[]);
    let level_stats = Arc::new(levels::LevelStats::default());
    level_stats.register_metrics(&telemetry.metrics, &[]);
    let next_topic = Some(w.next_topic.clone()).filter(|t| !t.is_empty());
    if let Some(topic) = &next_topic {
        tracing::info!(topic, "commands emitted by skills go to the next level");
    }
    let flow = Arc::new(flow_control(w, flow_stats));
    let journal_stats = Arc::new(JournalStats::default());
    journal_stats.register_metrics(&telemetry.metrics, &[]);
    let store = KafkaStore::new(&settings.kafka, &format!("{}-journal", w.id), &settings.topics.journal.name)
        .context("creating the journal's producer")?;
    let group = stage.group().clone();
    let rebalances = move || group.rebalances.load(std::sync::atomic::Ordering::Relaxed);
    let journal = Journal::new(Arc::new(store), &w.id, rebalances, journal_stats);
    let journal = Arc::new(fence_effects(journal, &settings, stage.group().clone(), &shutdown));
    let restorer = keyed::Restorer::new(
        &settings.kafka,
        &format!("{}-state", w.id),
        &settings.topics.results.name,
        registry.keyed_states(),
        w.state_restore_results,
    )
    .context("creating the reader that restores the skills' state")?;
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
        metrics: telemetry.metrics.clone(),
        sampler: telemetry.sampler.clone(),
        journal,
        flow,
        next: levels::NextLevel { topic: next_topic, stats: level_stats },
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
    let mut processor = CommandProcessor::new(exec, stage.group().clone(), dedupe).with_restorer(restorer);
    Ok(stage.run(&mut processor, shutdown).await)
}

/// Adds the skills the configuration turns on to `registry`.
fn register_configured(
    settings: &WorkerSettings,
    registry: &mut Registry,
    flow_stats: &Arc<flow::FlowStats>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let w = &settings.worker;
    if w.probe_handler {
        registry.register(handlers::PROBE_KIND, handlers::ProbeHandler);
    }
    if settings.llm.enabled {
        let budget = match w.flow.llm.tokens_per_key_per_minute {
            0 => None,
            per_minute => Some(Arc::new(flow::TokenBudget::new(per_minute))),
        };
        let skill = handlers::llm::LlmHandler::new(&settings.llm)
            .context("setting up the LLM skill ([llm])")?
            .with_key_budget(budget, flow_stats.clone());
        tracing::info!(endpoint = %settings.llm.endpoint, model = %settings.llm.model, "LLM skill enabled");
        registry.register(handlers::llm::LLM_DECIDE, skill);
    }
    registry.register_skill(handlers::iot::DeviceCheckSkill::new(w.iot.clone()));
    if !w.fraud.case_key.is_empty() {
        registry.register(kinds::SCORE_TRANSACTION, handlers::fraud::CaseFeedingScore::new(&w.fraud.case_key));
    }
    if w.cases.enabled {
        registry.register_skill(handlers::cases::CaseSkill::default());
        registry.register(handlers::cases::DECIDE_CASE, handlers::pure(handlers::cases::decide));
    }
    if w.incidents.enabled {
        registry.register_skill(handlers::incidents::IncidentSkill::new(&w.incidents));
        registry.register(handlers::incidents::NOTIFY_INCIDENT, handlers::pure(handlers::incidents::notify));
    }
    if !w.strategy.order_account.is_empty() {
        registry.register_skill(handlers::strategy::OrderingStrategy::new(w.strategy.clone()));
    }
    if w.paper.enabled {
        registry.register_skill(handlers::paper::PaperSkill::new(w.paper.clone()));
    }
    if let Some(webhook) = handlers::webhook::WebhookHandler::from_settings(&w.webhook)? {
        registry.register(handlers::webhook::KIND, webhook);
    }
    Ok(())
}

/// The worker's flow control, with a warning when its priorities cannot
/// act on every command read (docs/flow-control.md, "Head of line").
fn flow_control(w: &settings::WorkerSection, stats: Arc<flow::FlowStats>) -> flow::FlowControl {
    let settings = &w.flow;
    let slots = if settings.slots == 0 { w.max_concurrency } else { settings.slots };
    if settings.limits_kinds() {
        tracing::info!(slots, kinds = ?settings.kinds.keys().collect::<Vec<_>>(), "flow control by kind");
        if w.max_concurrency < w.max_in_flight {
            tracing::warn!(
                max_concurrency = w.max_concurrency,
                max_in_flight = w.max_in_flight,
                "commands waiting for admission hold one of worker.max_concurrency pipeline slots each: \
                 set worker.max_concurrency to worker.max_in_flight (and worker.flow.slots to the handlers \
                 you want at once) so that priorities act on every command read"
            );
        }
    }
    flow::FlowControl::new(settings, w.max_concurrency, stats)
}

/// Fences the journal's effects: a ticker notices pauses of this process,
/// and an effect runs only while the command's partition is still assigned
/// here (`docs/journal.md`, "Zombies").
fn fence_effects(
    journal: Journal,
    settings: &WorkerSettings,
    group: Arc<kafka::consumer::GroupStats>,
    shutdown: &CancellationToken,
) -> Journal {
    let fence = Arc::new(journal::Fence::new(Duration::from_millis(u64::from(settings.kafka.session_timeout_ms))));
    let (ticking, ticker_group, stop) = (fence.clone(), group.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(journal::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => ticking.tick(ticker_group.rebalances.load(std::sync::atomic::Ordering::Relaxed)),
            }
        }
    });
    let topic = settings.topics.commands.name.clone();
    let (owner, revoked) = (group.clone(), topic.clone());
    journal.with_membership(
        fence,
        move |partition| owner.owns(&topic, partition),
        move |partition| group.revocations(&revoked, partition),
    )
}
