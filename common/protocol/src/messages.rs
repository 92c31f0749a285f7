//! Versioned wire messages. JSON on the wire, field names in `snake_case`.
//!
//! Every message carries `schema_version`. Decoding first reads only that field
//! so an unknown version is reported as such (and routed to the dead-letter
//! topic by the caller) rather than as a confusing field error.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The schema version this build writes and reads for every message type.
pub const SCHEMA_VERSION: u32 = 1;

/// Well-known command kinds produced by the bundled rules and handled by the
/// bundled worker handlers.
pub mod kinds {
    /// Re-evaluate a trading strategy after a large price move.
    pub const EVALUATE_STRATEGY: &str = "evaluate_strategy";
    /// Raise an alert, e.g. when a price crosses a level.
    pub const RAISE_ALERT: &str = "raise_alert";
    /// Score a business transaction for fraud risk.
    pub const SCORE_TRANSACTION: &str = "score_transaction";
    /// Check a device's newest sensor reading against its baseline
    /// (threshold, z-score, rate of change, flatline).
    pub const CHECK_DEVICE: &str = "check_device";
}

/// A unit of work for a worker, published by the orchestrator keyed by `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// Unique id; results refer to it.
    pub id: Uuid,
    /// What to do; selects the worker handler (see [`kinds`]).
    pub kind: String,
    /// The entity this command is about (symbol, account, device). Also the
    /// Kafka record key, so one entity's commands keep their order.
    pub key: String,
    /// Per-key sequence number, increasing by one per command for that key.
    pub seq: u64,
    /// When the orchestrator issued it.
    pub issued_at: DateTime<Utc>,
    /// After this instant the command must not be executed.
    pub deadline: Option<DateTime<Utc>>,
    /// Kind-specific input.
    pub payload: serde_json::Value,
}

/// Outcome of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// The handler finished and `output` holds its answer.
    Succeeded,
    /// The handler failed; `output.error` says why.
    Failed,
    /// The deadline had passed before the worker started; not executed.
    Expired,
    /// No handler is registered for the command's kind.
    Unsupported,
}

impl ResultStatus {
    /// The snake_case name used on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Unsupported => "unsupported",
        }
    }
}

/// A worker's answer to one command, published keyed like the command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// The [`Command::id`] this result answers.
    pub command_id: Uuid,
    /// The command's kind, copied for readers of the results topic alone.
    pub kind: String,
    /// The command's key, copied for the same reason.
    pub key: String,
    /// The command's per-key sequence number.
    pub seq: u64,
    /// Identity of the worker that produced it.
    pub worker_id: String,
    /// Outcome.
    pub status: ResultStatus,
    /// Handler output (or `{"error": ...}` on failure).
    pub output: serde_json::Value,
    /// When the worker started on it.
    pub started_at: DateTime<Utc>,
    /// When the worker finished it.
    pub finished_at: DateTime<Utc>,
    /// Set when the command's `seq` did not follow the previous one the
    /// worker saw for its key (absent when it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceNote>,
}

impl CommandResult {
    /// The result of `command`, as `worker_id` answers it (no sequence
    /// note; the worker adds one when the command's `seq` was off).
    pub fn answering(
        command: &Command,
        worker_id: impl Into<String>,
        status: ResultStatus,
        output: serde_json::Value,
        (started_at, finished_at): (DateTime<Utc>, DateTime<Utc>),
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            command_id: command.id,
            kind: command.kind.clone(),
            key: command.key.clone(),
            seq: command.seq,
            worker_id: worker_id.into(),
            status,
            output,
            started_at,
            finished_at,
            sequence: None,
        }
    }
}

/// A command whose `seq` did not follow its key's previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceNote {
    /// What was wrong.
    pub anomaly: SequenceAnomaly,
    /// The key's previous `seq` as the worker saw it.
    pub previous: u64,
}

/// How a `seq` failed to follow its key's previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceAnomaly {
    /// It skipped ahead: commands of the key are missing (or still on their
    /// way through another partition owner).
    Gap,
    /// It was not above the previous one: a replayed command or a restarted
    /// issuer.
    Regression,
}

/// Which side of the book the taker of a trade was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The taker bought (lifted the offer).
    Buy,
    /// The taker sold (hit the bid).
    Sell,
}

/// One normalised market trade, as written to the ticks topic keyed by symbol.
///
/// Prices and sizes are exact decimals, serialised as JSON strings so no
/// reader ever passes them through binary floating point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketTick {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// The feed it came from (e.g. `shoal-sim`).
    pub source: String,
    /// Instrument symbol as the feed names it.
    pub symbol: String,
    /// Trade price.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// Trade size.
    #[serde(with = "rust_decimal::serde::str")]
    pub size: Decimal,
    /// Taker side, when the feed says.
    pub side: Option<Side>,
    /// The exchange's own trade id, when it has one.
    pub trade_id: Option<String>,
    /// The feed's sequence number, when it has one.
    pub sequence: Option<u64>,
    /// Exchange timestamp of the trade.
    pub exchange_ts: DateTime<Utc>,
    /// When Shoal received it.
    pub received_at: DateTime<Utc>,
    /// The feed's channel or stream the trade came from (`trade`,
    /// `aggTrade`, `matches`, ...), when it matters for reading `trade_id`
    /// (Binance trade ids and aggregate trade ids are different number
    /// spaces). Optional and omitted when absent, so readers of schema
    /// version 1 without it still decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// Best bid and offer of one instrument, as written to the ticks topic keyed
