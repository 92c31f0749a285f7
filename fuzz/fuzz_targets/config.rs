//! Configuration files through the loader and validation (see shoal_fuzz::config).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shoal_fuzz::config::file(data));
