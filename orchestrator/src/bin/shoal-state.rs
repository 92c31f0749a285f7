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
///       topic/partition@offset, the change), in event-time order; kinds
///       command, outcomes and alerts (commands, results and dead-letter
///       topics) end with the state merged across their partitions
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
        /// Kind: symbol (ticks topic), account or device (events topic),
        /// command, outcomes or alerts (commands, results and dead-letter
        /// topics).
        #[arg(long)]
        kind: String,
        /// Key (symbol, account or device id; command id; command key).
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
            let kind = EntityKind::parse(&kind).with_context(|| {
                format!("--kind {kind:?}: expected symbol, account, device, command, outcomes or alerts")
            })?;
            let t = &settings.topics;
            let topics = match kind {
                EntityKind::Symbol => vec![t.ticks.name.clone()],
                EntityKind::Account | EntityKind::Device => vec![t.events.name.clone()],
                EntityKind::Command | EntityKind::Outcomes | EntityKind::Alerts => {
                    vec![t.commands.name.clone(), t.results.name.clone(), t.dlq.name.clone()]
                }
            };
            let until = match (until_offset, until_time) {
                (Some(offset), _) => Until::Offset(offset),
                (None, Some(time)) => Until::Time(time),
                (None, None) => Until::End,
            };
            audit(&settings, &reader, &topics, EntityRef { kind, key }, until, bound, &mut out)?;
        }
    }
    Ok(())
}

/// Prints the entity's changes from every partition of `topics`, in event
/// time order (ties: provenance); with several partitions holding parts of
/// it, then its state merged across them.
fn audit(
    settings: &OrchestratorSettings,
    reader: &LogReader,
    topics: &[String],
    entity: EntityRef,
    until: Until,
    bound: Duration,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let mut changes = Vec::new();
    let mut parts = Vec::new();
    for topic in topics {
        for partition in reader.partitions(topic, bound)? {
            let (state, _) = replay(
                &settings.replay_settings(),
                reader,
                topic,
                partition,
                until,
                bound,
                |input, decision, state| {
                    if !decision.applied.changed.contains(&entity) {
                        return;
                    }
                    let p = &input.provenance;
                    let line = serde_json::json!({
                        "event_time": input.record.event_time(),
                        "provenance": {"topic": p.topic, "partition": p.partition, "offset": p.offset},
                        "commands": decision.drafts.iter().map(|d| &d.kind).collect::<Vec<_>>(),
                        "state": state.entity_value(&entity),
                    });
                    changes.push((input.record.event_time(), p.clone(), line));
                },
            )?;
            if let Some(part) = state.entity_stamp(&entity).zip(state.entity_value(&entity)) {
                parts.push(part);
            }
        }
    }
    changes.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (_, _, line) in &changes {
        writeln!(out, "{line}")?;
    }
    if parts.is_empty() {
        anyhow::bail!("no {} {:?} in {} (up to {until:?})", entity.kind.as_str(), entity.key, topics.join(", "));
    }
    if parts.len() > 1 {
        parts.sort_by(|a, b| (a.0.at, &a.0.provenance).cmp(&(b.0.at, &b.0.provenance)));
        let values: Vec<serde_json::Value> = parts.into_iter().map(|(_, v)| v).collect();
        let merged = shoal_state::merge_entities(entity.kind, &values)?;
        writeln!(out, "{}", serde_json::json!({"merged": merged}))?;
    }
    eprintln!("{} {:?}: {} changes", entity.kind.as_str(), entity.key, changes.len());
    Ok(())
}
