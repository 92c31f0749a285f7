//! A real browser for tests: Debian's headless Chromium driven over the
//! W3C WebDriver protocol by its `chromedriver`, with plain HTTP calls.
//! Both come from Debian's `chromium` and `chromium-driver` packages
//! (`scripts/ensure-deps.sh` installs them); when they are missing the test
//! fails, saying so.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session. Dropping it ends chromedriver and the
/// browser (their process group); [`Browser::quit`] ends the session first.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    ended: bool,
}

/// `name` on `PATH`, or in `/usr/bin` and `/usr/lib/chromium`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/lib/chromium")]);
    dirs.map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn missing(what: &str) -> ! {
    panic!(
        "{what} is not installed: the console test needs a real browser, Debian's `chromium` and `chromium-driver` \
         packages (scripts/ensure-deps.sh installs them; or: apt-get install chromium chromium-driver)"
    )
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session
    /// with a `width`×`height` window, its profile and the driver's log in
    /// `dir`.
    pub async fn start(dir: &Path, width: u32, height: u32) -> Self {
        let chromium = find_program("chromium").unwrap_or_else(|| missing("chromium"));
        let chromedriver = find_program("chromedriver").unwrap_or_else(|| missing("chromedriver"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join("chromedriver.log");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, which the browser joins: Drop ends both.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut browser = Self { http, session: format!("http://127.0.0.1:{port}"), driver, ended: false };
        let status = format!("{}/status", browser.session);
        super::wait_for(Duration::from_secs(30), "chromedriver ready", || {
            let (http, status) = (browser.http.clone(), status.clone());
            async move {
                let body: Value = http
                    .get(&status)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                if body["value"]["ready"] == true { Ok(()) } else { Err(body.to_string()) }
            }
        })
        .await;
        let profile = dir.join("chromium-profile");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer = browser.call("POST", "/session", &capabilities).await;
        let id = answer["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {answer}"));
        browser.session = format!("{}/session/{id}", browser.session);
        browser
    }

    /// A WebDriver call relative to the session (or the driver, before one
    /// exists): its `value`; a WebDriver error fails the test.
    async fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.try_call(method, path, body).await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// [`Self::call`] that returns a WebDriver error (its `value`).
    async fn try_call(&self, method: &str, path: &str, body: &Value) -> Result<Value, Value> {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(body),
        };
        let response = request.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        if status.is_success() { Ok(body["value"].clone()) } else { Err(body["value"].clone()) }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", &json!({"url": url})).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the
    /// page: what it returns.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", &json!({"script": script, "args": args})).await
    }

    /// The text of the first element matching `css` (`None` when there is
    /// none).
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .execute("const e = document.querySelector(arguments[0]); return e && e.textContent;", json!([css]))
            .await;
        value.as_str().map(str::to_string)
    }

    /// The WebDriver id of the first element matching `css`.
    pub async fn element(&self, css: &str) -> String {
        let value = self.call("POST", "/element", &json!({"using": "css selector", "value": css})).await;
        value[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {value}")).to_string()
    }

    /// Types `text` into the element matching `css`, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        self.call("POST", &format!("/element/{element}/value"), &json!({"text": text})).await;
    }

    /// Clicks the element matching `css`, as a user would (finding it
    /// again if the page replaced it in between).
    pub async fn click(&self, css: &str) {
        for _ in 0..5 {
            let element = self.element(css).await;
            match self.try_call("POST", &format!("/element/{element}/click"), &json!({})).await {
                Ok(_) => return,
                Err(e) if e["error"] == "stale element reference" => continue,
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
        panic!("clicking {css}: the element was replaced five times in a row");
    }

    /// Resizes the browser's window.
    pub async fn set_window(&self, width: u64, height: u64) {
        self.call("POST", "/window/rect", &json!({"width": width, "height": height})).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self.call("GET", "/screenshot", &Value::Null).await;
        let encoded = value.as_str().unwrap_or_else(|| panic!("no screenshot: {value}"));
        base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()
    }

    /// Ends the session (closing the browser), then chromedriver.
    pub async fn quit(mut self) {
        self.call("DELETE", "", &Value::Null).await;
        self.end();
    }

    fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        // SIGTERM to the group (chromedriver and the browser it started),
        // then reap chromedriver.
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.end();
    }
}
