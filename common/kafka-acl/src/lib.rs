//! Kafka ACL bindings, and librdkafka's admin calls that create and
//! describe them.
//!
//! rust-rdkafka has no ACL API, but the librdkafka it links has one
//! (`rd_kafka_CreateAcls`, `rd_kafka_DescribeAcls`, since librdkafka 1.9),
//! and rust-rdkafka re-exports its C bindings (`rdkafka::bindings`, from
//! `rdkafka-sys`). [`AclAdmin`] calls them on the handle of an ordinary
//! rust-rdkafka [`AdminClient`], so the connection, TLS and SASL settings
//! are the same `ClientConfig` every other Shoal client is built from.
//!
//! Every `unsafe` line of the crate is in the private `raw` module (`raw.rs`);
//! what is public is safe: plain Rust values in, plain Rust values out, each
//! librdkafka object owned by a guard that destroys it.

use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// The kind of resource a binding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A producer's `transactional.id`.
    TransactionalId,
    /// The cluster itself (its one resource is named `kafka-cluster`).
    Cluster,
}

impl ResourceType {
    /// Kafka's name (`kafka-acls.sh --list`, Strimzi's `resource.type`
    /// lower-cased).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "Topic",
            Self::Group => "Group",
            Self::TransactionalId => "TransactionalId",
            Self::Cluster => "Cluster",
        }
    }
}

/// How a binding's resource name matches resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    /// The resource with exactly this name.
    Literal,
    /// Every resource whose name starts with this name.
    Prefixed,
}

impl PatternType {
    /// Kafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Literal => "LITERAL",
            Self::Prefixed => "PREFIXED",
        }
    }
}

/// What a binding allows (or denies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Fetch from a topic; join, sync and commit to a group.
    Read,
    /// Produce to a topic; use a transactional id.
    Write,
    /// Create a topic.
    Create,
    /// Delete a topic or group.
    Delete,
    /// Alter a topic.
    Alter,
    /// Metadata, offsets, coordinator look-ups. Implied by Read, Write,
    /// Delete and Alter.
    Describe,
    /// Inter-broker requests.
    ClusterAction,
    /// Read configs.
    DescribeConfigs,
    /// Change configs.
    AlterConfigs,
    /// Idempotent produce without a transactional id (brokers before
    /// Kafka 2.8; since then Write on any topic suffices, KIP-679).
    IdempotentWrite,
    /// Everything.
    All,
}

impl Operation {
    /// Kafka's name as `kafka-acls.sh --operation` and Strimzi take it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
            Self::Create => "Create",
            Self::Delete => "Delete",
            Self::Alter => "Alter",
            Self::Describe => "Describe",
            Self::ClusterAction => "ClusterAction",
            Self::DescribeConfigs => "DescribeConfigs",
            Self::AlterConfigs => "AlterConfigs",
            Self::IdempotentWrite => "IdempotentWrite",
            Self::All => "All",
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
}

impl Permission {
    /// Kafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
        }
    }
}

/// One ACL binding: `principal` may (or may not) do `operation` on the
/// resources `(resource_type, name, pattern)` from `host`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    /// `User:<name>`.
    pub principal: String,
    /// The resource type.
    pub resource_type: ResourceType,
    /// The resource name (or prefix); `kafka-cluster` for the cluster.
    pub name: String,
    /// How `name` matches.
    pub pattern: PatternType,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
    /// The client host, `*` for any.
    pub host: String,
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {} {} {:?} from host {}",
            self.permission.as_str(),
            self.principal,
            self.operation.as_str(),
            self.resource_type.as_str(),
            self.pattern.as_str(),
            self.name,
            self.host
        )
    }
}

/// Why the cluster refused one binding, or a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    /// The error code.
    pub code: RDKafkaErrorCode,
    /// librdkafka's name of the code, e.g. `SECURITY_DISABLED`.
    pub name: String,
    /// The broker's (or librdkafka's) message.
    pub message: String,
}

