//! Staff and API-client management through GraphQL, including escalation attempts.

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};
use venueql::access::Permissions;

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
async fn staff_are_invited_listed_changed_and_removed_with_audit_rows() {
    let app = TestApp::spawn().await;
    let full = &app.a.full;
    assert!(member_id(&app, full, "member@alpha.test").await.is_some());
    let invited = app.invite(full, "Waiter@Alpha.test", &["ORDERS_QUEUE", "MENU_VIEW"]).await;
    let invitation = &invited["data"]["addStaff"];
    assert_eq!(invitation["email"], "waiter@alpha.test", "{invited}");
    assert_eq!(invitation["status"], "INVITED");
    assert_eq!(invitation["permissions"], json!(["ORDERS_QUEUE", "MENU_VIEW"]));
    assert!(invitation["invitationExpiresAt"].is_string());
    let with_password = app
        .gql(full, "mutation { addStaff(input: { email: \"x@alpha.test\", password: \"Chosen-By-Venue-1\", permissions: [] }) { id } }", json!({}))
        .await;
    assert_eq!(error_code(&with_password), "BAD_USER_INPUT", "no venue chooses a password: {with_password}");
    assert!(
        with_password["errors"][0]["message"].as_str().unwrap().contains("unknown field \"password\""),
        "{with_password}"
    );
    let again = app.invite(full, "waiter@alpha.test", &["ORDERS_QUEUE"]).await;
    let listed = app.gql(full, "{ staff { id email status permissions } }", json!({})).await;
    let waiters: Vec<&Value> =
        listed["data"]["staff"].as_array().unwrap().iter().filter(|m| m["email"] == "waiter@alpha.test").collect();
    assert_eq!(waiters.len(), 1, "inviting again replaces the pending invitation: {listed}");
    assert_eq!(waiters[0]["id"], again["data"]["addStaff"]["id"]);
    let revoke = "mutation($id: ID!) { revokeInvitation(id: $id) }";
    let revoked = app.gql(full, revoke, json!({ "id": waiters[0]["id"] })).await;
    assert_eq!(revoked["data"]["revokeInvitation"], waiters[0]["id"], "{revoked}");
    assert_eq!(error_code(&app.gql(full, revoke, json!({ "id": waiters[0]["id"] })).await), "NOT_FOUND");
    assert!(member_id(&app, full, "waiter@alpha.test").await.is_none());

    let id =
        app.join_as_new_person(full, "waiter@alpha.test", &["ORDERS_QUEUE", "MENU_VIEW"], "Waiter-Own-Pass-1").await;
    let again = app.invite(full, "waiter@alpha.test", &["MENU_VIEW"]).await;
    assert_eq!(error_code(&again), "BAD_USER_INPUT", "already a member: {again}");
    let set =
        "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [ORDERS_QUEUE]) { permissions status } }";
    let changed = app.gql(full, set, json!({ "s": id })).await;
    assert_eq!(changed["data"]["setStaffPermissions"]["permissions"], json!(["ORDERS_QUEUE"]));
    assert_eq!(changed["data"]["setStaffPermissions"]["status"], "ACTIVE");
    let removed = app.gql(full, "mutation($s: ID!) { removeStaff(staffId: $s) }", json!({ "s": id })).await;
    assert_eq!(removed["data"]["removeStaff"], id.to_string().as_str());
    assert!(member_id(&app, full, "waiter@alpha.test").await.is_none());
    for (action, times) in [
        ("staff.invited", 3),
        ("staff.invitation_revoked", 1),
        ("staff.invitation_accepted", 1),
        ("staff.permissions_set", 1),
        ("staff.removed", 1),
    ] {
        assert_eq!(app.audit_count(&app.a, action).await, times, "{action}");
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
        .gql(
            &manager,
            "mutation { addStaff(input: { email: \"crony@alpha.test\", permissions: [PAYMENTS_MANAGE] }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&escalate), "FORBIDDEN");
    assert!(escalate["errors"][0]["message"].as_str().unwrap().contains("PAYMENTS_MANAGE"), "{escalate}");
    let member = app.a.staff_id.to_string();
    let raise = app.gql(&manager, "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [MENU_VIEW, STAFF_MANAGE, AUDIT_VIEW]) { id } }", json!({ "s": member })).await;
    assert_eq!(error_code(&raise), "FORBIDDEN", "{raise}");
    assert!(raise["errors"][0]["message"].as_str().unwrap().contains("AUDIT_VIEW"));

    let owner_id = app
        .join_as_new_person(&app.a.full, "owner@alpha.test", &["PAYMENTS_MANAGE", "STAFF_MANAGE"], "Owner-Password-12")
        .await
        .to_string();
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
    let boss = app
        .join_as_new_person(&app.a.full, "boss@alpha.test", &["STAFF_MANAGE"], "Boss-Password-123")
        .await
        .to_string();
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
    app.join_as_new_person(&app.a.full, "boss2@alpha.test", &["STAFF_MANAGE"], "Boss-Password-123").await;
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
