//! `check_device`: the IoT detectors of `shoal-detect` (threshold, z-score
//! against the device's baseline, rate of change, flatline) on a device's
//! newest reading.
//!
//! The decision rules send the device's recent readings of the metric from
//! the state (oldest first, the newest last). The skill learns the baseline
//! from them and reports what fired on the newest one, so the baseline is a
//! pure function of the log: the same after a restart, a rebalance or a
//! replay, on any worker. It covers the readings the state keeps
//! (`state.max_recent`, 20 by default): keep `warmup` below that.

use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive as _;
use serde::{Deserialize, Serialize};
use shoal_config::SettingsError;
use shoal_detect::iot::{Anomaly, DeviceMonitor, IotSettings, Reading};
use shoal_protocol::messages::{Command, kinds};
use shoal_protocol::payloads::CheckDevice;

use super::{HandlerContext, HandlerError, Skill};

/// The `[worker.iot]` section: the detectors' settings for every metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IotSkillSettings {
    /// Fire when a value is strictly above this (a reading's own
    /// `threshold`, when it has one, takes its place).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_high: Option<f64>,
    /// Fire when a value is strictly below this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_low: Option<f64>,
    /// Fire when the value changes faster than this, units per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate_per_s: Option<f64>,
    /// Fire once the value has not moved for this long, seconds; 0: off.
    pub flatline_after_s: u64,
    /// Values closer than this count as unchanged.
    pub flatline_epsilon: f64,
    /// Fire when |value − baseline mean| / σ exceeds this.
    pub z_threshold: f64,
    /// Readings the baseline learns before the z-score may fire.
    pub warmup: u32,
    /// The baseline's EWMA weight of the newest reading, in (0, 1].
    pub alpha: f64,
    /// Send the anomalies of a device with a site on to the IoT topology's
    /// correlation level: a `correlate_incident` keyed by the site, in the
    /// result's `next` (published to `worker.next_topic`).
    pub correlate: bool,
}

impl Default for IotSkillSettings {
    fn default() -> Self {
        Self {
            threshold_high: None,
            threshold_low: None,
            max_rate_per_s: None,
            flatline_after_s: 300,
            flatline_epsilon: 1e-6,
            z_threshold: 4.0,
            warmup: 10,
            alpha: 0.3,
            correlate: false,
        }
    }
}

impl IotSkillSettings {
    fn detectors(&self) -> IotSettings {
        IotSettings {
            threshold_high: self.threshold_high,
            threshold_low: self.threshold_low,
            max_rate_per_s: self.max_rate_per_s,
            flatline_after_s: self.flatline_after_s,
            flatline_epsilon: self.flatline_epsilon,
            z_threshold: self.z_threshold,
            warmup: self.warmup,
            alpha: self.alpha,
        }
    }

    /// Checks the section, naming keys under `worker.iot.`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.detectors().validate().map_err(|e| {
            let shoal_detect::DetectError::InvalidSetting { field, reason } = &e;
            SettingsError::invalid(format!("worker.iot.{field}"), reason.clone(), "see docs/skills.md#check_device")
        })
    }
}

/// What the skill answers.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceCheck {
    /// The device.
    pub device: String,
    /// Its site, when the event said.
    pub site: Option<String>,
    /// The metric checked.
    pub metric: String,
    /// The newest reading's value and time.
    pub value: f64,
    /// When it was measured.
    pub at: DateTime<Utc>,
    /// Whether any detector fired.
    pub alert: bool,
    /// What fired, each with the numbers that made it fire.
    pub anomalies: Vec<Anomaly>,
    /// The baseline the newest reading was checked against.
    pub baseline: Option<BaselineView>,
    /// Readings the baseline was learnt from, the newest included.
    pub readings: usize,
    /// The anomalies for the site's correlation level (`[worker.iot]
    /// correlate`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<crate::levels::NextCommand>,
}

/// The baseline before the newest reading.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineView {
    /// Readings learnt.
    pub count: u64,
    /// EWMA mean.
    pub mean: f64,
    /// EWMA standard deviation.
    pub std_dev: f64,
}

/// The skill.
#[derive(Debug, Clone)]
pub struct DeviceCheckSkill {
    settings: IotSkillSettings,
}

impl DeviceCheckSkill {
    /// The skill with `settings` (validated by the worker's settings).
    pub fn new(settings: IotSkillSettings) -> Self {
        Self { settings }
    }

    /// The detectors over `p`'s readings; what fired on the newest.
    pub fn check(&self, p: &CheckDevice) -> Result<DeviceCheck, HandlerError> {
        let Some((newest, before)) = p.readings.split_last() else {
            return Err(HandlerError::Rejected(format!("check_device for {} has no readings", p.device)));
        };
        let site = p.site.clone().unwrap_or_default();
        let reading = |value: rust_decimal::Decimal, at| -> Result<Reading, HandlerError> {
            let value =
                value.to_f64().ok_or_else(|| HandlerError::Rejected(format!("value {value} is out of range")))?;
            Ok(Reading { device: p.device.clone(), site: site.clone(), metric: p.metric.clone(), value, at })
        };
        let invalid = |e: shoal_detect::DetectError| HandlerError::Rejected(format!("worker.iot: {e}"));
        let mut monitor = DeviceMonitor::new(self.settings.detectors()).map_err(invalid)?;
        for sample in before {
            monitor.observe(&reading(sample.value, sample.at)?);
        }
        let baseline = monitor.baseline(&p.device, &p.metric).map(|b| BaselineView {
            count: b.count,
            mean: b.mean,
            std_dev: b.std_dev(),
        });
        if let Some(threshold) = newest.threshold.and_then(|t| t.to_f64()) {
            let own = IotSettings { threshold_high: Some(threshold), ..self.settings.detectors() };
            monitor = monitor.with_metric_settings(p.metric.clone(), own).map_err(invalid)?;
        }
        let last = reading(newest.value, newest.at)?;
        let anomalies = monitor.observe(&last);
        let next = match &p.site {
            Some(site) if self.settings.correlate && !anomalies.is_empty() => vec![crate::levels::NextCommand::new(
                super::incidents::CORRELATE_INCIDENT,
                site,
                &super::incidents::CorrelateIncident { anomalies: anomalies.clone() },
            )],
            _ => Vec::new(),
        };
        Ok(DeviceCheck {
            next,
            device: p.device.clone(),
            site: p.site.clone(),
            metric: p.metric.clone(),
            value: last.value,
            at: last.at,
            alert: !anomalies.is_empty(),
            anomalies,
            baseline,
            readings: p.readings.len(),
        })
    }
}

