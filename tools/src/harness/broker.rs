//! A broker of one test's own, for tests that stop it or put a fault proxy
//! in front of it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use shoal_kafka::settings::KafkaSettings;

use super::netfault::NetFaults;
use super::scope::repo_root;

/// A single-node broker of one test's own: its own state directory and
/// port, started by `scripts/kafka.sh` like the shared one, so the test can
/// stop it without touching the broker other tests use.
/// Stopped, and its data deleted, when dropped.
#[derive(Debug)]
pub struct OwnBroker {
    dir: PathBuf,
    port: u16,
    proxy_port: Option<u16>,
}

impl OwnBroker {
    /// Starts a fresh broker on `port` (its controller on `port + 1`) with
    /// its state in `dir`, and waits until it answers.
    pub fn start(port: u16, dir: &Path) -> Self {
        Self::start_with(port, None, dir)
    }

    /// [`OwnBroker::start`] with the listener for a fault proxy
    /// (`SHOAL_KAFKA_PROXY_PORT`, see `scripts/kafka.sh --help`): the proxy
    /// is to listen on `port + 2` (advertised to the clients that bootstrap
    /// there) and forward to the broker's `FAULTY` listener on `port + 3`.
    /// [`OwnBroker::net_faults`] starts that proxy.
    pub fn start_proxied(port: u16, dir: &Path) -> Self {
        Self::start_with(port, Some(port + 2), dir)
    }

    fn start_with(port: u16, proxy_port: Option<u16>, dir: &Path) -> Self {
        let broker = Self { dir: dir.to_path_buf(), port, proxy_port };
        assert!(broker.kafka_sh(&["up", "--fresh"]), "own broker on port {port} did not start");
        broker
    }

    /// The port its fault proxy listens on (`SHOAL_KAFKA_PROXY_PORT`), if
    /// it was started with [`OwnBroker::start_proxied`].
    pub fn proxy_port(&self) -> Option<u16> {
        self.proxy_port
    }

    /// Starts the fault proxy in front of it ([`NetFaults::start`] for one
    /// node), logging to `<log_dir>/toxiproxy.log`. Panics unless it was
    /// started with [`OwnBroker::start_proxied`].
    pub async fn net_faults(&self, log_dir: &Path) -> NetFaults {
        let proxy_port = self.proxy_port.expect("the broker was started with OwnBroker::start_proxied");
        NetFaults::start(proxy_port, 1, log_dir).await
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

    /// Starts it again after [`OwnBroker::stop`], with its data, and waits
    /// until it answers.
    pub fn start_again(&self) {
        assert!(self.kafka_sh(&["up"]), "own broker on port {} did not start again", self.port);
    }

    fn kafka_sh(&self, args: &[&str]) -> bool {
        let mut command = Command::new("bash");
        match self.proxy_port {
            Some(proxy_port) => command.env("SHOAL_KAFKA_PROXY_PORT", proxy_port.to_string()),
            None => command.env_remove("SHOAL_KAFKA_PROXY_PORT"),
        };
        command
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
