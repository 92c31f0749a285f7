//! `shoal-dlq`: lists, shows and re-drives Shoal's dead letters (see
//! `shoal_tools::dlq` and docs/dead-letters.md).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use shoal_tools::dlq::cli::{Cli, Command};
use shoal_tools::dlq::{DlqError, DlqSettings, Reader, RedriveOptions, Target, default_log_topic};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,librdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let settings: DlqSettings = match shoal_config::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("shoal-dlq: {error}");
            return ExitCode::from(2);
        }
    };
    match run(cli, &settings) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shoal-dlq: {error:#}");
            match error.downcast_ref::<DlqError>() {
                Some(DlqError::InjectedCrash(_)) => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(cli: Cli, settings: &DlqSettings) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if cli.print_config {
        writeln!(out, "{:#}", shoal_config::redacted(settings))?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(command) = cli.command else {
        eprintln!("shoal-dlq: a subcommand is needed (list, show or redrive); see shoal-dlq --help");
        return Ok(ExitCode::from(2));
    };
    let dlq_topic = settings.topics.dlq.name.clone();
    let log_topic = cli.redrive_topic.clone().unwrap_or_else(|| default_log_topic(&dlq_topic));
    let reader = Reader::new(&settings.kafka, "shoal-dlq", Duration::from_secs(cli.timeout_secs))
        .context("connecting to Kafka")?;
    match command {
        Command::List { select } => {
            let selector = select.selector();
            let listing = shoal_tools::dlq::list(&reader, &dlq_topic, &log_topic, &selector)
                .with_context(|| format!("listing the dead letters of {dlq_topic}"))?;
            listing.write(&dlq_topic, &selector, &mut out)?;
        }
        Command::Show { target } => {
            let target = Target::parse(&target, &dlq_topic);
            shoal_tools::dlq::show(&reader, &dlq_topic, &log_topic, &target, &mut out)?;
        }
        Command::Redrive { select, all, dry_run, yes, group, batch, crash_before_commit_of_batch } => {
            let selector = select.selector();
            if selector.is_empty() && !all {
                eprintln!("shoal-dlq: redrive needs a selector (--reason, --origin-topic, --since, --until) or --all");
                return Ok(ExitCode::from(2));
            }
            let options = RedriveOptions {
                selector,
                log_topic,
                transactional_id: settings.transactional_id(&group),
                act: yes && !dry_run,
                batch: usize::try_from(batch).unwrap_or(500),
                crash_before_commit_of_batch,
            };
            shoal_tools::dlq::redrive(settings, &reader, &options, &mut out)
                .with_context(|| format!("re-driving dead letters of {dlq_topic}"))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
