//! `shoal-dlq list`: the dead letters grouped by reason and origin topic.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};

use super::letter::time_text;
use super::{DeadLetter, DlqError, Reader, RedriveLog, Selector};

/// Counts and times of a group of dead letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Group {
    /// Dead letters.
    pub count: usize,
    /// Of those, re-driven already.
    pub redriven: usize,
    /// The oldest one's time.
    pub oldest: Option<DateTime<Utc>>,
    /// The newest one's time.
    pub newest: Option<DateTime<Utc>>,
}

impl Group {
    fn add(&mut self, time: Option<DateTime<Utc>>, redriven: bool) {
        self.count += 1;
        self.redriven += usize::from(redriven);
        if let Some(time) = time {
            self.oldest = Some(self.oldest.map_or(time, |t| t.min(time)));
            self.newest = Some(self.newest.map_or(time, |t| t.max(time)));
        }
    }

    fn fields(&self) -> String {
        format!(
            "count={} redriven={} oldest={} newest={}",
            self.count,
            self.redriven,
            time_text(self.oldest),
            time_text(self.newest)
        )
    }
}

/// Shown for a dead letter without a reason or an origin topic header.
pub const NONE: &str = "(none)";

/// The dead letters that passed the filters, grouped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// All of them.
    pub total: Group,
    /// By reason: the reason's group and its groups by origin topic.
    pub reasons: BTreeMap<String, (Group, BTreeMap<String, Group>)>,
    /// Dead letters on the topic, filtered or not.
    pub scanned: usize,
}

impl Listing {
    /// Counts `letter` (`redriven`: the re-drive log lists it).
    pub fn add(&mut self, letter: &DeadLetter, redriven: bool) {
        let reason = letter.reason().unwrap_or(NONE).to_string();
        let origin = letter.header(shoal_protocol::headers::dead_letter::ORIGIN_TOPIC).unwrap_or(NONE).to_string();
        self.total.add(letter.time, redriven);
        let (group, by_origin) = self.reasons.entry(reason).or_default();
        group.add(letter.time, redriven);
        by_origin.entry(origin).or_default().add(letter.time, redriven);
    }

    /// Writes it: a header line, then per reason (most dead letters first)
    /// one line and one indented line per origin topic.
    pub fn write(&self, dlq_topic: &str, selector: &Selector, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "dead-letter topic {dlq_topic}: {} dead letters, {} selected (filters: {}), {} reasons",
            self.scanned,
            self.total.count,
            selector.describe(),
            self.reasons.len()
        )?;
        let mut reasons: Vec<_> = self.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.0.count.cmp(&a.1.0.count).then_with(|| a.0.cmp(b.0)));
        for (reason, (group, by_origin)) in reasons {
            writeln!(out, "reason={reason} {}", group.fields())?;
            for (origin, group) in by_origin {
                writeln!(out, "  origin_topic={origin} {}", group.fields())?;
            }
        }
        writeln!(out, "total {}", self.total.fields())
    }
}

/// Reads the dead-letter topic and the re-drive log and groups the dead
/// letters that pass `selector`.
pub fn list(reader: &Reader, dlq_topic: &str, log_topic: &str, selector: &Selector) -> Result<Listing, DlqError> {
    let log = RedriveLog::load(reader, log_topic)?;
    let mut listing = Listing::default();
    let mut scanned = 0;
    reader.scan(dlq_topic, |message| {
        scanned += 1;
        let letter = DeadLetter::from_message(message);
        if selector.matches(&letter) {
            listing.add(&letter, log.redriven(&letter).is_some());
        }
    })?;
    listing.scanned = scanned;
    Ok(listing)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::letter::tests::letter;
    use super::*;

    #[test]
    fn groups_by_reason_then_origin_topic_with_times() {
        let mut listing = Listing { scanned: 5, ..Listing::default() };
        listing.add(&letter(3, "retries_exhausted", Some(("shoal.commands", 1, 9)), b""), true);
        listing.add(&letter(1, "retries_exhausted", Some(("shoal.commands", 2, 4)), b""), false);
        listing.add(&letter(2, "malformed", Some(("shoal.ticks", 0, 7)), b""), false);
        listing.add(&letter(4, "malformed", None, b""), false);
        let mut out = Vec::new();
        listing.write("shoal.dlq", &Selector::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let t = |offset: i64| time_text(letter(offset, "", None, b"").time);
        let expected = [
            "dead-letter topic shoal.dlq: 5 dead letters, 4 selected (filters: none), 2 reasons".to_string(),
            format!("reason=malformed count=2 redriven=0 oldest={} newest={}", t(2), t(4)),
            format!("  origin_topic=(none) count=1 redriven=0 oldest={} newest={}", t(4), t(4)),
            format!("  origin_topic=shoal.ticks count=1 redriven=0 oldest={} newest={}", t(2), t(2)),
            format!("reason=retries_exhausted count=2 redriven=1 oldest={} newest={}", t(1), t(3)),
            format!("  origin_topic=shoal.commands count=2 redriven=1 oldest={} newest={}", t(1), t(3)),
            format!("total count=4 redriven=1 oldest={} newest={}", t(1), t(4)),
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
    }
}
