//! A WebDriver client for the browser tests: Debian's Chromium driven by chromedriver over
//! the W3C WebDriver protocol (scripts/test.sh installs both when missing). Screenshots
//! go to target/browser-login/ for people to look at.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{KillOnDrop, free_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a local chromedriver.
pub(crate) struct Browser {
    http: reqwest::Client,
    session: String,
    driver: KillOnDrop,
    pub(crate) shots: std::path::PathBuf,
}

impl Drop for Browser {
    /// chromedriver leads its own process group: killing the group takes Chromium along,
    /// even when the test failed before `quit`.
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-(self.driver.0.id() as libc::pid_t), libc::SIGKILL) };
    }
}

impl Browser {
    pub(crate) async fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "Chromium and chromedriver are missing: run scripts/test.sh (it installs Debian's chromium and chromium-driver) or `apt-get install chromium chromium-driver`"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(KillOnDrop)
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("venueql-chromium-{}", uuid::Uuid::new_v4()));
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=800,900", format!("--user-data-dir={}", profile.display())]
        } } } });
        let created: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session =
            created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {created}"));
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-login");
        std::fs::create_dir_all(&shots).unwrap();
        Browser { http, session: format!("{base}/session/{session}"), driver, shots }
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = if body.is_null() { request } else { request.json(&body) };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    pub(crate) async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Waits up to 10 s for `css` and returns the element id.
    pub(crate) async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found =
                self.call(reqwest::Method::POST, "/element", json!({ "using": "css selector", "value": css })).await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css} on {}", self.url().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    pub(crate) async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), json!({})).await;
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub(crate) async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", Value::Null).await.as_str().unwrap_or_default().to_string()
    }

    /// Closes the browser (its processes leave with it).
    pub(crate) async fn quit(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let shot = self.call(reqwest::Method::GET, "/screenshot", Value::Null).await;
        if let Some(png) = shot.as_str().and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()) {
            std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        }
    }
}

impl Browser {
    /// Opens a new tab and returns its handle (the current tab stays current).
    pub(crate) async fn new_tab(&self) -> String {
        let opened = self.call(reqwest::Method::POST, "/window/new", json!({ "type": "tab" })).await;
        opened["handle"].as_str().expect("a window handle").to_string()
    }

    /// The handle of the current tab.
    pub(crate) async fn current_tab(&self) -> String {
        self.call(reqwest::Method::GET, "/window", Value::Null).await.as_str().unwrap_or_default().to_string()
    }

    /// Makes the tab `handle` current.
    pub(crate) async fn switch_to(&self, handle: &str) {
        self.call(reqwest::Method::POST, "/window", json!({ "handle": handle })).await;
    }

    /// Runs `script` in the page and returns its value.
    pub(crate) async fn run_script(&self, script: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// Waits up to 15 s until the text of `css` contains `wanted`; returns the text.
    pub(crate) async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text(css).await;
            if text.contains(wanted) {
                return text;
            }
            if Instant::now() > deadline {
                self.screenshot("timeout").await;
                panic!("{css} never showed {wanted:?}; it shows {text:?} at {}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
