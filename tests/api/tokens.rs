//! Venue API tokens: missing, malformed, unknown, revoked and wrong-venue credentials.

use serde_json::json;

use crate::helpers::{TestApp, error_code};

const MENU: &str = r#"{"query":"{ menu { categories { name } } }"}"#;

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let cases: [&[(&str, &str)]; 5] = [
        &[],
        &[("authorization", "Basic dXNlcjpwYXNz")],
        &[("authorization", "Bearer")],
        &[("authorization", "Bearer vqat_not-a-real-token")],
        &[("authorization", "Bearer vqat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
    ];
    for headers in cases {
        let (status, body) = app.post("/graphql", headers, MENU).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{headers:?}");
        assert!(body.get("data").is_none(), "{body}");
    }
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_its_next_request() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {}", app.a.full);
    let (status, _) = app.post("/graphql", &[("authorization", &auth)], MENU).await;
    assert_eq!(status, 200);
    venueql::admin::revoke_token(&app.door, "operator:test", "alpha", app.a.full_id).await.unwrap();
    let (status, body) = app.post("/graphql", &[("authorization", &auth)], MENU).await;
    assert_eq!((status.as_u16(), error_code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    assert_eq!(app.audit_count(&app.a, "api_token.revoked").await, 1);
    let again = venueql::admin::revoke_token(&app.door, "operator:test", "alpha", app.a.full_id).await.unwrap_err();
    assert_eq!(again.code(), "BAD_USER_INPUT");
    let other_venue =
        venueql::admin::revoke_token(&app.door, "operator:test", "bravo", app.a.full_id).await.unwrap_err();
    assert_eq!(other_venue.code(), "NOT_FOUND", "a token is revoked only through its own venue");
}

#[tokio::test]
async fn a_request_naming_another_venue_than_its_token_is_refused() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {}", app.b.full);
    let a_id = app.a.id.to_string();
    for headers in [
        vec![("authorization", auth.as_str()), ("x-venue", "alpha")],
        vec![("authorization", auth.as_str()), ("x-venue", a_id.as_str())],
        vec![("authorization", auth.as_str()), ("host", "alpha.venues.test")],
        vec![("authorization", auth.as_str()), ("x-venue", "no-such-venue")],
    ] {
        let (status, body) = app.post("/graphql", &headers, MENU).await;
        assert_eq!((status.as_u16(), error_code(&body)), (403, "FORBIDDEN"), "{headers:?}: {body}");
    }
    for headers in [
        vec![("authorization", auth.as_str()), ("x-venue", "bravo")],
        vec![("authorization", auth.as_str()), ("host", "bravo.venues.test")],
    ] {
        let (status, body) = app.post("/graphql", &headers, MENU).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
        assert!(body.to_string().contains("Bravo Drinks"));
    }
}

#[tokio::test]
async fn a_venue_host_name_without_a_token_serves_that_venues_public_menu() {
    let app = TestApp::spawn().await;
    let (status, body) = app.post("/graphql", &[("host", "alpha.venues.test:8080")], MENU).await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(text.contains("Alpha Drinks") && !text.contains("Bravo"), "{text}");
}

#[tokio::test]
async fn each_token_sees_only_its_own_venue() {
    let app = TestApp::spawn().await;
    let a = app.gql(&app.a.full, "{ menu { categories { name } } }", json!({})).await.to_string();
    let b = app.gql(&app.b.full, "{ menu { categories { name } } }", json!({})).await.to_string();
    assert!(a.contains("Alpha") && !a.contains("Bravo"), "{a}");
    assert!(b.contains("Bravo") && !b.contains("Alpha"), "{b}");
}

#[tokio::test]
async fn a_token_sent_to_another_venues_public_path_is_refused() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {}", app.b.full);
    let (status, body) = app.post("/v/alpha/graphql", &[("authorization", &auth)], MENU).await;
    assert_eq!((status.as_u16(), error_code(&body)), (403, "FORBIDDEN"), "{body}");
    let (status, body) = app.post("/v/bravo/graphql", &[("authorization", &auth)], MENU).await;
    assert_eq!(status, 200, "its own venue's path is fine: {body}");
    let (status, body) = app.post("/v/alpha/graphql", &[("authorization", "Bearer vqat_forged")], MENU).await;
    assert_eq!((status.as_u16(), error_code(&body)), (401, "UNAUTHENTICATED"), "{body}");
}
