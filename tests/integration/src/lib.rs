//! The integration tests' harness is `shoal-tools`' (shared with
//! `shoal-bench` and `shoal-chaos`); this crate's own code is its tests.

pub use shoal_tools::*;
