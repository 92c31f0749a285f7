//! `score_transaction`: a transparent rule-based fraud score (0–100) with the
//! reasons that contributed, so a reviewer can see why.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;
use shoal_detect::fraud::{Features, FraudSettings};
use shoal_protocol::payloads::{AccountHistory, ScoreTransaction};

use super::HandlerError;

/// Merchant categories with elevated fraud rates (gambling, money transfer,
/// digital goods).
const RISKY_MCC: &[&str] = &["7995", "4829", "5816"];

/// The `[worker.fraud]` section: whether scored transactions go on to the
/// fraud topology's case-building level (docs/levels.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudSkillSettings {
    /// The case scope each scored transaction is sent to as a `build_case`
    /// (in the result's `next`, published to `worker.next_topic`): one
    /// case builder sees every transaction of its scope. Empty: scores only.
    pub case_key: String,
}

/// `score_transaction` as a level of the fraud topology: the score, and a
/// `build_case` for `case_key` with the transaction and its score.
#[derive(Debug, Clone)]
pub struct CaseFeedingScore {
    case_key: String,
}

impl CaseFeedingScore {
    /// Scores and sends each transaction on to `case_key`.
    pub fn new(case_key: &str) -> Self {
        Self { case_key: case_key.to_string() }
    }
}

#[async_trait::async_trait]
impl super::Handler for CaseFeedingScore {
    async fn handle(
        &self,
        command: &shoal_protocol::messages::Command,
        _attempt: u32,
    ) -> Result<serde_json::Value, HandlerError> {
        let p: ScoreTransaction = super::payload(command)?;
        let mut out = score(&p)?;
        let scored: shoal_detect::fraud::Score = serde_json::from_value(out.clone())
            .map_err(|e| HandlerError::Rejected(format!("score_transaction output does not read back: {e}")))?;
        let transaction = shoal_detect::fraud::Transaction {
            event_id: p.event_id.to_string(),
            account: p.account.clone(),
            device: p.device.clone(),
            amount: p.amount,
            country: p.country.clone(),
            merchant_category: p.merchant_category.clone(),
            at: p.at.unwrap_or(command.issued_at),
        };
        let next = crate::levels::NextCommand::new(
            super::cases::BUILD_CASE,
            &self.case_key,
            &super::cases::BuildCase { transaction, score: scored },
        );
        out[crate::levels::NEXT_FIELD] = serde_json::json!([next]);
        Ok(out)
    }
}

/// The skill: a pure function of the payload (see [`super::pure`]).
///
/// Points come from the transaction itself (amount, card not present,
/// country code) and, from the merchant category, either a fixed list of
/// risky categories or, when the decision rules attached the account's
/// history, `shoal-detect`'s features and scores: spend velocity, spend in
/// the hour, a country new to the account, the amount's z-score against the
/// account's recent amounts, and the merchant category's risk. Every point
/// has its reason.
pub fn score(p: &ScoreTransaction) -> Result<serde_json::Value, HandlerError> {
    if p.amount < Decimal::ZERO {
        return Err(HandlerError::Rejected(format!("negative amount {}", p.amount)));
    }
    let mut score = 0u32;
    let mut reasons = Vec::new();
    let mut add = |points: u32, reason: &str| {
        score += points;
        reasons.push(reason.to_string());
    };
    if p.amount >= Decimal::from(5_000) {
        add(40, "amount >= 5000");
    } else if p.amount >= Decimal::from(1_000) {
        add(20, "amount >= 1000");
    }
    if !p.card_present {
        add(20, "card not present");
    }
    if p.country.len() != 2 {
        add(15, "unknown country code");
    }
    let features = match &p.history {
        Some(history) => {
            let (features, scored) = from_history(p, history);
            score += scored.score;
            reasons.extend(scored.reasons);
            Some(features)
        }
        None => {
            if p.merchant_category.as_deref().is_some_and(|m| RISKY_MCC.contains(&m)) {
                score += 25;
                reasons.push("high-risk merchant category".to_string());
            }
            None
        }
    };
    let score = score.min(100);
    let decision = match score {
        s if s >= 70 => "decline",
        s if s >= 40 => "review",
        _ => "approve",
    };
    let mut out = serde_json::json!({
        "account": p.account,
        "event_id": p.event_id,
        "score": score,
        "decision": decision,
        "reasons": reasons,
    });
    if let Some(features) = features {
        out["features"] = serde_json::to_value(features).unwrap_or_default();
    }
    Ok(out)
}

