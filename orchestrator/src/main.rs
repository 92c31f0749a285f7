//! `shoal-orchestrator` binary: configuration, telemetry, signals, exit status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shoal_common::settings;
use shoal_orchestrator::OrchestratorStats;
use shoal_orchestrator::settings::OrchestratorSettings;

/// Shoal orchestrator: ingests a market data WebSocket feed into Kafka,
/// derives per-symbol state from ticks and business events, issues commands
/// to the workers through Kafka, and records the results they return.
///
/// Stages (all run by default; pick some with orchestrator.stages):
///   ingest     WebSocket feed  -> ticks topic
///   decisions  ticks + events  -> commands topic (keyed by entity, per-key seq)
///   results    commands + results -> recorded outcomes (log, optional JSONL file)
///
/// Configuration comes from built-in defaults, then the file given with
/// --config (or ./shoal.toml if present), then environment variables named
/// SHOAL__SECTION__KEY, e.g. SHOAL__FEED__URL=ws://127.0.0.1:9001 or
/// SHOAL__ORCHESTRATOR__STAGES=ingest,decisions. SIGINT/SIGTERM stop it
/// gracefully within shutdown.timeout_ms; a second signal exits at once.
#[derive(Debug, Parser)]
#[command(name = "shoal-orchestrator", version, verbatim_doc_comment)]
struct Cli {
    /// Configuration file (TOML). Without it, ./shoal.toml is read if present.
    #[arg(long, short = 'c', env = "SHOAL_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings: OrchestratorSettings = match settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(error) => {
            eprintln!("shoal-orchestrator: {error}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        #[allow(clippy::print_stdout)] // CLI output the user asked for.
        {
            println!("{}", serde_json::to_string_pretty(&settings::redacted(&settings)).unwrap_or_default());
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("shoal-orchestrator: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = shoal_common::telemetry::init("shoal-orchestrator", settings.log.format, &settings.log.level);
        let shutdown = shoal_common::shutdown::install_signal_handlers();
        // Each drain step is bounded by shutdown.timeout_ms; this is the
        // backstop for the whole process, with a second of slack for exit.
        shoal_common::shutdown::exit_after_bound(&shutdown, settings.shutdown.timeout() + Duration::from_secs(1));
        match shoal_orchestrator::run(settings, shutdown, OrchestratorStats::default()).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                tracing::warn!("shutdown was not clean");
                ExitCode::FAILURE
            }
            Err(error) => {
                tracing::error!("{error:#}");
                ExitCode::FAILURE
            }
        }
    })
}
