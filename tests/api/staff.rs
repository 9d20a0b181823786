//! Staff and API-client management through GraphQL, including escalation attempts.

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};
use venueql::auth::Permissions;

const STAFF: &str = "{ staff { id email permissions } }";

async fn member_id(app: &TestApp, token: &str, email: &str) -> Option<String> {
    let list = app.gql(token, STAFF, json!({})).await;
    list["data"]["staff"]
        .as_array()?
        .iter()
        .find(|m| m["email"] == email)
        .map(|m| m["id"].as_str().unwrap().to_string())
}

async fn token_with(app: &TestApp, permissions: Permissions) -> String {
    venueql::admin::issue_token(&app.door, "operator:test", "alpha", "limited", permissions).await.unwrap().token
}

#[tokio::test]
async fn staff_are_listed_added_changed_and_removed_with_audit_rows() {
    let app = TestApp::spawn().await;
    let full = &app.a.full;
    assert!(member_id(&app, full, "member@alpha.test").await.is_some());
    let add = "mutation($e: String!) { addStaff(input: { email: $e, password: \"New-Waiter-Pass-1\", permissions: [ORDERS_QUEUE, MENU_VIEW] }) { id email permissions } }";
    let added = app.gql(full, add, json!({ "e": "Waiter@Alpha.test" })).await;
    assert_eq!(added["data"]["addStaff"]["email"], "waiter@alpha.test", "{added}");
    assert_eq!(added["data"]["addStaff"]["permissions"], json!(["ORDERS_QUEUE", "MENU_VIEW"]));
    let id = added["data"]["addStaff"]["id"].as_str().unwrap().to_string();
    let again = app.gql(full, add, json!({ "e": "waiter@alpha.test" })).await;
    assert_eq!(error_code(&again), "BAD_USER_INPUT", "already a member: {again}");
    let no_password = app
        .gql(full, "mutation { addStaff(input: { email: \"fresh@alpha.test\", permissions: [] }) { id } }", json!({}))
        .await;
    assert!(no_password["errors"][0]["message"].as_str().unwrap().contains("initial password"), "{no_password}");

    let set = "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [ORDERS_QUEUE]) { permissions } }";
    let changed = app.gql(full, set, json!({ "s": id })).await;
    assert_eq!(changed["data"]["setStaffPermissions"]["permissions"], json!(["ORDERS_QUEUE"]));
    let removed = app.gql(full, "mutation($s: ID!) { removeStaff(staffId: $s) }", json!({ "s": id })).await;
    assert_eq!(removed["data"]["removeStaff"], id.as_str());
    assert!(member_id(&app, full, "waiter@alpha.test").await.is_none());
    for action in ["staff.added", "staff.permissions_set", "staff.removed"] {
        assert_eq!(app.audit_count(&app.a, action).await, 1, "{action}");
    }
    let staff_view_only = token_with(&app, Permissions::STAFF_VIEW).await;
    assert!(member_id(&app, &staff_view_only, "member@alpha.test").await.is_some());
    let denied = app.gql(&staff_view_only, "mutation($s: ID!) { removeStaff(staffId: $s) }", json!({ "s": id })).await;
    assert_eq!(error_code(&denied), "FORBIDDEN");
}

#[tokio::test]
async fn nobody_grants_changes_or_removes_permissions_they_do_not_hold() {
    let app = TestApp::spawn().await;
    let manager = token_with(&app, Permissions::STAFF_MANAGE | Permissions::STAFF_VIEW | Permissions::MENU_VIEW).await;
    let escalate = app
        .gql(&manager, "mutation { addStaff(input: { email: \"crony@alpha.test\", password: \"Crony-Password-12\", permissions: [PAYMENTS_MANAGE] }) { id } }", json!({}))
        .await;
    assert_eq!(error_code(&escalate), "FORBIDDEN");
    assert!(escalate["errors"][0]["message"].as_str().unwrap().contains("PAYMENTS_MANAGE"), "{escalate}");
    let member = app.a.staff_id.to_string();
    let raise = app.gql(&manager, "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [MENU_VIEW, STAFF_MANAGE, AUDIT_VIEW]) { id } }", json!({ "s": member })).await;
    assert_eq!(error_code(&raise), "FORBIDDEN", "{raise}");
    assert!(raise["errors"][0]["message"].as_str().unwrap().contains("AUDIT_VIEW"));

    let owner = app.gql(&app.a.full, "mutation { addStaff(input: { email: \"owner@alpha.test\", password: \"Owner-Password-12\", permissions: [PAYMENTS_MANAGE, STAFF_MANAGE] }) { id } }", json!({})).await;
    let owner_id = owner["data"]["addStaff"]["id"].as_str().unwrap().to_string();
    let oust = app.gql(&manager, "mutation($s: ID!) { removeStaff(staffId: $s) }", json!({ "s": owner_id })).await;
    assert_eq!(error_code(&oust), "FORBIDDEN", "a manager cannot remove someone holding bits they lack: {oust}");
    let demote = app
        .gql(
            &manager,
            "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [STAFF_MANAGE]) { id } }",
            json!({ "s": owner_id }),
        )
        .await;
    assert_eq!(error_code(&demote), "FORBIDDEN", "nor take away PAYMENTS_MANAGE: {demote}");
    let mine = app.gql(&manager, "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [MENU_VIEW, STAFF_VIEW]) { permissions } }", json!({ "s": member })).await;
    assert_eq!(
        mine["data"]["setStaffPermissions"]["permissions"],
        json!(["MENU_VIEW", "STAFF_VIEW"]),
        "bits the manager holds are fine: {mine}"
    );
}

