//! `shoal-acl`: prints or applies least-privilege Kafka ACLs for each
//! Shoal role (see `shoal_tools::acl` and `--help`).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use shoal_tools::acl::cli::Cli;
use shoal_tools::acl::{AclError, AclSettings, apply, derive};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,librdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run(&cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shoal-acl: {error:#}");
            let usage = matches!(
                error.downcast_ref::<AclError>(),
                Some(AclError::Settings(_) | AclError::Name { .. } | AclError::Principal { .. })
            );
            if usage { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = AclSettings::load(cli.common.config.as_deref())?;
    let mut out = std::io::stdout().lock();
    if cli.common.print_config {
        let both = serde_json::json!({
            "orchestrator": shoal_config::redacted(&settings.orchestrator),
            "worker": shoal_config::redacted(&settings.worker),
        });
        writeln!(out, "{both:#}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = cli.options()?;
    let roles = derive(&settings, &options, &cli.roles())?;
    if !cli.apply && !cli.list {
        cli.print(&settings, &roles, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let kafka = &settings.orchestrator.kafka;
    let admin = apply::connect(kafka, cli.timeout()).context("connecting to Kafka")?;
    if cli.apply {
        let created = apply::apply(&admin, &roles, &mut out)
            .with_context(|| format!("creating ACLs on {}", kafka.bootstrap_servers))?;
        writeln!(out, "acl apply: created={created}")?;
    }
    if cli.list {
        let listing =
            apply::list(&admin, &roles).with_context(|| format!("listing ACLs on {}", kafka.bootstrap_servers))?;
        listing.write(&mut out)?;
        if !listing.missing.is_empty() {
            return Ok(ExitCode::FAILURE);
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
