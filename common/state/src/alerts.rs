//! Recent alerts: the results of `raise_alert` commands, by severity and
//! entity.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_protocol::messages::{CommandResult, kinds};
use uuid::Uuid;

use crate::freshness::{Provenance, Stamp};
use crate::recent::insert_bounded;

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The `raise_alert` command it answers.
    pub command_id: Uuid,
    /// The command's key: the symbol or device it is about.
    pub entity: String,
    /// `output.symbol` (e.g. `boiler-7/temperature`), when present.
    pub subject: Option<String>,
    /// `output.severity` (the bundled handler says `info`, `warning` or
    /// `critical`).
    pub severity: String,
    /// `output.message`, when present.
    pub message: Option<String>,
    /// When the worker finished it, and the result's record.
    #[serde(flatten)]
    pub stamp: Stamp,
}

impl Alert {
    /// The alert a result carries: a `raise_alert` result whose output has
    /// a string `severity` (failed results have none).
    pub fn from_result(r: &CommandResult, provenance: &Provenance) -> Option<Self> {
        if r.kind != kinds::RAISE_ALERT {
            return None;
        }
        let text = |name: &str| r.output.get(name).and_then(|v| v.as_str()).map(str::to_string);
        Some(Self {
            command_id: r.command_id,
            entity: r.key.clone(),
            subject: text("symbol"),
            severity: text("severity")?,
            message: text("message"),
            stamp: Stamp::new(r.finished_at, provenance.clone()),
        })
    }
}

/// The newest alerts, ordered by (time, command id), oldest first, one per
/// command. Keeping the newest by that order (rather than the last
/// applied) makes the set independent of how result partitions were
/// interleaved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Alerts {
    recent: VecDeque<Alert>,
}

impl Alerts {
    /// The alerts of `list` in their order (time, command id), one per
    /// command; `Err` names a command with two alerts. The bound is not
    /// applied here (the next insert applies it).
    pub fn from_list(mut list: Vec<Alert>) -> Result<Self, Uuid> {
        list.sort_by_key(|a| (a.stamp.at, a.command_id));
        let mut ids = BTreeSet::new();
        if let Some(twice) = list.iter().find(|a| !ids.insert(a.command_id)) {
            return Err(twice.command_id);
        }
        Ok(Self { recent: list.into() })
    }

    /// Adds `alert`, keeping at most `max` (at least 1). Returns the
    /// entities whose alerts changed: the alert's own (unless it was a
    /// duplicate or older than every kept one with the list full) and that
    /// of an alert pushed out.
    pub fn insert(&mut self, alert: Alert, max: usize) -> Vec<String> {
        if self.recent.iter().any(|a| a.command_id == alert.command_id) {
            return Vec::new();
        }
        let (id, entity) = (alert.command_id, alert.entity.clone());
        // Never a duplicate: the command's alert was looked for above.
        let pushed_out =
            insert_bounded(&mut self.recent, alert, max.max(1), |a| (a.stamp.at, a.command_id)).unwrap_or_default();
        // Pushed out at once when older than every kept alert: no change.
        if pushed_out.iter().any(|out| out.command_id == id) {
            return Vec::new();
        }
        let mut changed = vec![entity];
        changed.extend(pushed_out.into_iter().map(|out| out.entity));
        changed.sort();
        changed.dedup();
        changed
    }

    /// Alerts kept.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// Alerts at or after `since`, of `severity`, about `entity` (each
    /// filter optional), newest first.
    pub fn query(&self, since: Option<DateTime<Utc>>, severity: Option<&str>, entity: Option<&str>) -> Vec<&Alert> {
        self.recent
            .iter()
            .rev()
            .filter(|a| since.is_none_or(|s| a.stamp.at >= s))
            .filter(|a| severity.is_none_or(|s| a.severity == s))
            .filter(|a| entity.is_none_or(|e| a.entity == e))
            .collect()
    }

    /// How many alerts of each severity are kept.
    pub fn by_severity(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for a in &self.recent {
            *counts.entry(a.severity.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// Entities with alerts, with the time of their newest one.
    pub fn entities(&self) -> BTreeMap<&str, DateTime<Utc>> {
        let mut out = BTreeMap::new();
        for a in &self.recent {
            out.insert(a.entity.as_str(), a.stamp.at);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{command, prov, result, ts};
    use shoal_protocol::messages::ResultStatus;

    fn alert(n: u128, key: &str, secs: i64, severity: &str) -> Alert {
        let mut cmd = command(n, key, 1, secs);
        cmd.kind = kinds::RAISE_ALERT.into();
        let mut r = result(&cmd, ResultStatus::Succeeded, secs * 1_000, secs * 1_000);
        r.output = serde_json::json!({"severity": severity, "symbol": key, "message": "crossed"});
        Alert::from_result(&r, &prov("results", 0, secs)).unwrap()
    }

    #[test]
    fn only_raise_alert_results_with_a_severity_are_alerts() {
        let cmd = command(1, "SIM-A", 1, 0);
        let mut r = result(&cmd, ResultStatus::Succeeded, 0, 0);
        r.output = serde_json::json!({"severity": "critical"});
        assert!(Alert::from_result(&r, &prov("r", 0, 0)).is_none(), "not raise_alert");
        r.kind = kinds::RAISE_ALERT.into();
        assert_eq!(Alert::from_result(&r, &prov("r", 0, 0)).unwrap().severity, "critical");
        r.output = serde_json::json!({"error": "boom"});
        assert!(Alert::from_result(&r, &prov("r", 0, 0)).is_none(), "a failure has no severity");
    }

    #[test]
    fn by_severity_and_entity_newest_first_bounded() {
        let mut alerts = Alerts::default();
        assert_eq!(alerts.insert(alert(1, "SIM-A", 10, "warning"), 3), ["SIM-A"]);
        alerts.insert(alert(2, "SIM-B", 20, "critical"), 3);
        alerts.insert(alert(3, "SIM-A", 5, "critical"), 3);
        assert!(alerts.insert(alert(3, "SIM-A", 5, "critical"), 3).is_empty(), "duplicate");
        let ids = |v: Vec<&Alert>| v.iter().map(|a| a.command_id.as_u128()).collect::<Vec<_>>();
        assert_eq!(ids(alerts.query(None, None, None)), [2, 1, 3]);
        assert_eq!(ids(alerts.query(None, Some("critical"), None)), [2, 3]);
        assert_eq!(ids(alerts.query(None, Some("critical"), Some("SIM-A"))), [3]);
        assert_eq!(ids(alerts.query(Some(ts(10)), None, None)), [2, 1]);
        assert_eq!(alerts.by_severity(), BTreeMap::from([("critical", 2), ("warning", 1)]));
        assert_eq!(alerts.insert(alert(4, "SIM-C", 30, "info"), 3), ["SIM-A", "SIM-C"], "3 pushed out");
        assert!(alerts.insert(alert(5, "SIM-D", 1, "info"), 3).is_empty(), "older than all kept");
        assert_eq!(ids(alerts.query(None, None, None)), [4, 2, 1]);
        assert_eq!(alerts.entities(), BTreeMap::from([("SIM-A", ts(10)), ("SIM-B", ts(20)), ("SIM-C", ts(30))]));
    }
}