/// The account's features from the history the rules attached, and
/// `shoal-detect`'s points for them.
fn from_history(p: &ScoreTransaction, h: &AccountHistory) -> (Features, shoal_detect::fraud::Score) {
    let settings = FraudSettings::default();
    let amount = p.amount.to_f64().unwrap_or(0.0);
    let mean = h.mean_amount.and_then(|m| m.to_f64());
    let zscore = match (mean, h.std_amount.and_then(|s| s.to_f64())) {
        (Some(mean), Some(sd)) if h.recent >= u64::from(settings.zscore_min_history) => {
            // The floor keeps an account of identical amounts finite.
            let sigma = sd.max(0.01 * mean.abs()).max(0.01);
            Some((amount - mean) / sigma)
        }
        _ => None,
    };
    let features = Features {
        velocity_1h: u32::try_from(h.transactions_1h).unwrap_or(u32::MAX),
        spend_1h: h.spend_1h,
        new_country: h.new_country,
        amount_zscore: zscore,
        merchant_risk: settings.risk_of(p.merchant_category.as_deref()),
        amount: p.amount,
        amount_mean: zscore.and(mean),
        country: p.country.clone(),
        merchant_category: p.merchant_category.clone(),
    };
    let scored = shoal_detect::fraud::score(&features, &settings);
    (features, scored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(amount: &str, card_present: bool, mcc: Option<&str>) -> ScoreTransaction {
        ScoreTransaction {
            event_id: uuid::Uuid::nil(),
            account: "acct-1".into(),
            amount: amount.parse().unwrap(),
            currency: "EUR".into(),
            country: "DE".into(),
            card_present,
            merchant_category: mcc.map(str::to_string),
            device: None,
            at: None,
            history: None,
        }
    }

    #[test]
    fn small_card_present_purchase_is_approved() {
        assert_eq!(score(&tx("12.50", true, Some("5411"))).unwrap()["decision"], "approve");
    }

    #[test]
    fn large_remote_gambling_payment_is_declined() {
        let out = score(&tx("7500", false, Some("7995"))).unwrap();
        assert_eq!(out["score"], 85);
        assert_eq!(out["decision"], "decline");
    }

    fn history(recent: u64, mean: &str, sd: &str, in_hour: u64, new_country: bool) -> AccountHistory {
        AccountHistory {
            transactions_before: recent,
            transactions_1h: in_hour,
            spend_1h: Decimal::from(100),
            new_country,
            mean_amount: Some(mean.parse().unwrap()),
            std_amount: Some(sd.parse().unwrap()),
            recent,
        }
    }

    #[test]
    fn with_the_account_history_the_features_score_with_reasons() {
        let usual =
            ScoreTransaction { history: Some(history(20, "40", "5", 1, false)), ..tx("42", true, Some("5411")) };
        let out = score(&usual).unwrap();
        assert_eq!(out["decision"], "approve", "{out}");
        assert_eq!(out["features"]["velocity_1h"], 1);

        let odd = ScoreTransaction { history: Some(history(20, "40", "5", 9, true)), ..tx("900", false, Some("7995")) };
        let out = score(&odd).unwrap();
        assert_eq!(out["decision"], "decline", "{out}");
        let reasons = out["reasons"].as_array().unwrap();
        let has = |needle: &str| reasons.iter().any(|r| r.as_str().unwrap_or_default().contains(needle));
        assert!(has("σ above the account's mean"), "z-score reason: {reasons:?}");
        assert!(has("new to the account"), "new country reason: {reasons:?}");
        assert!(has("transactions in the last hour"), "velocity reason: {reasons:?}");
        assert!(has("merchant category 7995"), "merchant risk reason: {reasons:?}");
        assert!(!has("high-risk merchant category"), "the fixed list is not counted twice");
    }
}
