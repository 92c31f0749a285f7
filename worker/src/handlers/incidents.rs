//! The IoT topology's upper levels (docs/levels.md):
//!
//! - `correlate_incident` (middle level, stateful, keyed by site): counts
//!   the anomalies `check_device` found into `shoal-detect`'s
//!   [`SiteCorrelator`]; an incident opens when enough distinct devices of
//!   the site misbehave within the window, escalates as more join, and
//!   closes after a window of silence (event time). Its state per site is
//!   restored from its results ([`crate::keyed`]). Each opened, escalated or
//!   closed incident becomes a `notify_incident` for the level above.
//! - `notify_incident` (upper level): the notification, one line a person
//!   can act on.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoal_config::SettingsError;
use shoal_detect::iot::{Anomaly, CorrelatorSettings, Incident, SiteCorrelator};
use shoal_protocol::messages::Command;

use super::{HandlerContext, HandlerError, Skill};
use crate::keyed::{KeyedState, Restorable, Versioned};
use crate::levels::NextCommand;

/// The middle level's kind.
pub const CORRELATE_INCIDENT: &str = "correlate_incident";
/// The upper level's kind.
pub const NOTIFY_INCIDENT: &str = "notify_incident";

/// The `[worker.incidents]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsSettings {
    /// Serve `correlate_incident` (stateful; its state restored from the
    /// results topic) and `notify_incident`.
    pub enabled: bool,
    /// Distinct devices of one site with anomalies within the window that
    /// open an incident.
    pub min_devices: usize,
    /// The correlation window, and the silence that closes an incident,
    /// seconds of event time.
    pub window_s: u64,
    /// Also ask the LLM skill to triage each opened or escalated incident:
    /// an `llm_decide` keyed by the site beside the `notify_incident` (the
    /// level above must enable `[llm]`).
    pub llm_triage: bool,
}

impl Default for IncidentsSettings {
    fn default() -> Self {
        let d = CorrelatorSettings::default();
        Self { enabled: false, min_devices: d.min_devices, window_s: d.window_s, llm_triage: false }
    }
}

impl IncidentsSettings {
    fn correlator(&self) -> CorrelatorSettings {
        CorrelatorSettings { min_devices: self.min_devices, window_s: self.window_s }
    }

    /// Checks the section, naming keys under `worker.incidents.`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.correlator().validate().map_err(|e| {
            let shoal_detect::DetectError::InvalidSetting { field, reason } = &e;
            SettingsError::invalid(format!("worker.incidents.{field}"), reason.clone(), "see docs/levels.md")
        })
    }
}

/// `correlate_incident`'s payload: what one device check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelateIncident {
    /// The anomalies, all of the command's site.
    pub anomalies: Vec<Anomaly>,
}

/// How an incident changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Enough devices misbehaved together.
    Opened,
    /// Another device joined.
    Escalated,
    /// A window of silence passed.
    Closed,
}

/// `notify_incident`'s payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyIncident {
    /// What happened to the incident.
    pub change: Change,
    /// The incident after it.
    pub incident: Incident,
}

/// What `correlate_incident` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Correlation {
    /// The site.
    pub site: String,
    /// Anomalies counted.
    pub anomalies: usize,
    /// Incidents opened, escalated or closed by them.
    pub changes: Vec<NotifyIncident>,
    /// The site's correlator after them (restored from here).
    pub state: Versioned<SiteCorrelator>,
    /// `notify_incident` per change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<NextCommand>,
}

/// The stateful middle level.
#[derive(Debug, Clone)]
pub struct IncidentSkill {
    settings: CorrelatorSettings,
    llm_triage: bool,
    store: Arc<KeyedState<SiteCorrelator>>,
}

impl IncidentSkill {
    /// The skill with `settings` (validated by the worker's settings).
    pub fn new(settings: &IncidentsSettings) -> Self {
        Self {
            settings: settings.correlator(),
            llm_triage: settings.llm_triage,
            store: Arc::new(KeyedState::new(CORRELATE_INCIDENT)),
        }
    }

