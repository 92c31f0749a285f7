//! Decimals from feeds and payloads: the feeds' `decimal` (plain or
//! scientific text), `decimal_raw` (a JSON number or string, never through
//! f64) and `Decimal::from_str` (payload and tick decimals). A decimal
//! that parses prints as text that parses to the same decimal with the same
//! scale, and travels through the wire format (`rust_decimal::serde::str`)
//! unchanged.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shoal_orchestrator::feed::protocol::{decimal, decimal_raw};

/// A decimal as the wire messages carry one.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Wire {
    #[serde(with = "rust_decimal::serde::str")]
    value: Decimal,
}

/// Parses `data` every way a decimal is parsed.
pub fn text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = decimal(text) {
        stable(d, text);
    }
    if let Ok(d) = Decimal::from_str(text) {
        stable(d, text);
        // `decimal` refuses scientific text that `from_str` rounds (more
        // than 28 decimal places): where both read it, they agree.
        if let Ok(exact) = decimal(text) {
            assert_eq!(exact, d, "decimal() disagrees with from_str on {text:?}");
        }
    }
    if let Ok(raw) = serde_json::from_str::<Box<RawValue>>(text) {
        let from_raw = decimal_raw(&raw);
        if let Ok(d) = &from_raw {
            stable(*d, text);
        }
        // A JSON number reads as its own text does.
        let number = raw.get().trim_start().starts_with(|c: char| c == '-' || c.is_ascii_digit());
        if number {
            assert_eq!(from_raw.ok(), decimal(raw.get()).ok(), "JSON number {text:?}");
        }
    }
}

/// `d` prints as text that parses back to `d` with the same scale, and
/// round-trips through the wire format.
fn stable(d: Decimal, input: &str) {
    let printed = d.to_string();
    let back = Decimal::from_str(&printed).unwrap_or_else(|e| panic!("{input:?} -> {printed:?} does not parse: {e}"));
    assert_eq!(back, d, "{input:?} -> {printed:?}");
    assert_eq!(back.scale(), d.scale(), "{input:?} -> {printed:?}: scale");
    assert_eq!(decimal(&printed).ok(), Some(d), "{input:?} -> {printed:?}: decimal()");
    let json = serde_json::to_string(&Wire { value: d }).unwrap();
    let wire: Wire = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{input:?} -> {json}: {e}"));
    assert_eq!(wire.value, d);
    // Value and scale cross the wire unchanged. A zero may lose its sign
    // (rust_decimal reads a long "-0.000…" back as 0.000…; -0 == 0), found
    // by this target with "-0.000____32_8e-28".
    let unsigned = |text: String| if d.is_zero() { text.trim_start_matches('-').to_string() } else { text };
    assert_eq!(unsigned(wire.value.to_string()), unsigned(printed), "{input:?}: the wire changed the scale");
}
