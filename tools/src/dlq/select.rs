//! Which dead letters a command applies to.

use chrono::{DateTime, Utc};

use super::DeadLetter;

/// Filters on dead letters; every one given must hold (a list matches any
/// of its values). The times are those of the dead letters (when they were
/// written to the dead-letter topic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// `shoal-dlq-reason` is one of these.
    pub reasons: Vec<String>,
    /// `shoal-origin-topic` is one of these.
    pub origin_topics: Vec<String>,
    /// Written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Written before this time.
    pub until: Option<DateTime<Utc>>,
}

impl Selector {
    /// Whether no filter is set (everything matches).
    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty() && self.origin_topics.is_empty() && self.since.is_none() && self.until.is_none()
    }

    /// Whether `letter` passes every filter. A dead letter without a reason
    /// (or origin, or time) does not pass a filter on it.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let listed = |values: &[String], value: Option<&str>| {
            values.is_empty() || value.is_some_and(|v| values.iter().any(|x| x == v))
        };
        listed(&self.reasons, letter.reason())
            && listed(&self.origin_topics, letter.header(shoal_protocol::headers::dead_letter::ORIGIN_TOPIC))
            && self.since.is_none_or(|since| letter.time.is_some_and(|t| t >= since))
            && self.until.is_none_or(|until| letter.time.is_some_and(|t| t < until))
    }

    /// The filters as text, for output (`none` when there are none).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.reasons.is_empty() {
            parts.push(format!("reason={}", self.reasons.join(",")));
        }
        if !self.origin_topics.is_empty() {
            parts.push(format!("origin_topic={}", self.origin_topics.join(",")));
        }
        if let Some(since) = self.since {
            parts.push(format!("since={}", super::letter::time_text(Some(since))));
        }
        if let Some(until) = self.until {
            parts.push(format!("until={}", super::letter::time_text(Some(until))));
        }
        if parts.is_empty() { "none".to_string() } else { parts.join(" ") }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::letter::tests::letter;
    use super::*;

    #[test]
    fn every_filter_must_hold() {
        let a = letter(10, "malformed", Some(("shoal.commands", 0, 1)), b"");
        let b = letter(20, "handler_failed", Some(("shoal.events", 0, 1)), b"");
        let none = letter(30, "malformed", None, b"");
        let all = Selector::default();
        assert!(all.is_empty() && all.matches(&a) && all.matches(&none));
        let by_reason = Selector { reasons: vec!["malformed".into(), "empty".into()], ..Selector::default() };
        assert!(by_reason.matches(&a) && !by_reason.matches(&b) && by_reason.matches(&none));
        let by_topic = Selector { origin_topics: vec!["shoal.events".into()], ..by_reason.clone() };
        assert!(!by_topic.matches(&a) && !by_topic.matches(&b), "both filters must hold");
        let by_topic = Selector { origin_topics: vec!["shoal.commands".into()], ..Selector::default() };
        assert!(by_topic.matches(&a) && !by_topic.matches(&none), "no origin, no match on it");
    }

    #[test]
    fn since_is_inclusive_and_until_exclusive() {
        let l = letter(10, "malformed", None, b"");
        let at = l.time.unwrap();
        let second = chrono::Duration::seconds(1);
        let window = |since, until| Selector { since, until, ..Selector::default() };
        assert!(window(Some(at), None).matches(&l));
        assert!(!window(Some(at + second), None).matches(&l));
        assert!(!window(None, Some(at)).matches(&l));
        assert!(window(Some(at - second), Some(at + second)).matches(&l));
        let mut untimed = l.clone();
        untimed.time = None;
        assert!(!window(Some(at), None).matches(&untimed));
        assert_eq!(window(Some(at), None).describe(), format!("since={}", super::super::letter::time_text(Some(at))));
    }
}
