//! The re-drive log: one record per re-driven dead letter, keyed by the
//! dead letter's coordinates, written in the same transaction as the
//! re-driven record. What it lists is never re-driven again.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use serde::{Deserialize, Serialize};

use super::{Coordinates, DeadLetter, DlqError, Reader};

/// The re-drive log's default name: `<dead-letter topic>.redrive`.
pub fn default_log_topic(dlq_topic: &str) -> String {
    format!("{dlq_topic}.redrive")
}

/// The value of a re-drive log record (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// `1`.
    pub schema_version: u32,
    /// The dead letter, `topic/partition@offset` (also the record's key).
    pub dead_letter: String,
    /// Where its original record was read, `topic/partition@offset`.
    pub origin: String,
    /// Its `shoal-dlq-reason`.
    pub reason: String,
    /// The partition of the origin topic it was re-published to.
    pub redriven_to: String,
    /// When the re-drive was committed (about: the time it was produced).
    pub redriven_at: DateTime<Utc>,
    /// The transactional id that re-drove it.
    pub transactional_id: String,
}

impl LogEntry {
    /// The entry recording the re-drive of `letter` (whose origin is
    /// `origin`) by `transactional_id`.
    pub fn new(letter: &DeadLetter, origin: &Coordinates, transactional_id: &str) -> Self {
        Self {
            schema_version: 1,
            dead_letter: letter.at.to_string(),
            origin: origin.to_string(),
            reason: letter.reason().unwrap_or_default().to_string(),
            redriven_to: format!("{}/{}", origin.topic, origin.partition),
            redriven_at: Utc::now(),
            transactional_id: transactional_id.to_string(),
        }
    }

    /// The record's value.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and a time: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What the re-drive log says was re-driven, by dead letter.
#[derive(Debug, Clone, Default)]
pub struct RedriveLog {
    /// Entries by dead letter; `None` for a record whose value this build
    /// cannot read (it still counts as re-driven).
    entries: HashMap<Coordinates, Option<LogEntry>>,
}

impl RedriveLog {
    /// Reads the whole log topic (committed records only). A log that does
    /// not exist yet is empty.
    pub fn load(reader: &Reader, topic: &str) -> Result<Self, DlqError> {
        let mut log = Self::default();
        if reader.partitions(topic)?.is_none() {
            return Ok(log);
        }
        reader.scan(topic, |message| {
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            let Some(at) = key.and_then(|k| k.parse::<Coordinates>().ok()) else {
                tracing::warn!(%topic, offset = message.offset(), "re-drive log record without a dead letter's coordinates as its key; ignored");
                return;
            };
            let entry = message.payload().and_then(|v| serde_json::from_slice::<LogEntry>(v).ok());
            if entry.is_none() {
                tracing::warn!(%topic, offset = message.offset(), dead_letter = %at, "re-drive log record not readable; counted as re-driven");
            }
            log.entries.insert(at, entry);
        })?;
        Ok(log)
    }

    /// The log entry of `letter` when it was re-driven already. A dead
    /// letter at the same coordinates but from another origin (the
    /// dead-letter topic was deleted and made again) was not.
    pub fn redriven(&self, letter: &DeadLetter) -> Option<Redriven<'_>> {
        let entry = self.entries.get(&letter.at)?;
        match (entry, letter.origin()) {
            (Some(entry), Some(origin)) if entry.origin != origin.to_string() => None,
            (Some(entry), _) => Some(Redriven::Logged(entry)),
            (None, _) => Some(Redriven::Unreadable),
        }
    }

    /// The origin records of the logged re-drives, each with the dead
    /// letter it was re-driven through.
    pub fn origins(&self) -> HashMap<Coordinates, Coordinates> {
        self.entries.iter().filter_map(|(at, entry)| Some((entry.as_ref()?.origin.parse().ok()?, at.clone()))).collect()
    }

    /// Entries read.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry (for tests, and to mirror a committed batch).
    pub fn insert(&mut self, entry: LogEntry) {
        if let Ok(at) = entry.dead_letter.parse() {
            self.entries.insert(at, Some(entry));
        }
    }
}

/// How the log knows a dead letter was re-driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redriven<'a> {
    /// Its entry.
    Logged(&'a LogEntry),
    /// A record with its key whose value this build cannot read.
    Unreadable,
}

impl Redriven<'_> {
    /// For output: when and by whom.
    pub fn describe(&self) -> String {
        match self {
            Self::Logged(entry) => format!(
                "at {} to {} by {}",
                super::letter::time_text(Some(entry.redriven_at)),
                entry.redriven_to,
                entry.transactional_id
            ),
            Self::Unreadable => "(the log record is not readable)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::letter::tests::letter;
    use super::*;

    #[test]
    fn entries_round_trip_and_match_on_coordinates_and_origin() {
        let l = letter(4, "retries_exhausted", Some(("shoal.commands", 2, 17)), b"{}");
        let entry = LogEntry::new(&l, &l.origin().unwrap(), "shoal-dlq-redrive");
        assert_eq!(entry.dead_letter, "shoal.dlq/0@4");
        assert_eq!(entry.redriven_to, "shoal.commands/2");
        let decoded: LogEntry = serde_json::from_slice(&entry.encode()).unwrap();
        assert_eq!(decoded, entry);

        let mut log = RedriveLog::default();
        assert!(log.redriven(&l).is_none());
        log.insert(entry.clone());
        assert_eq!(log.redriven(&l), Some(Redriven::Logged(&entry)));
        assert!(log.redriven(&letter(5, "retries_exhausted", Some(("shoal.commands", 2, 17)), b"")).is_none());
        // Same coordinates, another origin: a recreated dead-letter topic.
        assert!(log.redriven(&letter(4, "malformed", Some(("shoal.commands", 2, 18)), b"")).is_none());
        assert_eq!(default_log_topic("shoal.dlq"), "shoal.dlq.redrive");
    }
}
