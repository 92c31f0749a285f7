//! `shoal-worker` binary: configuration, telemetry, signals, exit status.

use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc instead of glibc malloc: every command allocates and frees its
/// decoded JSON, result and Kafka buffers, mostly on the pipeline's thread
/// and freed on others; under the bench's drain glibc's malloc and free
/// (with its arena consolidation) took a quarter of that thread's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
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
    #[command(flatten)]
    common: shoal_app::CommonArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shoal_app::main("shoal-worker", &cli.common, |settings: WorkerSettings, shutdown, telemetry| async move {
        let stats = Arc::new(WorkerStats::default());
        Ok(shoal_worker::run(settings, Registry::with_builtin(), shutdown, stats, telemetry).await?.clean())
    })
}