/// by symbol with the `shoal-message-type` header `book_top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookTop {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// The feed it came from.
    pub source: String,
    /// Instrument symbol as the feed names it.
    pub symbol: String,
    /// Best bid price.
    #[serde(with = "rust_decimal::serde::str")]
    pub bid_price: Decimal,
    /// Size at the best bid.
    #[serde(with = "rust_decimal::serde::str")]
    pub bid_size: Decimal,
    /// Best ask (offer) price.
    #[serde(with = "rust_decimal::serde::str")]
    pub ask_price: Decimal,
    /// Size at the best ask.
    #[serde(with = "rust_decimal::serde::str")]
    pub ask_size: Decimal,
    /// The feed's update id or sequence number, when it has one.
    pub sequence: Option<u64>,
    /// Exchange timestamp, when the feed gives one.
    pub exchange_ts: Option<DateTime<Utc>>,
    /// When Shoal received it.
    pub received_at: DateTime<Utc>,
}

/// What kind of data-quality problem a feed had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataQualityKind {
    /// Sequence numbers or trade ids skipped ahead: data was lost.
    SequenceGap,
    /// Nothing arrived for longer than the stale bound; the connection was
    /// replaced.
    StaleFeed,
}

/// A data-quality event from feed ingest, written to the ticks topic keyed by
/// symbol (`*` when it concerns the whole connection) with the
/// `shoal-message-type` header `data_quality`, so it sits in order with the
/// symbol's ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataQuality {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// The feed it concerns.
    pub source: String,
    /// The symbol it concerns, or `*` for the whole connection.
    pub symbol: String,
    /// What happened.
    pub kind: DataQualityKind,
    /// The number expected next (sequence gaps).
    pub expected: Option<u64>,
    /// The number received instead (sequence gaps).
    pub received: Option<u64>,
    /// How many messages are missing (sequence gaps).
    pub missing: Option<u64>,
    /// Human-readable detail.
    pub detail: String,
    /// When ingest noticed it.
    pub detected_at: DateTime<Utc>,
}

/// A business event (card transaction, sensor reading, ...) consumed from the
/// events topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// Unique id assigned by the producer of the event.
    pub id: Uuid,
    /// Event type; rules map types to command kinds.
    pub event_type: String,
    /// The entity the event is about; becomes the command key.
    pub key: String,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// Type-specific attributes.
    pub attributes: serde_json::Value,
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not JSON, or not an object with a numeric `schema_version`.
    #[error("not a valid {message_type}: {source}")]
    Malformed {
        /// Which message type was expected.
        message_type: &'static str,
        /// The underlying parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The message declares a schema version this build does not read.
    #[error("unsupported {message_type} schema_version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// Which message type was expected.
        message_type: &'static str,
        /// The version found in the message.
        found: u64,
        /// The version this build supports.
        supported: u32,
    },
    /// The record has no value at all (a tombstone).
    #[error("empty {message_type} payload")]
    Empty {
        /// Which message type was expected.
        message_type: &'static str,
    },
}

impl DecodeError {
    /// A short machine-readable reason, used in dead-letter headers and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed",
            Self::UnsupportedVersion { .. } => "unsupported_schema_version",
            Self::Empty { .. } => "empty",
        }
    }
}

