//! [`SiteCorrelator`]: turns per-device anomalies into per-site incidents.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{Anomaly, AnomalyKind};
use crate::error::DetectError;

/// Settings of the [`SiteCorrelator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorrelatorSettings {
    /// N: distinct devices of one site that must have anomalies within the
    /// window for an incident to open.
    pub min_devices: usize,
    /// W: the correlation window, and the silence after which an incident closes (seconds).
    pub window_s: u64,
}

impl Default for CorrelatorSettings {
    fn default() -> Self {
        Self { min_devices: 3, window_s: 300 }
    }
}

impl CorrelatorSettings {
    /// Checks N ≥ 1 and W ≥ 1 s.
    ///
    /// # Errors
    /// [`DetectError::InvalidSetting`] naming the offending field.
    pub fn validate(&self) -> Result<(), DetectError> {
        if self.min_devices == 0 {
            return Err(DetectError::invalid("min_devices", "must be at least 1"));
        }
        if self.window_s == 0 {
            return Err(DetectError::invalid("window_s", "must be at least 1 second"));
        }
        Ok(())
    }

    /// W in milliseconds, saturated to what a time difference can hold.
    fn window_ms(&self) -> i64 {
        i64::try_from(self.window_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// How serious an incident is, from its device count d and N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// N ≤ d < 2N.
    Minor,
    /// 2N ≤ d < 3N.
    Major,
    /// d ≥ 3N.
    Critical,
}

impl Severity {
    /// The severity of an incident spanning `devices` devices when `min_devices` open one.
    #[must_use]
    pub fn for_devices(devices: usize, min_devices: usize) -> Self {
        let n = min_devices.max(1);
        if devices >= n.saturating_mul(3) {
            Self::Critical
        } else if devices >= n.saturating_mul(2) {
            Self::Major
        } else {
            Self::Minor
        }
    }
}

/// Correlated anomalies of several devices of one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The site.
    pub site: String,
    /// Deterministic id: `"<site>@<time of the first correlated anomaly, RFC 3339 ms>"`.
    pub id: String,
    /// Devices with anomalies in the incident.
    pub devices: BTreeSet<String>,
    /// The detectors that fired.
    pub kinds: BTreeSet<AnomalyKind>,
    /// The time of the anomaly that opened the incident.
    pub opened_at: DateTime<Utc>,
    /// The latest anomaly time in the incident.
    pub last_at: DateTime<Utc>,
    /// Anomalies counted into the incident.
    pub anomalies: u64,
    /// Grows with the device count, see [`Severity::for_devices`].
    pub severity: Severity,
}

/// An anomaly waiting in a site's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    at: DateTime<Utc>,
    device: String,
    kind: AnomalyKind,
}

/// One site's correlation state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SiteState {
    /// The latest anomaly time seen at the site (the window's reference point).
    watermark: DateTime<Utc>,
    /// Anomalies within the window while no incident is open.
    pending: Vec<Pending>,
    /// The open incident, if any.
    open: Option<Incident>,
}

/// Opens an incident when at least N distinct devices of one site have
/// anomalies within W of the site's latest anomaly; keeps it open while
/// anomalies keep arriving less than W apart; closes it after W of silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteCorrelator {
    settings: CorrelatorSettings,
    sites: BTreeMap<String, SiteState>,
    /// Incidents closed by [`SiteCorrelator::observe`], handed out by the next
    /// [`SiteCorrelator::close_stale`].
    closed: Vec<Incident>,
}

impl SiteCorrelator {
    /// A correlator with no state.
    ///
    /// # Errors
    /// [`DetectError::InvalidSetting`] if `settings` does not validate.
    pub fn new(settings: CorrelatorSettings) -> Result<Self, DetectError> {
        settings.validate()?;
        Ok(Self { settings, sites: BTreeMap::new(), closed: Vec::new() })
    }

