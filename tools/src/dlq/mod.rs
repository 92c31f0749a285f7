//! `shoal-dlq`: the operator's tool for the dead-letter topic. It lists the
//! dead letters grouped by reason, shows one of them readably, and
//! re-drives chosen ones (their original key, body and headers) to the
//! topic they came from, exactly once: each re-drive batch is one Kafka
//! transaction that also writes a record per dead letter to the re-drive
//! log (`<dead-letter topic>.redrive`, keyed by the dead letter's
//! coordinates), and a run first reads that log (`read_committed`) and
//! skips what it lists. The transactional id is stable for the tool, so a
//! new run fences a crashed one and aborts its open transaction.
//!
//! The tool is synchronous: librdkafka's calls block, and a command-line
//! tool has nothing else to do meanwhile.

// Everything here reads input from outside the process: no panics on it.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod cli;
mod letter;
mod list;
mod log;
mod read;
mod redrive;
mod select;
mod show;

use std::time::Duration;

use rdkafka::error::KafkaError;
use serde::{Deserialize, Serialize};
use shoal_config::{SettingsError, Validate};
use shoal_kafka::settings::{DeliverySettings, KafkaSettings, TopicsSettings};

pub use letter::{Coordinates, DeadLetter};
pub use list::{Listing, list};
pub use log::{LogEntry, RedriveLog, default_log_topic};
pub use read::Reader;
pub use redrive::{RedriveOptions, RedriveSummary, redrive};
pub use select::Selector;
pub use show::{Target, show};

/// What `shoal-dlq` reads of Shoal's configuration: the cluster (`[kafka]`,
/// with TLS and SASL), the topics (`[topics]`, the dead-letter topic among
/// them) and `[delivery]` (the prefix of its transactional id). The other
/// sections of the orchestrator's and the worker's configuration are
/// accepted and ignored, so the same file and environment serve all three.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DlqSettings {
    /// Connection to the cluster.
    pub kafka: KafkaSettings,
    /// Shoal's topics.
    pub topics: TopicsSettings,
    /// Delivery settings (the transactional id prefix).
    pub delivery: DeliverySettings,
}

impl Validate for DlqSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        self.topics.validate()?;
        self.delivery.validate()
    }
}

impl DlqSettings {
    /// The re-drive transactional id of `group`:
    /// `<delivery.transactional_id_prefix>-dlq-<group>`.
    pub fn transactional_id(&self, group: &str) -> String {
        format!("{}-dlq-{group}", self.delivery.transactional_id_prefix)
    }

    /// Bound on each transactional call.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery.transaction_call_timeout_ms)
    }
}

/// What can go wrong in `shoal-dlq`.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// A Kafka call failed.
    #[error("{what}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// A topic could not be read to its end in time; nothing was decided on
    /// a partial view.
    #[error("{topic} was not read to its end within {bound:?} (raise --timeout-secs)")]
    Incomplete {
        /// The topic.
        topic: String,
        /// The bound.
        bound: Duration,
    },
    /// A topic the tool must read does not exist.
    #[error("topic {0} does not exist")]
    NoTopic(String),
    /// `show` found nothing.
    #[error("no dead letter {0}")]
    NotFound(String),
    /// A dead letter's origin partition is gone; nothing was re-driven.
    #[error("cannot re-drive {letter}: its origin {origin} does not exist (nothing was re-driven)")]
    MissingOrigin {
        /// The dead letter.
        letter: Coordinates,
        /// Its origin.
        origin: Coordinates,
    },
    /// The re-drive log topic could not be created.
    #[error("cannot create the re-drive log topic {topic}: {reason}")]
    CreateLog {
        /// Its name.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// A re-drive transaction failed; it was aborted when possible, so
    /// none of its records are visible. Running the command again is safe.
    #[error("re-drive transaction failed ({state})")]
    Transaction {
        /// Whether it was aborted.
        state: &'static str,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// The hidden fault-injection option stopped the run before a commit.
    #[error("stopped before committing batch {0}, as asked (--crash-before-commit-of-batch)")]
    InjectedCrash(usize),
    /// Writing the output failed.
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

impl DlqError {
    /// A [`DlqError::Kafka`] saying what was being done.
    pub(crate) fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let what = what.into();
        move |source| Self::Kafka { what, source }
    }
}
