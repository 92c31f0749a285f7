//! The secured local broker (`scripts/kafka.sh up --secure`): SASL_SSL with
//! SCRAM-SHA-512, the ACL authorizer with nothing allowed by default, an
//! admin super-user and a user per Shoal role. Tests start it once per test
//! binary, give each process its role's credentials, and grant only what
//! `shoal-acl` generates.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use rdkafka::ClientConfig;
use shoal_kafka::settings::{KafkaSettings, SecurityProtocol};

use super::scope::{bin, repo_root};

/// The running secured broker and its users' credentials.
#[derive(Debug)]
pub struct SecureBroker {
    /// The SASL_SSL listener, `host:port`.
    pub bootstrap: String,
    /// The CA that signed the broker's certificate (PEM).
    pub ca: PathBuf,
    /// The admin's Java client configuration (for the Kafka CLI tools).
    pub admin_java_config: PathBuf,
    /// User → SCRAM password.
    passwords: HashMap<String, String>,
}

static BROKER: OnceLock<SecureBroker> = OnceLock::new();

/// Runs `scripts/kafka.sh` with `args`; its stdout, or a panic with its
/// output.
fn kafka_sh(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/kafka.sh"))
        .args(args)
        // The secure broker has its own address; a plain one set for the
        // other tests must not redirect the script.
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/kafka.sh: {e}"));
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "scripts/kafka.sh {args:?} failed:\n{out}\n{err}");
    out.into_owned()
}

/// `KEY=value` lines.
fn assignments(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl SecureBroker {
    /// The secured broker, started (or found running) once per test
    /// binary. Blocking.
    pub fn get() -> &'static SecureBroker {
        BROKER.get_or_init(|| {
            kafka_sh(&["up", "--secure"]);
            let env = assignments(&kafka_sh(&["secure-env"]));
            let var = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("kafka.sh secure-env printed no {k}"));
            let credentials = std::fs::read_to_string(var("SHOAL_SECURE_CREDENTIALS")).unwrap();
            let passwords = assignments(&credentials)
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix("SHOAL_SCRAM_").map(|user| (user.to_lowercase(), v)))
                .collect();
            SecureBroker {
                bootstrap: var("SHOAL_SECURE_BOOTSTRAP"),
                ca: var("SHOAL_SECURE_CA").into(),
                admin_java_config: var("SHOAL_SECURE_ADMIN_CONFIG").into(),
                passwords,
            }
        })
    }

    /// `user`'s password.
    pub fn password(&self, user: &str) -> &str {
        self.passwords.get(user).unwrap_or_else(|| panic!("no SCRAM user {user} on the secure broker"))
    }

    /// Every password (to look for in logs, where none may appear).
    pub fn passwords(&self) -> impl Iterator<Item = &str> {
        self.passwords.values().map(String::as_str)
    }

    /// A librdkafka configuration connecting as `user`.
    pub fn client_config(&self, user: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", user)
            .set("sasl.password", self.password(user))
            .set("ssl.ca.location", self.ca.display().to_string());
        config
    }

    /// Shoal's `[kafka]` section connecting as `user`.
    pub fn kafka_settings(&self, user: &str) -> KafkaSettings {
        let options = [
            ("sasl.mechanism", "SCRAM-SHA-512".to_string()),
            ("sasl.username", user.to_string()),
            ("sasl.password", self.password(user).to_string()),
            ("ssl.ca.location", self.ca.display().to_string()),
        ];
        KafkaSettings {
            bootstrap_servers: self.bootstrap.clone(),
            security_protocol: SecurityProtocol::SaslSsl,
            options: options.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..KafkaSettings::default()
        }
    }

    /// The environment that makes a Shoal process connect as `user` with
    /// `password` (its own unless given).
    pub fn env_as(&self, user: &str, password: Option<&str>) -> Vec<(String, String)> {
        let password = password.unwrap_or_else(|| self.password(user));
        [
            ("SHOAL__KAFKA__BOOTSTRAP_SERVERS", self.bootstrap.as_str()),
            ("SHOAL__KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
            ("SHOAL__KAFKA__OPTIONS__SASL_MECHANISM", "SCRAM-SHA-512"),
            ("SHOAL__KAFKA__OPTIONS__SASL_USERNAME", user),
            ("SHOAL__KAFKA__OPTIONS__SASL_PASSWORD", password),
            ("SHOAL__KAFKA__OPTIONS__SSL_CA_LOCATION", &self.ca.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Applies the ACLs `shoal-acl` generates for `roles` from the
    /// configuration in `env` (a scope's topics, groups and transactional
    /// id prefix), as the admin. Returns its output.
    pub fn apply_acls(&self, env: &[(String, String)], roles: &[&str]) -> String {
        let mut command = Command::new(bin("shoal-acl"));
        command.envs(env.iter().map(|(k, v)| (k, v))).envs(self.env_as("admin", None)).arg("--apply");
        for role in roles {
            command.args(["--role", role]);
        }
        let output = command.output().unwrap();
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "shoal-acl --apply failed:\n{out}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    }

    /// Removes one ACL binding (ALLOW `principal` `operation` on the
    /// literal topic `topic`), as the admin, with the Kafka CLI.
    pub fn remove_topic_acl(&self, principal: &str, operation: &str, topic: &str) {
        kafka_sh(&[
            "tool",
            "org.apache.kafka.tools.AclCommand",
            "--bootstrap-server",
            &self.bootstrap,
            "--command-config",
            &self.admin_java_config.display().to_string(),
            "--remove",
            "--force",
            "--allow-principal",
            principal,
            "--operation",
            operation,
            "--topic",
            topic,
        ]);
    }
}
