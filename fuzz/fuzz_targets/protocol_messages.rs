//! Record payloads: every wire message type and command payload (see shoal_fuzz::protocol).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shoal_fuzz::protocol::payload(data));
