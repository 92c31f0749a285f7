//! Shoal orchestrator: watches market data (WebSocket) and business events
//! (Kafka), keeps state derived from them, issues commands to the workers
//! through Kafka, and records the results they send back.
//!
//! Three stages, all in one process by default, each able to run alone:
//! - `ingest`: WebSocket feed → ticks topic ([`feed`]);
//! - `decisions`: ticks and events topics → commands topic ([`decisions`]);
//! - `results`: commands, results and dead-letter topics → recorded
//!   outcomes ([`results`]).
//!
//! Both consuming stages keep the state derived from what they read
//! ([`state`]), served by the query API.

pub mod approvals;
pub mod decisions;
pub mod feed;
pub mod requests;
pub mod results;
pub mod rules;
pub mod sequences;
pub mod settings;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_kafka as kafka;
use shoal_kafka::offsets::OffsetTracker;
use shoal_kafka::pipeline::{self, Processor};
use shoal_kafka::producer::TrackedProducer;
use shoal_kafka::stage::{Stage, StageEnv, StageSpec};
use shoal_kafka::tail::TailReader;
use shoal_telemetry::Telemetry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::approvals::{ApprovalRules, ApprovalsSink, Expiry};
use crate::decisions::{DecisionProcessor, DecisionStats, SequenceRecovery};
use crate::feed::{FeedStats, TickSink};
use crate::results::{Recorder, ResultProcessor, ResultStats};
use crate::sequences::Sequences;
use crate::settings::OrchestratorSettings;
use crate::state::log::LogReader;
use crate::state::members::{self, Announcer, KafkaDirectory};
use crate::state::{Shards, StateStats};

/// Counters of every stage, for status lines and tests.
#[derive(Debug, Default, Clone)]
pub struct OrchestratorStats {
    /// Feed ingest.
    pub feed: Arc<FeedStats>,
    /// Decisions.
    pub decisions: Arc<DecisionStats>,
    /// Results.
    pub results: Arc<ResultStats>,
    /// The decisions stage's state (ticks and events).
    pub decisions_state: Arc<StateStats>,
    /// The results stage's state (commands, results, dead letters).
    pub results_state: Arc<StateStats>,
}

