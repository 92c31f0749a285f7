//! Per-device IoT anomaly detection ([`DeviceMonitor`]) and per-site incident
//! correlation ([`SiteCorrelator`]). See the crate documentation for the
//! formulas.

mod correlate;
mod monitor;

pub use correlate::{CorrelatorSettings, Incident, Severity, SiteCorrelator};
pub use monitor::DeviceMonitor;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DetectError;

/// One sensor reading: `metric` of `device` (installed at `site`) was `value` at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The device that produced the reading.
    pub device: String,
    /// The site the device is installed at (the correlation key).
    pub site: String,
    /// What was measured, e.g. `"temperature"`.
    pub metric: String,
    /// The measured value. Non-finite values are ignored by the detectors.
    pub value: f64,
    /// When the value was measured (event time, never the wall clock).
    pub at: DateTime<Utc>,
}

/// Which detector raised an [`Anomaly`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// The value crossed a fixed high or low threshold.
    Threshold,
    /// The value deviates from the learnt baseline by more than `z_threshold` σ.
    ZScore,
    /// The value changed faster than `max_rate_per_s`.
    RateOfChange,
    /// The value has not changed (within `flatline_epsilon`) for `flatline_after_s`.
    Flatline,
}

/// One detector firing on one reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The device whose reading fired.
    pub device: String,
    /// The device's site.
    pub site: String,
    /// The metric that fired.
    pub metric: String,
    /// Which detector fired.
    pub kind: AnomalyKind,
    /// The reading's value.
    pub value: f64,
    /// What the detector expected instead: the crossed threshold
    /// ([`AnomalyKind::Threshold`]), the baseline mean ([`AnomalyKind::ZScore`]),
    /// the previous value ([`AnomalyKind::RateOfChange`]); `None` for
    /// [`AnomalyKind::Flatline`].
    pub expected: Option<f64>,
    /// The reading's time.
    pub at: DateTime<Utc>,
    /// A human-readable explanation with the numbers that made it fire.
    pub reason: String,
}

/// Settings of the per-(device, metric) detectors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IotSettings {
    /// Fire [`AnomalyKind::Threshold`] when the value is strictly above this.
    pub threshold_high: Option<f64>,
    /// Fire [`AnomalyKind::Threshold`] when the value is strictly below this.
    pub threshold_low: Option<f64>,
    /// Fire [`AnomalyKind::RateOfChange`] when |Δvalue| / Δt exceeds this (units per second).
    pub max_rate_per_s: Option<f64>,
    /// Fire [`AnomalyKind::Flatline`] once the value has been unchanged this many
    /// seconds; `0` disables the flatline detector.
    pub flatline_after_s: u64,
    /// Two values closer than this count as unchanged for the flatline detector.
    pub flatline_epsilon: f64,
    /// Fire [`AnomalyKind::ZScore`] when |value − mean| / σ exceeds this.
    pub z_threshold: f64,
    /// Readings the baseline must have learnt before the z-score detector may fire.
    /// The EWMA variance starts at 0 and reaches (1 − (1 − α)ⁿ) of its level after
    /// n readings, so keep `warmup` ≳ 3 / α.
    pub warmup: u32,
    /// EWMA smoothing factor in (0, 1]: the weight of the newest reading.
    pub alpha: f64,
}

impl Default for IotSettings {
    fn default() -> Self {
        Self {
            threshold_high: None,
            threshold_low: None,
            max_rate_per_s: None,
            flatline_after_s: 300,
            flatline_epsilon: 1e-6,
            z_threshold: 4.0,
            warmup: 30,
            alpha: 0.1,
        }
    }
}

