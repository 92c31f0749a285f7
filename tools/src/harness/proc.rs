//! Child processes (the real binaries), waiting on conditions, and their
//! HTTP endpoints.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process whose output goes to a log file; killed if dropped while
/// still running.
#[derive(Debug)]
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Child,
    /// Combined stdout/stderr log file.
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program` with `env` added, logging to `<dir>/<name>.log`.
    pub fn spawn(name: &str, program: &Path, args: &[&str], env: &[(String, String)], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Self::from_child(name, child, log)
    }

    /// A process started elsewhere, logging to `log`.
    pub(crate) fn from_child(name: &str, child: Child, log: PathBuf) -> Self {
        Self { name: name.into(), child, log, status: None }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(i32::try_from(self.child.id()).unwrap()), signal).unwrap();
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    /// [`Proc::wait_exit`] that panics when the process is still running
    /// after `timeout` (blocking in place when on a runtime's worker).
    pub fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        tokio::task::block_in_place(|| self.wait_exit(timeout))
            .unwrap_or_else(|| panic!("{} still running after {timeout:?}; log:\n{}", self.name, self.log_text()))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; panics when
    /// the process is still running then.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.expect_exit(timeout)
    }

    /// [`Proc::terminate`], and the exit must be a clean one (status 0).
    pub fn stop_cleanly(&mut self, timeout: Duration) {
        let status = self.terminate(timeout);
        self.assert_clean(status);
    }

    fn assert_clean(&self, status: ExitStatus) {
        assert!(status.success(), "{} exited with {status}; log:\n{}", self.name, self.log_text());
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        self.status.is_none() && self.child.try_wait().unwrap().is_none()
    }

    /// How it exited (`exit status: 1`, `signal: 1 (SIGHUP)`), or
    /// `running`.
    pub fn status_text(&mut self) -> String {
        match self.status.or_else(|| self.child.try_wait().ok().flatten()) {
            Some(status) => status.to_string(),
            None => "running".to_string(),
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends SIGTERM to all of `procs` first, so they stop side by side, then
/// each must exit cleanly (status 0) within `timeout`.
pub fn stop_all_cleanly<'a>(procs: impl IntoIterator<Item = &'a mut Proc>, timeout: Duration) {
    let mut procs: Vec<&mut Proc> = procs.into_iter().collect();
    for p in &procs {
        p.signal(Signal::SIGTERM);
    }
    for p in &mut procs {
        let status = p.expect_exit(timeout);
        p.assert_clean(status);
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
    }
}

/// Polls `probe` every 100 ms until it yields `Ok` or `timeout` passes;
/// panics with its last complaint.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(complaint) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}: {complaint}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // poll interval
    }
}

/// The address a Shoal process serves `/metrics`, `/healthz` and
/// `/readyz` on, read from its log once it is there.
pub async fn http_address(proc: &Proc, timeout: Duration) -> std::net::SocketAddr {
    let mut found = None;
    eventually(timeout, &format!("{} to log its HTTP address", proc.name), || {
        found = proc.log_text().lines().find_map(|line| {
            let rest = line.split("serving /metrics, /healthz and /readyz").nth(1)?;
            rest.split("address=").nth(1)?.split_whitespace().next()?.parse().ok()
        });
        let done = found.is_some();
        async move { done }
    })
    .await;
    found.unwrap()
}

/// The address a Shoal orchestrator serves its state query API on, read
/// from its log once it is there.
pub async fn api_address(proc: &Proc, timeout: Duration) -> std::net::SocketAddr {
    let mut found = None;
    eventually(timeout, &format!("{} to log its API address", proc.name), || {
        found = proc.log_text().lines().find_map(|line| {
            let rest = line.split("state query API listening").nth(1)?;
            rest.split("listen=").nth(1)?.split_whitespace().next()?.parse().ok()
        });
        let done = found.is_some();
        async move { done }
    })
    .await;
    found.unwrap()
}

/// `GET http://<address><path>` with a plain HTTP/1.1 request: status and
/// body. A refused connection is an `Err`.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(address, path, None).await
}

/// `GET` of the state query API with `token` as the bearer token: status
/// and body parsed as JSON (`Null` when it is not JSON).
pub async fn api_get(
    address: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, serde_json::Value)> {
    let (status, body) = http_get_with(address, path, token).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)))
}

/// [`http_get`] with an optional bearer token.
pub async fn http_get_with(
    address: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_request(address, "GET", path, token, None).await
}

/// `POST` of JSON `body` to the state query API with `token` as the bearer
/// token: status and body parsed as JSON (`Null` when it is not JSON).
pub async fn api_post(
    address: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> std::io::Result<(u16, serde_json::Value)> {
    let (status, body) = http_request(address, "POST", path, Some(token), Some(&body.to_string())).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)))
}

/// One HTTP/1.1 request (`Connection: close`) with an optional bearer token
/// and JSON body: the status and the body.
async fn http_request(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let content =
        body.map_or(String::new(), |b| format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}{content}Connection: close\r\n\r\n{}",
        body.unwrap_or_default()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response timed out"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not HTTP: {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// `/readyz` as (status, JSON body).
pub async fn readyz(address: std::net::SocketAddr) -> Result<(u16, serde_json::Value), String> {
    let (status, body) = http_get(address, "/readyz").await.map_err(|e| e.to_string())?;
    let json = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok((status, json))
}

/// Polls `/readyz` until `accept(status, body)` holds; returns that body.
pub async fn wait_for_readyz(
    address: std::net::SocketAddr,
    timeout: Duration,
    what: &str,
    accept: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let accept = &accept;
    wait_for(timeout, what, || async move {
        let (status, body) = readyz(address).await?;
        if accept(status, &body) { Ok(body) } else { Err(format!("{status} {body}")) }
    })
    .await
}

/// Names of the checks a `/readyz` body reports failing.
pub fn failing_checks(body: &serde_json::Value) -> Vec<String> {
    body["failing"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["check"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Lines of a text file written by a process, 0 while it does not exist.
pub fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().lines().count()
}

/// Waits until the file at `path` has at least `n` lines.
pub async fn wait_for_lines(path: &Path, n: usize, timeout: Duration, what: &str) {
    eventually(timeout, what, || {
        let have = line_count(path);
        async move { have >= n }
    })
    .await;
}

/// A JSON-lines file, one value per line.
pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