/// Stage tasks: each yields its name and whether it stopped cleanly.
type Stages = JoinSet<(&'static str, bool)>;

/// Runs the configured stages until `shutdown` is cancelled and they have
/// drained. Returns whether every stage stopped cleanly. Counters go into
/// `stats`, metrics and readiness checks into `telemetry`.
pub async fn run(
    settings: OrchestratorSettings,
    shutdown: CancellationToken,
    stats: OrchestratorStats,
    telemetry: Telemetry,
) -> anyhow::Result<bool> {
    let o = &settings.orchestrator;
    let env = settings.stage_env(&o.id, &telemetry);
    // Not ready until each stage registers its checks (after topics,
    // producers and state recovery), whatever passes before then.
    if o.runs("ingest") {
        telemetry.health.starting("ingest.feed");
    }
    for stage in [decisions::STAGE, results::STAGE] {
        if o.runs(stage) {
            env.announce(stage);
        }
    }
    kafka::access::check_credentials(&settings.kafka).await?;
    if settings.topics.create {
        kafka::ensure_topics(&settings.kafka, &settings.topics).await.context("creating topics")?;
    }
    let mut stages = Stages::new();
    if o.runs("ingest") {
        spawn_ingest(&settings, &env, &stats.feed, &shutdown, &mut stages).await?;
    }
    let stateful = o.runs(decisions::STAGE) || o.runs(results::STAGE);
    let hub = if stateful { start_api(&settings, &shutdown).await? } else { Arc::new(shoal_api::Hub::new()) };
    if o.runs(decisions::STAGE) {
        let token = shutdown.child_token();
        let shards = shards(&settings, &env, decisions::STAGE, &hub, &stats.decisions_state)?;
        let (stage, processor) = decisions_stage(&settings, &env, &stats.decisions, shards, token.clone())?;
        spawn_stage(&mut stages, decisions::STAGE, stage, processor, token);
    }
    if o.runs(results::STAGE) {
        let token = shutdown.child_token();
        let shards = shards(&settings, &env, results::STAGE, &hub, &stats.results_state)?;
        let (stage, processor) = results_stage(&settings, &env, &stats.results, shards, token.clone())?;
        spawn_stage(&mut stages, results::STAGE, stage, processor, token);
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

/// Feed ingest: the WebSocket feed into the ticks topic, with its readiness
/// checks, metrics and status line.
async fn spawn_ingest(
    settings: &OrchestratorSettings,
    env: &StageEnv,
    stats: &Arc<FeedStats>,
    shutdown: &CancellationToken,
    stages: &mut Stages,
) -> anyhow::Result<()> {
    let o = &settings.orchestrator;
    let producer = TrackedProducer::new(&settings.kafka, &format!("{}-ingest", o.id), Arc::new(OffsetTracker::new()))
        .context("creating the ticks producer")?;
    stats.register_all(&env.telemetry.metrics);
    let feed_stats = stats.clone();
    let health = &env.telemetry.health;
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
        sampler: env.telemetry.sampler.clone(),
    };
    let (feed_settings, token, feed_stats) = (settings.feed.clone(), shutdown.child_token(), stats.clone());
    let dedupe = recover_ingest_state(settings).await?;
    if let Some(interval) = env.status_interval {
        spawn_feed_status(stats.clone(), interval, shutdown.child_token());
    }
    let shutdown_timeout = env.shutdown_timeout;
    stages.spawn(async move {
        feed::run_with(feed_settings, sink, token, feed_stats.clone(), dedupe).await;
        let flushed = producer.flush(shutdown_timeout).await;
        if let Err(error) = &flushed {
            tracing::warn!(%error, "ticks not all delivered before shutdown");
        }
        // Every record enqueued must have a delivery report by now.
        feed::DeliveryAccount::of(&feed_stats, producer.health().deliveries()).log();
        ("ingest", flushed.is_ok())
    });
    Ok(())
}

/// Joins a consuming stage's group. The orchestrator's stages do their work
/// as records arrive, in order; the bounds only matter for the commit
/// metadata.
fn connect(
    settings: &OrchestratorSettings,
    env: &StageEnv,
    name: &'static str,
    group: &str,
    topics: &[&str],
) -> anyhow::Result<Stage> {
    let spec = StageSpec {
        name,
        group,
        topics,
        max_concurrency: pipeline::MAX_IN_FLIGHT,
        max_in_flight: pipeline::MAX_IN_FLIGHT,
        commit_interval: Duration::from_millis(settings.orchestrator.commit_interval_ms),
    };
    env.connect(&spec).with_context(|| format!("joining the {name} consumer group"))
}

/// The input topics whose state a stage keeps.
fn state_inputs(settings: &OrchestratorSettings) -> Vec<(String, i32)> {
    let (o, t) = (&settings.orchestrator, &settings.topics);
    let mut inputs = Vec::new();
    if o.runs(decisions::STAGE) {
        inputs.extend([&t.ticks, &t.events, &t.approvals]);
    }
    if o.runs(results::STAGE) {
        inputs.extend([&t.commands, &t.results, &t.dlq]);
    }
    inputs.iter().map(|t| (t.name.clone(), t.replication)).collect()
}

/// Ensures the state topics of the stages that run, and starts the state
/// query API (`api.listen`; empty: off), the members directory it forwards
/// through, and the announcement of this instance's shards. The stages
/// publish their shards to the returned hub either way.
async fn start_api(
    settings: &OrchestratorSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<shoal_api::Hub>> {
    let (o, api) = (&settings.orchestrator, &settings.api);
    let hub = Arc::new(shoal_api::Hub::new());
    state::topics::ensure(&settings.kafka, &settings.state, &state_inputs(settings), &o.id, settings.topics.create)
        .await
        .context("the state topics")?;
    if api.listen.is_empty() {
        tracing::info!("state query API off (api.listen is empty)");
        return Ok(hub);
    }
    let tokens = shoal_api::auth::load(api).context("loading the API tokens")?;
    let identity = api_tls_identity(api)?;
    let listener = tokio::net::TcpListener::bind(&api.listen)
        .await
        .with_context(|| format!("api.listen: cannot listen on {:?}", api.listen))?;
    let local = listener.local_addr().context("api.listen: local address")?;
    let scheme = if identity.is_some() { "https" } else { "http" };
    let url = if api.advertised_url.is_empty() { format!("{scheme}://{local}") } else { api.advertised_url.clone() };
    let listener =
        shoal_api::http::ApiListener::new(listener, identity.as_ref()).context("api.listen: TLS listener")?;
    let directory =
        KafkaDirectory::start(&settings.kafka, &settings.state.members_topic, &o.id, shutdown.child_token())
            .context("reading the members topic")?;
    let announcer = Announcer::new(&settings.kafka, &settings.state.members_topic, &o.id, &url)?;
    tokio::spawn(members::announce(announcer, hub.clone(), shutdown.child_token()));
    let ctx = shoal_api::ApiContext {
        hub: hub.clone(),
        settings: Arc::new(api.clone()),
        tokens: Arc::new(tokens),
        directory,
        instance: o.id.clone(),
        subscriptions: Arc::default(),
    };
    let app = api_app(settings, &ctx, shutdown)?;
    tracing::info!(listen = %local, advertised = %url, mcp = api.mcp, issue_commands = api.issue_commands, "state query API listening");
    let token = shutdown.child_token();
    tokio::spawn(async move {
        if let Err(error) = shoal_api::http::serve_app(&ctx, app, listener, token).await {
            tracing::error!(%error, "state query API stopped");
        }
    });
    Ok(hub)
}

/// The API's TLS identity (`api.tls_cert_file`, `api.tls_key_file`), loaded
/// now so that a bad file stops the start, naming the setting and the file.
fn api_tls_identity(api: &shoal_api::ApiSettings) -> anyhow::Result<Option<shoal_tls::TlsIdentity>> {
    shoal_tls::TlsIdentity::from_settings("api", &api.tls_cert_file, &api.tls_key_file).map_err(anyhow::Error::msg)
}

/// The API's routes, with command requests (`api.issue_commands`) and MCP
/// at `/mcp` (`api.mcp`, behind the same tokens) when enabled.
fn api_app(
    settings: &OrchestratorSettings,
    ctx: &shoal_api::ApiContext,
    shutdown: &CancellationToken,
) -> anyhow::Result<axum::Router> {
    let api = &settings.api;
    let mut app = shoal_api::http::router(ctx.clone());
    if api.issue_commands {
        let sink = requests::EventsSink::new(&settings.kafka, &settings.topics.events.name, &settings.orchestrator.id)
            .context("creating the command requests' producer")?;
        let per_minute = std::num::NonZeroU32::new(api.issue_rate_per_minute)
            .context("api.issue_rate_per_minute must be at least 1")?;
        let requests = shoal_api::http::requests::Requests::new(Arc::new(sink), per_minute);
        app = app.layer(axum::Extension(Arc::new(requests)));
        tracing::warn!(per_minute, "command requests accepted from admin tokens (api.issue_commands = true)");
    }
    if !settings.rules.approval_kinds.is_empty() {
        let sink = ApprovalsSink::new(
            &settings.kafka,
            &settings.topics.approvals.name,
            &settings.orchestrator.id,
            "approvals",
        )
        .context("creating the approval decisions' producer")?;
        let approvals = shoal_api::http::approvals::Approvals::new(Arc::new(sink));
        app = app.layer(axum::Extension(Arc::new(approvals)));
    }
    if api.mcp {
        let options = shoal_mcp::http::HttpOptions {
            allowed_hosts: api.mcp_allowed_hosts.clone(),
            poll: Duration::from_millis(api.mcp_poll_ms),
        };
        let mcp = shoal_mcp::http::routes(app.clone(), options, shutdown.child_token());
        app = app.merge(shoal_api::http::behind_read_token(ctx, mcp));
    }
    Ok(app)
}

/// A stage's state shards, publishing to `hub`, counted with the stage's
/// label.
fn shards(
    settings: &OrchestratorSettings,
    env: &StageEnv,
    stage: &'static str,
    hub: &Arc<shoal_api::Hub>,
    stats: &Arc<StateStats>,
) -> anyhow::Result<Shards> {
    let o = &settings.orchestrator;
    let reader = LogReader::new(&settings.kafka, &format!("{}-{stage}-state", o.id))
        .with_context(|| format!("creating the {stage} state reader"))?;
    stats.register_metrics(&env.telemetry.metrics, &[("stage", stage.to_string())]);
    let (state, rules, inputs) = (settings.state.clone(), settings.rules.clone(), settings.input_topics());
    Ok(Shards::new(state, rules, inputs, reader, hub.clone(), stats.clone()))
}

/// Decisions: ticks and events in, state and commands out.
fn decisions_stage(
    settings: &OrchestratorSettings,
    env: &StageEnv,
    stats: &Arc<DecisionStats>,
    shards: Shards,
    stop: CancellationToken,
) -> anyhow::Result<(Stage, DecisionProcessor)> {
    let o = &settings.orchestrator;
    let t = &settings.topics;
    let topics = [t.ticks.name.as_str(), t.events.name.as_str(), t.approvals.name.as_str()];
    let tail = TailReader::new(&settings.kafka, &format!("{}-sequences", o.id), &settings.topics.commands.name)
        .context("creating the commands topic reader")?;
    let stage = connect(settings, env, decisions::STAGE, &o.decisions_group, &topics)?;
    stats.register_metrics(&env.telemetry.metrics, &[]);
    let deadline_ms = settings.rules.command_deadline_ms;
    let (approvals, expiry) = approval_rules(settings)?;
    let processor = DecisionProcessor {
        producer_id: o.id.clone(),
        commands_topic: settings.topics.commands.name.clone(),
        deadline: (deadline_ms > 0)
            .then(|| chrono::Duration::milliseconds(i64::try_from(deadline_ms).unwrap_or(i64::MAX))),
        topics: settings.input_topics(),
        rules: settings.rules.clone(),
        shards,
        stop,
        sequences: Sequences::default(),
        recovery: SequenceRecovery { tail },
        stats: stats.clone(),
        consumer_group: o.decisions_group.clone(),
        metrics: env.telemetry.metrics.clone(),
        sampler: env.telemetry.sampler.clone(),
        approvals,
        expiry,
    };
    Ok((stage, processor))
}

/// The decisions stage's approval rules, and its expiry timer when a kind
/// needs approval.
fn approval_rules(settings: &OrchestratorSettings) -> anyhow::Result<(ApprovalRules, Option<Expiry>)> {
    let r = &settings.rules;
    let rules = ApprovalRules {
        kinds: r.approval_kinds.clone(),
        timeout: chrono::Duration::milliseconds(i64::try_from(r.approval_timeout_ms).unwrap_or(i64::MAX)),
        topic: settings.topics.approvals.name.clone(),
    };
    if r.approval_kinds.is_empty() {
        return Ok((rules, None));
    }
    let sink = ApprovalsSink::new(&settings.kafka, &rules.topic, &settings.orchestrator.id, "expiry")
        .context("creating the approval expiries' producer")?;
    tracing::info!(kinds = ?r.approval_kinds, timeout_ms = r.approval_timeout_ms, "commands of these kinds wait for approval");
    Ok((rules, Some(Expiry::new(Arc::new(sink)))))
}

/// Results: commands and results in, outcomes recorded.
fn results_stage(
    settings: &OrchestratorSettings,
    env: &StageEnv,
    stats: &Arc<ResultStats>,
    shards: Shards,
    stop: CancellationToken,
) -> anyhow::Result<(Stage, ResultProcessor)> {
    let o = &settings.orchestrator;
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
    let t = &settings.topics;
    let topics = [t.commands.name.as_str(), t.results.name.as_str(), t.dlq.name.as_str()];
    let stage = connect(settings, env, results::STAGE, &o.results_group, &topics)?;
    stats.register_metrics(&env.telemetry.metrics, &[]);
    let recorder =
        Recorder::new(settings.results.max_pending, record_file, stats.clone(), env.telemetry.metrics.clone());
    let processor = ResultProcessor {
        topics: settings.input_topics(),
        shards,
        stop,
        recorder,
        stats: stats.clone(),
        consumer_group: o.results_group.clone(),
        sampler: env.telemetry.sampler.clone(),
    };
    Ok((stage, processor))
}

/// Runs a connected stage as one of the orchestrator's tasks.
fn spawn_stage<P: Processor + 'static>(
    stages: &mut Stages,
    name: &'static str,
    stage: Stage,
    mut processor: P,
    shutdown: CancellationToken,
) {
    stages.spawn(async move {
        let report = stage.run(&mut processor, shutdown).await;
        (name, report.clean())
    });
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
                _ = ticker.tick() => stats.status(),
            }
        }
    });
}
