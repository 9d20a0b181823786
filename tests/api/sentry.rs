//! Error reporting: with SENTRY_DSN set, an internal error reaches a (fake, loopback)
//! Sentry with its detail and request id, while the client sees only "internal error"
//! and the bearer token appears nowhere in the report.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;

use crate::helpers::{KillOnDrop, TestApp, error_code, free_port};

pub type Received = Arc<Mutex<Vec<String>>>;

pub async fn fake_sentry() -> (u16, Received) {
    let received: Received = Arc::default();
    let router = Router::new()
        .route(
            "/api/{project}/envelope/",
            post(|State(received): State<Received>, body: String| async move {
                received.lock().unwrap().push(body);
                "{}"
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (port, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_are_reported_to_sentry_without_secrets() {
    let app = TestApp::spawn().await;
    let (sentry_port, received) = fake_sentry().await;
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_venueql"))
        .arg("serve")
        .env("DATABASE_URL", &app.urls.app)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("SENTRY_DSN", format!("http://publickey@127.0.0.1:{sentry_port}/42"))
        .env("SENTRY_ENVIRONMENT", "test")
        .env("APP_KEY", crate::helpers::TEST_APP_KEY)
        .env("IDENTITY_HMAC_KEY", crate::helpers::TEST_IDENTITY_KEY)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
        .env("RUST_LOG", "error")
        .spawn()
        .map(KillOnDrop)
        .expect("start venueql serve");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "venueql serve did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    app.break_menu_items().await;
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(&app.a.full)
        .header("x-request-id", "sentry-test-request")
        .body(r#"{"query":"{ menu { categories { name } } }"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(error_code(&response), "INTERNAL", "{response}");

    let deadline = Instant::now() + Duration::from_secs(15);
    let report = loop {
        if let Some(report) = received.lock().unwrap().iter().find(|b| b.contains("\"exception\"")).cloned() {
            break report;
        }
        assert!(Instant::now() < deadline, "no error report reached the fake Sentry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(report.contains("description"), "the report should carry the internal detail: {report}");
    assert!(report.contains("\"environment\":\"test\""), "{report}");
    assert!(report.contains("\"request_id\":\"sentry-test-request\""), "request id tag missing: {report}");
    assert!(report.contains(&format!("\"venue\":\"{}\"", app.a.id)), "venue tag missing: {report}");
    assert!(!report.contains(&app.a.full), "the bearer token reached Sentry");
    assert!(!report.contains("vqat_"), "a token reached Sentry");
    assert!(server.terminate(), "venueql serve did not exit cleanly on SIGTERM");
}