    fn apply(
        &self,
        correlator: Option<SiteCorrelator>,
        version: u64,
        site: &str,
        p: &CorrelateIncident,
    ) -> Result<Correlation, HandlerError> {
        let mut correlator = match correlator {
            Some(c) => c,
            None => SiteCorrelator::new(self.settings)
                .map_err(|e| HandlerError::Rejected(format!("worker.incidents: {e}")))?,
        };
        let mut changes: Vec<NotifyIncident> = Vec::new();
        let mut latest: Option<DateTime<Utc>> = None;
        for anomaly in &p.anomalies {
            if anomaly.site != site {
                return Err(HandlerError::Rejected(format!(
                    "anomaly of site {:?} in a command for site {site:?}",
                    anomaly.site
                )));
            }
            latest = latest.max(Some(anomaly.at));
            let was_open: Vec<String> = correlator.open_incidents().map(|i| i.id.clone()).collect();
            if let Some(incident) = correlator.observe(anomaly) {
                let change = if was_open.contains(&incident.id) { Change::Escalated } else { Change::Opened };
                match changes.iter_mut().find(|c| c.incident.id == incident.id) {
                    Some(earlier) => earlier.incident = incident,
                    None => changes.push(NotifyIncident { change, incident }),
                }
            }
        }
        if let Some(now) = latest {
            for incident in correlator.close_stale(now) {
                changes.push(NotifyIncident { change: Change::Closed, incident });
            }
        }
        let mut next: Vec<NextCommand> = changes.iter().map(|c| NextCommand::new(NOTIFY_INCIDENT, site, c)).collect();
        if self.llm_triage {
            next.extend(changes.iter().filter(|c| c.change != Change::Closed).map(|c| triage(site, c)));
        }
        Ok(Correlation {
            site: site.to_string(),
            anomalies: p.anomalies.len(),
            changes,
            state: Versioned { version: version + 1, value: correlator },
            next,
        })
    }
}

#[async_trait::async_trait]
impl Skill for IncidentSkill {
    const KIND: &'static str = CORRELATE_INCIDENT;
    type Payload = CorrelateIncident;
    type Output = Correlation;

    async fn run(
        &self,
        payload: CorrelateIncident,
        command: &Command,
        _ctx: &HandlerContext<'_>,
    ) -> Result<Correlation, HandlerError> {
        let (held, generation) = self.store.get(&command.key);
        let (correlator, version) = held.map_or((None, 0), |v| (Some(v.value), v.version));
        let out = self.apply(correlator, version, &command.key, &payload)?;
        self.store.put(&command.key, out.state.clone(), generation);
        Ok(out)
    }

    fn keyed_state(&self) -> Option<Arc<dyn Restorable>> {
        Some(self.store.clone())
    }
}

/// An `llm_decide` asking the model to triage `change`'s incident, scoped
/// to its devices (the LLM skill's payload: `task`, `keys`, and the
/// incident for the prompt).
fn triage(site: &str, change: &NotifyIncident) -> NextCommand {
    let i = &change.incident;
    let devices: Vec<&str> = i.devices.iter().map(String::as_str).take(50).collect();
    let task = format!(
        "Triage the incident {} at site {site} ({} devices with anomalies: {}). Which device should a technician \
         inspect first, and should one be dispatched now?",
        i.id,
        devices.len(),
        devices.join(", ")
    );
    NextCommand::new(
        super::llm::LLM_DECIDE,
        site,
        &serde_json::json!({"task": task, "keys": devices, "incident": i, "change": change.change}),
    )
}