#[tokio::test]
async fn the_last_staff_manager_can_neither_be_removed_nor_lose_the_bit() {
    let app = TestApp::spawn().await;
    let added = app.gql(&app.a.full, "mutation { addStaff(input: { email: \"boss@alpha.test\", password: \"Boss-Password-123\", permissions: [STAFF_MANAGE] }) { id } }", json!({})).await;
    let boss = added["data"]["addStaff"]["id"].as_str().unwrap().to_string();
    let removed = app.gql(&app.a.full, "mutation($s: ID!) { removeStaff(staffId: $s) }", json!({ "s": boss })).await;
    assert_eq!(error_code(&removed), "FORBIDDEN");
    assert!(removed["errors"][0]["message"].as_str().unwrap().contains("last member with STAFF_MANAGE"), "{removed}");
    let demoted = app
        .gql(
            &app.a.full,
            "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [MENU_VIEW]) { id } }",
            json!({ "s": boss }),
        )
        .await;
    assert_eq!(error_code(&demoted), "FORBIDDEN");
    app.gql(&app.a.full, "mutation { addStaff(input: { email: \"boss2@alpha.test\", password: \"Boss-Password-123\", permissions: [STAFF_MANAGE] }) { id } }", json!({})).await;
    let removed = app.gql(&app.a.full, "mutation($s: ID!) { removeStaff(staffId: $s) }", json!({ "s": boss })).await;
    assert_eq!(removed["data"]["removeStaff"], boss.as_str(), "with another manager it works: {removed}");
}

#[tokio::test]
async fn api_clients_created_in_graphql_work_until_revoked() {
    let app = TestApp::spawn().await;
    let created = app
        .gql(&app.a.full, "mutation { createApiClient(input: { name: \"Accounting\", kind: INTEGRATION, permissions: [MENU_VIEW] }) { client { id name kind permissions } clientSecret } }", json!({}))
        .await;
    let created = &created["data"]["createApiClient"];
    let (id, secret) = (created["client"]["id"].as_str().unwrap(), created["clientSecret"].as_str().unwrap());
    assert_eq!(created["client"]["kind"], "INTEGRATION");
    let listed = app.gql(&app.a.full, "{ apiClients { id } }", json!({})).await.to_string();
    assert!(listed.contains(id) && !listed.contains(&app.b.client_id), "{listed}");
    let token = |app: &TestApp| {
        app.client
            .post(format!("{}/oauth/token", app.base))
            .form(&[("grant_type", "client_credentials")])
            .basic_auth(id, Some(secret))
            .send()
    };
    let tokens: Value = token(&app).await.unwrap().json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert!(app.gql(&access, "{ menu { categories { name } } }", json!({})).await["errors"].is_null());
    let revoked = app.gql(&app.a.full, "mutation($c: ID!) { revokeApiClient(clientId: $c) }", json!({ "c": id })).await;
    assert_eq!(revoked["data"]["revokeApiClient"], id);
    let auth = format!("Bearer {access}");
    let (status, _) = app.post("/graphql", &[("authorization", &auth)], r#"{"query":"{ me { actor } }"}"#).await;
    assert_eq!(status, 401, "a revoked client's tokens stop working at once");
    assert_eq!(token(&app).await.unwrap().status(), 401);
    assert_eq!(app.audit_count(&app.a, "oauth_client.revoked").await, 1);
}
