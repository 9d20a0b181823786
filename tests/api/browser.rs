//! The hosted login in a real browser: Debian's Chromium, driven over WebDriver by
//! chromedriver (scripts/test.sh installs both when missing). A person logs in, passes
//! TOTP, chooses a venue and lands on the redirect URI; the code is exchanged and `me`
//! queried. A screenshot of each page is left in target/browser-login/ for people to look at.

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::webdriver::Browser;
use venueql::access::Permissions;
use venueql::auth::authorization_code::s256_challenge;
use venueql::auth::breach::BreachCheck;
use venueql::tenancy::Db;

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
