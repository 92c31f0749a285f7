//! [`DeviceMonitor`]: the threshold, z-score, rate-of-change and flatline
//! detectors over per-(device, metric) baselines.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{Anomaly, AnomalyKind, Baseline, IotSettings, Reading};
use crate::error::{DetectError, num};

/// Learns a [`Baseline`] per (device, metric) and runs the detectors on every
/// reading. Deterministic: the output depends only on the readings and their
/// order. Serialisable, so its state can be snapshotted and restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceMonitor {
    settings: IotSettings,
    metric_settings: BTreeMap<String, IotSettings>,
    baselines: BTreeMap<String, BTreeMap<String, Baseline>>,
}

impl DeviceMonitor {
    /// A monitor applying `settings` to every metric.
    ///
    /// # Errors
    /// [`DetectError::InvalidSetting`] if `settings` does not validate.
    pub fn new(settings: IotSettings) -> Result<Self, DetectError> {
        settings.validate()?;
        Ok(Self { settings, metric_settings: BTreeMap::new(), baselines: BTreeMap::new() })
    }

    /// Uses `settings` instead of the default ones for readings of `metric`
    /// (thresholds are usually per metric).
    ///
    /// # Errors
    /// [`DetectError::InvalidSetting`] if `settings` does not validate.
    pub fn with_metric_settings(
        mut self,
        metric: impl Into<String>,
        settings: IotSettings,
    ) -> Result<Self, DetectError> {
        settings.validate()?;
        self.metric_settings.insert(metric.into(), settings);
        Ok(self)
    }

    /// The settings applied to readings of `metric`.
    #[must_use]
    pub fn settings_for(&self, metric: &str) -> &IotSettings {
        self.metric_settings.get(metric).unwrap_or(&self.settings)
    }

    /// The baseline learnt for `metric` of `device`, if any reading was seen.
    #[must_use]
    pub fn baseline(&self, device: &str, metric: &str) -> Option<&Baseline> {
        self.baselines.get(device)?.get(metric)
    }

    /// Runs the detectors on `reading` against the baseline learnt so far, then
    /// learns the reading. Returns the anomalies in detector order (threshold,
    /// z-score, rate of change, flatline); empty when nothing fired or the
    /// value is not finite (such readings are ignored and not learnt).
    pub fn observe(&mut self, reading: &Reading) -> Vec<Anomaly> {
        if !reading.value.is_finite() {
            return Vec::new();
        }
        let settings = *self.settings_for(&reading.metric);
        let mut anomalies = Vec::new();
        threshold(reading, &settings, &mut anomalies);
        let series = self.baselines.entry(reading.device.clone()).or_default();
        let Some(baseline) = series.get_mut(&reading.metric) else {
            series.insert(reading.metric.clone(), Baseline::new(reading.value, reading.at));
            return anomalies;
        };
        zscore(reading, &settings, baseline, &mut anomalies);
        rate_of_change(reading, &settings, baseline, &mut anomalies);
        flatline(reading, &settings, baseline, &mut anomalies);
        baseline.learn(reading.value, reading.at, settings.alpha, settings.flatline_epsilon);
        anomalies
    }
}

/// Builds an anomaly of `kind` for `reading`.
fn anomaly(reading: &Reading, kind: AnomalyKind, expected: Option<f64>, reason: String) -> Anomaly {
    Anomaly {
        device: reading.device.clone(),
        site: reading.site.clone(),
        metric: reading.metric.clone(),
        kind,
        value: reading.value,
        expected,
        at: reading.at,
        reason,
    }
}

/// Fixed thresholds: value > high or value < low.
fn threshold(reading: &Reading, settings: &IotSettings, out: &mut Vec<Anomaly>) {
    let (metric, value) = (&reading.metric, reading.value);
    if let Some(high) = settings.threshold_high
        && value > high
    {
        let reason = format!("{metric} {} above the high threshold {}", num(value, 3), num(high, 3));
        out.push(anomaly(reading, AnomalyKind::Threshold, Some(high), reason));
    }
    if let Some(low) = settings.threshold_low
        && value < low
    {
        let reason = format!("{metric} {} below the low threshold {}", num(value, 3), num(low, 3));
        out.push(anomaly(reading, AnomalyKind::Threshold, Some(low), reason));
    }
}