impl BrokerError {
    /// What to do about the common causes.
    pub fn hint(&self) -> Option<&'static str> {
        match self.code {
            RDKafkaErrorCode::SecurityDisabled => Some(
                "the broker has no authorizer, so it keeps no ACLs: set authorizer.class.name \
                 (org.apache.kafka.metadata.authorizer.StandardAuthorizer on KRaft) and connect \
                 through an authenticated listener",
            ),
            RDKafkaErrorCode::ClusterAuthorizationFailed => Some(
                "this principal may not manage ACLs: connect as an admin (a super user, or one \
                 allowed Alter on the cluster to create and Describe to list)",
            ),
            RDKafkaErrorCode::SaslAuthenticationFailed => {
                Some("check the SASL mechanism, user name and password in kafka.options")
            }
            _ => None,
        }
    }
}

impl BrokerError {
    /// The error, followed by its hint if it has one.
    pub fn explained(&self) -> String {
        match self.hint() {
            Some(hint) => format!("{self}; {hint}"),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message.trim_end_matches('.'), self.name)
    }
}

/// What can go wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin client could not be created (bad property, say).
    #[error("cannot create a Kafka admin client: {0}")]
    Client(#[source] KafkaError),
    /// librdkafka refused a binding before sending anything.
    #[error("librdkafka refused the binding {binding}: {reason}")]
    InvalidBinding {
        /// The binding.
        binding: String,
        /// librdkafka's reason.
        reason: String,
    },
    /// The whole request failed (unreachable cluster, authentication,
    /// security disabled, ...).
    #[error("{request} failed: {}", error.explained())]
    Request {
        /// `CreateAcls` or `DescribeAcls`.
        request: &'static str,
        /// The error.
        error: BrokerError,
    },
    /// No result came within the bound.
    #[error("{request}: no result from the cluster within {timeout:?}")]
    Timeout {
        /// `CreateAcls` or `DescribeAcls`.
        request: &'static str,
        /// The bound.
        timeout: Duration,
    },
    /// librdkafka answered something this crate does not expect.
    #[error("{request}: unexpected result: {detail}")]
    Unexpected {
        /// `CreateAcls` or `DescribeAcls`.
        request: &'static str,
        /// What was odd.
        detail: String,
    },
}

/// What [`AclAdmin::describe`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Described {
    /// The bindings this crate models.
    pub bindings: Vec<AclBinding>,
    /// Bindings of resource types, operations or patterns it does not
    /// (delegation tokens, users, `MATCH`...), as librdkafka names them.
    pub other: Vec<String>,
}

/// A connection to the cluster for ACL requests.
pub struct AclAdmin {
    admin: AdminClient<DefaultClientContext>,
    timeout: Duration,
}

impl fmt::Debug for AclAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclAdmin").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl AclAdmin {
    /// An admin client from `config` (bootstrap servers, security); each
    /// request must finish within `timeout`.
    pub fn new(config: &ClientConfig, timeout: Duration) -> Result<Self, AdminError> {
        let admin = config.create().map_err(AdminError::Client)?;
        Ok(Self { admin, timeout })
    }

    /// Creates `acls` (creating one that exists already is not an error)
    /// and returns, for each in order, whether the cluster accepted it.
    /// Blocking.
    pub fn create(&self, acls: &[AclBinding]) -> Result<Vec<Result<(), BrokerError>>, AdminError> {
        if acls.is_empty() {
            return Ok(Vec::new());
        }
        raw::create_acls(&self.admin, acls, self.timeout)
    }

    /// The bindings on the cluster of `principal` (`None`: of everyone).
    /// Blocking.
    ///
    /// librdkafka (2.12) drops the error code at the top of a DescribeAcls
    /// response, so a broker without an authorizer (SECURITY_DISABLED)
    /// reads as one without bindings.
    pub fn describe(&self, principal: Option<&str>) -> Result<Described, AdminError> {
        raw::describe_acls(&self.admin, principal, self.timeout)
    }
}

// The only module allowed `unsafe` (the crate denies it elsewhere).
#[allow(unsafe_code)]
mod raw;
