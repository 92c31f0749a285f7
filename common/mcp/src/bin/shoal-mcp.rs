//! `shoal-mcp`: Shoal's MCP server over stdio.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rmcp::ServiceExt as _;
use secrecy::SecretString;
use shoal_mcp::{ShoalTools, StateClient};

/// Shoal's MCP server: lets an LLM client (Claude Desktop, an IDE, an
/// agent framework) ask Shoal's live state through tools: list_entities,
/// get_state, get_recent_alerts, get_command, find_commands, summarize
/// (a digest within a token budget) and issue_command (admin token, off
/// unless api.issue_commands). Entities are also resources
/// (shoal://state/{kind}/{key}) a client can subscribe to. Every answer
/// carries the freshness and provenance of its values.
///
/// The orchestrator also serves the same tools over streamable HTTP at
/// /mcp on its API port (api.mcp), with the API's tokens.
///
/// It speaks MCP over stdin/stdout (start it from the client's
/// configuration) and asks the orchestrator's state API over HTTP, with a
/// read token from the environment variable named by --token-env or the
/// file given with --token-file (never from the command line). Logs go to
/// stderr (RUST_LOG, default info). It stops when the client closes stdin.
///
/// Example client entry:
///   {"command": "shoal-mcp", "args": ["--api-url", "http://127.0.0.1:8780"],
///    "env": {"SHOAL_MCP_TOKEN": "<read token>"}}
#[derive(Debug, Parser)]
#[command(name = "shoal-mcp", version, verbatim_doc_comment)]
struct Cli {
    /// Base URL of the orchestrator's state API (api.listen / api.advertised_url).
    #[arg(long, env = "SHOAL_MCP_API_URL", default_value = "http://127.0.0.1:8780")]
    api_url: String,
    /// PEM CA certificates to verify an https:// API with (its
    /// api.tls_cert_file's issuer); default: the platform's root certificates.
    #[arg(long, env = "SHOAL_MCP_CA_FILE")]
    ca_file: Option<String>,
    /// Environment variable holding the API token (bare, or read:<token> / admin:<token>).
    #[arg(long, default_value = "SHOAL_MCP_TOKEN")]
    token_env: String,
    /// File holding the API token instead (first line that is not blank or a # comment).
    #[arg(long, env = "SHOAL_MCP_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Bound on each question to the API, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    timeout_ms: u64,
    /// How often subscribed resources are checked for changes, in
    /// milliseconds (one notification per resource per interval at most).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    poll_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("shoal-mcp: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("shoal-mcp: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let token = token(&cli)?;
    if token.is_none() {
        tracing::warn!(
            token_env = %cli.token_env,
            "no API token (neither the variable nor --token-file): only an API with api.auth = \"none\" will answer"
        );
    }
    let timeout = Duration::from_millis(cli.timeout_ms);
    let client =
        StateClient::trusting(&cli.api_url, token, timeout, cli.ca_file.as_deref()).context("--api-url / --ca-file")?;
    tracing::info!(api = %cli.api_url, "serving MCP over stdio");
    let service = ShoalTools::new(client)
        .with_poll(Duration::from_millis(cli.poll_ms))
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the MCP session")?;
    tokio::select! {
        ended = service.waiting() => { ended.context("MCP session")?; }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
    }
    Ok(())
}

/// The token, from --token-file or the variable named by --token-env.
fn token(cli: &Cli) -> anyhow::Result<Option<SecretString>> {
    let text = match &cli.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("--token-file {}", path.display()))?;
            let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
            Some(line.with_context(|| format!("--token-file {}: no token in it", path.display()))?.to_string())
        }
        None => std::env::var(&cli.token_env).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
    };
    Ok(text.map(|t| {
        let bare = t.strip_prefix("read:").or_else(|| t.strip_prefix("admin:")).unwrap_or(&t);
        SecretString::from(bare.to_string())
    }))
}