/// A message type with a schema version, decodable from and encodable to JSON.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// Human-readable type name used in errors.
    const TYPE_NAME: &'static str;

    /// Decodes `bytes`, checking the schema version before the fields.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Probe {
            schema_version: u64,
        }
        let message_type = Self::TYPE_NAME;
        if bytes.is_empty() {
            return Err(DecodeError::Empty { message_type });
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|source| DecodeError::Malformed { message_type, source })?;
        if probe.schema_version != u64::from(SCHEMA_VERSION) {
            return Err(DecodeError::UnsupportedVersion {
                message_type,
                found: probe.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| DecodeError::Malformed { message_type, source })
    }

    /// Encodes to JSON bytes.
    fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail: every field is a
        // string, number, timestamp, uuid or `serde_json::Value`.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Declares the wire message types with their names in errors.
macro_rules! wire_messages {
    ($($message:ty => $name:literal),* $(,)?) => {
        $( impl WireMessage for $message {
            const TYPE_NAME: &'static str = $name;
        } )*
    };
}

wire_messages! {
    Command => "command",
    CommandResult => "result",
    MarketTick => "market tick",
    Event => "event",
    BookTop => "book top",
    DataQuality => "data quality event",
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn tick() -> MarketTick {
        MarketTick {
            schema_version: SCHEMA_VERSION,
            source: "shoal-sim".into(),
            symbol: "SIM-A".into(),
            price: Decimal::from_str("101.25").unwrap(),
            size: Decimal::from_str("0.500").unwrap(),
            side: Some(Side::Buy),
            trade_id: Some("7".into()),
            sequence: Some(9),
            exchange_ts: Utc::now(),
            received_at: Utc::now(),
            channel: None,
        }
    }

    /// Found by fuzzing (decimal): `Decimal::from_str` rounds a negative
    /// number too small for 28 places to a negative zero that prints as
    /// "-0.000…" and crosses the wire as 0.000…: the same value and scale
    /// (the sign of zero is not kept, and -0 == 0).
    #[test]
    fn a_negative_zero_crosses_the_wire_as_zero() {
        let price = Decimal::from_str("-0.000____32_8e-28").unwrap();
        assert!(price.is_zero());
        let decoded = MarketTick::decode(&MarketTick { price, ..tick() }.encode()).unwrap();
        assert_eq!(decoded.price, price);
        assert_eq!(decoded.price.scale(), price.scale());
        assert_eq!(decoded.price.to_string().trim_start_matches('-'), price.to_string().trim_start_matches('-'));
    }

    #[test]
    fn a_tick_without_the_optional_channel_still_decodes() {
        let mut json = serde_json::to_value(tick()).unwrap();
        assert!(json.get("channel").is_none(), "omitted when absent");
        json["channel"] = "aggTrade".into();
        let decoded = MarketTick::decode(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(decoded.channel.as_deref(), Some("aggTrade"));
    }

    #[test]
    fn book_top_and_data_quality_round_trip() {
        let top = BookTop {
            schema_version: SCHEMA_VERSION,
            source: "binance".into(),
            symbol: "BNBUSDT".into(),
            bid_price: Decimal::from_str("25.35190000").unwrap(),
            bid_size: Decimal::from_str("31.21000000").unwrap(),
            ask_price: Decimal::from_str("25.36520000").unwrap(),
            ask_size: Decimal::from_str("40.66000000").unwrap(),
            sequence: Some(400_900_217),
            exchange_ts: None,
            received_at: Utc::now(),
        };
        let json: serde_json::Value = serde_json::from_slice(&top.encode()).unwrap();
        assert_eq!(json["bid_price"], "25.35190000");
        assert_eq!(BookTop::decode(&top.encode()).unwrap(), top);
        let dq = DataQuality {
            schema_version: SCHEMA_VERSION,
            source: "coinbase".into(),
            symbol: "BTC-USD".into(),
            kind: DataQualityKind::SequenceGap,
            expected: Some(11),
            received: Some(14),
            missing: Some(3),
            detail: "trade_id skipped".into(),
            detected_at: Utc::now(),
        };
        assert!(String::from_utf8(dq.encode()).unwrap().contains("\"kind\":\"sequence_gap\""));
        assert_eq!(DataQuality::decode(&dq.encode()).unwrap(), dq);
    }

    #[test]
    fn tick_prices_round_trip_exactly_as_strings() {
        let t = tick();
        let bytes = t.encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["price"], "101.25");
        assert_eq!(json["size"], "0.500");
        assert_eq!(MarketTick::decode(&bytes).unwrap(), t);
    }

    #[test]
    fn unknown_version_is_an_error_value() {
        let mut json = serde_json::to_value(tick()).unwrap();
        json["schema_version"] = 99.into();
        let err = MarketTick::decode(&serde_json::to_vec(&json).unwrap()).unwrap_err();
        assert!(matches!(err, DecodeError::UnsupportedVersion { found: 99, .. }), "{err}");
        assert_eq!(err.reason(), "unsupported_schema_version");
    }

    #[test]
    fn garbage_and_empty_are_error_values() {
        assert_eq!(Command::decode(b"\x00\xffnot json").unwrap_err().reason(), "malformed");
        assert_eq!(Command::decode(b"{\"schema_version\":1}").unwrap_err().reason(), "malformed");
        assert_eq!(Command::decode(b"").unwrap_err().reason(), "empty");
        assert_eq!(Command::decode(b"[1,2]").unwrap_err().reason(), "malformed");
    }

    #[test]
    fn command_and_result_round_trip() {
        let cmd = Command {
            schema_version: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            kind: kinds::RAISE_ALERT.into(),
            key: "SIM-A".into(),
            seq: 3,
            issued_at: Utc::now(),
            deadline: None,
            payload: serde_json::json!({"level": "100.00"}),
        };
        assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
        let res = CommandResult {
            schema_version: SCHEMA_VERSION,
            command_id: cmd.id,
            kind: cmd.kind.clone(),
            key: cmd.key.clone(),
            seq: cmd.seq,
            worker_id: "w1".into(),
            status: ResultStatus::Succeeded,
            output: serde_json::json!({}),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            sequence: None,
        };
        let bytes = res.encode();
        assert!(String::from_utf8_lossy(&bytes).contains("\"status\":\"succeeded\""));
        assert_eq!(CommandResult::decode(&bytes).unwrap(), res);
    }
}
