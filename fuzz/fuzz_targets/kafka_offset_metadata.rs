//! Commit metadata of done records (see shoal_fuzz::offsets).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shoal_fuzz::offsets::metadata(data));
