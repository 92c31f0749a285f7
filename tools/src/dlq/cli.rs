//! `shoal-dlq`'s command line.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use super::Selector;

/// Lists, shows and re-drives Shoal's dead letters.
///
/// Shoal sends what it cannot handle for good to the dead-letter topic
/// (`topics.dlq.name`, default shoal.dlq): undecodable commands, ticks,
/// events and results, commands no handler exists for, handler failures and
/// exhausted retries, input the state cannot apply. Each dead letter keeps
/// the original key, body and headers, and says where the record was read
/// (origin topic, partition, offset), why (reason) and the error.
///
/// After fixing the cause, re-drive the dead letters to the topic they came
/// from:
///
///   shoal-dlq list                                    what is there, by reason
///   shoal-dlq show shoal.dlq/0@42                     one dead letter in full
///   shoal-dlq redrive --reason retries_exhausted      what would be re-driven
///   shoal-dlq redrive --reason retries_exhausted --yes
///
/// A re-drive is exactly once: each batch is one Kafka transaction that also
/// records each dead letter it re-drives on the re-drive log topic, and a
/// run skips what the log lists. Running it twice re-drives nothing the
/// second time; a run that crashed is completed by the next.
///
/// Settings come from the same configuration as shoal-orchestrator and
/// shoal-worker (--config, ./shoal.toml, SHOAL__SECTION__KEY variables): the
/// cluster from [kafka] (bootstrap servers, TLS and SASL through
/// kafka.security_protocol and kafka.options), the dead-letter topic from
/// [topics], the transactional id prefix from [delivery]. See
/// docs/dead-letters.md.
///
/// Exit status: 0 done, 1 failed (nothing half-done is visible), 2 bad
/// configuration or usage.
#[derive(Debug, Parser)]
#[command(name = "shoal-dlq", version, verbatim_doc_comment)]
pub struct Cli {
    /// Configuration file (TOML). Without it, ./shoal.toml is read if present.
    #[arg(long, short = 'c', env = "SHOAL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as JSON (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The re-drive log topic [default: <dead-letter topic>.redrive].
    #[arg(long, env = "SHOAL_DLQ_REDRIVE_TOPIC", global = true, value_name = "TOPIC")]
    pub redrive_topic: Option<String>,
    /// Bound on reading a topic to its end, seconds.
    #[arg(long, default_value_t = 120, global = true, value_name = "SECONDS")]
    pub timeout_secs: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dead letters grouped by reason, then by origin topic: how many, how
    /// many were re-driven already, the oldest's and the newest's time.
    List {
        /// Which dead letters to count.
        #[command(flatten)]
        select: SelectArgs,
    },
    /// One dead letter: where it is, its origin, reason, stage, attempts,
    /// error, whether it was re-driven, its original key and headers, and
    /// its body (pretty JSON, text, or a hex dump).
    Show {
        /// `topic/partition@offset` of the dead letter (or
        /// `partition@offset` on the dead-letter topic), or an id: a command
        /// id (`shoal-command-id` header) or the `id`/`command_id` of a JSON
        /// body, which prints every dead letter that has it.
        target: String,
    },
    /// Re-publishes the chosen dead letters' original key, body and headers
    /// to their origin topic and partition, exactly once. Without --yes
    /// (or with --dry-run) only prints what it would do.
    ///
    /// Prints a line per chosen dead letter, then
    /// `dlq redrive: selected=N redriven=N already_redriven=N skipped_no_origin=N`.
    Redrive {
        /// Which dead letters.
        #[command(flatten)]
        select: SelectArgs,
        /// Choose every dead letter (needed when no selector is given).
        #[arg(long)]
        all: bool,
        /// Print what would be re-driven and publish nothing (the default).
        #[arg(long, conflicts_with = "yes")]
        dry_run: bool,
        /// Re-drive for real.
        #[arg(long)]
        yes: bool,
        /// Names this re-drive deployment: the transactional id is
        /// `<delivery.transactional_id_prefix>-dlq-<group>` (shoal-dlq-redrive
        /// by default). Keep it stable: a run fences and settles an earlier
        /// one with the same id, which is what makes a crashed run safe to
        /// repeat. Runs with different ids must not run at the same time.
        #[arg(long, env = "SHOAL_DLQ_GROUP", default_value = "redrive")]
        group: String,
        /// Dead letters per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch: u64,
        /// Fault injection for tests: produce batch N, then exit (status 3)
        /// without committing it.
        #[arg(long, hide = true, value_name = "N")]
        crash_before_commit_of_batch: Option<usize>,
    },
}

/// Filters shared by `list` and `redrive`; all given must hold.
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Only dead letters with this reason (`shoal-dlq-reason`: malformed,
    /// unsupported_schema_version, empty, invalid_event_attributes,
    /// invalid_state_input, unsupported_kind, handler_failed,
    /// retries_exhausted). Repeat for several.
    #[arg(long, value_name = "REASON")]
    pub reason: Vec<String>,
    /// Only dead letters read from this topic (`shoal-origin-topic`).
    /// Repeat for several.
    #[arg(long, value_name = "TOPIC")]
    pub origin_topic: Vec<String>,
    /// Only dead letters written at or after this time (RFC 3339, e.g.
    /// 2026-12-04T20:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<DateTime<Utc>>,
    /// Only dead letters written before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<DateTime<Utc>>,
}

impl SelectArgs {
    /// As a [`Selector`].
    pub fn selector(&self) -> Selector {
        Selector {
            reasons: self.reason.clone(),
            origin_topics: self.origin_topic.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent_and_parses_selectors() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "shoal-dlq",
            "redrive",
            "--reason",
            "malformed",
            "--reason",
            "empty",
            "--since",
            "2026-12-04T20:00:00Z",
            "--yes",
        ])
        .unwrap();
        let Some(Command::Redrive { select, yes, dry_run, group, batch, .. }) = cli.command else { panic!() };
        assert!(yes && !dry_run);
        assert_eq!((group.as_str(), batch), ("redrive", 500));
        let selector = select.selector();
        assert_eq!(selector.reasons, ["malformed", "empty"]);
        assert_eq!(selector.since.unwrap().to_rfc3339(), "2026-12-04T20:00:00+00:00");
        assert!(Cli::try_parse_from(["shoal-dlq", "redrive", "--yes", "--dry-run"]).is_err());
        assert!(Cli::try_parse_from(["shoal-dlq", "list", "--since", "yesterday"]).is_err());
    }
}
