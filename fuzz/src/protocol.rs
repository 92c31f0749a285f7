//! Record payloads (`shoal-protocol`): every wire message type's `decode`
//! (schema version first, then the fields), the bundled command kinds'
//! payloads and `check_payload`, on the same bytes.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_protocol::approvals::{ApprovalEvent, HeldCommand};
use shoal_protocol::messages::{
    BookTop, Command, CommandResult, DataQuality, DecodeError, Event, MarketTick, SCHEMA_VERSION, WireMessage,
};
use shoal_protocol::payloads::{self, CheckDevice, CommandRequest, EvaluateStrategy, RaiseAlert, ScoreTransaction};

use crate::{json_round_trip, round_trip};

/// Decodes `data` as every message type and every payload type.
pub fn payload(data: &[u8]) {
    message::<Command>(data);
    message::<CommandResult>(data);
    message::<MarketTick>(data);
    message::<BookTop>(data);
    message::<DataQuality>(data);
    message::<Event>(data);
    message::<ApprovalEvent>(data);
    let value = serde_json::from_slice::<serde_json::Value>(data).ok();
    typed::<EvaluateStrategy>(data, value.as_ref());
    typed::<RaiseAlert>(data, value.as_ref());
    typed::<ScoreTransaction>(data, value.as_ref());
    typed::<CheckDevice>(data, value.as_ref());
    typed::<CommandRequest>(data, value.as_ref());
    typed::<HeldCommand>(data, value.as_ref());
    if let Some(value) = &value {
        check_payload(value);
    }
}

/// `T::decode`: an error value or a message that round-trips.
fn message<T: WireMessage + PartialEq + Debug>(data: &[u8]) {
    match T::decode(data) {
        Ok(value) => round_trip(&value),
        Err(DecodeError::Empty { .. }) => assert!(data.is_empty()),
        Err(DecodeError::UnsupportedVersion { found, .. }) => assert_ne!(found, u64::from(SCHEMA_VERSION)),
        Err(DecodeError::Malformed { .. }) => {}
    }
}

/// A payload type read from the bytes (as a consumer of the raw record
/// would) and from the parsed JSON value (as a handler reads
/// `Command::payload`): each round-trips, and both agree.
fn typed<T>(data: &[u8], value: Option<&serde_json::Value>)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let from_bytes = serde_json::from_slice::<T>(data).ok();
    if let Some(typed) = &from_bytes {
        json_round_trip(typed);
    }
    let from_value = value.and_then(|v| T::deserialize(v).ok());
    if let Some(typed) = &from_value {
        json_round_trip(typed);
    }
    if let (Some(a), Some(b)) = (&from_bytes, &from_value) {
        assert_eq!(a, b, "the bytes and their JSON value read differently");
    }
}

/// `check_payload` for every kind (and an unknown one): the canonical form
/// it returns passes the check again, unchanged.
fn check_payload(value: &serde_json::Value) {
    for kind in payloads::REQUESTABLE.iter().copied().chain(["no_such_kind"]) {
        if let Ok(canonical) = payloads::check_payload(kind, value) {
            assert_eq!(
                payloads::check_payload(kind, &canonical).as_ref(),
                Ok(&canonical),
                "the canonical payload of {kind} is not canonical"
            );
        }
    }
}