    /// The incidents currently open, by site.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.sites.values().filter_map(|s| s.open.as_ref())
    }

    /// Counts `anomaly` at its site. Returns the incident when this anomaly
    /// opened it, or escalated it (a device new to the incident reported).
    /// Anomalies older than W before the site's latest one are ignored. An
    /// open incident found stale (silent for ≥ W) is closed first and handed
    /// out by the next [`SiteCorrelator::close_stale`].
    pub fn observe(&mut self, anomaly: &Anomaly) -> Option<Incident> {
        let window = self.settings.window_ms();
        let min_devices = self.settings.min_devices;
        let state = self.sites.entry(anomaly.site.clone()).or_insert_with(|| SiteState {
            watermark: anomaly.at,
            pending: Vec::new(),
            open: None,
        });
        state.watermark = state.watermark.max(anomaly.at);
        let watermark = state.watermark;
        if state.open.as_ref().is_some_and(|i| elapsed_ms(i.last_at, watermark) >= window)
            && let Some(stale) = state.open.take()
        {
            self.closed.push(stale);
        }
        state.pending.retain(|p| elapsed_ms(p.at, watermark) < window);
        if elapsed_ms(anomaly.at, watermark) >= window {
            return None;
        }
        if let Some(incident) = state.open.as_mut() {
            incident.last_at = incident.last_at.max(anomaly.at);
            incident.anomalies = incident.anomalies.saturating_add(1);
            incident.kinds.insert(anomaly.kind);
            if !incident.devices.insert(anomaly.device.clone()) {
                return None;
            }
            incident.severity = Severity::for_devices(incident.devices.len(), min_devices);
            return Some(incident.clone());
        }
        state.pending.push(Pending { at: anomaly.at, device: anomaly.device.clone(), kind: anomaly.kind });
        let devices: BTreeSet<String> = state.pending.iter().map(|p| p.device.clone()).collect();
        if devices.len() < min_devices {
            return None;
        }
        let first = state.pending.iter().map(|p| p.at).min().unwrap_or(anomaly.at);
        let last = state.pending.iter().map(|p| p.at).max().unwrap_or(anomaly.at);
        let incident = Incident {
            site: anomaly.site.clone(),
            id: format!("{}@{}", anomaly.site, first.to_rfc3339_opts(SecondsFormat::Millis, true)),
            severity: Severity::for_devices(devices.len(), min_devices),
            devices,
            kinds: state.pending.iter().map(|p| p.kind).collect(),
            opened_at: anomaly.at,
            last_at: last,
            anomalies: u64::try_from(state.pending.len()).unwrap_or(u64::MAX),
        };
        state.pending.clear();
        state.open = Some(incident.clone());
        Some(incident)
    }

    /// Closes and returns the incidents silent for at least W at `now`
    /// (event time), plus any closed by [`SiteCorrelator::observe`] since the
    /// last call; forgets pending anomalies older than W and idle sites.
    pub fn close_stale(&mut self, now: DateTime<Utc>) -> Vec<Incident> {
        let window = self.settings.window_ms();
        let mut closed = std::mem::take(&mut self.closed);
        for state in self.sites.values_mut() {
            if state.open.as_ref().is_some_and(|i| elapsed_ms(i.last_at, now) >= window)
                && let Some(stale) = state.open.take()
            {
                closed.push(stale);
            }
            state.pending.retain(|p| elapsed_ms(p.at, now) < window);
        }
        self.sites.retain(|_, s| s.open.is_some() || !s.pending.is_empty());
        closed
    }
}