/// Baseline deviation: |x − μ| / σ > z_threshold, once `warmup` readings were learnt.
fn zscore(reading: &Reading, settings: &IotSettings, baseline: &Baseline, out: &mut Vec<Anomaly>) {
    if baseline.count < u64::from(settings.warmup) {
        return;
    }
    let Some(z) = baseline.zscore(reading.value) else { return };
    if z.abs() <= settings.z_threshold {
        return;
    }
    let reason = format!(
        "{} {} is {}σ {} the baseline mean {} (σ {}, {} readings, limit {}σ)",
        reading.metric,
        num(reading.value, 3),
        num(z.abs(), 2),
        if z > 0.0 { "above" } else { "below" },
        num(baseline.mean, 3),
        num(baseline.std_dev(), 3),
        baseline.count,
        num(settings.z_threshold, 2),
    );
    out.push(anomaly(reading, AnomalyKind::ZScore, Some(baseline.mean), reason));
}

/// Milliseconds from `from` to `to`; negative when `to` is earlier.
fn elapsed_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    to.signed_duration_since(from).num_milliseconds()
}

/// Rate of change: |x − x_prev| / Δt > max_rate_per_s. Skipped when Δt ≤ 0
/// (duplicate or out-of-order timestamps) or the rate is not representable.
fn rate_of_change(reading: &Reading, settings: &IotSettings, baseline: &Baseline, out: &mut Vec<Anomaly>) {
    let Some(max_rate) = settings.max_rate_per_s else { return };
    let dt_ms = elapsed_ms(baseline.last_at, reading.at);
    if dt_ms <= 0 {
        return;
    }
    // i64 milliseconds → f64 seconds: exact enough for any realistic Δt.
    #[allow(clippy::cast_precision_loss)]
    let dt_s = dt_ms as f64 / 1000.0;
    let change = reading.value - baseline.last_value;
    let rate = change.abs() / dt_s;
    if !rate.is_finite() || rate <= max_rate {
        return;
    }
    let reason = format!(
        "{} changed by {} in {} s ({}/s, limit {}/s; previous {})",
        reading.metric,
        num(change, 3),
        num(dt_s, 3),
        num(rate, 3),
        num(max_rate, 3),
        num(baseline.last_value, 3),
    );
    out.push(anomaly(reading, AnomalyKind::RateOfChange, Some(baseline.last_value), reason));
}

