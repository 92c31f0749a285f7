//! `--orchestrator`: ending the stream and checking what the orchestrator's
//! stages decided and recorded against a replay of the log.

use std::collections::HashMap;
use std::time::Duration;

use shoal_orchestrator::settings::OrchestratorSettings;
use shoal_protocol::messages::Command;
use shoal_state::{EntityKind, EntityRef};

use super::Decisions;
use super::run::Run;
use crate::{
    Decided, Replayed, TopicReader, api_address, api_get, decided_difference, decode_commands, http_address,
    replay_topics, served_state, sort_decided,
};

const WAIT: Duration = Duration::from_secs(120);

/// The settings `stage` runs with, as the replay needs them.
fn settings(run: &Run, stage: &str) -> OrchestratorSettings {
    shoal_config::load_from(None, run.stage_env(stage)).expect("the stage's settings")
}

/// Ends the stream (ingest stopped cleanly, then the simulator), replays
/// the ticks through the rules, and compares: the state the decisions stage
/// serves, symbol by symbol, and the commands on the topic (as multisets of
/// kind, key and payload). Returns the commands read and the counts.
pub(super) async fn end_and_check(run: &mut Run) -> (Vec<Command>, Decisions) {
    // A stage restarted a moment ago may not be serving yet: let it start
    // before the clean stop, which it must answer with a drain.
    let _ = http_address(&run.stages[0], Duration::from_secs(30)).await;
    run.stages[0].stop_cleanly(Duration::from_secs(30));
    if let Some((sim, _)) = run.sim.as_mut() {
        sim.stop_cleanly(Duration::from_secs(10));
    }
    run.note("stream ended (ingest and simulator stopped); replaying the ticks");
    let settings = settings(run, "decisions");
    let inputs = [settings.topics.ticks.name.as_str(), settings.topics.events.name.as_str()];
    let replayed = tokio::task::block_in_place(|| replay_topics(&settings, &inputs, WAIT)).expect("replay the ticks");
    let mut found = Decisions::default();

    let api = api_address(&run.stages[1], Duration::from_secs(60)).await;
    if let Err(behind) = replayed.wait_for_watermarks(api, WAIT).await {
        run.note(&format!("decisions stage not at the replay's watermarks: {behind}"));
    }
    for (symbol, expected) in replayed.symbols() {
        match served_state(api, &format!("/v1/state/symbol/{symbol}")).await {
            Ok(served) if served == expected => {}
            other => {
                found.state_mismatches += 1;
                let served = other.map(|s| String::from_utf8_lossy(&s).into_owned()).unwrap_or_else(|e| e);
                let expected = String::from_utf8_lossy(&expected);
                run.note(&format!("state mismatch {symbol}:\n  served   {served}\n  replayed {expected}"));
            }
        }
    }

    // The stage serves an input's effect before its transaction commits:
    // wait for the replay's count of commands, then read to the end.
    let mut reader = TopicReader::new_at(&run.bootstrap, &run.topics.commands.name);
    let want = replayed.commands.len();
    let deadline = std::time::Instant::now() + WAIT;
    while reader.messages.len() < want && std::time::Instant::now() < deadline {
        tokio::task::block_in_place(|| reader.drain());
    }
    reader.read_to_end(Duration::from_secs(60)).await;
    let commands = decode_commands(&reader.messages);
    let mut issued: Vec<Decided> =
        commands.iter().map(|c| (c.kind.clone(), c.key.clone(), c.payload.clone())).collect();
    sort_decided(&mut issued);
    let (missing, extra) = decided_difference(&replayed.commands, &issued);
    found.missing_commands = missing.len();
    found.extra_commands = extra.len();
    run.note(&format!(
        "ticks replayed: {} symbols, {} commands decided; {} on the topic",
        replayed.symbols().len(),
        want,
        commands.len()
    ));
    for (what, list) in [("missing", &missing), ("extra", &extra)] {
        if !list.is_empty() {
            run.note(&format!("{what} commands, first: {:?}", &list[..list.len().min(3)]));
        }
    }
    (commands, found)
}

/// What the results stage's served commands say.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    /// Commands served differently from the replay of their inputs.
    pub mismatches: usize,
    /// Repeats (second results, second copies of a command) on the topics
    /// that the served command does not count as skipped in `duplicates`.
    pub repeats_unaccounted: u64,
}

/// Every command entity the results stage serves must equal the replay of
/// its input partitions (commands, results, dead letters): issued, then
/// answered with its one result. `repeats` is, per command, how many times
/// it was seen on the commands and results topics past the first copy of
/// each: the served command must count each of them as a skipped duplicate.
pub(super) async fn check_recorded(run: &mut Run, repeats: &HashMap<String, u64>) -> Recorded {
    let settings = settings(run, "results");
    let t = &settings.topics;
    let inputs = [t.commands.name.as_str(), t.results.name.as_str(), t.dlq.name.as_str()];
    let replayed: Replayed =
        tokio::task::block_in_place(|| replay_topics(&settings, &inputs, WAIT)).expect("replay the results stage");
    let api = api_address(&run.stages[2], Duration::from_secs(60)).await;
    if let Err(behind) = replayed.wait_for_watermarks(api, WAIT).await {
        run.note(&format!("results stage not at the replay's watermarks: {behind}"));
    }
    let mut ids: Vec<String> = replayed
        .shards
        .iter()
        .flat_map(|s| s.state.entity_refs())
        .filter(|e| e.kind == EntityKind::Command)
        .map(|e| e.key.clone())
        .collect();
    ids.sort();
    ids.dedup();
    let (mut mismatches, mut unanswered, mut repeats_unaccounted) = (0, 0, 0);
    for (id, n) in repeats {
        if *n > 0 && ids.binary_search(id).is_err() {
            repeats_unaccounted += n;
            run.note(&format!("command {id}: seen {n} times again, but not in the results stage's state"));
        }
    }
    for id in &ids {
        let entity = EntityRef { kind: EntityKind::Command, key: id.clone() };
        let expected = replayed.expected(&entity);
        let served = api_get(api, &format!("/v1/commands/{id}"), Some(crate::READ_TOKEN)).await;
        let served = served.ok().filter(|(status, _)| *status == 200).map(|(_, body)| body["state"].clone());
        let seen_again = repeats.get(id).copied().unwrap_or(0);
        let counted = served.as_ref().and_then(|s| s["duplicates"].as_u64()).unwrap_or(0);
        if counted != seen_again {
            repeats_unaccounted += seen_again.abs_diff(counted);
            run.note(&format!("command {id}: seen {seen_again} times again, served as {counted} duplicates"));
        }
        if expected.as_ref().is_some_and(|e| e["result"].is_null()) {
            unanswered += 1;
        }
        if served.is_none() || served != expected {
            mismatches += 1;
            if mismatches <= 3 {
                run.note(&format!("command {id}: served {served:?}, replayed {expected:?}"));
            }
        }
    }
    run.note(&format!(
        "results stage: {} commands served as the replay has them, {mismatches} differ, {unanswered} without a result; {} repeats seen, {repeats_unaccounted} not counted as duplicates",
        ids.len() - mismatches,
        repeats.values().sum::<u64>()
    ));
    Recorded { mismatches, repeats_unaccounted }
}
