//! The checks behind Shoal's fuzz targets (`fuzz_targets/*.rs`, one line
//! each). Every check must never panic on any input; where a decode
//! succeeds, encoding the value and decoding it again must give the same
//! value (and the same bytes on a second encoding).
//!
//! Inputs are text where the real input is text, so the committed seeds
//! (`corpus-seeds/<target>/`) stay readable: frames one per line, TOML
//! files, a record as `topic`, header lines and a payload.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod config;
pub mod decimal;
pub mod feed;
pub mod offsets;
pub mod protocol;
pub mod record;

use std::fmt::Debug;

use shoal_protocol::messages::WireMessage;

/// Encodes `value`, decodes the bytes, and checks that the result is the
/// same value and encodes to the same bytes.
pub fn round_trip<T: WireMessage + PartialEq + Debug>(value: &T) {
    let bytes = value.encode();
    let back = T::decode(&bytes).unwrap_or_else(|error| {
        panic!(
            "a {} does not decode after encoding: {error}\nvalue: {value:?}\nencoded: {}",
            T::TYPE_NAME,
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(&back, value, "a {} changed through encode/decode: {}", T::TYPE_NAME, String::from_utf8_lossy(&bytes));
    let again = back.encode();
    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&bytes),
        "a {} encodes differently after a round trip",
        T::TYPE_NAME
    );
}

/// [`round_trip`] for a plain serde type (a payload), through JSON text.
pub fn json_round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_string(value).unwrap_or_else(|error| panic!("{value:?} does not serialise: {error}"));
    let back: T = serde_json::from_str(&text).unwrap_or_else(|error| {
        panic!("does not deserialise after serialising: {error}\nvalue: {value:?}\ntext: {text}")
    });
    assert_eq!(&back, value, "changed through JSON: {text}");
    assert_eq!(serde_json::to_string(&back).unwrap(), text, "serialises differently after a round trip");
}