/// Flatline: |x − anchor| ≤ ε for at least `flatline_after_s`, reported once per
/// flat period (re-armed by [`Baseline::learn`] when the value moves).
fn flatline(reading: &Reading, settings: &IotSettings, baseline: &mut Baseline, out: &mut Vec<Anomaly>) {
    if settings.flatline_after_s == 0 || baseline.flatline_reported {
        return;
    }
    if (reading.value - baseline.changed_value).abs() > settings.flatline_epsilon {
        return;
    }
    let flat_ms = elapsed_ms(baseline.changed_at, reading.at);
    let Ok(flat_ms_u) = u64::try_from(flat_ms) else { return };
    if flat_ms_u < settings.flatline_after_s.saturating_mul(1000) {
        return;
    }
    baseline.flatline_reported = true;
    #[allow(clippy::cast_precision_loss)]
    let flat_s = flat_ms as f64 / 1000.0;
    let reason = format!(
        "{} stuck at {} (±{}) for {} s since {}, limit {} s",
        reading.metric,
        num(baseline.changed_value, 3),
        num(settings.flatline_epsilon, 6),
        num(flat_s, 3),
        baseline.changed_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        settings.flatline_after_s,
    );
    out.push(anomaly(reading, AnomalyKind::Flatline, None, reason));
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn reading(device: &str, metric: &str, value: f64, secs: i64) -> Reading {
        Reading { device: device.into(), site: "plant-1".into(), metric: metric.into(), value, at: t(secs) }
    }

    fn kinds(anomalies: &[Anomaly]) -> Vec<AnomalyKind> {
        anomalies.iter().map(|a| a.kind).collect()
    }

    /// Settings with only the detectors a test enables.
    fn quiet() -> IotSettings {
        IotSettings { flatline_after_s: 0, z_threshold: 1e9, ..IotSettings::default() }
    }

    #[test]
    fn threshold_fires_above_high_and_below_low() {
        let settings = IotSettings { threshold_high: Some(80.0), threshold_low: Some(5.0), ..quiet() };
        let mut monitor = DeviceMonitor::new(settings).unwrap();
        assert!(monitor.observe(&reading("d1", "temp", 80.0, 0)).is_empty(), "the limit itself is allowed");
        let high = monitor.observe(&reading("d1", "temp", 85.5, 1));
        assert_eq!(kinds(&high), [AnomalyKind::Threshold]);
        assert_eq!(high[0].expected, Some(80.0));
        assert_eq!(high[0].reason, "temp 85.500 above the high threshold 80.000");
        assert_eq!((high[0].device.as_str(), high[0].site.as_str(), high[0].at), ("d1", "plant-1", t(1)));
        let low = monitor.observe(&reading("d1", "temp", 4.0, 2));
        assert_eq!(low[0].expected, Some(5.0));
        assert_eq!(low[0].reason, "temp 4.000 below the low threshold 5.000");
    }

    #[test]
    fn threshold_fires_on_the_very_first_reading() {
        let mut monitor = DeviceMonitor::new(IotSettings { threshold_high: Some(1.0), ..quiet() }).unwrap();
        assert_eq!(kinds(&monitor.observe(&reading("d1", "temp", 2.0, 0))), [AnomalyKind::Threshold]);
    }

    /// Feeds `n` readings alternating 20 and 22, one per second.
    fn warm(monitor: &mut DeviceMonitor, n: i64) {
        for i in 0..n {
            let value = if i % 2 == 0 { 20.0 } else { 22.0 };
            assert!(monitor.observe(&reading("d1", "temp", value, i)).is_empty());
        }
    }

    #[test]
    fn zscore_waits_for_warmup_then_fires() {
        let settings = IotSettings { z_threshold: 3.0, warmup: 10, alpha: 0.1, ..quiet() };
        let mut cold = DeviceMonitor::new(settings).unwrap();
        warm(&mut cold, 9);
        assert!(cold.observe(&reading("d1", "temp", 100.0, 9)).is_empty(), "9 readings < warmup 10");

        let mut warmed = DeviceMonitor::new(settings).unwrap();
        warm(&mut warmed, 10);
        let mean = warmed.baseline("d1", "temp").unwrap().mean;
        let anomalies = warmed.observe(&reading("d1", "temp", 100.0, 10));
        assert_eq!(kinds(&anomalies), [AnomalyKind::ZScore]);
        assert_eq!(anomalies[0].expected, Some(mean));
        assert!(anomalies[0].reason.contains("σ above the baseline mean"), "{}", anomalies[0].reason);
        assert!(anomalies[0].reason.contains("10 readings"), "{}", anomalies[0].reason);
        let below = warmed.observe(&reading("d1", "temp", -500.0, 11));
        assert!(below[0].reason.contains("σ below"), "{}", below[0].reason);
    }

    #[test]
    fn zscore_stays_quiet_within_the_threshold_and_without_spread() {
        let settings = IotSettings { z_threshold: 3.0, warmup: 30, alpha: 0.1, ..quiet() };
        let mut monitor = DeviceMonitor::new(settings).unwrap();
        warm(&mut monitor, 60);
        assert!(monitor.observe(&reading("d1", "temp", 21.5, 60)).is_empty());
        let mut constant = DeviceMonitor::new(settings).unwrap();
        for i in 0..30 {
            constant.observe(&reading("d1", "temp", 7.0, i));
        }
        assert!(constant.observe(&reading("d1", "temp", 9.0, 30)).is_empty(), "σ = 0: z undefined");
    }

    #[test]
    fn baseline_follows_the_ewma_formulas() {
        let mut monitor = DeviceMonitor::new(IotSettings { alpha: 0.5, ..quiet() }).unwrap();
        monitor.observe(&reading("d1", "temp", 10.0, 0));
        monitor.observe(&reading("d1", "temp", 20.0, 1));
        let b = monitor.baseline("d1", "temp").unwrap();
        // δ = 10; μ = 10 + 5 = 15; σ² = 0.5·(0 + 10·5) = 25.
        assert_eq!((b.count, b.mean, b.variance, b.last_value, b.last_at), (2, 15.0, 25.0, 20.0, t(1)));
        assert!(monitor.baseline("d1", "humidity").is_none());
    }

    #[test]
    fn rate_of_change_fires_above_the_limit() {
        let mut monitor = DeviceMonitor::new(IotSettings { max_rate_per_s: Some(5.0), ..quiet() }).unwrap();
        monitor.observe(&reading("d1", "temp", 20.0, 0));
        assert!(monitor.observe(&reading("d1", "temp", 30.0, 2)).is_empty(), "5/s is the limit itself");
        let anomalies = monitor.observe(&reading("d1", "temp", 42.0, 4));
        assert_eq!(kinds(&anomalies), [AnomalyKind::RateOfChange]);
        assert_eq!(anomalies[0].expected, Some(30.0));
        assert_eq!(anomalies[0].reason, "temp changed by 12.000 in 2.000 s (6.000/s, limit 5.000/s; previous 30.000)");
        let falling = monitor.observe(&reading("d1", "temp", 0.0, 5));
        assert!(falling[0].reason.contains("changed by -42.000"), "{}", falling[0].reason);
    }

    #[test]
    fn rate_of_change_skips_zero_and_negative_time_steps() {
        let mut monitor = DeviceMonitor::new(IotSettings { max_rate_per_s: Some(1.0), ..quiet() }).unwrap();
        monitor.observe(&reading("d1", "temp", 20.0, 10));
        assert!(monitor.observe(&reading("d1", "temp", 1e6, 10)).is_empty(), "Δt = 0");
        assert!(monitor.observe(&reading("d1", "temp", -1e6, 5)).is_empty(), "Δt < 0");
        let b = monitor.baseline("d1", "temp").unwrap();
        assert!(b.mean.is_finite() && b.variance.is_finite());
        assert_eq!(b.last_at, t(5), "the out-of-order reading is still learnt");
    }

    #[test]
    fn flatline_fires_once_per_flat_period_and_rearms_after_a_change() {
        let settings = IotSettings { flatline_after_s: 60, flatline_epsilon: 0.01, ..quiet() };
        let mut monitor = DeviceMonitor::new(settings).unwrap();
        let mut fired = Vec::new();
        for (secs, value) in (0..=120).step_by(10).map(|s| (s, 5.0 + if s % 20 == 0 { 0.005 } else { 0.0 })) {
            for a in monitor.observe(&reading("d1", "temp", value, secs)) {
                fired.push((secs, a));
            }
        }
        assert_eq!(fired.len(), 1, "one report for the whole flat period: {fired:?}");
        assert_eq!(fired[0].0, 60);
        assert_eq!(fired[0].1.kind, AnomalyKind::Flatline);
        assert_eq!(fired[0].1.expected, None);
        assert!(
            fired[0].1.reason.starts_with("temp stuck at 5.005 (±0.010000) for 60.000 s since"),
            "{}",
            fired[0].1.reason
        );
        assert!(fired[0].1.reason.ends_with("limit 60 s"), "{}", fired[0].1.reason);

        assert!(monitor.observe(&reading("d1", "temp", 9.0, 130)).is_empty(), "the change re-arms");
        assert!(monitor.observe(&reading("d1", "temp", 9.0, 189)).is_empty());
        assert_eq!(kinds(&monitor.observe(&reading("d1", "temp", 9.0, 190))), [AnomalyKind::Flatline]);
        assert!(monitor.observe(&reading("d1", "temp", 9.0, 250)).is_empty());
    }

    #[test]
    fn flatline_zero_disables_it_and_series_are_independent() {
        let mut monitor = DeviceMonitor::new(IotSettings { flatline_after_s: 10, ..quiet() })
            .unwrap()
            .with_metric_settings("humidity", quiet())
            .unwrap();
        for secs in 0..=20 {
            assert!(monitor.observe(&reading("d1", "humidity", 1.0, secs)).is_empty());
            let other = monitor.observe(&reading("d2", "temp", 1.0, secs * 2));
            assert_eq!(other.is_empty(), secs != 5, "d2 temp flat from 0 s, reported at 10 s");
        }
        assert_eq!(monitor.settings_for("humidity").flatline_after_s, 0);
        assert_eq!(monitor.settings_for("temp").flatline_after_s, 10);
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut monitor = DeviceMonitor::new(IotSettings { threshold_high: Some(0.0), ..quiet() }).unwrap();
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(monitor.observe(&reading("d1", "temp", value, 0)).is_empty());
        }
        assert!(monitor.baseline("d1", "temp").is_none());
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let bad = [
            (IotSettings { alpha: 0.0, ..IotSettings::default() }, "alpha"),
            (IotSettings { alpha: 1.5, ..IotSettings::default() }, "alpha"),
            (IotSettings { z_threshold: f64::NAN, ..IotSettings::default() }, "z_threshold"),
            (IotSettings { flatline_epsilon: -1.0, ..IotSettings::default() }, "flatline_epsilon"),
            (IotSettings { max_rate_per_s: Some(0.0), ..IotSettings::default() }, "max_rate_per_s"),
            (IotSettings { threshold_high: Some(f64::INFINITY), ..IotSettings::default() }, "threshold_high"),
            (
                IotSettings { threshold_high: Some(1.0), threshold_low: Some(2.0), ..IotSettings::default() },
                "threshold_low",
            ),
        ];
        for (settings, field) in bad {
            match DeviceMonitor::new(settings) {
                Err(DetectError::InvalidSetting { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected an error, got {other:?}"),
            }
        }
        assert!(DeviceMonitor::new(IotSettings::default()).is_ok());
    }

    #[test]
    fn settings_deserialise_with_defaults() {
        let settings: IotSettings = serde_json::from_str(r#"{"threshold_high": 90.0}"#).unwrap();
        assert_eq!(settings, IotSettings { threshold_high: Some(90.0), ..IotSettings::default() });
    }
}
