//! Typed payloads of the bundled command kinds. Both the rules that issue
//! them and the handlers that execute them use these types.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Payload of `evaluate_strategy`: a large move over the rolling window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateStrategy {
    /// Instrument.
    pub symbol: String,
    /// Window length the move was measured over, seconds.
    pub window_secs: u64,
    /// Prices in the window, oldest first.
    #[serde(with = "decimal_vec")]
    pub prices: Vec<Decimal>,
    /// Move from the window's first to its last price, basis points.
    pub change_bps: i64,
}

/// Payload of `raise_alert`: a price crossed a level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaiseAlert {
    /// Instrument.
    pub symbol: String,
    /// The level crossed.
    #[serde(with = "rust_decimal::serde::str")]
    pub level: Decimal,
    /// Price before the crossing.
    #[serde(with = "rust_decimal::serde::str")]
    pub previous_price: Decimal,
    /// Price after the crossing.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
}

/// Payload of `score_transaction`: a card transaction event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreTransaction {
    /// Id of the event that caused the command.
    pub event_id: uuid::Uuid,
    /// Account or card the transaction belongs to.
    pub account: String,
    /// Amount in the transaction currency.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO 4217 currency code.
    pub currency: String,
    /// ISO 3166 country where the transaction happened.
    pub country: String,
    /// Whether the card was physically present.
    #[serde(default)]
    pub card_present: bool,
    /// Merchant category code.
    #[serde(default)]
    pub merchant_category: Option<String>,
}

mod decimal_vec {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(values: &[Decimal], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(values.iter().map(|d| d.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Decimal>, D::Error> {
        let raw: Vec<String> = Vec::deserialize(d)?;
        raw.iter().map(|s| s.parse::<Decimal>().map_err(serde::de::Error::custom)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_travel_as_strings() {
        let p = EvaluateStrategy {
            symbol: "SIM-A".into(),
            window_secs: 30,
            prices: vec!["100.10".parse().unwrap(), "101.00".parse().unwrap()],
            change_bps: 89,
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["prices"], serde_json::json!(["100.10", "101.00"]));
        assert_eq!(serde_json::from_value::<EvaluateStrategy>(json).unwrap(), p);
    }
}
