//! Per-account fraud features ([`AccountHistory`]), the rule-based [`score`],
//! and cross-account case building ([`CaseBuilder`]). See the crate
//! documentation for the formulas.

mod case;
mod history;
mod score;

pub use case::{Case, CaseBuilder};
pub use history::{AccountBook, AccountHistory, Assessment, Features, RecentTransaction};
pub use score::{Decision, Score, score};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::DetectError;

/// One card or account transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Unique id of the event that carried the transaction.
    pub event_id: String,
    /// The paying account.
    pub account: String,
    /// The device (fingerprint) the transaction came from, when known.
    pub device: Option<String>,
    /// The amount, in the account's currency.
    pub amount: Decimal,
    /// ISO country code where the transaction happened.
    pub country: String,
    /// Merchant category code (MCC), when known.
    pub merchant_category: Option<String>,
    /// When the transaction happened (event time, never the wall clock).
    pub at: DateTime<Utc>,
}

/// Feature and scoring settings. Points are added per rule; the total is
/// capped at 100 and compared with `review_at` and `decline_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FraudSettings {
    /// Past transactions an account needs before its amount z-score is computed.
    pub zscore_min_history: u32,
    /// Risk in [0, 1] per merchant category code.
    pub merchant_risk: BTreeMap<String, f64>,
    /// Risk of an unknown or missing merchant category.
    pub default_merchant_risk: f64,
    /// Transactions per hour (this one included) allowed before velocity points.
    pub velocity_limit_1h: u32,
    /// Points per transaction above `velocity_limit_1h`.
    pub velocity_points: u32,
    /// Cap on velocity points.
    pub velocity_points_max: u32,
    /// Spend per hour (this transaction included) allowed before spend points.
    pub spend_limit_1h: Decimal,
    /// Points when `spend_limit_1h` is exceeded.
    pub spend_points: u32,
    /// Points for a country the account has not used before.
    pub new_country_points: u32,
    /// Amount z-score from which z-score points are added.
    pub zscore_threshold: f64,
    /// Points per σ of amount z-score, once `zscore_threshold` is reached.
    pub zscore_points_per_sigma: f64,
    /// Cap on z-score points.
    pub zscore_points_max: u32,
    /// Points for a merchant risk of 1 (scaled linearly by the risk).
    pub merchant_points_max: u32,
    /// Scores at or above this are [`Decision::Review`].
    pub review_at: u32,
    /// Scores at or above this are [`Decision::Decline`].
    pub decline_at: u32,
}

impl Default for FraudSettings {
    fn default() -> Self {
        let merchant_risk = [
            ("7995", 0.9),  // betting and casino gambling
            ("6051", 0.8),  // quasi-cash, crypto
            ("4829", 0.7),  // money transfer
            ("5967", 0.6),  // direct marketing, inbound telemarketing
            ("5411", 0.05), // grocery stores
        ];
        Self {
            zscore_min_history: 5,
            merchant_risk: merchant_risk.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            default_merchant_risk: 0.1,
            velocity_limit_1h: 5,
            velocity_points: 10,
            velocity_points_max: 40,
            spend_limit_1h: Decimal::from(1000),
            spend_points: 20,
            new_country_points: 25,
            zscore_threshold: 3.0,
            zscore_points_per_sigma: 5.0,
            zscore_points_max: 40,
            merchant_points_max: 20,
            review_at: 40,
            decline_at: 70,
        }
    }
}

impl FraudSettings {
    /// Checks risks are in [0, 1], the z-score settings are finite and
    /// non-negative, and `review_at ≤ decline_at ≤ 100`.
    ///
    /// # Errors
    /// [`DetectError::InvalidSetting`] naming the first offending field.
    pub fn validate(&self) -> Result<(), DetectError> {
        let in_unit = |r: f64| r.is_finite() && (0.0..=1.0).contains(&r);
        if !in_unit(self.default_merchant_risk) {
            return Err(DetectError::invalid("default_merchant_risk", "must be in [0, 1]"));
        }
        if let Some((mcc, risk)) = self.merchant_risk.iter().find(|(_, r)| !in_unit(**r)) {
            return Err(DetectError::invalid("merchant_risk", format!("{mcc}: {risk} is not in [0, 1]")));
        }
        for (field, value) in
            [("zscore_threshold", self.zscore_threshold), ("zscore_points_per_sigma", self.zscore_points_per_sigma)]
        {
            if !(value.is_finite() && value >= 0.0) {
                return Err(DetectError::invalid(field, format!("{value} is not ≥ 0")));
            }
        }
        if self.spend_limit_1h.is_sign_negative() {
            return Err(DetectError::invalid("spend_limit_1h", "must not be negative"));
        }
        if self.decline_at > 100 {
            return Err(DetectError::invalid("decline_at", "must be at most 100"));
        }
        if self.review_at > self.decline_at {
            return Err(DetectError::invalid("review_at", "must not be above decline_at"));
        }
        Ok(())
    }

    /// The risk of `merchant_category`: its entry in `merchant_risk`, else
    /// `default_merchant_risk`; clamped to [0, 1].
    #[must_use]
    pub fn risk_of(&self, merchant_category: Option<&str>) -> f64 {
        let risk = merchant_category
            .and_then(|mcc| self.merchant_risk.get(mcc))
            .copied()
            .unwrap_or(self.default_merchant_risk);
        if risk.is_finite() { risk.clamp(0.0, 1.0) } else { 0.0 }
    }
}
