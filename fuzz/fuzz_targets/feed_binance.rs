//! Binance feed frames, one per line, through one connection's parser and
//! ingest's deduplication (see shoal_fuzz::feed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_orchestrator::feed::FeedFormat;

fuzz_target!(|data: &[u8]| shoal_fuzz::feed::frames(FeedFormat::Binance, data));
