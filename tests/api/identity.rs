//! A person's identity across venues (issue 10): invitations instead of venue-chosen
//! passwords, one ceiling for every token (client, membership, the venue's MFA rule, an
//! absolute lifetime), step-up for credential changes, password change and reset over a
//! real SMTP exchange, and a lockout that holds under concurrency.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{HostedPage, TestApp, error_code};
use crate::oauth::{
    Browser, EMAIL, OAuthSetup, PASSWORD, exchange, login, query_param, setup, setup_with, token_request, totp_code,
    verifier,
};
use venueql::access::Permissions;
use venueql::auth::authorization_code::s256_challenge;
use venueql::auth::breach::BreachCheck;

const ME: &str = "{ me { venue { slug } person { email } permissions } }";

/// Signs `email` in through the hosted login at `venue` (no TOTP); returns the tokens.
pub(crate) async fn sign_in(s: &OAuthSetup, email: &str, password: &str, venue: Uuid) -> Value {
    let v = verifier();
    let (status, location, body) = login(s, email, password, Some(venue), &s256_challenge(&v)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let code = query_param(&location, "code").unwrap();
    let (status, tokens) = exchange(s, &code, &v).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

async fn refresh(s: &OAuthSetup, refresh_token: &str) -> (StatusCode, Value) {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", s.spa.as_str())];
    let (status, body, _) = token_request(&s.app, &form, None).await;
    (status, body)
}

async fn status_of(app: &TestApp, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    app.post("/graphql", &[("authorization", &auth)], r#"{"query":"{ me { actor } }"}"#).await.0.as_u16()
}

/// The invitation answer without what necessarily differs (its id, email and expiry).
fn shape(answer: &Value) -> Value {
    let mut answer = answer.clone();
    for field in ["id", "email", "invitationExpiresAt"] {
        answer["data"]["addStaff"][field] = json!("…");
    }
    answer
}

#[tokio::test]
async fn a_venue_can_neither_choose_nor_learn_a_password_and_another_venue_gets_nothing_until_the_person_accepts() {
    let s = setup().await;
    let app = &s.app;
    // EMAIL has an account (alpha, bravo). Venue B invites a person with an account at A
    // only, and a stranger: the two answers are the same but for id and email.
    venueql::admin::create_staff(&app.door, "operator:test", "cook@alpha.test", PASSWORD, &BreachCheck::off())
        .await
        .unwrap();
    venueql::admin::grant(&app.door, "operator:test", "alpha", "cook@alpha.test", Permissions::MENU_VIEW)
        .await
        .unwrap();
    let existing = app.invite(&app.b.full, "cook@alpha.test", &["MENU_VIEW", "STAFF_MANAGE"]).await;
    let stranger = app.invite(&app.b.full, "stranger@example.com", &["MENU_VIEW", "STAFF_MANAGE"]).await;
    assert!(existing["errors"].is_null(), "{existing}");
    assert_eq!(shape(&existing), shape(&stranger), "the answer does not reveal who has an account");

    // Until the cook accepts, B's invitation gives nothing: signing in offers only A.
    let cook = sign_in(&s, "cook@alpha.test", PASSWORD, app.a.id).await;
    let me = app.gql(cook["access_token"].as_str().unwrap(), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["venue"]["slug"], "alpha");
    let (status, _, body) = login(&s, "cook@alpha.test", PASSWORD, Some(app.b.id), &s256_challenge(&verifier())).await;
    assert!(
        status == StatusCode::SEE_OTHER && !body.contains("Choose a venue"),
        "only A is offered and B cannot be asked for: {status} {body}"
    );
    let staff_b = app.gql(&app.b.full, "{ staff { id email status } }", json!({})).await.to_string();
    assert!(staff_b.contains("\"INVITED\"") && !staff_b.contains("\"ACTIVE\",\"email\":\"cook"), "{staff_b}");
    let cook_id = app.gql(&app.a.full, "{ staff { id email } }", json!({})).await["data"]["staff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "cook@alpha.test")
        .unwrap()["id"]
        .clone();
    let pin = app
        .gql(&app.b.full, "mutation($s: ID!) { setStaffPin(staffId: $s, pin: \"4321\") }", json!({ "s": cook_id }))
        .await;
    assert_eq!(error_code(&pin), "NOT_FOUND", "B cannot give the cook a PIN before they accept: {pin}");

    // The invitation page asks the cook to sign in with their own password, never to set one.
    let page = app.hosted_get(&app.invitation_link("cook@alpha.test", 0).await).await;
    assert!(
        page.html.contains("Sign in with your own password") && !page.html.contains("New password"),
        "{}",
        page.html
    );
    let wrong =
        app.hosted_post("/oauth/invitation", &page, &[("step", "signin"), ("password", "Guessed-Pass-123")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.html);
    let accepted = app.hosted_post("/oauth/invitation", &page, &[("step", "signin"), ("password", PASSWORD)]).await;
    assert!(accepted.html.contains("id=\"accepted\""), "{}", accepted.html);
    let cook_at_b = sign_in(&s, "cook@alpha.test", PASSWORD, app.b.id).await;
    let me = app.gql(cook_at_b["access_token"].as_str().unwrap(), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["venue"]["slug"], "bravo", "{me}");
    assert_eq!(me["data"]["me"]["permissions"], json!(["MENU_VIEW", "STAFF_MANAGE"]));
    let reused = app.hosted_get(&app.invitation_link("cook@alpha.test", 0).await).await;
    assert_eq!(reused.status, StatusCode::NOT_FOUND, "the link works once");

    // The stranger sets their own password on the page; the venue never saw it.
    let page = app.hosted_get(&app.invitation_link("stranger@example.com", 0).await).await;
    assert!(page.html.contains("New password"), "{}", page.html);
    let differ = app
        .hosted_post(
            "/oauth/invitation",
            &page,
            &[("step", "create"), ("password", "Own-Secret-Pass-1"), ("password2", "x")],
        )
        .await;
    assert_eq!(differ.status, StatusCode::BAD_REQUEST);
    let weak = app
        .hosted_post("/oauth/invitation", &page, &[("step", "create"), ("password", "short"), ("password2", "short")])
        .await;
    assert!(weak.html.contains("12 characters"), "{}", weak.html);
    let created = app
        .hosted_post(
            "/oauth/invitation",
            &page,
            &[("step", "create"), ("password", "Own-Secret-Pass-1"), ("password2", "Own-Secret-Pass-1")],
        )
        .await;
    assert!(created.html.contains("id=\"accepted\""), "{}", created.html);
    let stranger = sign_in(&s, "stranger@example.com", "Own-Secret-Pass-1", app.b.id).await;
    assert_eq!(status_of(app, stranger["access_token"].as_str().unwrap()).await, 200);
    assert_eq!(app.audit_count(&app.b, "staff.invitation_accepted").await, 2);
    let audit = app.audit_count(&app.b, "staff.invited").await;
    assert_eq!(audit, 2);
}

#[tokio::test]
async fn declining_or_revoking_ends_an_invitation_and_an_expired_one_is_gone() {
    let app = TestApp::spawn().await;
    app.invite(&app.a.full, "decliner@example.com", &["MENU_VIEW"]).await;
    let page = app.hosted_get(&app.invitation_link("decliner@example.com", 0).await).await;
    let declined = app.hosted_post("/oauth/invitation", &page, &[("step", "decline")]).await;
    assert!(declined.html.contains("You declined"), "{}", declined.html);
    assert_eq!(app.hosted_get(&app.invitation_link("decliner@example.com", 0).await).await.status, 404);
    assert_eq!(app.audit_count(&app.a, "staff.invitation_declined").await, 1);

    let revoked = app.invite(&app.a.full, "revoked@example.com", &["MENU_VIEW"]).await;
    let id = revoked["data"]["addStaff"]["id"].clone();
    app.gql(&app.a.full, "mutation($id: ID!) { revokeInvitation(id: $id) }", json!({ "id": id })).await;
    assert_eq!(app.hosted_get(&app.invitation_link("revoked@example.com", 0).await).await.status, 404);

    // An invitation whose link has run out (made through the library with a one-second life).
    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let who = venueql::audit::Who::operator("operator:test");
    let new = venueql::staff::invitations::NewInvitation {
        email: "late@example.com",
        permissions: Permissions::MENU_VIEW,
        ttl: Duration::from_secs(1),
    };
    let master = crate::helpers::test_master();
    let limits = venueql::config::LockoutLimits::default();
    venueql::staff::invitations::invite(&db, &mut tx, &who, Permissions::all(), &master, limits, new).await.unwrap();
    tx.commit().await.unwrap();
    let link = app.invitation_link("late@example.com", 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = app.hosted_get(&link).await;
    assert_eq!(late.status, 404, "{}", late.html);
    let listed = app.gql(&app.a.full, "{ staff { email } }", json!({})).await.to_string();
    assert!(!listed.contains("late@example.com"), "expired invitations are not listed as pending: {listed}");
}

#[tokio::test]
async fn an_invitation_rolled_back_with_its_transaction_sends_nothing() {
    let app = TestApp::spawn().await;
    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let who = venueql::audit::Who::operator("operator:test");
    let new = venueql::staff::invitations::NewInvitation {
        email: "ghost@example.com",
        permissions: Permissions::MENU_VIEW,
        ttl: Duration::from_secs(3600),
    };
    let master = crate::helpers::test_master();
    let limits = venueql::config::LockoutLimits::default();
    venueql::staff::invitations::invite(&db, &mut tx, &who, Permissions::all(), &master, limits, new).await.unwrap();
    drop(tx);
    app.invite(&app.a.full, "real@example.com", &["MENU_VIEW"]).await;
    app.mail.wait_for("real@example.com").await;
    assert!(
        app.mail.received().iter().all(|m| m.to != ["ghost@example.com"]),
        "the rolled-back invitation sent nothing"
    );
    assert_eq!(venueql::mail::waiting(&db).await.unwrap(), 0, "and nothing waits in the outbox");
}

#[tokio::test]
async fn mail_is_retried_until_the_smtp_server_takes_it() {
    let app = TestApp::spawn().await;
    app.mail.down();
    app.invite(&app.a.full, "patient@example.com", &["MENU_VIEW"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    assert_eq!(venueql::mail::waiting(&db).await.unwrap(), 1, "the refused mail waits in the outbox");
    app.mail.up();
    let mail = app.mail.wait_for("patient@example.com").await;
    assert_eq!(mail.from, "no-reply@venueql.invalid", "MAIL_FROM's address is the envelope sender");
    assert!(mail.link("/oauth/invitation").1.starts_with("vqiv_"));
    // The worker marks the mail sent right after the SMTP server took it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while venueql::mail::waiting(&db).await.unwrap() != 0 {
        assert!(std::time::Instant::now() < deadline, "the sent mail left the outbox");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_pin_escalation_is_refused_and_pin_tokens_stay_under_the_terminal_and_the_mfa_rule() {
    let s = setup().await;
    let app = &s.app;
    venueql::admin::create_staff(&app.door, "operator:test", "owner@alpha.test", PASSWORD, &BreachCheck::off())
        .await
        .unwrap();
    venueql::admin::grant(&app.door, "operator:test", "alpha", "owner@alpha.test", Permissions::all()).await.unwrap();
    let members = app.gql(&app.a.full, "{ staff { id email } }", json!({})).await;
    let owner = members["data"]["staff"].as_array().unwrap().iter().find(|m| m["email"] == "owner@alpha.test").unwrap()
        ["id"]
        .clone();
    let manager = Permissions::STAFF_MANAGE | Permissions::STAFF_VIEW | Permissions::MENU_VIEW;
    let manager = venueql::admin::issue_token(&app.door, "operator:test", "alpha", "manager", manager).await.unwrap();
    let set_other = "mutation($s: ID!) { setStaffPin(staffId: $s, pin: \"1234\") }";
    let refused = app.gql(&manager.token, set_other, json!({ "s": owner })).await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "a manager cannot set the owner's PIN: {refused}");
    let cleared =
        app.gql(&manager.token, "mutation($s: ID!) { clearStaffPin(staffId: $s) }", json!({ "s": owner })).await;
    assert_eq!(error_code(&cleared), "FORBIDDEN", "nor clear it: {cleared}");
    assert_eq!(app.audit_count(&app.a, "staff.pin_set").await, 0);

    // The owner sets their own PIN only with a fresh proof.
    let tokens = sign_in(&s, "owner@alpha.test", PASSWORD, app.a.id).await;
    let access = tokens["access_token"].as_str().unwrap();
    let own = "mutation($p: String) { setStaffPin(pin: \"2468\", reauth: { password: $p }) }";
    let bare = app.gql(access, "mutation { setStaffPin(pin: \"2468\") }", json!({})).await;
    assert_eq!(error_code(&bare), "BAD_USER_INPUT", "{bare}");
    assert_eq!(error_code(&app.gql(access, own, json!({ "p": "Wrong-Password-12" })).await), "BAD_USER_INPUT");
    assert_eq!(app.gql(access, own, json!({ "p": PASSWORD })).await["data"]["setStaffPin"], true);

    let till = crate::helpers::create_client(
        &app.door,
        "operator:test",
        "pos",
        "Till",
        Some("alpha"),
        &[],
        Permissions::ORDERS_QUEUE | Permissions::ORDERS_REFUND,
    )
    .await
    .unwrap();
    let pin_grant = || async {
        let form = [("grant_type", venueql::auth::pins::PIN_GRANT), ("username", "owner@alpha.test"), ("pin", "2468")];
        token_request(app, &form, Some((&till.client_id, till.client_secret.as_deref().unwrap()))).await
    };
    let (status, body, _) = pin_grant().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "ORDERS_QUEUE ORDERS_REFUND", "the terminal's ceiling, not the owner's membership");
    let me = app.gql(body["access_token"].as_str().unwrap(), "{ me { permissions } }", json!({})).await;
    assert_eq!(me["data"]["me"]["permissions"], json!(["ORDERS_QUEUE", "ORDERS_REFUND"]));
    app.gql(
        &app.a.full,
        "mutation { updateVenueSettings(input: { requireMfaForElevated: true }) { requireMfaForElevated } }",
        json!({}),
    )
    .await;
    let (status, body, _) = pin_grant().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "ORDERS_QUEUE", "a PIN is one factor: no elevated bit under the venue's MFA rule");
}

#[tokio::test]
async fn turning_on_the_mfa_rule_cuts_elevated_bits_of_sessions_without_mfa() {
    let s = setup().await;
    let app = &s.app;
    let elevated = Permissions::MENU_VIEW | Permissions::STAFF_MANAGE;
    venueql::admin::grant(&app.door, "operator:test", "alpha", EMAIL, elevated).await.unwrap();
    let tokens = sign_in(&s, EMAIL, PASSWORD, app.a.id).await;
    let access = tokens["access_token"].as_str().unwrap();
    let me = app.gql(access, "{ me { permissions } }", json!({})).await;
    assert_eq!(me["data"]["me"]["permissions"], json!(["MENU_VIEW", "STAFF_MANAGE"]));
    let rule = "mutation { updateVenueSettings(input: { requireMfaForElevated: true }) { requireMfaForElevated } }";
    app.gql(&app.a.full, rule, json!({})).await;
    let me = app.gql(access, "{ me { permissions } }", json!({})).await;
    assert_eq!(me["data"]["me"]["permissions"], json!(["MENU_VIEW"]), "the live token loses STAFF_MANAGE at once");
    let (status, refreshed) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["scope"], "MENU_VIEW", "and a refresh does not bring it back");
    let sessions =
        app.gql(refreshed["access_token"].as_str().unwrap(), "{ mySessions { mfa expiresAt } }", json!({})).await;
    assert_eq!(sessions["data"]["mySessions"][0]["mfa"], false, "{sessions}");
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_it_rotates() {
    let s = setup_with(|name| (name == "SESSION_MAX_AGE_SECS").then(|| "3".into())).await;
    let tokens = sign_in(&s, EMAIL, PASSWORD, s.app.a.id).await;
    assert!(tokens["expires_in"].as_u64().unwrap() <= 3, "no token outlives its session: {tokens}");
    let mut refresh_token = tokens["refresh_token"].as_str().unwrap().to_string();
    let mut access = String::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (status, rotated) = refresh(&s, &refresh_token).await;
        assert_eq!(status, 200, "{rotated}");
        refresh_token = rotated["refresh_token"].as_str().unwrap().to_string();
        access = rotated["access_token"].as_str().unwrap().to_string();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, ended) = refresh(&s, &refresh_token).await;
    assert_eq!((status.as_u16(), ended["error"].as_str()), (400, Some("invalid_grant")), "{ended}");
    assert_eq!(status_of(&s.app, &access).await, 401);
}

#[tokio::test]
async fn a_hundred_concurrent_wrong_attempts_let_at_most_the_limit_reach_a_real_check() {
    // A pool as large as production's default, so the attempts really run side by side.
    let s = setup_with(|name| (name == "DATABASE_MAX_CONNECTIONS").then(|| "16".into())).await;
    let app = &s.app;
    let limit = 5;

    // Client secrets.
    let id = s.integration.0.as_str();
    let attempts =
        (0..100).map(|_| token_request(app, &[("grant_type", "client_credentials")], Some((id, "vqcs_wrong"))));
    let statuses: Vec<u16> = join_all(attempts).await.into_iter().map(|(status, _, _)| status.as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= limit, "{checked} wrong client secrets reached a check: {statuses:?}");
    assert_eq!(checked + statuses.iter().filter(|s| **s == 429).count(), 100);

    // Passwords, through the hosted login (each attempt with its own form and cookie).
    let challenge = s256_challenge(&verifier());
    let mut browsers = Vec::new();
    for _ in 0..100 {
        browsers.push(Browser::open(&s, &challenge).await);
    }
    let attempts = browsers.iter().map(|b| b.password(EMAIL, "Wrong-Password-123"));
    let statuses: Vec<u16> = join_all(attempts).await.into_iter().map(|(status, _, _)| status.as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= limit, "{checked} wrong passwords reached a check: {statuses:?}");
    assert_eq!(checked + statuses.iter().filter(|s| **s == 429).count(), 100);

    // PINs at a terminal.
    let till = crate::helpers::create_client(
        &app.door,
        "operator:test",
        "pos",
        "Till",
        Some("alpha"),
        &[],
        Permissions::MENU_VIEW,
    )
    .await
    .unwrap();
    let secret = till.client_secret.clone().unwrap();
    let attempts = (0..100).map(|_| {
        let form = [("grant_type", venueql::auth::pins::PIN_GRANT), ("username", EMAIL), ("pin", "0000")];
        let (id, secret) = (till.client_id.clone(), secret.clone());
        async move { token_request(app, &form, Some((&id, &secret))).await }
    });
    let statuses: Vec<u16> = join_all(attempts).await.into_iter().map(|(status, _, _)| status.as_u16()).collect();
    let checked = statuses.iter().filter(|s| **s == 400).count();
    assert!(checked <= limit, "{checked} wrong PINs reached a check: {statuses:?}");
    assert_eq!(checked + statuses.iter().filter(|s| **s == 429).count(), 100);
}

/// Wrong client secrets for `n` different clients from `forwarded` addresses; the statuses.
async fn spray(app: &TestApp, forwarded: &[&str]) -> Vec<u16> {
    let mut statuses = Vec::new();
    for (i, address) in forwarded.iter().enumerate() {
        let response = app
            .client
            .post(format!("{}/oauth/token", app.base))
            .header("x-forwarded-for", *address)
            .form(&[("grant_type", "client_credentials")])
            .basic_auth(format!("vqc_unknownclient{i:04}xxxxxxxx"), Some("vqcs_wrong"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
    let untrusted = TestApp::spawn_with(|name| (name == "LOCKOUT_IP_LIMIT").then(|| "3".into())).await;
    let statuses = spray(&untrusted, &["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]).await;
    assert_eq!(statuses, [401, 401, 401, 429], "X-Forwarded-For from anyone is ignored: one address, one limit");

    let proxied = TestApp::spawn_with(|name| match name {
        "LOCKOUT_IP_LIMIT" => Some("3".into()),
        "TRUSTED_PROXIES" => Some("127.0.0.1/32".into()),
        _ => None,
    })
    .await;
    let statuses = spray(&proxied, &["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]).await;
    assert_eq!(statuses, [401, 401, 401, 401], "behind a trusted proxy each client has its own limit");
    let statuses = spray(&proxied, &["198.51.100.7", "198.51.100.7", "198.51.100.7", "198.51.100.7"]).await;
    assert_eq!(statuses, [401, 401, 401, 429], "and one client is still limited");
    let statuses =
        spray(&proxied, &["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3", "2001:db8:1:2::4"]).await;
    assert_eq!(statuses, [401, 401, 401, 429], "IPv6 addresses count per /64");
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_ends_the_other_sessions() {
    let s = setup().await;
    let app = &s.app;
    let phone = sign_in(&s, EMAIL, PASSWORD, app.a.id).await;
    let laptop = sign_in(&s, EMAIL, PASSWORD, app.b.id).await;
    let laptop_access = laptop["access_token"].as_str().unwrap();
    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
    let wrong = app.gql(laptop_access, change, json!({ "c": "Wrong-Password-123", "n": "Brand-New-Pass-42" })).await;
    assert_eq!(error_code(&wrong), "BAD_USER_INPUT", "{wrong}");
    let weak = app.gql(laptop_access, change, json!({ "c": PASSWORD, "n": "weak" })).await;
    assert_eq!(error_code(&weak), "BAD_USER_INPUT", "{weak}");
    let changed = app.gql(laptop_access, change, json!({ "c": PASSWORD, "n": "Brand-New-Pass-42" })).await;
    assert_eq!(changed["data"]["changePassword"], true, "{changed}");
    assert_eq!(status_of(app, laptop_access).await, 200, "the session that changed it goes on");
    assert_eq!(status_of(app, phone["access_token"].as_str().unwrap()).await, 401, "the other session ended");
    assert_eq!(refresh(&s, phone["refresh_token"].as_str().unwrap()).await.0, 400);
    assert_eq!(refresh(&s, laptop["refresh_token"].as_str().unwrap()).await.0, 200);
    let (status, _, _) = login(&s, EMAIL, PASSWORD, Some(app.a.id), &s256_challenge(&verifier())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password is gone");
    sign_in(&s, EMAIL, "Brand-New-Pass-42", app.a.id).await;
    assert_eq!(app.audit_count(&app.b, "staff.password_changed").await, 1);
}

async fn ask_for_reset(app: &TestApp, email: &str) -> HostedPage {
    let page = app.hosted_get(&format!("{}/oauth/reset", app.base)).await;
    app.hosted_post("/oauth/reset", &page, &[("email", email)]).await
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_once_and_ends_every_session() {
    let s = setup().await;
    let app = &s.app;
    let at_a = sign_in(&s, EMAIL, PASSWORD, app.a.id).await;
    let at_b = sign_in(&s, EMAIL, PASSWORD, app.b.id).await;
    let known = ask_for_reset(app, EMAIL).await;
    let unknown = ask_for_reset(app, "nobody@example.com").await;
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.html.replace(EMAIL, "…"), unknown.html.replace("nobody@example.com", "…"), "the same answer");
    let json = app
        .client
        .post(format!("{}/oauth/reset", app.base))
        .header("accept", "application/json")
        .form(&[("email", "nobody@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 202);

    let mail = app.mail.wait_for(EMAIL).await;
    let (link, _) = mail.link("/oauth/reset");
    let page = app.hosted_get(&link).await;
    assert!(page.html.contains("Choose a new password"), "{}", page.html);
    let new = "Reset-Chosen-Pass-7";
    let done = app.hosted_post("/oauth/reset", &page, &[("password", new), ("password2", new)]).await;
    assert!(done.html.contains("signed out everywhere"), "{}", done.html);
    for tokens in [&at_a, &at_b] {
        assert_eq!(status_of(app, tokens["access_token"].as_str().unwrap()).await, 401, "every session ended");
        assert_eq!(refresh(&s, tokens["refresh_token"].as_str().unwrap()).await.0, 400, "and every refresh family");
    }
    sign_in(&s, EMAIL, new, app.a.id).await;
    let again = app
        .hosted_post("/oauth/reset", &page, &[("password", "Another-Pass-88"), ("password2", "Another-Pass-88")])
        .await;
    assert_eq!(again.status, 404, "the link works once: {}", again.html);

    // A link older than 30 minutes no longer works (the superuser ages it: no test may wait that long).
    ask_for_reset(app, EMAIL).await;
    let (link, _) = app.mail.wait_for_nth(EMAIL, 1).await.link("/oauth/reset");
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    sqlx::query("UPDATE private.password_resets SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
        .execute(&mut superuser)
        .await
        .unwrap();
    assert_eq!(app.hosted_get(&link).await.status, 404);
}

#[tokio::test]
async fn reset_requests_are_limited_per_email_with_retry_after() {
    let app = TestApp::spawn().await;
    let page = app.hosted_get(&format!("{}/oauth/reset", app.base)).await;
    for _ in 0..5 {
        let asked = app.hosted_post("/oauth/reset", &page, &[("email", "member@alpha.test")]).await;
        assert_eq!(asked.status, 200);
    }
    let response = app
        .client
        .post(format!("{}/oauth/reset", app.base))
        .header("cookie", &page.cookie)
        .form(&[("email", "member@alpha.test"), ("csrf", &page.hidden("csrf").unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
}

#[tokio::test]
async fn step_up_proofs_go_through_the_lockout() {
    let s = setup().await;
    let tokens = sign_in(&s, EMAIL, PASSWORD, s.app.a.id).await;
    let access = tokens["access_token"].as_str().unwrap();
    let disable = "mutation { disableTotp(reauth: { password: \"Guess-Password-1\" }) }";
    for _ in 0..5 {
        assert_eq!(error_code(&s.app.gql(access, disable, json!({})).await), "BAD_USER_INPUT");
    }
    let locked = s.app.gql(access, disable, json!({})).await;
    assert_eq!(error_code(&locked), "RATE_LIMITED", "{locked}");
    assert!(locked["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn totp_secrets_are_sealed_and_a_plain_one_from_before_is_sealed_on_use() {
    let s = setup().await;
    let app = &s.app;
    let tokens = sign_in(&s, EMAIL, PASSWORD, app.a.id).await;
    let access = tokens["access_token"].as_str().unwrap();
    let begin = "mutation($p: String!) { beginTotpEnrollment(reauth: { password: $p }) { secret } }";
    let secret = app.gql(access, begin, json!({ "p": PASSWORD })).await["data"]["beginTotpEnrollment"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = venueql::auth::totp::base32_decode(&secret).unwrap();
    // The superuser reads the private table: the app role cannot, which is the point.
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM private.staff_totp").fetch_one(&mut superuser).await.unwrap();
    assert_eq!(stored[0], 1, "the venueql field format");
    assert!(!stored.windows(raw.len()).any(|w| w == raw.as_slice()), "no plain secret in the database");

    // A secret stored in plain bytes by the earlier version still works, and is sealed then.
    sqlx::query("UPDATE private.staff_totp SET secret = $1").bind(&raw).execute(&mut superuser).await.unwrap();
    let confirm = "mutation($c: String!) { confirmTotpEnrollment(code: $c) }";
    let confirmed = app.gql(access, confirm, json!({ "c": totp_code(&secret, 0) })).await;
    assert!(confirmed["errors"].is_null(), "{confirmed}");
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM private.staff_totp").fetch_one(&mut superuser).await.unwrap();
    assert!(stored.len() > 20 && stored[0] == 1, "sealed on its first use");
    let challenge = s256_challenge(&verifier());
    let browser = Browser::open(&s, &challenge).await;
    let (_, _, page) = browser.password(EMAIL, PASSWORD).await;
    let ticket = crate::helpers::hidden_field(&page, "ticket").unwrap();
    let (status, _, page) =
        browser.submit(&[("step", "totp"), ("ticket", &ticket), ("code", &totp_code(&secret, 1))]).await;
    assert!(status == StatusCode::OK && page.contains("Choose a venue"), "{status} {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_taken_by_a_process_killed_before_it_sent_is_sent_by_another() {
    // The in-process server sends no mail here: two `venueql serve` processes do.
    let app = TestApp::spawn_with(|name| (name == "SMTP_URL").then(String::new)).await;
    let stuck = crate::smtp::Mailbox::start().await;
    stuck.hang();
    let (stuck_url, lease) = (stuck.url(), "2");
    let mut first = app.serve_process(&[("SMTP_URL", &stuck_url), ("MAIL_LEASE_SECS", lease)]).await;
    let invite = json!({ "query": "mutation { addStaff(input: { email: \"survivor@example.com\", permissions: [MENU_VIEW] }) { status } }" });
    let invited: Value = app
        .client
        .post(format!("{}/graphql", first.base))
        .bearer_auth(&app.a.full)
        .json(&invite)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(invited["data"]["addStaff"]["status"], "INVITED", "{invited}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stuck.connections() == 0 {
        assert!(std::time::Instant::now() < deadline, "the first process never took the mail");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL while the mail is taken but not sent.
    first.child.0.kill().unwrap();
    first.child.0.wait().unwrap();
    let mail_url = app.mail.url();
    let _second = app.serve_process(&[("SMTP_URL", &mail_url)]).await;
    let mail = app.mail.wait_for("survivor@example.com").await;
    assert!(mail.link("/oauth/invitation").1.starts_with("vqiv_"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let copies = app.mail.received().iter().filter(|m| m.to == ["survivor@example.com"]).count();
    assert_eq!(copies, 1, "sent once");
    assert!(stuck.received().is_empty());
}

#[tokio::test]
async fn a_stolen_session_cannot_re_confirm_totp_for_fresh_recovery_codes_and_codes_are_locked_out() {
    let s = setup().await;
    let app = &s.app;
    let tokens = sign_in(&s, EMAIL, PASSWORD, app.a.id).await;
    let access = tokens["access_token"].as_str().unwrap();
    let begin = "mutation($p: String!) { beginTotpEnrollment(reauth: { password: $p }) { secret } }";
    let secret = app.gql(access, begin, json!({ "p": PASSWORD })).await["data"]["beginTotpEnrollment"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let confirm = "mutation($c: String!) { confirmTotpEnrollment(code: $c) }";
    let first = app.gql(access, confirm, json!({ "c": totp_code(&secret, 0) })).await;
    assert!(first["errors"].is_null(), "{first}");
    let again = app.gql(access, confirm, json!({ "c": totp_code(&secret, 1) })).await;
    assert_eq!(error_code(&again), "BAD_USER_INPUT", "no second set of recovery codes once TOTP is on: {again}");
    for _ in 0..4 {
        app.gql(access, confirm, json!({ "c": "000000" })).await;
    }
    let locked = app.gql(access, confirm, json!({ "c": totp_code(&secret, 1) })).await;
    assert_eq!(error_code(&locked), "RATE_LIMITED", "confirmation codes count like any code: {locked}");
}

#[tokio::test]
async fn a_reset_also_clears_the_pins_and_demoting_an_inviter_revokes_their_invitations() {
    let s = setup().await;
    let app = &s.app;
    let chef = app.gql(&app.a.full, "{ staff { id email } }", json!({})).await["data"]["staff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == EMAIL)
        .unwrap()["id"]
        .clone();
    let set = "mutation($s: ID!) { setStaffPin(staffId: $s, pin: \"5678\") }";
    assert_eq!(app.gql(&app.a.full, set, json!({ "s": chef })).await["data"]["setStaffPin"], true);
    let till = crate::helpers::create_client(
        &app.door,
        "operator:test",
        "pos",
        "Till",
        Some("alpha"),
        &[],
        Permissions::MENU_VIEW,
    )
    .await
    .unwrap();
    let pin_grant = || async {
        let form = [("grant_type", venueql::auth::pins::PIN_GRANT), ("username", EMAIL), ("pin", "5678")];
        token_request(app, &form, Some((&till.client_id, till.client_secret.as_deref().unwrap()))).await.0
    };
    assert_eq!(pin_grant().await, 200);
    ask_for_reset(app, EMAIL).await;
    let (link, _) = app.mail.wait_for(EMAIL).await.link("/oauth/reset");
    let page = app.hosted_get(&link).await;
    let new = "Reset-Clears-Pins-1";
    app.hosted_post("/oauth/reset", &page, &[("password", new), ("password2", new)]).await;
    assert_eq!(pin_grant().await, 400, "a PIN set before the reset no longer works");

    // A manager (a person) invites someone, then loses STAFF_MANAGE: the invitation goes.
    venueql::admin::grant(
        &app.door,
        "operator:test",
        "alpha",
        EMAIL,
        Permissions::STAFF_MANAGE | Permissions::MENU_VIEW,
    )
    .await
    .unwrap();
    let manager = sign_in(&s, EMAIL, new, app.a.id).await;
    let invited = app.invite(manager["access_token"].as_str().unwrap(), "friend@example.com", &["MENU_VIEW"]).await;
    assert_eq!(invited["data"]["addStaff"]["status"], "INVITED", "{invited}");
    let demote = "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [STAFF_MANAGE]) { id } }";
    let demoted = app.gql(&app.a.full, demote, json!({ "s": chef })).await;
    assert!(demoted["errors"].is_null(), "{demoted}");
    let pending = app.gql(&app.a.full, "{ staff { email status } }", json!({})).await.to_string();
    assert!(
        !pending.contains("friend@example.com"),
        "the invitation gave MENU_VIEW its sender no longer holds: {pending}"
    );
    assert_eq!(app.hosted_get(&app.invitation_link("friend@example.com", 0).await).await.status, 404);
}

#[tokio::test]
async fn a_staff_members_lockout_is_a_critical_event_in_each_of_their_venues_logs_and_one_alert() {
    let receiver = crate::audit_log::AlertReceiver::start().await;
    let s = setup_with(receiver.settings(60)).await;
    let app = &s.app;
    let challenge = s256_challenge(&verifier());
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(login(&s, EMAIL, "Wrong-Password-123", Some(app.a.id), &challenge).await.0.as_u16());
    }
    assert!(statuses.contains(&429), "the person is locked out: {statuses:?}");
    let query = "{ auditEvents(filter: { actions: [\"security.lockout\"] }) { edges { node { actor targetId critical ip after } } } }";
    for venue in [&app.a, &app.b] {
        let answer = app.gql(&venue.full, query, json!({})).await;
        let edges = answer["data"]["auditEvents"]["edges"].as_array().unwrap_or_else(|| panic!("{answer}")).clone();
        assert!(!edges.is_empty(), "the lockout is in the log of each venue the person works at: {answer}");
        let event = &edges[0]["node"];
        assert_eq!((event["critical"].clone(), event["actor"].clone()), (json!(true), json!("venueql:lockout")));
        assert_eq!(event["ip"], "127.0.0.1");
        assert_eq!(event["after"]["secret"], "password");
    }
    let alerts =
        receiver.wait_for(Duration::from_secs(10), |a| a.iter().filter(|a| a["kind"] == "lockout").count() >= 2).await;
    let lockouts: Vec<&Value> = alerts.iter().filter(|a| a["kind"] == "lockout").collect();
    assert_eq!(lockouts.len(), 2, "one alert per venue, the rest wait for the digest: {alerts:#?}");
    assert!(lockouts.iter().all(|a| a["digest"] == false && !a.to_string().contains(EMAIL)), "{lockouts:#?}");
}

// ───────────── issue 19: what strangers and lesser setters could do ─────────────

/// A token answer's scope, sorted.
fn scope(body: &Value) -> Vec<String> {
    let mut bits: Vec<String> = body["scope"].as_str().unwrap_or_default().split(' ').map(str::to_string).collect();
    bits.sort();
    bits
}

#[tokio::test]
async fn a_pin_never_yields_a_bit_its_setter_did_not_hold_however_far_the_member_is_raised() {
    let s = setup().await;
    let app = &s.app;
    let cashier = app.join_as_new_person(&app.a.full, "cashier@alpha.test", &["ORDERS_QUEUE"], PASSWORD).await;
    let manager = Permissions::STAFF_MANAGE | Permissions::STAFF_VIEW | Permissions::ORDERS_QUEUE;
    let manager = venueql::admin::issue_token(&app.door, "operator:test", "alpha", "manager", manager).await.unwrap();
    let set = "mutation($s: ID!) { setStaffPin(staffId: $s, pin: \"1357\") }";
    assert_eq!(app.gql(&manager.token, set, json!({ "s": cashier })).await["data"]["setStaffPin"], true);
    // The owner raises the cashier to bits the manager never held.
    let raise = "mutation($s: ID!) { setStaffPermissions(staffId: $s, permissions: [ORDERS_QUEUE, ORDERS_REFUND, PAYMENTS_MANAGE, STAFF_MANAGE]) { id } }";
    let raised = app.gql(&app.a.full, raise, json!({ "s": cashier })).await;
    assert!(raised["errors"].is_null(), "{raised}");
    let till = crate::helpers::create_client(
        &app.door,
        "operator:test",
        "pos",
        "Till",
        Some("alpha"),
        &[],
        Permissions::all(),
    )
    .await
    .unwrap();
    let form = [("grant_type", venueql::auth::pins::PIN_GRANT), ("username", "cashier@alpha.test"), ("pin", "1357")];
    let (status, body, _) =
        token_request(app, &form, Some((&till.client_id, till.client_secret.as_deref().unwrap()))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(scope(&body), ["ORDERS_QUEUE", "STAFF_MANAGE"], "only bits the manager held: {body}");
    let me = app.gql(body["access_token"].as_str().unwrap(), "{ me { permissions } }", json!({})).await;
    let bits = me["data"]["me"]["permissions"].to_string();
    assert!(!bits.contains("ORDERS_REFUND") && !bits.contains("PAYMENTS_MANAGE"), "{me}");
    // The audit row says whose authority the PIN carries.
    let log = app
        .gql(
            &app.a.full,
            "{ auditEvents(filter: { actions: [\"staff.pin_set\"] }) { edges { node { after } } } }",
            json!({}),
        )
        .await;
    let after = log["data"]["auditEvents"]["edges"][0]["node"]["after"].to_string();
    assert!(after.contains("another member") && after.contains("STAFF_MANAGE"), "{log}");
    // The member's own PIN (with a fresh proof) is capped by their membership only.
    let tokens = sign_in(&s, "cashier@alpha.test", PASSWORD, app.a.id).await;
    let own = "mutation($p: String) { setStaffPin(pin: \"2468\", reauth: { password: $p }) }";
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.gql(access, own, json!({ "p": PASSWORD })).await["data"]["setStaffPin"], true);
    let form = [("grant_type", venueql::auth::pins::PIN_GRANT), ("username", "cashier@alpha.test"), ("pin", "2468")];
    let (_, body, _) = token_request(app, &form, Some((&till.client_id, till.client_secret.as_deref().unwrap()))).await;
    assert_eq!(scope(&body), ["ORDERS_QUEUE", "ORDERS_REFUND", "PAYMENTS_MANAGE", "STAFF_MANAGE"], "{body}");
}

async fn reset_request(app: &TestApp, email: &str, forwarded: Option<&str>, cookie: Option<&str>) -> u16 {
    let mut request = app
        .client
        .post(format!("{}/oauth/reset", app.base))
        .header("accept", "application/json")
        .form(&[("email", email)]);
    if let Some(address) = forwarded {
        request = request.header("x-forwarded-for", address);
    }
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn strangers_failing_at_a_victims_email_cannot_lock_the_victim_out_of_fixing_it() {
    let s = setup_with(|name| (name == "TRUSTED_PROXIES").then(|| "127.0.0.1/32".into())).await;
    let app = &s.app;
    // The victim signs in on their own browser (which becomes a trusted device).
    let challenge = s256_challenge(&verifier());
    let (status, location, body, device) =
        crate::oauth::login_as_device(&s, EMAIL, PASSWORD, Some(app.a.id), &challenge, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let device = device.expect("a trusted-device cookie");
    let tokens = sign_in(&s, EMAIL, PASSWORD, app.a.id).await;
    let access = tokens["access_token"].as_str().unwrap();
    let _ = location;

    // A stranger elsewhere fails 100 times at the victim's email, and asks for their reset.
    let stranger = crate::oauth::Browser::open(&s, &challenge).await;
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses.push(stranger.password_from("203.0.113.9", EMAIL, "Wrong-Password-123").await.as_u16());
    }
    assert!(statuses.ends_with(&[429, 429]), "the email is locked for strangers: {statuses:?}");
    let asked: Vec<u16> = join_all((0..6).map(|_| reset_request(app, EMAIL, Some("203.0.113.9"), None))).await;
    assert!(asked.contains(&429), "strangers' reset requests stop at the limit: {asked:?}");

    // The victim, signed in, steps up and changes the password at once.
    let own_pin = "mutation($p: String) { setStaffPin(pin: \"8642\", reauth: { password: $p }) }";
    let stepped = app.gql(access, own_pin, json!({ "p": PASSWORD })).await;
    assert_eq!(stepped["data"]["setStaffPin"], true, "step-up counts against the session: {stepped}");
    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
    let changed = app.gql(access, change, json!({ "c": PASSWORD, "n": "Victim-Fixes-It-42" })).await;
    assert_eq!(changed["data"]["changePassword"], true, "{changed}");
    // And their own browser may still ask for a reset link, which arrives.
    assert_eq!(reset_request(app, EMAIL, None, Some(&device)).await, 202);
    app.mail.wait_for(EMAIL).await;

    // A client's secret cannot be guessed: failures elsewhere do not lock the client out.
    let (id, secret) = (&s.integration.0, &s.integration.1);
    for _ in 0..8 {
        let response = app
            .client
            .post(format!("{}/oauth/token", app.base))
            .header("x-forwarded-for", "203.0.113.9")
            .form(&[("grant_type", "client_credentials")])
            .basic_auth(id, Some("vqcs_wrong"))
            .send()
            .await
            .unwrap();
        assert!([401, 429].contains(&response.status().as_u16()));
    }
    let (status, body, _) = token_request(app, &[("grant_type", "client_credentials")], Some((id, secret))).await;
    assert_eq!(status, 200, "the real client from its own address: {body}");
}

#[tokio::test]
async fn pin_failures_lock_a_person_at_the_till_that_failed_not_at_every_till() {
    let s = setup().await;
    let app = &s.app;
    let chef = app.gql(&app.a.full, "{ staff { id email } }", json!({})).await["data"]["staff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == EMAIL)
        .unwrap()["id"]
        .clone();
    let set = "mutation($s: ID!) { setStaffPin(staffId: $s, pin: \"5678\") }";
    assert_eq!(app.gql(&app.a.full, set, json!({ "s": chef })).await["data"]["setStaffPin"], true);
    let mut tills = Vec::new();
    for name in ["Bar till", "Door till"] {
        let till = crate::helpers::create_client(
            &app.door,
            "operator:test",
            "pos",
            name,
            Some("alpha"),
            &[],
            Permissions::MENU_VIEW,
        )
        .await
        .unwrap();
        tills.push((till.client_id, till.client_secret.unwrap()));
    }
    let pin = |till: usize, pin: &'static str| {
        let (id, secret) = tills[till].clone();
        async move {
            let form = [("grant_type", venueql::auth::pins::PIN_GRANT), ("username", EMAIL), ("pin", pin)];
            token_request(app, &form, Some((&id, &secret))).await
        }
    };
    let mut last = (StatusCode::OK, Value::Null);
    for _ in 0..7 {
        let (status, body, _) = pin(0, "0000").await;
        last = (status, body);
    }
    assert_eq!(last.0, 429, "{}", last.1);
    assert_eq!(last.1["error"], "invalid_grant");
    assert!(last.1["error_description"].as_str().unwrap().contains("too many failed PIN attempts"), "{}", last.1);
    let (status, body, _) = pin(1, "5678").await;
    assert_eq!(status, 200, "another till is not locked: {body}");
}

#[tokio::test]
async fn one_address_asking_diner_codes_for_many_emails_stops_at_the_limit() {
    let app = TestApp::spawn_with(|name| (name == "LOCKOUT_IP_LIMIT").then(|| "10".into())).await;
    let ask = "mutation($e: String!) { requestDinerCode(email: $e) }";
    // All 60 at once: the per-address count is taken before any code is made.
    let answers = join_all((0..60).map(|i| {
        let app = &app;
        async move { app.public_gql("alpha", ask, json!({ "e": format!("diner{i}@example.com") })).await }
    }))
    .await;
    let sent = answers.iter().filter(|a| a["data"]["requestDinerCode"] == true).count();
    let codes: Vec<&str> = answers.iter().map(error_code).collect();
    assert_eq!(sent, 10, "LOCKOUT_IP_LIMIT codes an hour from one address: {codes:?}");
    let refused = answers.iter().find(|a| a["data"]["requestDinerCode"] != true).expect("a refusal");
    assert_eq!(error_code(refused), "RATE_LIMITED", "{refused}");
    assert!(refused.to_string().contains("from this address"), "{refused}");
}

/// The median of `times`.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn a_reset_request_takes_as_long_whether_or_not_the_account_exists() {
    let app = TestApp::spawn_with(|name| match name {
        "LOCKOUT_IDENTIFIER_LIMIT" | "LOCKOUT_IP_LIMIT" => Some("1000".into()),
        _ => None,
    })
    .await;
    venueql::admin::create_staff(&app.door, "operator:test", "known@alpha.test", PASSWORD, &BreachCheck::off())
        .await
        .unwrap();
    // Interleaved in a fixed shuffled order, with pauses so nothing of one request
    // overlaps the next; the attacker's classifier: the midpoint of the two medians.
    let order: Vec<bool> = (0..160u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % 2 == 0).collect();
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for exists in order {
        let email = if exists { "known@alpha.test" } else { "nobody@alpha.test" };
        let started = std::time::Instant::now();
        assert_eq!(reset_request(&app, email, None, None).await, 202);
        let took = started.elapsed();
        if exists {
            known.push(took)
        } else {
            unknown.push(took)
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (known_median, unknown_median) = (median(known.clone()), median(unknown.clone()));
    let threshold = (known_median + unknown_median) / 2;
    let slower_is_known = known_median > unknown_median;
    let right = known.iter().filter(|t| (**t > threshold) == slower_is_known).count()
        + unknown.iter().filter(|t| (**t > threshold) != slower_is_known).count();
    let accuracy = right as f64 / (known.len() + unknown.len()) as f64;
    eprintln!("reset medians: account {known_median:?}, no account {unknown_median:?}; classified {accuracy:.2}");
    // Chance is 0.5; before the link was made after the answer, this classified 0.8 right.
    assert!(accuracy < 0.7, "the answer's time tells whether an account exists ({accuracy:.2} classified right)");
}
