//! Shoal's pure-logic detectors for real-time agents: per-device IoT anomaly
//! detection with per-site incident correlation, and per-account fraud
//! features and scoring with cross-account case building.
//!
//! No async, no Kafka, no clock: every time is an event time carried by the
//! input, all state lives in `BTreeMap`/`BTreeSet`/`Vec`, and every type
//! (state included) is serde-serialisable, so a backtest that replays the same
//! inputs in the same order produces byte-identical output.
//!
//! # IoT ([`iot`])
//!
//! [`iot::DeviceMonitor::observe`] keeps one [`iot::Baseline`] per
//! (device, metric) and runs four checks against the baseline learnt *before*
//! the reading, then learns it. Non-finite values are ignored.
//!
//! - **Baseline** (EWMA, weight α of the newest reading): with δ = x − μ,
//!   μ ← μ + α·δ and σ² ← (1 − α)·(σ² + α·δ²); the first reading sets μ = x,
//!   σ² = 0.
//! - **Threshold**: x > `threshold_high` or x < `threshold_low`
//!   ([`iot::AnomalyKind::Threshold`], expected = the crossed threshold).
//! - **Z-score**: once the baseline has learnt `warmup` readings and σ > 0,
//!   z = (x − μ) / σ fires when |z| > `z_threshold`
//!   ([`iot::AnomalyKind::ZScore`], expected = μ).
//! - **Rate of change**: r = |x − x_prev| / Δt with Δt in seconds fires when
//!   r > `max_rate_per_s` ([`iot::AnomalyKind::RateOfChange`], expected =
//!   x_prev). Δt ≤ 0 (duplicate or out-of-order timestamps) skips the check,
//!   so there is never a division by zero.
//! - **Flatline**: the anchor is the value at the last change (a move of more
//!   than ε = `flatline_epsilon`); when |x − anchor| ≤ ε and
//!   t − t_change ≥ `flatline_after_s`, it fires once
//!   ([`iot::AnomalyKind::Flatline`]) and re-arms at the next change.
//!
//! [`iot::SiteCorrelator::observe`] groups anomalies per site: an
//! [`iot::Incident`] opens when at least N = `min_devices` distinct devices
//! have anomalies less than W = `window_s` before the site's latest anomaly,
//! and is returned again whenever a new device joins it. Its severity for d
//! devices is Minor (d < 2N), Major (2N ≤ d < 3N) or Critical (d ≥ 3N). It
//! stays open while anomalies arrive less than W apart;
//! [`iot::SiteCorrelator::close_stale`] closes it after W of silence.
//!
//! # Fraud ([`fraud`])
//!
//! [`fraud::AccountHistory::features`] computes, *before*
//! [`fraud::AccountHistory::record`] learns the transaction:
//!
//! - **velocity_1h / spend_1h**: the count and sum of the account's
//!   transactions in (t − 1 h, t], this one included;
//! - **new_country**: the account has history and never used this country;
//! - **amount_zscore**: z = (x − μ) / σ′ with Welford's running μ and sample
//!   σ = √(M₂ / (n − 1)) (n += 1; δ = x − μ; μ += δ / n; M₂ += δ·(x − μ)),
//!   σ′ = max(σ, 0.01·|μ|, 0.01); `None` until n ≥ `zscore_min_history` (5);
//! - **merchant_risk**: `merchant_risk[mcc]`, else `default_merchant_risk`,
//!   in [0, 1].
//!
//! [`fraud::score`] adds points per rule, each with a reason carrying its
//! numbers: velocity `min(cap, (v − limit)·points)`, spend `spend_points`,
//! new country `new_country_points`, amount `min(cap, round(z·points_per_σ))`
//! when z ≥ `zscore_threshold`, merchant `round(risk·merchant_points_max)`;
//! the total is capped at 100. Score ≥ `decline_at` → Decline, ≥ `review_at`
//! → Review, else Approve.
//!
//! [`fraud::CaseBuilder::observe`] links accounts through shared devices and
//! opens a [`fraud::Case`] when a device is shared by at least two accounts,
//! one of which was scored Review or Decline; later transactions of its
//! accounts or devices join it, and linked cases merge.

pub mod error;
pub mod fraud;
pub mod iot;

pub use error::DetectError;
