//! Helpers for Shoal's cross-process tests: a real Kafka broker (started by
//! `scripts/kafka.sh`, found through `KAFKA_BOOTSTRAP_SERVERS`), the real
//! binaries from `target/debug`, and per-test topics and groups so tests
//! never see each other's records.
//!
//! Waiting is always on a condition with a deadline, never a bare sleep.
//!
//! The harness's items are re-exported here from its modules (`scope`,
//! `broker`, `proc`, `launch`, `kafka`, `reader`, `sim`, `ingest`); `bench`
//! is `shoal-bench`'s implementation.

// Test helpers: a panic is how a test reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

pub mod acl;
pub mod backtest;
pub mod bench;
pub mod chaos;
pub mod dlq;
mod harness;
pub mod otlp;

pub use harness::broker::*;
pub use harness::ingest::*;
pub use harness::kafka::*;
pub use harness::launch::*;
pub use harness::netfault::*;
pub use harness::proc::*;
pub use harness::reader::*;
pub use harness::replay::*;
pub use harness::scope::*;
pub use harness::secure::*;
pub use harness::sim::*;

/// Two `#[tokio::test]`s (multi-threaded, two workers) named
/// `$exactly_once` and `$at_least_once` that run `$body(mode)` with the
/// delivery mode `"exactly_once"` and `"at_least_once"`.
#[macro_export]
macro_rules! test_in_both_modes {
    ($body:path => $exactly_once:ident, $at_least_once:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $exactly_once() {
            $body("exactly_once").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $at_least_once() {
            $body("at_least_once").await;
        }
    };
}
