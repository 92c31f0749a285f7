//! Decimal parsing and its round trip (see shoal_fuzz::decimal).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shoal_fuzz::decimal::text(data));
