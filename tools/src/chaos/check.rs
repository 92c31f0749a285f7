//! The checker: results against commands, commands against what should
//! have been decided, and what the processes' logs and histories say.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use shoal_protocol::messages::{Command, CommandResult};

/// What the checker found in the results read.
#[derive(Debug, Default)]
pub(super) struct Anomalies {
    pub lost: usize,
    pub duplicated: usize,
    pub unexpected: usize,
    pub out_of_order: usize,
    /// A few of the results out of order: key, seq, worker, and the
    /// result before it.
    pub out_of_order_examples: Vec<String>,
}

/// Checks the results read against the commands issued.
pub(super) fn check_results(decoded: &[CommandResult], issued_ids: &HashSet<uuid::Uuid>) -> Anomalies {
    let per_command: HashMap<uuid::Uuid, usize> = decoded.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.command_id).or_insert(0) += 1;
        m
    });
    let lost = issued_ids.iter().filter(|id| !per_command.contains_key(id)).count();
    let duplicated = per_command.iter().filter(|(id, n)| issued_ids.contains(id) && **n > 1).count();
    let unexpected = per_command.keys().filter(|id| !issued_ids.contains(id)).count();
    // Order is judged on each command's first result (a repeat is already
    // counted as a duplicate).
    let mut last: HashMap<&str, &CommandResult> = HashMap::new();
    let mut seen: HashSet<uuid::Uuid> = HashSet::new();
    let (mut out_of_order, mut out_of_order_examples) = (0, Vec::new());
    for r in decoded.iter().filter(|r| seen.insert(r.command_id)) {
        if let Some(prev) = last.insert(&r.key, r)
            && r.seq <= prev.seq
        {
            out_of_order += 1;
            if out_of_order_examples.len() < 5 {
                out_of_order_examples.push(format!(
                    "{}: seq {} from {} after seq {} from {}",
                    r.key, r.seq, r.worker_id, prev.seq, prev.worker_id
                ));
            }
        }
    }
    Anomalies { lost, duplicated, unexpected, out_of_order, out_of_order_examples }
}

/// Per key, the sequence numbers of the commands topic (in log order, all
/// of a key's commands being in one partition) must run 1, 2, 3, ...: each
/// gap, repeat or step back is one anomaly.
pub(super) fn seq_anomalies(commands: &[Command]) -> (usize, Vec<String>) {
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut examples = Vec::new();
    let mut n = 0;
    for c in commands {
        let prev = last.insert(&c.key, c.seq).unwrap_or(0);
        if c.seq != prev + 1 {
            n += 1;
            if examples.len() < 5 {
                examples.push(format!("{}: seq {} after {prev}", c.key, c.seq));
            }
        }
    }
    (n, examples)
}

/// Digests of the outputs of aborted transactions, from the workers'
/// histories.
pub(super) fn aborted_outputs(dir: &Path) -> HashSet<String> {
    let mut aborted: HashSet<String> = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("history-") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap_or_default().lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if event["event"] == "abort" {
                for output in event["outputs"].as_array().into_iter().flatten() {
                    aborted.insert(output[1].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    aborted
}

/// The logs of the worker processes (`w-*.log`, restarts included).
fn worker_logs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("w-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

/// Every assignment change a worker went through (each member logs its
/// own), as a count of rebalance events.
pub(super) fn rebalances(dir: &Path) -> usize {
    worker_logs(dir)
        .iter()
        .map(|text| {
            text.lines().filter(|l| l.contains("partitions assigned") || l.contains("partitions revoked")).count()
        })
        .sum()
}

/// Records ingest enqueued without a delivery report (neither acknowledged
/// nor failed), summed over the ingest processes that stopped cleanly (a
/// killed one writes no account): the detector of a tick lost unreported.
pub(super) fn ingest_unaccounted(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ingest"))
        .flat_map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            text.lines()
                .filter(|l| l.contains("ingest delivery account"))
                .filter_map(|l| l.split(" unaccounted=").nth(1)?.split(' ').next()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// A counter of the workers' status lines (`line` names the line), summed
/// over every worker process from its last such line. A process killed
/// between two status lines (every 2 s) may have counted more.
fn worker_status_sum(dir: &Path, line: &str, counter: &str) -> u64 {
    let needle = format!(" {counter}=");
    worker_logs(dir)
        .iter()
        .map(|text| {
            text.lines()
                .filter(|l| l.contains(line))
                .filter_map(|l| l.split(&needle).nth(1)?.split(' ').next()?.parse::<u64>().ok())
                .next_back()
                .unwrap_or(0)
        })
        .sum()
}

/// Repeated commands the workers skipped (at-least-once dedupe).
pub(super) fn skipped(dir: &Path) -> u64 {
    worker_status_sum(dir, "worker status", "duplicates_skipped")
}

/// Stalls the workers' pipelines detected and recovered from (records
/// counted in flight with no work running for them; see the known issues).
pub(super) fn stalls(dir: &Path) -> u64 {
    worker_status_sum(dir, "pipeline status", "stalls")
}

/// Per command id, how many copies past the first the commands topic and
/// the results topic hold (a repeated command, second results).
pub(super) fn repeats(commands: &[Command], results: &[CommandResult]) -> HashMap<String, u64> {
    let mut copies: HashMap<uuid::Uuid, (u64, u64)> = HashMap::new();
    commands.iter().for_each(|c| copies.entry(c.id).or_default().0 += 1);
    results.iter().for_each(|r| copies.entry(r.command_id).or_default().1 += 1);
    copies.into_iter().map(|(id, (c, r))| (id.to_string(), c.saturating_sub(1) + r.saturating_sub(1))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::messages::ResultStatus;

    fn command(key: &str, seq: u64) -> Command {
        crate::alert_command(key, seq)
    }

    #[test]
    fn seq_anomalies_count_gaps_repeats_and_regressions() {
        let ok = [command("a", 1), command("b", 1), command("a", 2), command("b", 2)];
        assert_eq!(seq_anomalies(&ok).0, 0);
        let bad = [command("a", 1), command("a", 3), command("a", 3), command("a", 2), command("b", 2)];
        let (n, examples) = seq_anomalies(&bad);
        assert_eq!(n, 4, "{examples:?}");
    }

    #[test]
    fn repeats_count_copies_past_the_first_of_commands_and_results() {
        let (a, b) = (command("a", 1), command("b", 1));
        let now = chrono::Utc::now();
        let result = |c: &Command| {
            CommandResult::answering(c, "w", ResultStatus::Succeeded, serde_json::Value::Null, (now, now))
        };
        let commands = [a.clone(), b.clone(), b.clone()];
        let results = [result(&a), result(&a), result(&a), result(&b)];
        let found = repeats(&commands, &results);
        assert_eq!(found.get(&a.id.to_string()), Some(&2));
        assert_eq!(found.get(&b.id.to_string()), Some(&1));
        assert_eq!(repeats(std::slice::from_ref(&a), &[result(&a)]).get(&a.id.to_string()), Some(&0));
    }
}
