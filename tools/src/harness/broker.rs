//! A broker of one test's own, for tests that stop it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use shoal_kafka::settings::KafkaSettings;

use super::scope::repo_root;

/// A single-node broker of one test's own: its own state directory and
/// port, started by `scripts/kafka.sh` like the shared one, so the test can
/// stop it without touching the broker other tests use.
/// Stopped, and its data deleted, when dropped.
#[derive(Debug)]
pub struct OwnBroker {
    dir: PathBuf,
    port: u16,
}

impl OwnBroker {
    /// Starts a fresh broker on `port` with its state in `dir`, and waits
    /// until it answers.
    pub fn start(port: u16, dir: &Path) -> Self {
        let broker = Self { dir: dir.to_path_buf(), port };
        assert!(broker.kafka_sh(&["up", "--fresh"]), "own broker on port {port} did not start");
        broker
    }

    /// Its bootstrap servers.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kafka settings pointing at it.
    pub fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings { bootstrap_servers: self.bootstrap(), ..KafkaSettings::default() }
    }

    /// Stops it (SIGTERM: a controlled shutdown), keeping its data.
    pub fn stop(&self) {
        assert!(self.kafka_sh(&["down"]), "own broker on port {} did not stop", self.port);
    }

    fn kafka_sh(&self, args: &[&str]) -> bool {
        Command::new("bash")
            .arg(repo_root().join("scripts/kafka.sh"))
            .args(args)
            .env("SHOAL_KAFKA_DIR", &self.dir)
            .env("SHOAL_KAFKA_PORT", self.port.to_string())
            .env("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")
            // Otherwise kafka.sh would manage the shared broker instead.
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("SHOAL_KAFKA_BROKERS")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.kafka_sh(&["down", "--purge"]);
    }
}
