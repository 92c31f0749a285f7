//! Network faults between Kafka clients and brokers, made by a real TCP
//! fault proxy: Toxiproxy (<https://github.com/Shopify/toxiproxy>), built by
//! `scripts/ensure-toxiproxy.sh` and run as a child process.
//!
//! The brokers must have been started with `SHOAL_KAFKA_PROXY_PORT=<base>`
//! (`scripts/kafka.sh --help`, "Fault-proxy listener"; for a single node,
//! [`OwnBroker::start_proxied`] and [`OwnBroker::net_faults`]):
//! node n then has a listener named `FAULTY` on port `base + nodes + (n-1)`
//! that advertises `127.0.0.1:<base + (n-1)>`. [`NetFaults`] creates one
//! proxy per node, listening on the advertised port and forwarding to the
//! `FAULTY` listener. A client bootstrapped at [`NetFaults::bootstrap`]
//! therefore reaches every broker through the proxy, also after metadata
//! discovery; clients of the normal listener and the brokers' own traffic
//! never pass it.
//!
//! Every fault is bounded in time: it is given its length when it starts,
//! and is healed then at the latest (earlier with [`Fault::heal`], or when
//! its [`Fault`] is dropped). A fault applies to every proxy (every
//! broker) at once; one fault of a kind at a time.
//!
//! [`OwnBroker::start_proxied`]: super::broker::OwnBroker::start_proxied
//! [`OwnBroker::net_faults`]: super::broker::OwnBroker::net_faults

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::proc::{Proc, wait_for};
use super::scope::repo_root;

/// How long [`NetFaults::cut_connections`] keeps its `reset_peer` toxics:
/// long enough for every busy connection (fetches, heartbeats, produce and
/// transaction requests) to carry data and be reset.
pub const CUT_WINDOW: Duration = Duration::from_secs(1);

/// How a partition cuts the proxied clients off from the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Packets are black-holed: Toxiproxy's `timeout` toxic with
    /// `timeout=0`, both directions. Connections stay open (new ones are
    /// accepted) and nothing gets through, so clients only notice through
    /// their own timeouts. On heal the black-holed connections are closed.
    Blackhole,
    /// Connections reset: the proxies are disabled (`enabled=false`), which
    /// closes every proxied connection and refuses new ones until healed.
    Reset,
}

/// A Toxiproxy server (a child process, killed on drop) with one proxy per
/// broker of a cluster started with `SHOAL_KAFKA_PROXY_PORT`.
#[derive(Debug)]
pub struct NetFaults {
    api: Api,
    /// (proxy name, listen port).
    proxies: Vec<(String, u16)>,
    server: Proc,
}

impl NetFaults {
    /// Starts Toxiproxy (building it first if needed) with its HTTP API on
    /// a free loopback port, logging to `<log_dir>/toxiproxy.log`, and
    /// creates the proxies of the `nodes` brokers started with
    /// `SHOAL_KAFKA_PROXY_PORT=proxy_port`: `kafka-<n>`, listening on
    /// `127.0.0.1:<proxy_port + n-1>`, upstream
    /// `127.0.0.1:<proxy_port + nodes + n-1>`. Panics when any of it fails.
    pub async fn start(proxy_port: u16, nodes: u16, log_dir: &Path) -> Self {
        let program = tokio::task::spawn_blocking(toxiproxy_server).await.expect("ensure-toxiproxy");
        let port = free_port();
        let port_text = port.to_string();
        let server =
            Proc::spawn("toxiproxy", Path::new(&program), &["-host", "127.0.0.1", "-port", &port_text], &[], log_dir);
        let api = Api::new(format!("http://127.0.0.1:{port}"));
        wait_for(Duration::from_secs(15), "toxiproxy's API", || api.get("/version")).await;
        let mut faults = Self { api, proxies: Vec::new(), server };
        for n in 1..=nodes {
            let name = format!("kafka-{n}");
            let listen = proxy_port + n - 1;
            let upstream = proxy_port + nodes + n - 1;
            let proxy = json!({
                "name": name,
                "listen": format!("127.0.0.1:{listen}"),
                "upstream": format!("127.0.0.1:{upstream}"),
                "enabled": true,
            });
            if let Err(e) = faults.api.post("/proxies", &proxy).await {
                panic!("creating proxy {name}: {e}; toxiproxy log:\n{}", faults.server.log_text());
            }
            faults.proxies.push((name, listen));
        }
        faults
    }

