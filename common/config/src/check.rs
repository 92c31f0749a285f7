//! Validation helpers: each check names the key and the expected form, so
//! every section words its errors the same way.

use std::fmt::Display;
use std::ops::RangeInclusive;

use crate::SettingsError;

/// `value` must lie in `range`; the error gives the value and expects
/// "`unit` between `start` and `end`", e.g. "milliseconds between 10 and
/// 60000".
pub fn in_range<T: PartialOrd + Display>(
    key: &str,
    value: T,
    range: RangeInclusive<T>,
    unit: &str,
) -> Result<(), SettingsError> {
    if range.contains(&value) {
        return Ok(());
    }
    let expected = format!("{unit} between {} and {}", range.start(), range.end());
    Err(SettingsError::invalid(key, value.to_string(), expected))
}

/// `value` must be at least `min`; the error gives the value and expects
/// "`unit` >= `min`", e.g. "an integer >= 1".
pub fn at_least<T: PartialOrd + Display>(key: &str, value: T, min: T, unit: &str) -> Result<(), SettingsError> {
    if value >= min { Ok(()) } else { Err(SettingsError::invalid(key, value.to_string(), format!("{unit} >= {min}"))) }
}

/// `value` must hold more than white space; the error says "empty" and
/// expects `expected`.
pub fn non_empty(key: &str, value: &str, expected: &str) -> Result<(), SettingsError> {
    if value.trim().is_empty() { Err(SettingsError::invalid(key, "empty", expected)) } else { Ok(()) }
}

/// Two settings that go together (a certificate and its key): both set or
/// both empty. The error names the empty one and the one that is set, and
/// expects `expected`.
pub fn both_or_neither(
    (first_key, first): (&str, &str),
    (second_key, second): (&str, &str),
    expected: &str,
) -> Result<(), SettingsError> {
    match (first.is_empty(), second.is_empty()) {
        (true, false) => {
            Err(SettingsError::invalid(first_key, format!("is empty while {second_key} is set"), expected))
        }
        (false, true) => {
            Err(SettingsError::invalid(second_key, format!("is empty while {first_key} is set"), expected))
        }
        _ => Ok(()),
    }
}

/// A first delay that doubles up to a maximum (reconnects, retries): the
/// first must be above 0 and at most the maximum, named `max_key`.
pub fn initial_delay(key: &str, initial_ms: u64, max_key: &str, max_ms: u64) -> Result<(), SettingsError> {
    if initial_ms > 0 && initial_ms <= max_ms {
        return Ok(());
    }
    Err(SettingsError::invalid(
        key,
        format!("{initial_ms} (max {max_ms})"),
        format!("milliseconds > 0 and <= {max_key}"),
    ))
}

/// Checks that `value` is one of `allowed`.
pub fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), SettingsError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(SettingsError::invalid(
            key,
            format!("{value:?} is not recognised"),
            format!("one of {}", allowed.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_the_value_and_the_expected_form() {
        assert!(in_range("a.b", 10, 10..=20, "milliseconds").is_ok());
        let err = in_range("a.b", 5_u64, 10..=60_000, "milliseconds").unwrap_err().to_string();
        assert_eq!(err, "invalid configuration value for `a.b`: 5 (expected milliseconds between 10 and 60000)");
        let err = at_least("t.partitions", 0, 1, "an integer").unwrap_err().to_string();
        assert_eq!(err, "invalid configuration value for `t.partitions`: 0 (expected an integer >= 1)");
        assert!(non_empty("x.id", " w ", "an id").is_ok());
        let err = non_empty("x.id", "  ", "an id").unwrap_err().to_string();
        assert_eq!(err, "invalid configuration value for `x.id`: empty (expected an id)");
        assert!(initial_delay("r.initial_ms", 100, "r.max_ms", 100).is_ok());
        let err = initial_delay("r.initial_ms", 0, "r.max_ms", 100).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid configuration value for `r.initial_ms`: 0 (max 100) (expected milliseconds > 0 and <= r.max_ms)"
        );
        assert!(initial_delay("r.initial_ms", 101, "r.max_ms", 100).is_err());
    }
}
