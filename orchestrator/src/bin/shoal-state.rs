//! `shoal-state`: rebuilds state from the log alone, for audits and checks.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shoal_orchestrator::settings::OrchestratorSettings;
use shoal_orchestrator::state::log::LogReader;
use shoal_orchestrator::state::replay::{Until, replay};
use shoal_state::{EntityKind, EntityRef};

/// Rebuilds Shoal's derived state from the input topics alone (no
/// changelog, no running orchestrator), through the same rules the
/// decisions stage runs, and prints it.
///
///   shoal-state audit --kind symbol --key SIM-A [--until-offset N | --until-time T]
///       the history of one entity: every input that changed it (event time,
///       topic/partition@offset, the change), then its state at the end
///   shoal-state replay --topic shoal.ticks --partition 0 [--until-offset N]
///       the whole state of one shard (input partition) as canonical JSON,
///       one entity per line: {"kind","key","state"}
///
/// Topics and the state model come from the same configuration as the
/// orchestrator (--config, ./shoal.toml, SHOAL__SECTION__KEY).
#[derive(Debug, Parser)]
#[command(name = "shoal-state", version, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    common: shoal_app::CommonArgs,
    #[command(subcommand)]
    command: Command,
    /// Bound on reading each partition, seconds.
    #[arg(long, default_value_t = 120, global = true)]
    timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The history of changes of one entity, with the provenance of each.
    Audit {
        /// Kind: symbol (ticks topic), account or device (events topic).
        #[arg(long)]
        kind: String,
        /// Key (symbol, account or device id).
        #[arg(long)]
        key: String,
        /// Stop before this offset (of each partition read).
        #[arg(long, conflicts_with = "until_time")]
        until_offset: Option<i64>,
        /// Stop at the first input after this event time (RFC 3339).
        #[arg(long)]
        until_time: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// One shard's state, rebuilt from its input partition.
    Replay {
        /// Input topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long)]
        partition: i32,
        /// Stop before this offset.
        #[arg(long)]
        until_offset: Option<i64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal-state: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: OrchestratorSettings = shoal_config::load(cli.common.config.as_deref())?;
    let reader = LogReader::new(&settings.kafka, "shoal-state-cli").context("creating a Kafka reader")?;
    let bound = Duration::from_secs(cli.timeout_secs);
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Replay { topic, partition, until_offset } => {
            let until = until_offset.map_or(Until::End, Until::Offset);
            let (state, report) =
                replay(&settings.replay_settings(), &reader, &topic, partition, until, bound, |_, _, _| {})?;
            for entity in state.entity_refs() {
                if let Some(value) = state.entity_value(&entity) {
                    let line = serde_json::json!({"kind": entity.kind, "key": entity.key, "state": value});
                    writeln!(out, "{line}")?;
                }
            }
            eprintln!("replayed {topic}/{partition}: {} records, {} not decodable", report.records, report.undecodable);
        }
        Command::Audit { kind, key, until_offset, until_time } => {
            let kind = EntityKind::parse(&kind)
                .filter(|k| matches!(k, EntityKind::Symbol | EntityKind::Account | EntityKind::Device))
                .with_context(|| format!("--kind {kind:?}: expected symbol, account or device"))?;
            let topic =
                if kind == EntityKind::Symbol { &settings.topics.ticks.name } else { &settings.topics.events.name };
            let until = match (until_offset, until_time) {
                (Some(offset), _) => Until::Offset(offset),
                (None, Some(time)) => Until::Time(time),
                (None, None) => Until::End,
            };
            audit(&settings, &reader, topic, EntityRef { kind, key }, until, bound, &mut out)?;
        }
    }
    Ok(())
}

fn audit(
    settings: &OrchestratorSettings,
    reader: &LogReader,
    topic: &str,
    entity: EntityRef,
    until: Until,
    bound: Duration,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let mut changes = 0;
    let mut last = None;
    for partition in reader.partitions(topic, bound)? {
        let mut write_error = None;
        let (state, _) =
            replay(&settings.replay_settings(), reader, topic, partition, until, bound, |input, decision, state| {
                if !decision.applied.changed.contains(&entity) {
                    return;
                }
                changes += 1;
                let p = &input.provenance;
                let line = serde_json::json!({
                    "event_time": input.record.event_time(),
                    "provenance": {"topic": p.topic, "partition": p.partition, "offset": p.offset},
                    "commands": decision.drafts.iter().map(|d| &d.kind).collect::<Vec<_>>(),
                    "state": state.entity_value(&entity),
                });
                if let Err(error) = writeln!(out, "{line}") {
                    write_error = Some(error);
                }
            })?;
        if let Some(error) = write_error {
            return Err(error.into());
        }
        if let Some(value) = state.entity_value(&entity) {
            last = Some(value);
        }
    }
    match last {
        Some(_) => eprintln!("{} {:?}: {changes} changes", entity.kind.as_str(), entity.key),
        None => anyhow::bail!("no {} {:?} in {topic} (up to {until:?})", entity.kind.as_str(), entity.key),
    }
    Ok(())
}
