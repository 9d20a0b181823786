//! Operational endpoints and the start-up role check.

use crate::helpers::TestApp;
use venueql::app::{Application, StartError};
use venueql::config::Config;

async fn get(app: &TestApp, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let response = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, response.text().await.unwrap(), headers)
}

#[tokio::test]
async fn health_readiness_security_txt_and_request_ids() {
    let app = TestApp::spawn().await;
    assert_eq!(get(&app, "/healthz").await.0, 200);
    let (status, body, headers) = get(&app, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    assert!(headers.get("x-request-id").is_some_and(|v| v.len() >= 32));
    let (status, body, _) = get(&app, "/.well-known/security.txt").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("Contact: ") && body.contains("\nExpires: "), "{body}");
    let policy = body.lines().find_map(|l| l.strip_prefix("Policy: ")).expect("a Policy field");
    assert_eq!(policy, format!("{}/.well-known/security-policy", app.base));
    let (status, terms, _) = get(&app, "/.well-known/security-policy").await;
    assert_eq!(status, 200);
    assert!(terms.starts_with("## Reporting a vulnerability"), "{terms}");
    assert!(terms.contains("within 48 hours") && terms.contains("Credit"), "{terms}");
    assert!(!terms.contains("\n## "), "one section only: {terms}");
    let echoed =
        app.client.get(format!("{}/healthz", app.base)).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    let replaced = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "bad id\twith junk")
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "bad id\twith junk");
}

#[tokio::test]
async fn readyz_reports_migrations_that_are_not_current() {
    let app = TestApp::spawn().await;
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&app.urls.owner).await.unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET success = false").execute(&mut owner).await.unwrap();
    let (status, body, _) = get(&app, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("venueql migrate"), "{body}");
}

#[tokio::test]
async fn metrics_count_requests_and_graphql_operations_by_kind_for_the_metrics_token_only() {
    let app = TestApp::spawn_with(|name| (name == "METRICS_TOKEN").then(|| "metrics-secret-token".into())).await;
    app.gql(&app.a.full, "{ menu { categories { name } } }", serde_json::json!({})).await;
    app.gql(&app.a.full, "mutation { createMenuCategory(input: { name: \"M\" }) { id } }", serde_json::json!({})).await;
    assert_eq!(get(&app, "/metrics").await.0, 401, "no token");
    let wrong = app.client.get(format!("{}/metrics", app.base)).bearer_auth(&app.a.full).send().await.unwrap();
    assert_eq!(wrong.status(), 401, "a venue's token is not the metrics token");
    let response =
        app.client.get(format!("{}/metrics", app.base)).bearer_auth("metrics-secret-token").send().await.unwrap();
    let (status, body) = (response.status().as_u16(), response.text().await.unwrap());
    assert_eq!(status, 200);
    for needle in [
        r#"venueql_http_requests_total{route="/graphql",method="POST",status="200"} 2"#,
        r#"venueql_graphql_operations_total{kind="query",outcome="ok"} 1"#,
        r#"venueql_graphql_operations_total{kind="mutation",outcome="ok"} 1"#,
        "venueql_graphql_operation_duration_seconds_bucket",
        "venueql_db_pool_connections",
    ] {
        assert!(body.contains(needle), "missing {needle} in:\n{body}");
    }
}

async fn build_as(url: &str) -> Result<Application, StartError> {
    let url = url.to_string();
    let config = Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(url.clone()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".into()),
        "APP_KEY" => Some(crate::helpers::TEST_APP_KEY.into()),
        "IDENTITY_HMAC_KEY" => Some(crate::helpers::TEST_IDENTITY_KEY.into()),
        "AUDIT_HMAC_KEY" => Some(crate::helpers::TEST_AUDIT_KEY.into()),
        _ => None,
    })
    .unwrap();
    Application::build(config).await
}

#[tokio::test]
async fn the_server_refuses_to_run_as_owner_or_superuser() {
    let app = TestApp::spawn().await;
    let owner = build_as(&app.urls.owner).await.err().expect("owner refused").to_string();
    assert!(owner.contains("refusing to run") && owner.contains("owns tables"), "{owner}");
    let superuser = build_as(&app.superuser_url()).await.err().expect("superuser refused").to_string();
    assert!(superuser.contains("refusing to run") && superuser.contains("superuser"), "{superuser}");
    assert!(build_as(&app.urls.app).await.is_ok());
}

#[tokio::test]
async fn without_a_metrics_token_metrics_are_only_on_their_own_listener() {
    let app = TestApp::spawn().await;
    let (status, body, _) = get(&app, "/metrics").await;
    assert_eq!(status, 404, "not public: {body}");
    assert!(body.contains("METRICS_LISTEN_ADDR"), "{body}");
    let url = app.urls.app.clone();
    let config = Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(url.clone()),
        "LISTEN_ADDR" => Some("127.0.0.1:0".into()),
        "METRICS_LISTEN_ADDR" => Some("127.0.0.1:0".into()),
        "APP_KEY" => Some(crate::helpers::TEST_APP_KEY.into()),
        "IDENTITY_HMAC_KEY" => Some(crate::helpers::TEST_IDENTITY_KEY.into()),
        "AUDIT_HMAC_KEY" => Some(crate::helpers::TEST_AUDIT_KEY.into()),
        _ => None,
    })
    .unwrap();
    let server = Application::build(config).await.unwrap();
    let (main, metrics) = (server.local_addr(), server.metrics_addr().expect("a metrics listener"));
    tokio::spawn(server.run_until_stopped(std::future::pending()));
    let internal = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap();
    assert_eq!(internal.status(), 200);
    assert!(internal.text().await.unwrap().contains("venueql_db_pool_connections"));
    assert_eq!(reqwest::get(format!("http://{metrics}/graphql")).await.unwrap().status(), 404, "only metrics there");
    assert_eq!(reqwest::get(format!("http://{main}/metrics")).await.unwrap().status(), 404);
}