    /// Bootstrap servers through the proxies: give these to the clients
    /// under test.
    pub fn bootstrap(&self) -> String {
        self.proxies.iter().map(|(_, port)| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    /// Cuts the proxied clients off from every broker, `how` (see
    /// [`Partition`]), for `length` at most.
    pub async fn partition(&self, how: Partition, length: Duration) -> Fault {
        match how {
            Partition::Blackhole => {
                let timeout = |_stream: &str| ("timeout", json!({ "timeout": 0 }));
                self.add_toxics("blackhole", &["upstream", "downstream"], timeout, length).await
            }
            Partition::Reset => {
                let mut undo = Vec::new();
                for (name, _) in &self.proxies {
                    // Listed first, so a failure below re-enables it too.
                    undo.push(Undo::Enable(name.clone()));
                    let disabled = self.api.post(&format!("/proxies/{name}"), &json!({ "enabled": false })).await;
                    if let Err(e) = disabled {
                        Fault::new(self.api.clone(), undo, Duration::ZERO).heal().await;
                        panic!("disabling proxy {name}: {e}; toxiproxy log:\n{}", self.server.log_text());
                    }
                }
                Fault::new(self.api.clone(), undo, length)
            }
        }
    }

    /// Adds `latency` ± `jitter` to every round trip of the proxied clients
    /// (Toxiproxy's `latency` toxic on the broker-to-client direction), on
    /// open and new connections, for `length` at most.
    pub async fn latency(&self, latency: Duration, jitter: Duration, length: Duration) -> Fault {
        let attributes = json!({ "latency": millis(latency), "jitter": millis(jitter) });
        self.add_toxics("latency", &["downstream"], |_| ("latency", attributes.clone()), length).await
    }

    /// Cuts the proxied clients' connections, those in the middle of a
    /// request or a transaction included: [`NetFaults::cut`] for
    /// [`CUT_WINDOW`]. Returns once it is healed; clients reconnect after
    /// that.
    pub async fn cut_connections(&self) {
        self.cut(CUT_WINDOW).await.run_out().await;
    }

    /// Resets every proxied connection, open or new, as soon as it
    /// carries data in either direction, for `length` at most: Toxiproxy's
    /// `reset_peer` toxic with `timeout=0` on both directions.
    pub async fn cut(&self, length: Duration) -> Fault {
        let reset = |_: &str| ("reset_peer", json!({ "timeout": 0 }));
        self.add_toxics("cut", &["upstream", "downstream"], reset, length).await
    }

    /// Heals every fault at once (Toxiproxy's `POST /reset`: every proxy
    /// enabled, every toxic removed).
    pub async fn heal_all(&self) {
        self.api.post("/reset", &json!({})).await.expect("toxiproxy reset");
    }

    /// Adds a toxic named `<name>-<stream>` to every proxy for each of
    /// `streams`, of the type and attributes `toxic(stream)` gives.
    async fn add_toxics(
        &self,
        name: &str,
        streams: &[&str],
        toxic: impl Fn(&str) -> (&'static str, serde_json::Value),
        length: Duration,
    ) -> Fault {
        let mut undo = Vec::new();
        for (proxy, _) in &self.proxies {
            for stream in streams {
                let (kind, attributes) = toxic(stream);
                let toxic_name = format!("{name}-{stream}");
                let body = json!({
                    "name": toxic_name,
                    "type": kind,
                    "stream": stream,
                    "toxicity": 1.0,
                    "attributes": attributes,
                });
                let added = self.api.post(&format!("/proxies/{proxy}/toxics"), &body).await;
                if let Err(e) = added {
                    Fault::new(self.api.clone(), undo, Duration::ZERO).heal().await;
                    panic!("adding toxic {toxic_name} to {proxy}: {e}; toxiproxy log:\n{}", self.server.log_text());
                }
                undo.push(Undo::RemoveToxic { proxy: proxy.clone(), toxic: toxic_name });
            }
        }
        Fault::new(self.api.clone(), undo, length)
    }
}

/// A fault in force. It is healed when its length has passed (by a task on
/// the runtime it was made on), or earlier by [`Fault::heal`], or when it
/// is dropped (so a panicking test leaves no fault behind).
#[derive(Debug)]
#[must_use = "a fault is healed when dropped"]
pub struct Fault {
    api: Api,
    undo: Vec<Undo>,
    ends: Instant,
    timer: Option<JoinHandle<()>>,
}

impl Fault {
    fn new(api: Api, undo: Vec<Undo>, length: Duration) -> Self {
        let ends = Instant::now() + length;
        let timer = {
            let (api, undo) = (api.clone(), undo.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(ends).await;
                api.undo(&undo).await;
            })
        };
        Self { api, undo, ends, timer: Some(timer) }
    }

    /// Heals it now, and returns once it is healed.
    pub async fn heal(mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        self.api.undo(&std::mem::take(&mut self.undo)).await;
    }

    /// Waits until its length has passed, and returns once it is healed.
    pub async fn run_out(self) {
        tokio::time::sleep_until(self.ends).await;
        self.heal().await;
    }

    /// When it is healed at the latest.
    pub fn ends(&self) -> Instant {
        self.ends
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        if self.undo.is_empty() {
            return;
        }
        // Drop cannot await: heal on a thread of its own with a runtime of
        // its own, which works whatever runtime (if any) this runs on.
        let (base, undo) = (self.api.base.clone(), std::mem::take(&mut self.undo));
        let healer = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(Api::new(base).undo(&undo));
            }
        });
        let _ = healer.join();
    }
}

