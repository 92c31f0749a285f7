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
    /// The device (fingerprint) the transaction came from, when known: the
    /// fraud topology links accounts through shared devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// When the transaction happened (event time); the decision rules set
    /// it from the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// What the account's derived state says around this transaction, added
    /// by the decision rules (absent in commands from elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<AccountHistory>,
}

/// Payload of `check_device`: a device's newest reading of one metric with
/// the readings before it, as the decisions stage's state holds them. The
/// device's baseline is learnt from these readings, so it is derived from
/// the log like the rest of the state and survives any restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckDevice {
    /// The device (the command's key).
    pub device: String,
    /// The site the device is installed at, when the event said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// What was measured (the event's `metric`, else `value`).
    pub metric: String,
    /// The readings of this metric, oldest first; the last one is checked.
    pub readings: Vec<DeviceSample>,
}

/// One sensor reading in a [`CheckDevice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSample {
    /// The measured value.
    #[serde(with = "rust_decimal::serde::str")]
    pub value: Decimal,
    /// When it was measured (event time).
    pub at: chrono::DateTime<chrono::Utc>,
    /// The high threshold sent with the reading, if any.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rust_decimal::serde::str_option")]
    pub threshold: Option<Decimal>,
}

/// An account's history as the decisions stage's state holds it when a
/// transaction is scored: the features of `score_transaction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountHistory {
    /// Transactions of the account before this one.
    pub transactions_before: u64,
    /// Transactions in the last hour, this one included.
    pub transactions_1h: u64,
    /// Amount spent in the last hour, this one included.
    #[serde(with = "rust_decimal::serde::str")]
    pub spend_1h: Decimal,
    /// Whether this is the account's first transaction from this country
    /// (false for the account's first transaction).
    pub new_country: bool,
    /// Mean of the amounts of the account's recent transactions before this
    /// one (absent without any).
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub mean_amount: Option<Decimal>,
    /// Their population standard deviation.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub std_amount: Option<Decimal>,
    /// How many recent transactions the mean and deviation are over.
    pub recent: u64,
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

/// Event type of a request, made through the API or MCP's `issue_command`,
/// that the orchestrator issue a command. The event goes to the events
/// topic keyed by the command's key; the decisions stage turns it into the
/// command (with the key's next `seq`), so requested commands keep the
/// per-key order of every other command. The event is also the audit
/// record: it says who asked.
pub const COMMAND_REQUESTED: &str = "command_requested";

/// The attributes of a [`COMMAND_REQUESTED`] event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// The command kind (one of [`REQUESTABLE`]).
    pub kind: String,
    /// The command's payload, already checked by [`check_payload`].
    pub payload: serde_json::Value,
    /// Who asked.
    pub requested_by: Requester,
    /// Why, in the requester's words (at most [`MAX_REASON`] characters).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Longest `reason` of a [`CommandRequest`], in characters.
pub const MAX_REASON: usize = 1_000;

/// Longest key of a requested command, in bytes.
pub const MAX_KEY: usize = 256;

/// Who asked for a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    /// Through what: `api` (`POST /v1/commands`) or `mcp` (`issue_command`).
    pub via: String,
    /// The role of the token used (`admin`).
    pub role: String,
    /// A fingerprint of the token (the first 12 hex digits of its SHA-256),
    /// never the token; `None` when the API runs without authentication.
    pub token_id: Option<String>,
    /// The client's name and version when it gave them (an MCP client's
    /// `clientInfo`, an HTTP `User-Agent`).
    pub client: Option<String>,
}

/// The command kinds that may be requested: those whose payload this crate
/// types, so a request can be checked before anything is issued.
pub const REQUESTABLE: [&str; 3] = [
    crate::messages::kinds::EVALUATE_STRATEGY,
    crate::messages::kinds::RAISE_ALERT,
    crate::messages::kinds::SCORE_TRANSACTION,
];

/// Checks `payload` against `kind`'s payload type and returns it in its
/// canonical form. Errors say what is wrong: an unknown kind (and the kinds
/// there are), a missing or ill-typed field (serde's message), a field the
/// kind does not have.
pub fn check_payload(kind: &str, payload: &serde_json::Value) -> Result<serde_json::Value, String> {
    use crate::messages::kinds;
    fn typed<T: serde::de::DeserializeOwned + Serialize>(
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let value: T = T::deserialize(payload).map_err(|e| format!("payload does not fit {kind}: {e}"))?;
        let canonical = serde_json::to_value(value).map_err(|e| e.to_string())?;
        if let (Some(given), Some(known)) = (payload.as_object(), canonical.as_object())
            && let Some(extra) = given.keys().find(|k| !known.contains_key(*k))
        {
            return Err(format!("payload of {kind} has no field {extra:?}; its fields are {:?}", known.keys()));
        }
        Ok(canonical)
    }
    match kind {
        kinds::EVALUATE_STRATEGY => typed::<EvaluateStrategy>(kind, payload),
        kinds::RAISE_ALERT => typed::<RaiseAlert>(kind, payload),
        kinds::SCORE_TRANSACTION => typed::<ScoreTransaction>(kind, payload),
        other => Err(format!("kind {other:?} cannot be requested; the kinds that can are {REQUESTABLE:?}")),
    }
}

#[cfg(test)]
mod request_tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn a_payload_is_checked_against_its_kind() {
        let alert = json!({"symbol": "SIM-A", "level": "100", "previous_price": "99.5", "price": "100.2"});
        assert_eq!(check_payload("raise_alert", &alert).unwrap(), alert);
        let missing = check_payload("raise_alert", &json!({"symbol": "SIM-A"})).unwrap_err();
        assert!(missing.contains("missing field"), "{missing}");
        let mut extra = alert.clone();
        extra["colour"] = json!("red");
        assert!(check_payload("raise_alert", &extra).unwrap_err().contains("\"colour\""));
        let unknown = check_payload("launch_rocket", &alert).unwrap_err();
        assert!(unknown.contains("launch_rocket") && unknown.contains("raise_alert"), "{unknown}");
        assert!(check_payload("raise_alert", &json!("not an object")).is_err());
    }

    #[test]
    fn a_request_reads_back_and_refuses_unknown_fields() {
        let request = CommandRequest {
            kind: "raise_alert".into(),
            payload: json!({}),
            requested_by: Requester { via: "mcp".into(), role: "admin".into(), token_id: None, client: None },
            reason: Some("test".into()),
        };
        let text = serde_json::to_value(&request).unwrap();
        assert_eq!(serde_json::from_value::<CommandRequest>(text.clone()).unwrap(), request);
        let mut bad = text;
        bad["priority"] = json!(1);
        assert!(serde_json::from_value::<CommandRequest>(bad).is_err());
    }
}