#[async_trait::async_trait]
impl Skill for DeviceCheckSkill {
    const KIND: &'static str = kinds::CHECK_DEVICE;
    type Payload = CheckDevice;
    type Output = DeviceCheck;

    async fn run(
        &self,
        payload: CheckDevice,
        _command: &Command,
        _ctx: &HandlerContext<'_>,
    ) -> Result<DeviceCheck, HandlerError> {
        self.check(&payload)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rust_decimal::Decimal;
    use shoal_detect::iot::AnomalyKind;
    use shoal_protocol::payloads::DeviceSample;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn payload(values: &[(f64, i64)]) -> CheckDevice {
        let readings = values
            .iter()
            .map(|(v, s)| DeviceSample { value: Decimal::try_from(*v).unwrap(), at: at(*s), threshold: None })
            .collect();
        CheckDevice { device: "pump-7".into(), site: Some("plant-1".into()), metric: "temp".into(), readings }
    }

    fn kinds_of(check: &DeviceCheck) -> Vec<AnomalyKind> {
        check.anomalies.iter().map(|a| a.kind).collect()
    }

    /// 15 readings wobbling around 20, then `last`.
    fn steady_then(last: f64) -> CheckDevice {
        let mut values: Vec<(f64, i64)> =
            (0..15).map(|i| (20.0 + if i % 2 == 0 { 0.2 } else { -0.2 }, i * 10)).collect();
        values.push((last, 150));
        payload(&values)
    }

    #[test]
    fn a_reading_far_from_the_baseline_fires_the_zscore() {
        let skill = DeviceCheckSkill::new(IotSkillSettings::default());
        let check = skill.check(&steady_then(35.0)).unwrap();
        assert_eq!(kinds_of(&check), [AnomalyKind::ZScore]);
        assert!(check.alert);
        let baseline = check.baseline.unwrap();
        assert_eq!(baseline.count, 15);
        assert!((baseline.mean - 20.0).abs() < 0.3, "{}", baseline.mean);
        assert!(check.anomalies[0].reason.contains("above the baseline mean"), "{}", check.anomalies[0].reason);
        let calm = skill.check(&steady_then(20.1)).unwrap();
        assert!(calm.anomalies.is_empty() && !calm.alert, "{:?}", calm.anomalies);
    }

    #[test]
    fn no_zscore_before_the_warmup() {
        let skill = DeviceCheckSkill::new(IotSkillSettings::default());
        let check = skill.check(&payload(&[(20.0, 0), (20.4, 10), (19.8, 20), (90.0, 30)])).unwrap();
        assert!(check.anomalies.is_empty(), "{:?}", check.anomalies);
    }

    #[test]
    fn rate_of_change_and_the_readings_own_threshold() {
        let settings = IotSkillSettings { max_rate_per_s: Some(0.5), ..IotSkillSettings::default() };
        let skill = DeviceCheckSkill::new(settings);
        let mut p = payload(&[(20.0, 0), (20.1, 10), (30.0, 12)]);
        assert_eq!(kinds_of(&skill.check(&p).unwrap()), [AnomalyKind::RateOfChange]);
        p.readings[2].threshold = Some(Decimal::from(25));
        let check = skill.check(&p).unwrap();
        assert_eq!(kinds_of(&check), [AnomalyKind::Threshold, AnomalyKind::RateOfChange]);
        assert_eq!(check.anomalies[0].expected, Some(25.0));
    }

    #[test]
    fn a_stuck_sensor_fires_the_flatline() {
        let settings = IotSkillSettings { flatline_after_s: 60, ..IotSkillSettings::default() };
        let skill = DeviceCheckSkill::new(settings);
        let check = skill.check(&payload(&[(20.0, 0), (21.0, 10), (21.0, 40), (21.0, 70)])).unwrap();
        assert_eq!(kinds_of(&check), [AnomalyKind::Flatline]);
        // Already flat for longer before the newest reading: reported then, not again.
        let later = skill.check(&payload(&[(21.0, 0), (21.0, 70), (21.0, 100)])).unwrap();
        assert!(later.anomalies.is_empty(), "{:?}", later.anomalies);
    }

    #[test]
    fn settings_errors_name_the_key() {
        let bad = IotSkillSettings { alpha: 1.5, ..IotSkillSettings::default() };
        let error = bad.validate().unwrap_err().to_string();
        assert!(error.contains("worker.iot.alpha"), "{error}");
        assert!(DeviceCheckSkill::new(IotSkillSettings::default()).check(&payload(&[])).is_err());
    }
}