/// Milliseconds from `from` to `to`; negative when `to` is earlier.
fn elapsed_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    to.signed_duration_since(from).num_milliseconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn anomaly(site: &str, device: &str, kind: AnomalyKind, secs: i64) -> Anomaly {
        Anomaly {
            device: device.into(),
            site: site.into(),
            metric: "temp".into(),
            kind,
            value: 1.0,
            expected: None,
            at: t(secs),
            reason: "test".into(),
        }
    }

    fn correlator(min_devices: usize, window_s: u64) -> SiteCorrelator {
        SiteCorrelator::new(CorrelatorSettings { min_devices, window_s }).unwrap()
    }

    #[test]
    fn opens_when_n_distinct_devices_report_within_the_window() {
        let mut c = correlator(3, 300);
        assert_eq!(c.observe(&anomaly("s1", "d1", AnomalyKind::Threshold, 10)), None);
        assert_eq!(c.observe(&anomaly("s1", "d2", AnomalyKind::Flatline, 20)), None);
        let incident = c.observe(&anomaly("s1", "d3", AnomalyKind::Threshold, 30)).unwrap();
        assert_eq!(incident.id, "s1@2023-11-14T22:13:30.000Z");
        assert_eq!(incident.site, "s1");
        assert_eq!(incident.devices, BTreeSet::from(["d1".into(), "d2".into(), "d3".into()]));
        assert_eq!(incident.kinds, BTreeSet::from([AnomalyKind::Threshold, AnomalyKind::Flatline]));
        assert_eq!((incident.opened_at, incident.last_at, incident.anomalies), (t(30), t(30), 3));
        assert_eq!(incident.severity, Severity::Minor);
        assert_eq!(c.open_incidents().count(), 1);
    }

    #[test]
    fn many_anomalies_from_one_device_do_not_open_an_incident() {
        let mut c = correlator(3, 300);
        for secs in 0..10 {
            assert_eq!(c.observe(&anomaly("s1", "d1", AnomalyKind::ZScore, secs)), None);
        }
        assert_eq!(c.observe(&anomaly("s2", "d2", AnomalyKind::ZScore, 5)), None, "another site");
        assert_eq!(c.observe(&anomaly("s3", "d3", AnomalyKind::ZScore, 5)), None, "another site");
        assert_eq!(c.open_incidents().count(), 0);
    }

    #[test]
    fn anomalies_older_than_the_window_do_not_count() {
        let mut c = correlator(3, 300);
        assert_eq!(c.observe(&anomaly("s1", "d1", AnomalyKind::ZScore, 0)), None);
        assert_eq!(c.observe(&anomaly("s1", "d2", AnomalyKind::ZScore, 100)), None);
        assert_eq!(c.observe(&anomaly("s1", "d3", AnomalyKind::ZScore, 300)), None, "d1 is exactly W old");
        assert_eq!(c.observe(&anomaly("s1", "d1", AnomalyKind::ZScore, -10)), None, "late and stale");
        let incident = c.observe(&anomaly("s1", "d4", AnomalyKind::ZScore, 350)).unwrap();
        assert_eq!(incident.devices.len(), 3);
        assert_eq!(incident.id, "s1@2023-11-14T22:15:00.000Z", "first correlated anomaly: d2 at 100 s");
    }

    #[test]
    fn escalates_as_new_devices_join() {
        let mut c = correlator(2, 60);
        c.observe(&anomaly("s1", "d1", AnomalyKind::ZScore, 0));
        assert_eq!(c.observe(&anomaly("s1", "d2", AnomalyKind::ZScore, 10)).unwrap().severity, Severity::Minor);
        assert_eq!(c.observe(&anomaly("s1", "d1", AnomalyKind::RateOfChange, 20)), None, "known device");
        let major = c.observe(&anomaly("s1", "d3", AnomalyKind::ZScore, 70)).unwrap();
        assert_eq!((major.devices.len(), major.severity), (3, Severity::Minor));
        let major = c.observe(&anomaly("s1", "d4", AnomalyKind::ZScore, 120)).unwrap();
        assert_eq!((major.devices.len(), major.severity, major.anomalies), (4, Severity::Major, 5));
        assert_eq!(major.kinds, BTreeSet::from([AnomalyKind::ZScore, AnomalyKind::RateOfChange]));
        c.observe(&anomaly("s1", "d5", AnomalyKind::ZScore, 130));
        let critical = c.observe(&anomaly("s1", "d6", AnomalyKind::ZScore, 140)).unwrap();
        assert_eq!(critical.severity, Severity::Critical);
        assert_eq!((critical.opened_at, critical.last_at), (t(10), t(140)));
    }

    #[test]
    fn close_stale_closes_incidents_silent_for_the_window() {
        let mut c = correlator(2, 300);
        c.observe(&anomaly("s1", "d1", AnomalyKind::ZScore, 0));
        let opened = c.observe(&anomaly("s1", "d2", AnomalyKind::ZScore, 10)).unwrap();
        assert!(c.close_stale(t(309)).is_empty());
        let closed = c.close_stale(t(310));
        assert_eq!(closed, vec![opened]);
        assert_eq!(c.open_incidents().count(), 0);
        assert_eq!(c.observe(&anomaly("s1", "d1", AnomalyKind::ZScore, 400)), None, "a fresh window");
        let reopened = c.observe(&anomaly("s1", "d3", AnomalyKind::ZScore, 410)).unwrap();
        assert_eq!(reopened.id, "s1@2023-11-14T22:20:00.000Z");
    }

    #[test]
    fn a_late_anomaly_closes_the_stale_incident_it_finds() {
        let mut c = correlator(2, 60);
        c.observe(&anomaly("s1", "d1", AnomalyKind::ZScore, 0));
        let first = c.observe(&anomaly("s1", "d2", AnomalyKind::ZScore, 1)).unwrap();
        assert_eq!(c.observe(&anomaly("s1", "d3", AnomalyKind::ZScore, 100)), None, "starts a new window");
        let second = c.observe(&anomaly("s1", "d4", AnomalyKind::ZScore, 101)).unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(second.devices, BTreeSet::from(["d3".into(), "d4".into()]));
        assert_eq!(c.close_stale(t(102)), vec![first]);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(SiteCorrelator::new(CorrelatorSettings { min_devices: 0, window_s: 1 }).is_err());
        assert!(SiteCorrelator::new(CorrelatorSettings { min_devices: 1, window_s: 0 }).is_err());
        assert_eq!(Severity::for_devices(5, 0), Severity::Critical);
    }
}