/// A unit enum's name as it is written on the wire (`snake_case`).
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// The upper level: one line per incident change.
pub fn notify(p: &NotifyIncident) -> Result<serde_json::Value, HandlerError> {
    let i = &p.incident;
    let devices: Vec<&str> = i.devices.iter().map(String::as_str).collect();
    let kinds: Vec<String> = i.kinds.iter().map(wire_name).collect();
    let message = format!(
        "{} incident {} at site {}: {} devices ({}), {} anomalies ({})",
        wire_name(&i.severity),
        wire_name(&p.change),
        i.site,
        devices.len(),
        devices.join(", "),
        i.anomalies,
        kinds.join(", "),
    );
    Ok(serde_json::json!({
        "site": i.site, "incident_id": i.id, "change": p.change, "severity": i.severity, "message": message,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use shoal_detect::iot::AnomalyKind;

    use super::*;

    fn anomaly(device: &str, secs: i64) -> Anomaly {
        Anomaly {
            device: device.into(),
            site: "plant-1".into(),
            metric: "rms".into(),
            kind: AnomalyKind::ZScore,
            value: 6.0,
            expected: Some(2.0),
            at: chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap(),
            reason: "spike".into(),
        }
    }

    #[test]
    fn three_devices_open_an_incident_a_fourth_escalates_it_and_silence_closes_it() {
        let settings = IncidentsSettings { enabled: true, min_devices: 3, window_s: 300, llm_triage: false };
        let skill = IncidentSkill::new(&settings);
        let mut held: Option<Versioned<SiteCorrelator>> = None;
        let mut run = |anomalies: Vec<Anomaly>| {
            let (c, v) = held.clone().map_or((None, 0), |h| (Some(h.value), h.version));
            // Through JSON, as a restore would see it.
            let out = skill.apply(c, v, "plant-1", &CorrelateIncident { anomalies }).unwrap();
            held = Some(serde_json::from_value(serde_json::to_value(&out).unwrap()["state"].clone()).unwrap());
            out
        };
        assert!(run(vec![anomaly("pump-1", 0)]).changes.is_empty());
        assert!(run(vec![anomaly("pump-2", 10), anomaly("pump-2", 10)]).changes.is_empty());
        let opened = run(vec![anomaly("pump-3", 20)]);
        assert_eq!(opened.changes.len(), 1);
        assert_eq!(opened.changes[0].change, Change::Opened);
        assert_eq!(opened.next[0].kind, NOTIFY_INCIDENT);
        let escalated = run(vec![anomaly("pump-4", 30)]);
        assert_eq!(escalated.changes[0].change, Change::Escalated);
        let closed = run(vec![anomaly("pump-1", 1_000)]);
        assert_eq!(closed.changes.iter().map(|c| c.change).collect::<Vec<_>>(), [Change::Closed]);
        assert_eq!(held.unwrap().version, 5);
        let line = notify(&escalated.changes[0]).unwrap();
        assert!(line["message"].as_str().unwrap().contains("escalated at site plant-1: 4 devices"), "{line}");

        let triaging = IncidentSkill::new(&IncidentsSettings { llm_triage: true, ..settings });
        let state = escalated.state.clone();
        let out = triaging
            .apply(
                Some(state.value),
                state.version,
                "plant-1",
                &CorrelateIncident { anomalies: vec![anomaly("pump-5", 40)] },
            )
            .unwrap();
        let kinds: Vec<&str> = out.next.iter().map(|n| n.kind.as_str()).collect();
        assert_eq!(kinds, [NOTIFY_INCIDENT, super::super::llm::LLM_DECIDE]);
        assert_eq!(out.next[1].payload["keys"].as_array().unwrap().len(), 5);
        assert!(out.next[1].payload["task"].as_str().unwrap().contains("Triage the incident plant-1@"));
    }

    #[test]
    fn an_anomaly_of_another_site_is_rejected() {
        let skill = IncidentSkill::new(&IncidentsSettings::default());
        let error =
            skill.apply(None, 0, "plant-2", &CorrelateIncident { anomalies: vec![anomaly("pump-1", 0)] }).unwrap_err();
        assert!(error.to_string().contains("plant-1"), "{error}");
    }
}
