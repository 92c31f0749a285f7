//! What every Shoal binary does around its real work: load and validate
//! configuration (exit 2 naming the key on error), `--print-config`, start
//! the runtime and telemetry, install signal handling with a bounded
//! shutdown, and turn the outcome into an exit status.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::settings::{self, LogSettings, ShutdownSettings, Validate};

/// Command-line options every Shoal binary has; `#[command(flatten)]` them.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Configuration file (TOML). Without it, ./shoal.toml is read if present.
    #[arg(long, short = 'c', env = "SHOAL_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective configuration as JSON (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Settings of a binary that has the shared `log` and `shutdown` sections.
pub trait AppSettings: Default + Serialize + DeserializeOwned + Validate {
    /// The `[log]` section.
    fn log(&self) -> &LogSettings;
    /// The `[shutdown]` section.
    fn shutdown(&self) -> &ShutdownSettings;
}

/// Runs a binary. `run` gets the validated settings and the root shutdown
/// token and returns whether it stopped cleanly.
pub fn main<S, F, Fut>(name: &'static str, args: &CommonArgs, run: F) -> ExitCode
where
    S: AppSettings,
    F: FnOnce(S, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let settings: S = match settings::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        #[allow(clippy::print_stdout)] // CLI output the user asked for.
        {
            println!("{}", serde_json::to_string_pretty(&settings::redacted(&settings)).unwrap_or_default());
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = crate::telemetry::init(name, settings.log().format, &settings.log().level);
        let shutdown = crate::shutdown::install_signal_handlers();
        // Each drain step is bounded by shutdown.timeout_ms; this is the
        // backstop for the whole process, with a second of slack for exit.
        crate::shutdown::exit_after_bound(&shutdown, settings.shutdown().timeout() + Duration::from_secs(1));
        match run(settings, shutdown).await {
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
