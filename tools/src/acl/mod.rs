//! `shoal-acl`: least-privilege Kafka ACLs for each Shoal role, derived from
//! the same configuration the processes load (defaults, then the file, then
//! `SHOAL__SECTION__KEY` variables).
//!
//! A role is one kind of process (or one part of a process) with its own
//! Kafka access:
//!
//! | role | what it is |
//! |---|---|
//! | `ingest` | an orchestrator running the `ingest` stage (feed → ticks) |
//! | `decisions` | an orchestrator running the `decisions` stage (ticks, events, approvals → commands), with its state |
//! | `state` | `shoal-state`, which rebuilds state from the input topics (read only) |
//! | `results` | an orchestrator running the `results` stage (commands, results, dead letters → outcomes), with its state |
//! | `worker` | `shoal-worker` (commands → results) |
//! | `api` | the state query API's own Kafka access; it is served by the decisions and results processes, whose roles include it |
//! | `redrive` | `shoal-dlq` (list, show, re-drive dead letters) |
//!
//! [`derive`] turns loaded settings into each role's bindings, every one
//! with the configuration key that named its resource and the code that
//! needs it ([`roles`]); [`format`] prints them (table, `kafka-acls.sh`
//! commands, JSON, Strimzi `KafkaUser`s); [`apply`] creates them on the
//! cluster and lists what is there, through librdkafka's admin API
//! (`shoal-kafka-acl`).

// Everything here reads input from outside the process: no panics on it.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod apply;
pub mod cli;
pub mod format;
pub mod roles;
pub mod settings;

#[cfg(test)]
mod tests;

use std::fmt;

pub use roles::derive;
pub use settings::{AclOptions, AclSettings};
pub use shoal_kafka_acl::{
    AclAdmin, AclBinding, AdminError, BrokerError, Operation, PatternType, Permission, ResourceType,
};

/// A kind of Shoal process, or part of one, with its own Kafka access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Role {
    /// Orchestrator, `ingest` stage.
    Ingest,
    /// Orchestrator, `decisions` stage and its state.
    Decisions,
    /// `shoal-state` (read only).
    State,
    /// Orchestrator, `results` stage and its state.
    Results,
    /// `shoal-worker`.
    Worker,
    /// The state query API (inside decisions and results processes).
    Api,
    /// `shoal-dlq`.
    Redrive,
}

impl Role {
    /// Every role, in the order they are printed.
    pub const ALL: [Role; 7] =
        [Self::Ingest, Self::Decisions, Self::State, Self::Results, Self::Worker, Self::Api, Self::Redrive];

    /// The role's name, also its default principal's user name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Decisions => "decisions",
            Self::State => "state",
            Self::Results => "results",
            Self::Worker => "worker",
            Self::Api => "api",
            Self::Redrive => "redrive",
        }
    }

    /// A role by name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One binding a role needs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The binding (always ALLOW, host `*`).
    pub binding: AclBinding,
    /// The configuration key(s) that named the resource, e.g.
    /// `topics.ticks.name`, or where a fixed name is made in the code.
    pub from: String,
    /// What the role does with it, and where in the code.
    pub why: Vec<String>,
}

/// A role's bindings for one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAcls {
    /// The role.
    pub role: Role,
    /// Its principal, `User:<name>`.
    pub principal: String,
    /// Its bindings, sorted by resource type, name, pattern and operation.
    pub grants: Vec<Grant>,
    /// What the operator should know about them (conditions, caveats).
    pub notes: Vec<String>,
}

impl RoleAcls {
    /// The bindings alone.
    pub fn bindings(&self) -> impl Iterator<Item = &AclBinding> {
        self.grants.iter().map(|g| &g.binding)
    }
}

/// What can go wrong in `shoal-acl`.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The configuration did not load or validate (names the key).
    #[error(transparent)]
    Settings(#[from] shoal_config::SettingsError),
    /// A configured name cannot be used in an ACL binding.
    #[error("invalid configuration value for `{key}`: {message} (expected {expected})")]
    Name {
        /// The key (or option) that gave the name.
        key: String,
        /// What is wrong.
        message: String,
        /// What would do.
        expected: String,
    },
    /// A `--principal` option is not `ROLE=Type:name`.
    #[error("--principal {value:?}: {message} (expected ROLE=User:NAME, ROLE one of {roles})")]
    Principal {
        /// The option's value.
        value: String,
        /// What is wrong.
        message: String,
        /// The role names.
        roles: String,
    },
    /// Talking to the cluster failed as a whole.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The cluster refused some bindings (each is named in the output).
    #[error("{refused} of {total} ACL bindings were not created: {reasons}")]
    Refused {
        /// How many were refused.
        refused: usize,
        /// How many were asked for.
        total: usize,
        /// The distinct reasons.
        reasons: String,
    },
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl AclError {
    fn name(key: impl Into<String>, message: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::Name { key: key.into(), message: message.into(), expected: expected.into() }
    }
}

/// The host every binding allows: any (Shoal's processes move between
/// nodes).
pub const ANY_HOST: &str = "*";

/// The one resource name of the cluster resource type.
pub const CLUSTER_NAME: &str = "kafka-cluster";
