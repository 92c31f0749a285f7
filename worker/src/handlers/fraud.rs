//! `score_transaction`: a transparent rule-based fraud score (0–100) with the
//! reasons that contributed, so a reviewer can see why.

use rust_decimal::Decimal;
use shoal_protocol::payloads::ScoreTransaction;

use super::HandlerError;

/// Merchant categories with elevated fraud rates (gambling, money transfer,
/// digital goods).
const RISKY_MCC: &[&str] = &["7995", "4829", "5816"];

/// The skill: a pure function of the payload (see [`super::pure`]).
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
    if p.merchant_category.as_deref().is_some_and(|m| RISKY_MCC.contains(&m)) {
        add(25, "high-risk merchant category");
    }
    if p.country.len() != 2 {
        add(15, "unknown country code");
    }
    let score = score.min(100);
    let decision = match score {
        s if s >= 70 => "decline",
        s if s >= 40 => "review",
        _ => "approve",
    };
    Ok(serde_json::json!({
        "account": p.account,
        "event_id": p.event_id,
        "score": score,
        "decision": decision,
        "reasons": reasons,
    }))
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
}
