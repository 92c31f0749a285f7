//! Kafka records: state decoding by topic and header, record headers (see shoal_fuzz::record).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shoal_fuzz::record::record(data));
