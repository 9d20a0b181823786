//! GraphQL and HTTP limits: each over-limit request gets a clear coded error.

use serde_json::json;

use crate::helpers::{TestApp, error_code};

fn auth(app: &TestApp) -> String {
    format!("Bearer {}", app.a.full)
}

#[tokio::test]
async fn too_deep_too_complex_and_too_many_aliases_are_refused_before_execution() {
    let app = TestApp::spawn_with(|name| match name {
        "GRAPHQL_MAX_DEPTH" => Some("3".into()),
        "GRAPHQL_MAX_COMPLEXITY" => Some("12".into()),
        "GRAPHQL_MAX_ALIASES" => Some("3".into()),
        _ => None,
    })
    .await;
    let deep = app.gql(&app.a.full, "{ menu { categories { items { name } } } }", json!({})).await;
    assert_eq!(error_code(&deep), "QUERY_LIMIT_EXCEEDED", "{deep}");
    assert!(deep["errors"][0]["message"].as_str().unwrap().contains("nested too deep"));
    let complex = app.gql(&app.a.full, "{ a: menu { categories { id name position } } b: menu { categories { id name position } } c: menu { categories { id name position } } }", json!({})).await;
    assert_eq!(error_code(&complex), "QUERY_LIMIT_EXCEEDED", "{complex}");
    assert!(complex["errors"][0]["message"].as_str().unwrap().contains("too complex"));
    let aliases = app.gql(&app.a.full, "{ a: searchMenu(text: \"a\") { id } b: searchMenu(text: \"b\") { id } c: searchMenu(text: \"c\") { id } d: searchMenu(text: \"d\") { id } }", json!({})).await;
    assert_eq!(error_code(&aliases), "QUERY_LIMIT_EXCEEDED", "{aliases}");
    assert_eq!(aliases["errors"][0]["message"], "query uses 4 aliases; the limit is 3");
    assert!(aliases.get("data").is_none_or(|d| d.is_null()));
}

#[tokio::test]
async fn batches_are_bounded() {
    let app = TestApp::spawn().await;
    let op = json!({ "query": "{ menu { categories { name } } }" });
    let (status, body) = app.post("/graphql", &[("authorization", &auth(&app))], json!([op, op]).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
    let eleven: Vec<_> = (0..11).map(|_| op.clone()).collect();
    let (status, body) = app.post("/graphql", &[("authorization", &auth(&app))], json!(eleven).to_string()).await;
    assert_eq!((status.as_u16(), error_code(&body)), (400, "BATCH_LIMIT_EXCEEDED"), "{body}");
    let (status, body) = app.post("/graphql", &[("authorization", &auth(&app))], "[]").await;
    assert_eq!((status.as_u16(), error_code(&body)), (400, "BATCH_LIMIT_EXCEEDED"), "{body}");
}

#[tokio::test]
async fn oversized_and_malformed_bodies_get_clear_errors() {
    let app = TestApp::spawn().await;
    let huge = format!("{{\"query\":\"{{ menu {{ categories {{ name }} }} }}\",\"x\":\"{}\"}}", "a".repeat(1_100_000));
    let (status, body) = app.post("/graphql", &[("authorization", &auth(&app))], huge).await;
    assert_eq!((status.as_u16(), error_code(&body)), (413, "PAYLOAD_TOO_LARGE"), "{body}");
    let (status, body) = app.post("/graphql", &[("authorization", &auth(&app))], "{}").await;
    assert_eq!((status.as_u16(), error_code(&body)), (400, "BAD_REQUEST"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("no query"), "{body}");
    let (status, body) = app.post("/graphql", &[("authorization", &auth(&app))], "{not json").await;
    assert_eq!((status.as_u16(), error_code(&body)), (400, "BAD_REQUEST"), "{body}");
    let parse = app.gql(&app.a.full, "{ menu { ", json!({})).await;
    assert_eq!(error_code(&parse), "GRAPHQL_PARSE_FAILED", "{parse}");
    let unknown = app.gql(&app.a.full, "{ orders { id } }", json!({})).await;
    assert_eq!(error_code(&unknown), "GRAPHQL_VALIDATION_FAILED", "{unknown}");
}

#[tokio::test]
async fn introspection_can_be_switched_off() {
    let app = TestApp::spawn_with(|name| (name == "GRAPHQL_INTROSPECTION").then(|| "false".into())).await;
    let response = app.gql(&app.a.full, "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(error_code(&response), "INTROSPECTION_DISABLED", "{response}");
    let still_works = app.gql(&app.a.full, "{ menu { categories { name } } }", json!({})).await;
    assert!(still_works["errors"].is_null(), "{still_works}");
}

#[tokio::test]
async fn internal_errors_never_reach_the_client() {
    let app = TestApp::spawn().await;
    app.break_menu_items().await;
    let response = app.gql(&app.a.full, "{ menu { categories { name } } }", json!({})).await;
    assert_eq!(error_code(&response), "INTERNAL", "{response}");
    assert_eq!(response["errors"][0]["message"], "internal error");
    let text = response.to_string();
    for leak in ["description_gone", "does not exist", "sqlx", "SELECT"] {
        assert!(!text.contains(leak), "internal detail {leak:?} leaked: {text}");
    }
}
