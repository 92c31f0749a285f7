//! `shoal-orchestrator` binary: configuration, telemetry, signals, exit status.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: the orchestrator frees and allocates
/// state documents, Kafka buffers and JSON from many threads, and glibc's
/// per-thread arenas kept the freed memory fragmented (resident memory
/// crept up in the soak test, and a restore left the process far larger
/// than the state it rebuilt).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
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
    #[command(flatten)]
    common: shoal_app::CommonArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shoal_app::main("shoal-orchestrator", &cli.common, |settings: OrchestratorSettings, shutdown, telemetry| {
        shoal_orchestrator::run(settings, shutdown, OrchestratorStats::default(), telemetry)
    })
}
