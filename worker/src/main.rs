//! `shoal-worker` binary: configuration, telemetry, signals, exit status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use shoal_common::settings;
use shoal_worker::handlers::Registry;
use shoal_worker::processor::WorkerStats;
use shoal_worker::settings::WorkerSettings;

/// Shoal worker: consumes commands from Kafka, runs the handler for each
/// command's kind, and publishes a result keyed like the command.
///
/// Run as many as you like with the same `worker.group_id`: Kafka spreads the
/// commands topic's partitions over them. Configuration comes from built-in
/// defaults, then the file given with --config (or ./shoal.toml if present),
/// then environment variables named SHOAL__SECTION__KEY, for example
/// SHOAL__KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092 or SHOAL__WORKER__ID=worker-1.
/// SIGINT/SIGTERM stop it gracefully (results flushed, offsets committed,
/// group left) within shutdown.timeout_ms; a second signal exits at once.
#[derive(Debug, Parser)]
#[command(name = "shoal-worker", version, verbatim_doc_comment)]
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
    let settings: WorkerSettings = match settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(error) => {
            eprintln!("shoal-worker: {error}");
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
            eprintln!("shoal-worker: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = shoal_common::telemetry::init("shoal-worker", settings.log.format, &settings.log.level);
        let shutdown = shoal_common::shutdown::install_signal_handlers();
        // Each drain step is bounded by shutdown.timeout_ms; this is the
        // backstop for the whole process, with a second of slack for exit.
        shoal_common::shutdown::exit_after_bound(&shutdown, settings.shutdown.timeout() + Duration::from_secs(1));
        let stats = Arc::new(WorkerStats::default());
        match shoal_worker::run(settings, Registry::with_builtin(), shutdown, stats).await {
            Ok(report) if report.clean() => ExitCode::SUCCESS,
            Ok(report) => {
                tracing::warn!(?report, "shutdown was not clean");
                ExitCode::FAILURE
            }
            Err(error) => {
                tracing::error!("{error:#}");
                ExitCode::FAILURE
            }
        }
    })
}
