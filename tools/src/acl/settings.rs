//! What `shoal-acl` reads: the orchestrator's and the worker's settings,
//! loaded the way those binaries load them (`shoal_config::load`: defaults,
//! then the file or `./shoal.toml`, then `SHOAL__SECTION__KEY`), so one
//! file and one environment give the roles exactly the names the processes
//! will use; and the options that are not configuration (principals, the
//! re-drive tool's group and log topic).

use std::collections::BTreeMap;
use std::path::Path;

use shoal_orchestrator::settings::OrchestratorSettings;
use shoal_worker::settings::WorkerSettings;

use super::{AclError, Role};

/// The settings the roles are derived from. Each binary accepts (and
/// ignores) the other's sections, so both load from the same sources; the
/// shared sections (`kafka`, `topics`, `delivery`) are then the same in
/// both.
#[derive(Debug, Clone)]
pub struct AclSettings {
    /// As `shoal-orchestrator` (and `shoal-state`) would load them.
    pub orchestrator: OrchestratorSettings,
    /// As `shoal-worker` would load them.
    pub worker: WorkerSettings,
    /// Whether `worker.id` was left to its default (the host name, or
    /// `worker-<pid>`): the name of the machine running `shoal-acl`, not of
    /// any worker.
    pub worker_id_defaulted: bool,
}

impl AclSettings {
    /// Loads from `file` (or `./shoal.toml` if present) and the process
    /// environment.
    pub fn load(file: Option<&Path>) -> Result<Self, AclError> {
        Self::load_from(file, std::env::vars().collect())
    }

    /// [`AclSettings::load`] with an explicit environment, for tests.
    pub fn load_from(file: Option<&Path>, env: Vec<(String, String)>) -> Result<Self, AclError> {
        let orchestrator: OrchestratorSettings = shoal_config::load_from(file, env.clone())?;
        let worker: WorkerSettings = shoal_config::load_from(file, env)?;
        let worker_id_defaulted = worker.worker.id == shoal_worker::settings::WorkerSection::default().id;
        Ok(Self { orchestrator, worker, worker_id_defaulted })
    }
}

/// Choices that are not Shoal configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclOptions {
    /// Principal per role; a role not named here gets `User:<role>`.
    pub principals: BTreeMap<Role, String>,
    /// `shoal-dlq redrive --group` (`SHOAL_DLQ_GROUP`): names the re-drive
    /// transactional id, `<delivery.transactional_id_prefix>-dlq-<group>`.
    pub redrive_group: String,
    /// `shoal-dlq --redrive-topic` (`SHOAL_DLQ_REDRIVE_TOPIC`); `None` for
    /// its default, `<topics.dlq.name>.redrive`.
    pub redrive_topic: Option<String>,
    /// Also allow IdempotentWrite on the cluster to every role with an
    /// idempotent producer outside transactions: brokers before Kafka 2.8
    /// need it; later ones accept Write on any topic instead (KIP-679).
    pub idempotent_write: bool,
}

impl Default for AclOptions {
    fn default() -> Self {
        Self {
            principals: BTreeMap::new(),
            redrive_group: "redrive".into(),
            redrive_topic: None,
            idempotent_write: false,
        }
    }
}

impl AclOptions {
    /// The principal of `role`.
    pub fn principal(&self, role: Role) -> String {
        self.principals.get(&role).cloned().unwrap_or_else(|| format!("User:{}", role.as_str()))
    }

    /// Adds a `--principal ROLE=PRINCIPAL` value. `PRINCIPAL` is
    /// `Type:name` (`User:shoal-worker`); a bare name means `User:<name>`.
    pub fn set_principal(&mut self, value: &str) -> Result<(), AclError> {
        let bad = |message: &str| AclError::Principal {
            value: value.to_string(),
            message: message.to_string(),
            roles: Role::ALL.map(Role::as_str).join(", "),
        };
        let (role, principal) = value.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let role = Role::parse(role.trim()).ok_or_else(|| bad("unknown role"))?;
        let principal = principal.trim();
        let principal = if principal.contains(':') { principal.to_string() } else { format!("User:{principal}") };
        let (kind, name) = principal.split_once(':').unwrap_or_default();
        if kind.is_empty() || name.is_empty() || name == "*" || name.chars().any(char::is_whitespace) {
            return Err(bad("the principal must be Type:name with a non-empty name that is not `*`"));
        }
        self.principals.insert(role, principal);
        Ok(())
    }
}
