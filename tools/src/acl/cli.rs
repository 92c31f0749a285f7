//! `shoal-acl`'s command line.

use std::io::Write;
use std::time::Duration;

use clap::Parser;

use super::format::{self, Format, StrimziTarget};
use super::{AclError, AclOptions, AclSettings, Role, RoleAcls};

/// Least-privilege Kafka ACLs for each Shoal role, derived from the
/// configuration the processes load, printed or applied.
///
/// Roles (all by default; pick some with --role, repeatable):
///   ingest     orchestrator with the ingest stage: feed -> ticks
///   decisions  orchestrator with the decisions stage and its state
///              (ticks, events, approvals -> commands; changelogs)
///   state      shoal-state: rebuilds state from the input topics, read only
///   results    orchestrator with the results stage and its state
///              (commands, results, dead letters -> outcomes; changelogs)
///   worker     shoal-worker: commands -> results, dead letters, journal
///   api        the state API's own Kafka access (members topic; events and
///              approvals when enabled). It runs inside the decisions and
///              results processes, whose roles already include it
///   redrive    shoal-dlq: reads dead letters, re-drives them exactly once
///
/// Every binding is ALLOW from any host, on a named resource: topics and
/// consumer groups LITERAL; transactional ids PREFIXED with
/// <delivery.transactional_id_prefix>-<stage>- (covers every instance);
/// the groups of the readers that only assign partitions PREFIXED with the
/// instance id (orchestrator.id, worker.id), Describe only. Create on topics
/// only with topics.create = true (better: create topics as an admin and
/// run with SHOAL__TOPICS__CREATE=false). Principals are User:<role> unless
/// --principal ROLE=User:NAME says otherwise; roles given the same
/// principal are merged into one Strimzi KafkaUser.
///
/// Configuration comes from built-in defaults, then --config FILE (or
/// ./shoal.toml if present), then SHOAL__SECTION__KEY variables: use the
/// same file and environment as the processes, e.g.
/// SHOAL__TOPICS__COMMANDS__NAME=prod.commands shoal-acl --role worker.
///
/// Output (--format): table (default; --explain adds why each binding is
/// needed and where in the code), kafka-acls (kafka-acls.sh --add commands),
/// json, strimzi (KafkaUser resources: SCRAM-SHA-512, simple authorization).
///
/// --apply creates the bindings on the cluster of the [kafka] section
/// (bootstrap_servers, security_protocol, kafka.options with an admin's
/// credentials, e.g. SHOAL__KAFKA__OPTIONS__SASL_USERNAME=admin), through
/// librdkafka's CreateAcls, and prints `created` or `refused <reason>` per
/// binding. --list compares the roles' bindings with the cluster's
/// (DescribeAcls) and prints each as present, missing or extra.
///
/// Exit status: 0 done; 1 the cluster refused or could not be reached, or
/// --list found a binding missing; 2 bad configuration or usage.
#[derive(Debug, Parser)]
#[command(name = "shoal-acl", version, verbatim_doc_comment)]
pub struct Cli {
    /// Configuration (--config, --print-config), as every Shoal binary.
    #[command(flatten)]
    pub common: shoal_app::CommonArgs,
    /// Roles to print or apply; repeat for several. Default: all.
    #[arg(long = "role", value_enum, value_name = "ROLE")]
    pub roles: Vec<Role>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// A role's principal, ROLE=User:NAME (a bare NAME means User:NAME);
    /// repeat for several. Default: User:<role>.
    #[arg(long = "principal", value_name = "ROLE=PRINCIPAL")]
    pub principals: Vec<String>,
    /// Table: say why each binding is needed, and where in the code.
    #[arg(long)]
    pub explain: bool,
    /// Create the bindings on the cluster (as the configured Kafka user,
    /// who must be allowed to manage ACLs).
    #[arg(long)]
    pub apply: bool,
    /// Compare the bindings with the cluster's (after --apply, if given).
    #[arg(long)]
    pub list: bool,
    /// Bound on each request to the cluster, seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,
    /// shoal-dlq's --group: the re-drive transactional id is
    /// <delivery.transactional_id_prefix>-dlq-<group>.
    #[arg(long, env = "SHOAL_DLQ_GROUP", default_value = "redrive")]
    pub redrive_group: String,
    /// shoal-dlq's --redrive-topic (default <topics.dlq.name>.redrive).
    #[arg(long, env = "SHOAL_DLQ_REDRIVE_TOPIC")]
    pub redrive_topic: Option<String>,
    /// Also allow IdempotentWrite on the cluster to roles with idempotent
    /// producers outside transactions (brokers before Kafka 2.8 need it).
    #[arg(long)]
    pub idempotent_write: bool,
    /// kafka-acls format: the --command-config file in the commands.
    #[arg(long, default_value = "admin.properties")]
    pub command_config: String,
    /// strimzi format: the Kafka cluster's name (strimzi.io/cluster label).
    #[arg(long, default_value = "my-cluster")]
    pub strimzi_cluster: String,
    /// strimzi format: the KafkaUsers' namespace (default: none written).
    #[arg(long)]
    pub namespace: Option<String>,
}

impl Cli {
    /// The roles asked for (all when none is).
    pub fn roles(&self) -> Vec<Role> {
        if self.roles.is_empty() { Role::ALL.to_vec() } else { self.roles.clone() }
    }

    /// The options that are not configuration.
    pub fn options(&self) -> Result<AclOptions, AclError> {
        let mut options = AclOptions {
            redrive_group: self.redrive_group.clone(),
            redrive_topic: self.redrive_topic.clone().filter(|t| !t.is_empty()),
            idempotent_write: self.idempotent_write,
            ..AclOptions::default()
        };
        for value in &self.principals {
            options.set_principal(value)?;
        }
        Ok(options)
    }

    /// The bound on each request to the cluster.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Prints `roles` in the chosen format.
    pub fn print(&self, settings: &AclSettings, roles: &[RoleAcls], out: &mut impl Write) -> Result<(), AclError> {
        match self.format {
            Format::Table => format::table(roles, self.explain, out)?,
            Format::KafkaAcls => {
                let bootstrap = &settings.orchestrator.kafka.bootstrap_servers;
                format::kafka_acls(roles, bootstrap, &self.command_config, out)?;
            }
            Format::Json => writeln!(out, "{:#}", format::json(roles))?,
            Format::Strimzi => {
                let target = StrimziTarget { cluster: self.strimzi_cluster.clone(), namespace: self.namespace.clone() };
                format::strimzi(roles, &target, out)?;
            }
        }
        Ok(())
    }
}
