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

use shoal_config::Validate;
use shoal_telemetry::Telemetry;
use shoal_telemetry::settings::{LogSettings, ObservabilitySettings};

pub mod settings;
pub mod shutdown;

use crate::settings::ShutdownSettings;

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
    /// The `[observability]` section.
    fn observability(&self) -> &ObservabilitySettings;
}

/// Runs a binary. `run` gets the validated settings, the root shutdown
/// token and the application's telemetry handle (metrics, readiness,
/// sampling; served on `observability.listen`), and returns whether it
/// stopped cleanly.
pub fn main<S, F, Fut>(name: &'static str, args: &CommonArgs, run: F) -> ExitCode
where
    S: AppSettings,
    F: FnOnce(S, CancellationToken, Telemetry) -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let settings: S = match shoal_config::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        #[allow(clippy::print_stdout)] // CLI output the user asked for.
        {
            println!("{}", serde_json::to_string_pretty(&shoal_config::redacted(&settings)).unwrap_or_default());
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
        let guard = shoal_telemetry::init(name, settings.log().format, &settings.log().level, settings.observability());
        let telemetry = Telemetry::new(guard.sampling());
        let shutdown = crate::shutdown::install_signal_handlers();
        let bound = settings.shutdown().timeout();
        // Each drain step is bounded by shutdown.timeout_ms; this is the
        // backstop for the whole process, with a second of slack for exit.
        crate::shutdown::exit_after_bound(&shutdown, bound + Duration::from_secs(1));
        let shutdown_started = crate::shutdown::started_at(&shutdown);
        let server = match start_http(settings.observability(), &telemetry, &shutdown).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!("{error:#}");
                return ExitCode::FAILURE;
            }
        };
        let outcome = run(settings, shutdown.clone(), telemetry).await;
        // Whatever ended the run, the HTTP server stops with the process.
        shutdown.cancel();
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
        }
        // Export the spans still queued, within what is left of the bound.
        let elapsed = shutdown_started.lock().map(|t| t.map(|t| t.elapsed())).ok().flatten().unwrap_or_default();
        guard.shutdown(bound.saturating_sub(elapsed).max(Duration::from_millis(200))).await;
        match outcome {
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

/// Starts the `/metrics`, `/healthz`, `/readyz` server unless
/// `observability.listen` is empty; readiness fails once shutdown starts.
async fn start_http(
    observability: &ObservabilitySettings,
    telemetry: &Telemetry,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use anyhow::Context as _;
    let token = shutdown.clone();
    telemetry
        .health
        .register("process", move || if token.is_cancelled() { Err("shutting down".into()) } else { Ok(()) });
    if observability.listen.is_empty() {
        return Ok(None);
    }
    let address: std::net::SocketAddr = observability
        .listen
        .parse()
        .with_context(|| format!("observability.listen {:?} is not ip:port", observability.listen))?;
    let options = shoal_telemetry::server::ServeOptions {
        metrics_token: metrics_token(observability)?,
        tls: observability_tls(observability)?,
    };
    let (_, task) = shoal_telemetry::server::serve(address, telemetry.clone(), options, shutdown.clone())
        .await
        .with_context(|| format!("cannot listen on observability.listen {address}"))?;
    Ok(Some(task))
}

/// The bearer token `/metrics` requires, from `observability.metrics_token_file`
/// (its first line that is not blank) or the variable named by
/// `observability.metrics_token_env`; none when neither is set.
fn metrics_token(observability: &ObservabilitySettings) -> anyhow::Result<Option<secrecy::SecretString>> {
    const EXPECTED: &str = "a token of at least 16 printable characters, no spaces";
    let (token, key) = if !observability.metrics_token_file.is_empty() {
        let file = &observability.metrics_token_file;
        let text = std::fs::read_to_string(file)
            .map_err(|error| anyhow::anyhow!("observability.metrics_token_file: cannot read {file}: {error}"))?;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned();
        (line, "observability.metrics_token_file")
    } else if !observability.metrics_token_env.is_empty() {
        let name = &observability.metrics_token_env;
        let value = std::env::var(name).map_err(|_| {
            anyhow::anyhow!("observability.metrics_token_env: the variable {name} is not set (expected {EXPECTED})")
        })?;
        (value.trim().to_owned(), "observability.metrics_token_env")
    } else {
        return Ok(None);
    };
    if token.chars().count() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // The token itself is never quoted.
        anyhow::bail!("{key}: the token is not usable (expected {EXPECTED})");
    }
    Ok(Some(secrecy::SecretString::from(token)))
}

/// The observability port's TLS identity, loaded now so that a bad file
/// stops the start naming the setting.
fn observability_tls(observability: &ObservabilitySettings) -> anyhow::Result<Option<shoal_tls::TlsIdentity>> {
    let (cert, key) = (&observability.tls_cert_file, &observability.tls_key_file);
    shoal_tls::TlsIdentity::from_settings("observability", cert, key).map_err(anyhow::Error::msg)
}
