//! The integration tests' harness. Processes, topics, readers and the OTLP
//! receiver are `shoal-tools`' (shared with `shoal-bench` and
//! `shoal-chaos`); this crate adds [`App`]: a whole Shoal application
//! (orchestrator, worker, simulator) run inside the test process, in the
//! manner of zero-to-production's `spawn_app`. Each has its own metrics,
//! readiness checks and sampling ([`Telemetry`]), so several run side by
//! side in one process, and a test reads their counters directly. Process
//! tests stay for what needs a process: signals, kills, exit statuses,
//! the HTTP endpoints.

// A panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod pki;
pub mod webdriver;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_orchestrator::OrchestratorStats;
use shoal_orchestrator::settings::OrchestratorSettings;
pub use shoal_telemetry::Telemetry;
pub use shoal_tools::*;
use shoal_worker::handlers::Registry;
use shoal_worker::processor::WorkerStats;
use shoal_worker::settings::WorkerSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A Shoal application running in this process.
#[derive(Debug)]
pub struct App<S> {
    /// Its counters.
    pub stats: S,
    /// Its metrics, readiness checks and sampling.
    pub telemetry: Telemetry,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<bool>>,
}

/// Settings as the binary would load them from `launch`'s environment
/// (defaults, then the variables; no configuration file).
fn settings_of<T>(launch: &Launch) -> T
where
    T: Default + serde::Serialize + serde::de::DeserializeOwned + shoal_config::Validate,
{
    shoal_config::load_from(None, launch.env().iter().cloned()).expect("valid settings")
}

impl App<Arc<WorkerStats>> {
    /// Starts a worker configured as `launch` would start the process.
    pub fn worker(launch: &Launch) -> Self {
        let settings: WorkerSettings = settings_of(launch);
        let (stats, telemetry, shutdown) =
            (Arc::new(WorkerStats::default()), Telemetry::untraced(), CancellationToken::new());
        let run =
            shoal_worker::run(settings, Registry::with_builtin(), shutdown.clone(), stats.clone(), telemetry.clone());
        let task = tokio::spawn(async move { run.await.map(|report| report.clean()) });
        Self { stats, telemetry, shutdown, task }
    }
}

impl App<OrchestratorStats> {
    /// Starts an orchestrator configured as `launch` would start the process.
    pub fn orchestrator(launch: &Launch) -> Self {
        let mut settings: OrchestratorSettings = settings_of(launch);
        // The query API reads its tokens from this process's environment,
        // which the launch's settings do not reach; its tests run it in a
        // process of its own.
        settings.api.listen.clear();
        let (stats, telemetry, shutdown) =
            (OrchestratorStats::default(), Telemetry::untraced(), CancellationToken::new());
        let task = tokio::spawn(shoal_orchestrator::run(settings, shutdown.clone(), stats.clone(), telemetry.clone()));
        Self { stats, telemetry, shutdown, task }
    }
}

impl<S> App<S> {
    /// Whether every readiness check passes, and the failing ones.
    pub fn ready(&self) -> (bool, Vec<String>) {
        let (ready, checks) = self.telemetry.health.readiness();
        (ready, checks.into_iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.check, c.detail)).collect())
    }

    /// Waits until it is ready.
    pub async fn wait_ready(&self, timeout: Duration, what: &str) {
        eventually(timeout, what, || {
            let ready = self.ready().0;
            async move { ready }
        })
        .await;
    }

    /// Its metrics, as `/metrics` would serve them.
    pub fn metrics(&self) -> String {
        self.telemetry.metrics.encode()
    }

    /// The value of one sample of its metrics (`name{labels}`, as in the
    /// exposition), or 0 when absent.
    pub fn metric(&self, sample: &str) -> u64 {
        let text = self.metrics();
        let prefix = format!("{sample} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    }

    /// Asks it to stop (as SIGTERM does) and waits for the drain; returns
    /// whether it stopped cleanly.
    pub async fn stop(self, timeout: Duration) -> bool {
        self.shutdown.cancel();
        let joined = tokio::time::timeout(timeout, self.task).await.expect("stopped within the bound");
        joined.expect("app task").expect("app ran")
    }
}

/// A simulator served from this process; stopped when dropped.
#[derive(Debug)]
pub struct InProcessSim {
    /// `ws://` URL to connect to.
    pub url: String,
    shutdown: CancellationToken,
}

impl InProcessSim {
    /// Serves `symbols` at `rate` trades a second each, from `seed`.
    pub async fn start(symbols: &[&str], rate: f64, seed: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let config = shoal_sim::SimConfig {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            rate_per_symbol: rate,
            seed,
            ..shoal_sim::SimConfig::default()
        };
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = shoal_sim::serve(listener, config, token).await {
                tracing::error!(%error, "in-process simulator failed");
            }
        });
        Self { url: format!("ws://{address}"), shutdown }
    }
}

impl Drop for InProcessSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
