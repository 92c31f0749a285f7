//! Rebuilding state from the log alone: the inputs of one partition,
//! from its first offset, through the same rules the decisions stage runs.
//! What a restored shard must equal, and what the audit tool prints.

use std::time::Duration;

use shoal_state::{Input, State};

use super::decode::{InputTopics, decode};
use super::log::{LogError, LogReader};
use super::settings::StateSettings;
use crate::rules::{Decision, RulesSettings, decide};

/// What a replay needs: the state model, the rules, and which topic is
/// which (from the orchestrator's settings).
#[derive(Debug, Clone)]
pub struct ReplaySettings {
    /// The `[state]` section.
    pub state: StateSettings,
    /// The `[rules]` section.
    pub rules: RulesSettings,
    /// The input topics.
    pub topics: InputTopics,
}

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Until {
    /// The partition's end as of now.
    #[default]
    End,
    /// Before this offset (exclusive).
    Offset(i64),
    /// Before the first input whose event time is after this.
    Time(chrono::DateTime<chrono::Utc>),
}

/// What a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records read.
    pub records: u64,
    /// Of which not decodable (dead-lettered when read live).
    pub undecodable: u64,
}

/// Replays `topic`/`partition` from its first offset into a fresh state,
/// calling `visit` after each input is applied.
pub fn replay(
    settings: &ReplaySettings,
    reader: &LogReader,
    topic: &str,
    partition: i32,
    until: Until,
    bound: Duration,
    mut visit: impl FnMut(&Input, &Decision, &State),
) -> Result<(State, ReplayReport), LogError> {
    let topics = &settings.topics;
    let mut state = State::new(settings.state.model(&settings.rules));
    let mut report = ReplayReport::default();
    let end = match until {
        Until::Offset(offset) => Some(offset),
        _ => None,
    };
    let mut stopped = false;
    reader.read(topic, partition, None, end, bound, |message| {
        if stopped {
            return;
        }
        report.records += 1;
        let Ok(input) = decode(topics, message) else {
            report.undecodable += 1;
            return;
        };
        if let Until::Time(time) = until
            && input.record.event_time() > time
        {
            stopped = true;
            return;
        }
        let decision = decide(&mut state, &settings.rules, &input);
        visit(&input, &decision, &state);
    })?;
    Ok((state, report))
}
