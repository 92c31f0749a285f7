//! The market simulator: started as a process, driven through its control
//! endpoint, and watched by a plain WebSocket client.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::proc::Proc;
use super::scope::{Scope, bin};

/// Starts `shoal-sim` on a free port; returns it (killed when dropped) and
/// its WebSocket URL.
pub fn start_sim(args: &[&str], dir: &Path) -> (Proc, String) {
    let log = dir.join("sim.log");
    let mut child = Command::new(bin("shoal-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    // The simulator prints this line once bound; read_line returns when it
    // arrives or the process exits.
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url =
        line.trim().strip_prefix("shoal-sim listening on ").unwrap_or_else(|| panic!("unexpected sim output {line:?}"));
    let url = url.to_string();
    (Proc::from_child("sim", child, log), url)
}

/// A client of the simulator's `/control` endpoint (faults on demand).
#[derive(Debug)]
pub struct SimControl {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl SimControl {
    /// Connects to the control endpoint of the simulator at `sim_url`.
    pub async fn connect(sim_url: &str) -> Self {
        let url = format!("{sim_url}{}", shoal_sim::CONTROL_PATH);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
            .await
            .expect("control connects in time")
            .expect("control connects");
        Self { ws }
    }

    /// Sends one command and returns the reply.
    pub async fn send(&mut self, command: serde_json::Value) -> serde_json::Value {
        use futures::{SinkExt, StreamExt};
        self.ws.send(tokio_tungstenite::tungstenite::Message::text(command.to_string())).await.unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(120), self.ws.next())
                .await
                .expect("control replies in time")
                .expect("control connection open")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let reply: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(reply["ok"], true, "control command {command} failed: {reply}");
                return reply;
            }
        }
    }

    /// The simulator's counters (`accepted`, `open`, `subscribes`,
    /// `client_closes`, `rejected_handshakes`).
    pub async fn stats(&mut self) -> serde_json::Value {
        self.send(serde_json::json!({"cmd": "stats"})).await
    }
}

/// Records every text frame a plain WebSocket client receives, to compare
/// what the simulator sent with what ingest wrote.
#[derive(Debug)]
pub struct Witness {
    /// Raw text frames received so far.
    pub frames: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Witness {
    /// Connects to `url`, sends `subscribe` messages, and records frames.
    pub async fn start(url: &str, subscribe: &[String]) -> Self {
        use futures::{SinkExt, StreamExt};
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        for request in subscribe {
            ws.send(tokio_tungstenite::tungstenite::Message::text(request.clone())).await.unwrap();
        }
        let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = frames.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                    sink.lock().unwrap().push(text.as_str().to_owned());
                }
            }
        });
        Self { frames, task }
    }

    /// [`Witness::start`], then waits until more than `frames` frames have
    /// arrived.
    pub async fn start_receiving(url: &str, subscribe: &[String], frames: usize, timeout: Duration) -> Self {
        let witness = Self::start(url, subscribe).await;
        super::proc::eventually(timeout, &format!("the witness to receive more than {frames} frames"), || {
            let n = witness.len();
            async move { n > frames }
        })
        .await;
        witness
    }

    /// Frames received so far.
    pub fn len(&self) -> usize {
        self.frames.lock().unwrap().len()
    }

    /// Whether nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops recording and returns the frames.
    pub fn stop(self) -> Vec<String> {
        self.task.abort();
        self.frames.lock().unwrap().clone()
    }
}

/// The start of a feed test: a scope with its topics created, the
/// simulator started with `args` (killed when the returned process is
/// dropped, so keep it), its URL, and a connection to its control endpoint.
pub async fn sim_with_control(test: &str, args: &[&str]) -> (Scope, Proc, String, SimControl) {
    let scope = Scope::with_topics(test).await;
    let (sim, url) = start_sim(args, &scope.dir);
    let control = SimControl::connect(&url).await;
    (scope, sim, url, control)
}
