//! The hosted login in a real browser: Debian's Chromium, driven over WebDriver by
//! chromedriver (scripts/test.sh installs both when missing). A person logs in, passes
//! TOTP, chooses a venue and lands on the redirect URI; the code is exchanged and `me`
//! queried. A screenshot of each page is left in target/browser-login/ for people to look at.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{KillOnDrop, TestApp, free_port};
use venueql::auth::Permissions;
use venueql::auth::breach::BreachCheck;
use venueql::auth::oauth::s256_challenge;
use venueql::tenancy::Db;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session on a local chromedriver.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: KillOnDrop,
    shots: std::path::PathBuf,
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
    async fn start() -> Browser {
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

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = if body.is_null() { request } else { request.json(&body) };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    /// Waits up to 10 s for `css` and returns the element id.
    async fn find(&self, css: &str) -> String {
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

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), json!({})).await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", Value::Null).await.as_str().unwrap_or_default().to_string()
    }

    /// Closes the browser (its processes leave with it).
    async fn quit(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }

    async fn screenshot(&self, name: &str) {
        let shot = self.call(reqwest::Method::GET, "/screenshot", Value::Null).await;
        if let Some(png) = shot.as_str().and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()) {
            std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_in_a_real_browser_with_totp_and_a_venue_choice() {
    let app = TestApp::spawn_with(|name| (name == "GRAPHIQL").then(|| "true".into())).await;
    let (email, password) = ("manager@alpha.test", "Browser-Login-Pass-9");
    venueql::admin::create_staff(&app.door, "operator:test", email, password, &BreachCheck::off()).await.unwrap();
    for venue in ["alpha", "bravo"] {
        venueql::admin::grant(&app.door, "operator:test", venue, email, Permissions::MENU_VIEW).await.unwrap();
    }
    let callback = format!("{}/dev/callback", app.base);
    let spa = crate::helpers::create_client(
        &app.door,
        "operator:test",
        "spa",
        "Browser SPA",
        None,
        std::slice::from_ref(&callback),
        Permissions::empty(),
    )
    .await
    .unwrap();
    let db = Db::new(app.app_pool.clone());
    let staff: uuid::Uuid = {
        let staff = venueql::auth::login::verify_password(&db, email, password).await.unwrap();
        staff.expect("the person exists")
    };
    let master = crate::helpers::test_master();
    let enrolment = venueql::auth::totp::begin_enrollment(&db, &master, staff, email).await.unwrap();
    let first = venueql::auth::totp::current_code(&enrolment.secret, 0).unwrap();
    venueql::auth::totp::confirm_enrollment(&db, &master, staff, &first).await.unwrap().expect("the first code");

    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let mut authorize = url::Url::parse(&format!("{}/oauth/authorize", app.base)).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &spa.client_id)
        .append_pair("redirect_uri", &callback)
        .append_pair("code_challenge", &s256_challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "browser-state");

    let browser = Browser::start().await;
    browser.go(authorize.as_str()).await;
    browser.screenshot("1-sign-in").await;
    browser.type_into("#email", email).await;
    browser.type_into("#password", password).await;
    browser.click("button[type=submit]").await;
    browser.find("#code").await;
    browser.screenshot("2-totp").await;
    browser.type_into("#code", &venueql::auth::totp::current_code(&enrolment.secret, 1).unwrap()).await;
    browser.click("button[type=submit]").await;
    browser.find("input[name=venue_id]").await;
    browser.screenshot("3-venue").await;
    browser.click(&format!("input[value=\"{}\"]", app.b.id)).await;
    browser.click("button[type=submit]").await;
    let code = browser.text("#code").await;
    browser.screenshot("4-callback").await;
    let landed = browser.url().await;
    assert!(landed.starts_with(&callback) && landed.contains("state=browser-state"), "{landed}");

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", callback.as_str()),
        ("client_id", spa.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens: Value =
        app.client.post(format!("{}/oauth/token", app.base)).form(&form).send().await.unwrap().json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap_or_else(|| panic!("{tokens}"));
    browser.quit().await;
    let me = app.gql(access, "{ me { venue { slug } person { email } } }", json!({})).await;
    assert_eq!(me["data"]["me"], json!({ "venue": { "slug": "bravo" }, "person": { "email": email } }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_person_chooses_their_own_password_in_a_real_browser_and_signs_in() {
    let app = TestApp::spawn_with(|name| (name == "GRAPHIQL").then(|| "true".into())).await;
    let (email, password) = ("new.hire@example.com", "Chosen-By-Me-42!");
    let invited = app.invite(&app.a.full, email, &["MENU_VIEW", "ORDERS_QUEUE"]).await;
    assert_eq!(invited["data"]["addStaff"]["status"], "INVITED", "{invited}");
    let link = app.invitation_link(email, 0).await;
    let callback = format!("{}/dev/callback", app.base);
    let spa = crate::helpers::create_client(
        &app.door,
        "operator:test",
        "spa",
        "Browser SPA",
        None,
        std::slice::from_ref(&callback),
        Permissions::empty(),
    )
    .await
    .unwrap();

    let browser = Browser::start().await;
    browser.go(&link).await;
    browser.screenshot("invite-1-welcome").await;
    browser.type_into("#password", password).await;
    browser.type_into("#password2", password).await;
    browser.click("button[type=submit]").await;
    let accepted = browser.text("#accepted").await;
    browser.screenshot("invite-2-accepted").await;
    assert!(accepted.contains("You now work at alpha"), "{accepted}");

    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let mut authorize = url::Url::parse(&format!("{}/oauth/authorize", app.base)).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &spa.client_id)
        .append_pair("redirect_uri", &callback)
        .append_pair("code_challenge", &s256_challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "invited");
    browser.go(authorize.as_str()).await;
    browser.type_into("#email", email).await;
    browser.type_into("#password", password).await;
    browser.click("button[type=submit]").await;
    let code = browser.text("#code").await;
    browser.screenshot("invite-3-signed-in").await;
    browser.quit().await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", callback.as_str()),
        ("client_id", spa.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens: Value =
        app.client.post(format!("{}/oauth/token", app.base)).form(&form).send().await.unwrap().json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap_or_else(|| panic!("{tokens}"));
    let me = app.gql(access, "{ me { venue { slug } person { email } permissions } }", json!({})).await;
    assert_eq!(
        me["data"]["me"],
        json!({ "venue": { "slug": "alpha" }, "person": { "email": email }, "permissions": ["ORDERS_QUEUE", "MENU_VIEW"] })
    );
}
