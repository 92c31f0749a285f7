//! [`score`]: additive, explainable points from a transaction's [`Features`].

use serde::{Deserialize, Serialize};

use super::{Features, FraudSettings};
use crate::error::num;

/// What to do with a transaction. Ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Score below `review_at`.
    Approve,
    /// `review_at` ≤ score < `decline_at`.
    Review,
    /// Score ≥ `decline_at`.
    Decline,
}

impl Decision {
    /// The decision for `score` under `settings`' thresholds.
    #[must_use]
    pub fn for_score(score: u32, settings: &FraudSettings) -> Self {
        if score >= settings.decline_at {
            Self::Decline
        } else if score >= settings.review_at {
            Self::Review
        } else {
            Self::Approve
        }
    }
}

/// A transaction's risk score and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    /// The sum of the rules' points, capped at 100.
    pub score: u32,
    /// The decision for the score.
    pub decision: Decision,
    /// One line per rule that added points, with its numbers and `(+points)`.
    pub reasons: Vec<String>,
}

/// Rounds non-negative `points` to a whole number (NaN and negatives give 0).
fn whole_points(points: f64) -> u32 {
    // Saturating float → int cast: NaN → 0, out-of-range values clamp.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = points.round().max(0.0) as u32;
    whole
}

/// Scores `features`:
///
/// - velocity: `min(velocity_points_max, (velocity_1h − velocity_limit_1h) · velocity_points)`
///   when above the limit;
/// - spend: `spend_points` when `spend_1h > spend_limit_1h`;
/// - new country: `new_country_points`;
/// - amount: `min(zscore_points_max, round(z · zscore_points_per_sigma))` when
///   `z ≥ zscore_threshold`;
/// - merchant: `round(merchant_risk · merchant_points_max)`.
///
/// The total is capped at 100; every rule that adds points adds a reason.
#[must_use]
pub fn score(features: &Features, settings: &FraudSettings) -> Score {
    let mut total: u32 = 0;
    let mut reasons = Vec::new();
    let mut add = |points: u32, reason: String| {
        if points > 0 {
            total = total.saturating_add(points);
            reasons.push(format!("{reason} (+{points})"));
        }
    };
    if features.velocity_1h > settings.velocity_limit_1h {
        let over = features.velocity_1h - settings.velocity_limit_1h;
        let points = over.saturating_mul(settings.velocity_points).min(settings.velocity_points_max);
        let reason = format!(
            "{} transactions in the last hour, {over} above the limit of {}",
            features.velocity_1h, settings.velocity_limit_1h
        );
        add(points, reason);
    }
    if features.spend_1h > settings.spend_limit_1h {
        let reason = format!(
            "spent {:.2} in the last hour, above the limit of {:.2}",
            features.spend_1h, settings.spend_limit_1h
        );
        add(settings.spend_points, reason);
    }
    if features.new_country {
        add(
            settings.new_country_points,
            format!("first transaction from {}, a country new to the account", features.country),
        );
    }
    if let Some(z) = features.amount_zscore
        && z >= settings.zscore_threshold
    {
        let points = whole_points(z * settings.zscore_points_per_sigma).min(settings.zscore_points_max);
        let mean = features.amount_mean.map_or_else(|| "unknown".to_owned(), |m| num(m, 2));
        add(points, format!("amount {:.2} is {}σ above the account's mean {mean}", features.amount, num(z, 1)));
    }
    let risk = if features.merchant_risk.is_finite() { features.merchant_risk.clamp(0.0, 1.0) } else { 0.0 };
    let points = whole_points(risk * f64::from(settings.merchant_points_max));
    let mcc = features.merchant_category.as_deref().unwrap_or("unknown");
    add(points, format!("merchant category {mcc} has risk {}", num(risk, 2)));
    if total > 100 {
        reasons.push(format!("score capped at 100 (rules added {total})"));
    }
    let score = total.min(100);
    Score { score, decision: Decision::for_score(score, settings), reasons }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    /// Features that add no points at all.
    fn clean() -> Features {
        Features {
            velocity_1h: 1,
            spend_1h: Decimal::new(4000, 2),
            new_country: false,
            amount_zscore: Some(0.5),
            merchant_risk: 0.0,
            amount: Decimal::new(4000, 2),
            amount_mean: Some(38.0),
            country: "GB".into(),
            merchant_category: Some("5411".into()),
        }
    }

    #[test]
    fn clean_features_score_zero_and_approve() {
        let score = score(&clean(), &FraudSettings::default());
        assert_eq!(score, Score { score: 0, decision: Decision::Approve, reasons: vec![] });
    }

    #[test]
    fn every_rule_explains_its_points() {
        let settings = FraudSettings::default();
        let features = Features {
            velocity_1h: 7,
            spend_1h: Decimal::new(125_050, 2),
            new_country: true,
            amount_zscore: Some(12.34),
            merchant_risk: 0.9,
            amount: Decimal::new(54_000, 2),
            amount_mean: Some(40.0),
            country: "FR".into(),
            merchant_category: Some("7995".into()),
        };
        let score = score(&features, &settings);
        assert_eq!(
            score.reasons,
            [
                "7 transactions in the last hour, 2 above the limit of 5 (+20)",
                "spent 1250.50 in the last hour, above the limit of 1000.00 (+20)",
                "first transaction from FR, a country new to the account (+25)",
                "amount 540.00 is 12.3σ above the account's mean 40.00 (+40)",
                "merchant category 7995 has risk 0.90 (+18)",
                "score capped at 100 (rules added 123)",
            ]
        );
        assert_eq!((score.score, score.decision), (100, Decision::Decline));
    }

    #[test]
    fn decision_thresholds_are_inclusive() {
        let settings = FraudSettings { review_at: 25, decline_at: 45, ..FraudSettings::default() };
        let new_country = Features { new_country: true, ..clean() };
        let review = score(&new_country, &settings);
        assert_eq!((review.score, review.decision), (25, Decision::Review));
        let risky = Features { merchant_risk: 1.0, ..new_country };
        let decline = score(&risky, &settings);
        assert_eq!((decline.score, decline.decision), (45, Decision::Decline));
        let just_below = score(&Features { merchant_risk: 0.95, ..clean() }, &settings);
        assert_eq!((just_below.score, just_below.decision), (19, Decision::Approve));
        assert_eq!(Decision::for_score(24, &settings), Decision::Approve);
    }

    #[test]
    fn zscore_points_start_at_the_threshold_and_are_capped() {
        let settings = FraudSettings::default();
        let below = score(&Features { amount_zscore: Some(2.99), ..clean() }, &settings);
        assert_eq!(below.score, 0);
        let at = score(&Features { amount_zscore: Some(3.0), ..clean() }, &settings);
        assert_eq!(at.score, 15);
        assert_eq!(at.reasons, ["amount 40.00 is 3.0σ above the account's mean 38.00 (+15)"]);
        let huge = score(&Features { amount_zscore: Some(1e300), ..clean() }, &settings);
        assert_eq!(huge.score, 40);
        assert!(huge.reasons[0].contains("1.0e300σ"), "{:?}", huge.reasons);
        let negative = score(&Features { amount_zscore: Some(-50.0), ..clean() }, &settings);
        assert_eq!(negative.score, 0, "small amounts are not suspicious");
    }

    #[test]
    fn velocity_points_are_capped_and_odd_risks_clamped() {
        let settings = FraudSettings::default();
        let burst = score(&Features { velocity_1h: 1000, ..clean() }, &settings);
        assert_eq!(burst.score, 40);
        let nan = score(&Features { merchant_risk: f64::NAN, ..clean() }, &settings);
        assert_eq!(nan.score, 0);
        let unknown = score(&Features { merchant_risk: 0.1, merchant_category: None, ..clean() }, &settings);
        assert_eq!(unknown.reasons, ["merchant category unknown has risk 0.10 (+2)"]);
    }
}
