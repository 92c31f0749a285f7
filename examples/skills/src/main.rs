//! `shoal-example-worker`: a Shoal worker serving the bundled skills and
//! the example `open_ticket` skill.
//!
//! Run it like `shoal-worker` (same configuration and flags), with the
//! ticket system's address in `SHOAL_EXAMPLE_TICKETS_URL`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shoal_example_skills::OpenTicket;
use shoal_worker::handlers::Registry;
use shoal_worker::processor::WorkerStats;
use shoal_worker::settings::WorkerSettings;

/// The variable naming the ticket system.
const TICKETS_URL: &str = "SHOAL_EXAMPLE_TICKETS_URL";

/// A Shoal worker with one user-defined skill: `open_ticket` opens a
/// maintenance ticket (once per command, journalled) in the ticket system
/// named by SHOAL_EXAMPLE_TICKETS_URL when a reading is over its threshold.
/// Everything else is shoal-worker's: the same configuration (defaults, then
/// --config, then SHOAL__SECTION__KEY variables) and the bundled skills.
#[derive(Debug, clap::Parser)]
#[command(name = "shoal-example-worker", version, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    common: shoal_app::CommonArgs,
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    shoal_app::main("shoal-example-worker", &cli.common, |settings: WorkerSettings, shutdown, telemetry| async move {
        let url = std::env::var(TICKETS_URL).map_err(|_| {
            anyhow::anyhow!("{TICKETS_URL} is not set: give the ticket system's base URL, e.g. http://127.0.0.1:8080")
        })?;
        let mut registry = Registry::with_builtin();
        registry.register_skill(OpenTicket::new(&url, Duration::from_secs(5))?);
        let stats = Arc::new(WorkerStats::default());
        Ok(shoal_worker::run(settings, registry, shutdown, stats, telemetry).await?.clean())
    })
}