impl IotSettings {
    /// Checks every setting is finite and in range.
    ///
    /// # Errors
    /// [`DetectError::InvalidSetting`] naming the first offending field.
    pub fn validate(&self) -> Result<(), DetectError> {
        if !(self.alpha.is_finite() && self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(DetectError::invalid("alpha", format!("{} is not in (0, 1]", self.alpha)));
        }
        if !(self.z_threshold.is_finite() && self.z_threshold > 0.0) {
            return Err(DetectError::invalid("z_threshold", format!("{} is not a positive number", self.z_threshold)));
        }
        if !(self.flatline_epsilon.is_finite() && self.flatline_epsilon >= 0.0) {
            return Err(DetectError::invalid("flatline_epsilon", format!("{} is not ≥ 0", self.flatline_epsilon)));
        }
        if let Some(rate) = self.max_rate_per_s
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(DetectError::invalid("max_rate_per_s", format!("{rate} is not a positive number")));
        }
        for (field, limit) in [("threshold_high", self.threshold_high), ("threshold_low", self.threshold_low)] {
            if let Some(limit) = limit
                && !limit.is_finite()
            {
                return Err(DetectError::invalid(field, format!("{limit} is not finite")));
            }
        }
        if let (Some(high), Some(low)) = (self.threshold_high, self.threshold_low)
            && low > high
        {
            return Err(DetectError::invalid("threshold_low", format!("{low} is above threshold_high {high}")));
        }
        Ok(())
    }
}

/// What the monitor has learnt about one (device, metric) series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Readings learnt so far.
    pub count: u64,
    /// EWMA mean μ.
    pub mean: f64,
    /// EWMA variance σ².
    pub variance: f64,
    /// The previous reading's value.
    pub last_value: f64,
    /// The previous reading's time.
    pub last_at: DateTime<Utc>,
    /// The value the series settled on at its last change (the flatline anchor).
    pub changed_value: f64,
    /// When the value last changed by more than `flatline_epsilon`.
    pub changed_at: DateTime<Utc>,
    /// Whether the current flat period has already been reported.
    pub flatline_reported: bool,
}

impl Baseline {
    /// A baseline that has learnt exactly one reading.
    #[must_use]
    pub fn new(value: f64, at: DateTime<Utc>) -> Self {
        Self {
            count: 1,
            mean: value,
            variance: 0.0,
            last_value: value,
            last_at: at,
            changed_value: value,
            changed_at: at,
            flatline_reported: false,
        }
    }

    /// The EWMA standard deviation σ = √σ².
    #[must_use]
    pub fn std_dev(&self) -> f64 {
        self.variance.max(0.0).sqrt()
    }

    /// The z-score (value − μ) / σ, or `None` while σ is zero (no spread learnt
    /// yet) or the result would not be finite.
    #[must_use]
    pub fn zscore(&self, value: f64) -> Option<f64> {
        let sigma = self.std_dev();
        if !(sigma.is_finite() && sigma > f64::EPSILON * self.mean.abs().max(1.0)) {
            return None;
        }
        let z = (value - self.mean) / sigma;
        z.is_finite().then_some(z)
    }

    /// Learns `value` at `at`: updates the EWMA mean and variance
    /// (δ = x − μ; μ += α·δ; σ² = (1 − α)·(σ² + α·δ²)), the previous value and
    /// time, and the flatline anchor when the value moved by more than `epsilon`.
    /// If the statistics overflow they restart from this reading.
    pub fn learn(&mut self, value: f64, at: DateTime<Utc>, alpha: f64, epsilon: f64) {
        let delta = value - self.mean;
        let increment = alpha * delta;
        let mean = self.mean + increment;
        let variance = (1.0 - alpha) * (self.variance + delta * increment);
        if mean.is_finite() && variance.is_finite() {
            self.mean = mean;
            self.variance = variance.max(0.0);
            self.count = self.count.saturating_add(1);
        } else {
            self.mean = value;
            self.variance = 0.0;
            self.count = 1;
        }
        if (value - self.changed_value).abs() > epsilon {
            self.changed_value = value;
            self.changed_at = at;
            self.flatline_reported = false;
        }
        self.last_value = value;
        self.last_at = at;
    }
}