/// What heals one part of a fault.
#[derive(Debug, Clone)]
enum Undo {
    RemoveToxic { proxy: String, toxic: String },
    Enable(String),
}

/// Toxiproxy's HTTP API.
#[derive(Debug, Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: String) -> Self {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client");
        Self { client, base }
    }

    async fn get(&self, path: &str) -> Result<(), String> {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.map_err(|e| e.to_string())?;
        check(response).await
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<(), String> {
        let url = format!("{}{path}", self.base);
        let response = self.client.post(url).json(body).send().await.map_err(|e| e.to_string())?;
        check(response).await
    }

    /// Undoes `undo`, every part even if one fails (a toxic already gone
    /// answers 404, which is fine); failures are logged.
    async fn undo(&self, undo: &[Undo]) {
        for step in undo {
            let result = match step {
                Undo::RemoveToxic { proxy, toxic } => {
                    let url = format!("{}/proxies/{proxy}/toxics/{toxic}", self.base);
                    match self.client.delete(url).send().await {
                        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Ok(()),
                        Ok(r) => check(r).await,
                        Err(e) => Err(e.to_string()),
                    }
                }
                Undo::Enable(proxy) => self.post(&format!("/proxies/{proxy}"), &json!({ "enabled": true })).await,
            };
            if let Err(e) = result {
                tracing::warn!(step = ?step, error = %e, "healing a network fault failed");
            }
        }
    }
}

async fn check(response: reqwest::Response) -> Result<(), String> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    Err(format!("{status}: {}", response.text().await.unwrap_or_default()))
}

/// `scripts/ensure-toxiproxy.sh`: the server's path, built on first use.
fn toxiproxy_server() -> String {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/ensure-toxiproxy.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run scripts/ensure-toxiproxy.sh");
    assert!(output.status.success(), "scripts/ensure-toxiproxy.sh failed (its output is above)");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
