//! The OAuth 2 server as a standard client uses it: hosted login with PKCE, token
//! endpoint grants, rotation and reuse detection, revocation, introspection, metadata.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, error_code};
use venueql::access::Permissions;
use venueql::auth::authorization_code::s256_challenge;
use venueql::auth::breach::BreachCheck;

pub(crate) const REDIRECT: &str = "http://localhost:5173/callback";
pub(crate) const EMAIL: &str = "chef@alpha.test";
pub(crate) const PASSWORD: &str = "Correct-Horse-Battery-9";

/// A person in both venues, an SPA client and an integration client of venue A.
pub(crate) struct OAuthSetup {
    pub app: TestApp,
    pub spa: String,
    pub integration: (String, String),
    pub integration_b: (String, String),
}

pub(crate) async fn setup() -> OAuthSetup {
    setup_with(|_| None).await
}

pub(crate) async fn setup_with(settings: impl Fn(&str) -> Option<String>) -> OAuthSetup {
    let app = TestApp::spawn_with(settings).await;
    let actor = "operator:test";
    venueql::admin::create_staff(&app.door, actor, EMAIL, PASSWORD, &BreachCheck::off()).await.unwrap();
    let edit = Permissions::MENU_VIEW | Permissions::MENU_EDIT;
    venueql::admin::grant(&app.door, actor, "alpha", EMAIL, edit).await.unwrap();
    venueql::admin::grant(&app.door, actor, "bravo", EMAIL, Permissions::MENU_VIEW).await.unwrap();
    let redirect = vec![REDIRECT.to_string()];
    let spa =
        crate::helpers::create_client(&app.door, actor, "spa", "Alpha SPA", None, &redirect, Permissions::empty())
            .await
            .unwrap();
    let mut integrations = Vec::new();
    for venue in ["alpha", "bravo"] {
        let created = crate::helpers::create_client(
            &app.door,
            actor,
            "integration",
            "Books",
            Some(venue),
            &[],
            Permissions::MENU_VIEW,
        )
        .await
        .unwrap();
        integrations.push((created.client_id, created.client_secret.unwrap()));
    }
    let integration_b = integrations.pop().unwrap();
    OAuthSetup { app, spa: spa.client_id, integration: integrations.pop().unwrap(), integration_b }
}

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

pub(crate) fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..].split('"').next()?.replace("&amp;", "&"))
}

pub(crate) fn query_param(location: &str, name: &str) -> Option<String> {
    url::Url::parse(location).ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The authorize URL of a PKCE request with `challenge`.
pub(crate) fn authorize_url(s: &OAuthSetup, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut url = url::Url::parse(&format!("{}/oauth/authorize", s.app.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.spa)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "xyz-123");
    for (k, v) in extra {
        url.query_pairs_mut().append_pair(k, v);
    }
    url.to_string()
}

/// Drives the hosted login like a browser; returns the last response (status, location, body).
pub(crate) async fn login(
    s: &OAuthSetup,
    email: &str,
    password: &str,
    venue: Option<Uuid>,
    challenge: &str,
) -> (StatusCode, String, String) {
    let (status, location, body, _) = login_as_device(s, email, password, venue, challenge, None).await;
    (status, location, body)
}

/// As `login`, presenting `device` (a `vq_device=…` cookie) and returning the device
/// cookie the server set, if any.
pub(crate) async fn login_as_device(
    s: &OAuthSetup,
    email: &str,
    password: &str,
    venue: Option<Uuid>,
    challenge: &str,
    device: Option<&str>,
) -> (StatusCode, String, String, Option<String>) {
    let client = no_redirects();
    let page = client.get(authorize_url(s, challenge, &[])).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csrf_cookie = page.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    let cookie = match device {
        Some(device) => format!("{csrf_cookie}; {device}"),
        None => csrf_cookie,
    };
    let html = page.text().await.unwrap();
    let mut form: Vec<(String, String)> =
        ["client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method", "state", "csrf"]
            .iter()
            .map(|n| (n.to_string(), hidden(&html, n).unwrap()))
            .collect();
    let post = |fields: Vec<(String, String)>| {
        let client = client.clone();
        let cookie = cookie.clone();
        let url = format!("{}/oauth/authorize", s.app.base);
        async move {
            let response = client.post(url).header(COOKIE, cookie).form(&fields).send().await.unwrap();
            let status = response.status();
            let location =
                response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
            let set_device = response
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
                .find(|c| c.starts_with("vq_device="));
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let text = response.text().await.unwrap();
            let text = match retry_after {
                Some(wait) => format!("retry-after={wait}\n{text}"),
                None => text,
            };
            (status, location, text, set_device)
        }
    };
    let mut fields = form.clone();
    fields.extend([
        ("step".into(), "password".into()),
        ("email".into(), email.into()),
        ("password".into(), password.into()),
    ]);
    let (status, location, body, set_device) = post(fields).await;
    if status != StatusCode::OK || !body.contains("Choose a venue") {
        return (status, location, body, set_device);
    }
    form.push(("step".into(), "venue".into()));
    form.push(("ticket".into(), hidden(&body, "ticket").unwrap()));
    form.push(("venue_id".into(), venue.expect("the person must choose a venue").to_string()));
    let (status, location, body, _) = post(form).await;
    (status, location, body, set_device)
}

pub(crate) async fn token_request(
    app: &TestApp,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (StatusCode, Value, String) {
    let mut request = app.client.post(format!("{}/oauth/token", app.base)).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let cache = response.headers().get("cache-control").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, response.json().await.unwrap(), cache)
}

pub(crate) fn verifier() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

pub(crate) async fn code_for(s: &OAuthSetup, venue: Uuid, verifier: &str) -> String {
    let (status, location, body) = login(s, EMAIL, PASSWORD, Some(venue), &s256_challenge(verifier)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("xyz-123"));
    assert_eq!(query_param(&location, "iss").as_deref(), Some(s.app.base.as_str()));
    query_param(&location, "code").unwrap()
}

pub(crate) async fn exchange(s: &OAuthSetup, code: &str, verifier: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", s.spa.as_str()),
        ("code_verifier", verifier),
    ];
    let (status, body, _) = token_request(&s.app, &form, None).await;
    (status, body)
}

const ME: &str = "{ me { venue { slug } person { email } permissions actor } }";

#[tokio::test]
async fn a_person_logs_in_with_pkce_chooses_a_venue_and_sees_only_that_venue() {
    let s = setup().await;
    let v = verifier();
    let code = code_for(&s, s.app.b.id, &v).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", s.spa.as_str()),
        ("code_verifier", v.as_str()),
    ];
    let (status, tokens, cache) = token_request(&s.app, &form, None).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(cache, "no-store");
    assert_eq!((tokens["token_type"].as_str(), tokens["expires_in"].as_u64()), (Some("Bearer"), Some(900)));
    assert_eq!(tokens["scope"], "MENU_VIEW");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(access.starts_with("vqoa_") && tokens["refresh_token"].as_str().unwrap().starts_with("vqor_"));

    let me = s.app.gql(access, ME, json!({})).await;
    assert_eq!(me["data"]["me"]["venue"]["slug"], "bravo", "{me}");
    assert_eq!(me["data"]["me"]["person"]["email"], EMAIL);
    assert_eq!(me["data"]["me"]["permissions"], json!(["MENU_VIEW"]));
    let menu = s.app.gql(access, "{ menu { categories { name } } }", json!({})).await.to_string();
    assert!(menu.contains("Bravo") && !menu.contains("Alpha"), "{menu}");
    let edit = s.app.gql(access, "mutation { createMenuCategory(input: { name: \"X\" }) { id } }", json!({})).await;
    assert_eq!(error_code(&edit), "FORBIDDEN", "MENU_EDIT is held at alpha, not bravo");
    let auth = format!("Bearer {access}");
    let (status, _) = s
        .app
        .post("/graphql", &[("authorization", &auth), ("x-venue", "alpha")], r#"{"query":"{ me { actor } }"}"#)
        .await;
    assert_eq!(status, 403, "a bravo token naming alpha is refused");
    assert_eq!(s.app.audit_count(&s.app.b, "session.started").await, 1);
}

#[tokio::test]
async fn pkce_is_required_s256_only_and_checked_before_the_code_is_used() {
    let s = setup().await;
    let client = no_redirects();
    let challenge = s256_challenge(&verifier());
    let base = authorize_url(&s, &challenge, &[]);
    for (url, error) in [
        (base.replace("&code_challenge_method=S256", ""), "invalid_request"),
        (base.replace("code_challenge_method=S256", "code_challenge_method=plain"), "invalid_request"),
        (base.replace(&format!("code_challenge={challenge}&"), ""), "invalid_request"),
        (base.replace("response_type=code", "response_type=token"), "unsupported_response_type"),
    ] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{url}");
        let location = response.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(query_param(&location, "error").as_deref(), Some(error), "{url}");
        assert_eq!(query_param(&location, "state").as_deref(), Some("xyz-123"));
    }
    for url in [base.replace(REDIRECT, "http://localhost:5173/other"), base.replace(&s.spa, "vqc_unknownclient0000000")]
    {
        let url = url.replace("http%3A%2F%2Flocalhost%3A5173%2Fcallback", "http%3A%2F%2Flocalhost%3A5173%2Fother");
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 400, "no redirect to an unregistered URI: {url}");
        assert!(response.headers().get(LOCATION).is_none());
    }

    let v = verifier();
    let code = code_for(&s, s.app.a.id, &v).await;
    let (status, body) = exchange(&s, &code, &verifier()).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", s.spa.as_str()),
    ];
    let (status, body, _) = token_request(&s.app, &form, None).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_request")), "missing verifier: {body}");
    let (status, tokens) = exchange(&s, &code, &v).await;
    assert_eq!(status, 200, "a wrong verifier must not burn the code: {tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(s.app.gql(access, ME, json!({})).await["errors"].is_null());

    let (status, body) = exchange(&s, &code, &v).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")), "replay: {body}");
    let auth = format!("Bearer {access}");
    let (status, _) = s.app.post("/graphql", &[("authorization", &auth)], r#"{"query":"{ me { actor } }"}"#).await;
    assert_eq!(status, 401, "a replayed code revokes the tokens issued for it");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_session() {
    let s = setup().await;
    let v = verifier();
    let code = code_for(&s, s.app.a.id, &v).await;
    let (_, first) = exchange(&s, &code, &v).await;
    let refresh = |token: String| {
        let spa = s.spa.clone();
        let app = &s.app;
        async move {
            let form =
                [("grant_type", "refresh_token"), ("refresh_token", token.as_str()), ("client_id", spa.as_str())];
            let (status, body, _) = token_request(app, &form, None).await;
            (status, body)
        }
    };
    let old_refresh = first["refresh_token"].as_str().unwrap().to_string();
    let (status, second) = refresh(old_refresh.clone()).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let new_access = second["access_token"].as_str().unwrap().to_string();
    assert!(s.app.gql(&new_access, ME, json!({})).await["errors"].is_null());

    let (status, body) = refresh(old_refresh).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let (status, body) = refresh(second["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!(body["error"], "invalid_grant", "the family is revoked: {status} {body}");
    for access in [first["access_token"].as_str().unwrap(), new_access.as_str()] {
        let auth = format!("Bearer {access}");
        let (status, _) = s.app.post("/graphql", &[("authorization", &auth)], r#"{"query":"{ me { actor } }"}"#).await;
        assert_eq!(status, 401);
    }
    assert_eq!(s.app.audit_count(&s.app.a, "oauth.refresh_token_reused").await, 1);
}

#[tokio::test]
async fn integrations_use_client_credentials_with_their_own_permissions_and_venue() {
    let s = setup().await;
    let (id, secret) = (s.integration.0.as_str(), s.integration.1.as_str());
    let (status, tokens, cache) =
        token_request(&s.app, &[("grant_type", "client_credentials")], Some((id, secret))).await;
    assert_eq!((status.as_u16(), cache.as_str()), (200, "no-store"), "{tokens}");
    assert!(tokens.get("refresh_token").is_none());
    let access = tokens["access_token"].as_str().unwrap();
    let me = s.app.gql(access, ME, json!({})).await;
    assert_eq!(me["data"]["me"]["actor"], format!("oauth_client:{id}"));
    assert_eq!(me["data"]["me"]["venue"]["slug"], "alpha");
    assert!(me["data"]["me"]["person"].is_null());
    let post_auth = [("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)];
    assert_eq!(token_request(&s.app, &post_auth, None).await.0, 200, "client_secret_post works too");

    let (status, body, _) =
        token_request(&s.app, &[("grant_type", "client_credentials")], Some((id, "vqcs_wrong"))).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (401, Some("invalid_client")));
    let (status, body, _) = token_request(&s.app, &post_auth, Some((id, secret))).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_request")), "two methods: {body}");
    let (_, body, _) =
        token_request(&s.app, &[("grant_type", "client_credentials"), ("client_id", &s.spa)], None).await;
    assert_eq!(body["error"], "unauthorized_client");
    let (_, body, _) = token_request(&s.app, &[("grant_type", "password")], Some((id, secret))).await;
    assert_eq!(body["error"], "unsupported_grant_type");
    let (_, body, _) =
        token_request(&s.app, &[("grant_type", "client_credentials"), ("grant_type", "x")], Some((id, secret))).await;
    assert_eq!(body["error"], "invalid_request", "repeated parameter");
    let json_body =
        s.app.client.post(format!("{}/oauth/token", s.app.base)).json(&json!({"grant_type": "client_credentials"}));
    let body: Value = json_body.basic_auth(id, Some(secret)).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

async fn introspect(s: &OAuthSetup, client: &(String, String), token: &str) -> Value {
    let request = s.app.client.post(format!("{}/oauth/introspect", s.app.base)).form(&[("token", token)]);
    request.basic_auth(&client.0, Some(&client.1)).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn introspection_is_per_venue_and_revocation_takes_effect_at_once() {
    let s = setup().await;
    let (_, tokens, _) =
        token_request(&s.app, &[("grant_type", "client_credentials")], Some((&s.integration.0, &s.integration.1)))
            .await;
    let access = tokens["access_token"].as_str().unwrap();
    let seen = introspect(&s, &s.integration, access).await;
    assert_eq!((seen["active"].as_bool(), seen["scope"].as_str()), (Some(true), Some("MENU_VIEW")), "{seen}");
    assert_eq!(seen["client_id"], s.integration.0);
    assert_eq!(introspect(&s, &s.integration_b, access).await, json!({ "active": false }), "another venue's client");
    assert_eq!(introspect(&s, &s.integration, "vqoa_unknown").await, json!({ "active": false }));
    let spa =
        s.app.client.post(format!("{}/oauth/introspect", s.app.base)).form(&[("token", access), ("client_id", &s.spa)]);
    let response = spa.send().await.unwrap();
    assert_eq!(response.status(), 401, "public clients cannot introspect");

    let revoke = |token: String| {
        let request = s.app.client.post(format!("{}/oauth/revoke", s.app.base)).form(&[("token", token)]);
        request.basic_auth(&s.integration.0, Some(&s.integration.1)).send()
    };
    assert_eq!(revoke("vqoa_never-issued".into()).await.unwrap().status(), 200);
    assert_eq!(revoke(access.to_string()).await.unwrap().status(), 200);
    assert_eq!(introspect(&s, &s.integration, access).await, json!({ "active": false }));
    let auth = format!("Bearer {access}");
    let (status, _) = s.app.post("/graphql", &[("authorization", &auth)], r#"{"query":"{ me { actor } }"}"#).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn membership_changes_cap_a_live_token_on_its_next_request() {
    let s = setup().await;
    let v = verifier();
    let code = code_for(&s, s.app.a.id, &v).await;
    let (_, tokens) = exchange(&s, &code, &v).await;
    let access = tokens["access_token"].as_str().unwrap();
    let me = s.app.gql(access, "{ me { permissions } }", json!({})).await;
    assert_eq!(me["data"]["me"]["permissions"], json!(["MENU_VIEW", "MENU_EDIT"]));
    venueql::admin::grant(&s.app.door, "operator:test", "alpha", EMAIL, Permissions::MENU_VIEW).await.unwrap();
    let me = s.app.gql(access, "{ me { permissions } }", json!({})).await;
    assert_eq!(me["data"]["me"]["permissions"], json!(["MENU_VIEW"]));
}

#[tokio::test]
async fn login_failures_are_generic_and_the_form_is_csrf_protected() {
    let s = setup().await;
    let challenge = s256_challenge(&verifier());
    let (wrong_password, _, body_a) = login(&s, EMAIL, "Wrong-Password-123", None, &challenge).await;
    let (unknown_email, _, body_b) = login(&s, "nobody@alpha.test", PASSWORD, None, &challenge).await;
    assert_eq!((wrong_password, unknown_email), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    for body in [&body_a, &body_b] {
        assert!(body.contains("The email or password is incorrect."), "{body}");
    }
    let form = [
        ("step", "password"),
        ("email", EMAIL),
        ("password", PASSWORD),
        ("csrf", "forged"),
        ("client_id", s.spa.as_str()),
    ];
    let response = no_redirects().post(format!("{}/oauth/authorize", s.app.base)).form(&form).send().await.unwrap();
    assert_eq!(response.status(), 403, "no CSRF cookie");
    venueql::admin::create_staff(&s.app.door, "operator:test", "lonely@alpha.test", PASSWORD, &BreachCheck::off())
        .await
        .unwrap();
    let (status, _, body) = login(&s, "lonely@alpha.test", PASSWORD, None, &challenge).await;
    assert_eq!(status, 403);
    assert!(body.contains("does not belong to any venue"), "{body}");
}

#[tokio::test]
async fn metadata_describes_the_server() {
    let s = setup().await;
    let meta: Value = reqwest::get(format!("{}/.well-known/oauth-authorization-server", s.app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], s.app.base);
    assert_eq!(meta["token_endpoint"], format!("{}/oauth/token", s.app.base));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["response_types_supported"], json!(["code"]));
}

async fn security_events(s: &OAuthSetup) -> i64 {
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&s.app.urls.owner).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM private.security_events WHERE kind = 'lockout'")
        .fetch_one(&mut owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_identifier_for_a_growing_time_that_expires() {
    let s = setup_with(|name| (name == "LOCKOUT_BASE_DELAY_SECS").then(|| "1".into())).await;
    let challenge = s256_challenge(&verifier());
    for _ in 0..5 {
        let (status, _, _) = login(&s, EMAIL, "Wrong-Password-123", Some(s.app.a.id), &challenge).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, body) = login(&s, EMAIL, PASSWORD, Some(s.app.a.id), &challenge).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "even the right password waits: {body}");
    assert!(body.starts_with("retry-after=") && body.contains("Too many sign-in attempts"), "{body}");
    let (status, _, _) = login(&s, "nobody@alpha.test", "Wrong-Password-123", None, &challenge).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another identifier from the same IP is not locked");
    assert!(security_events(&s).await >= 1, "the lockout is recorded");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, location, body) = login(&s, EMAIL, PASSWORD, Some(s.app.a.id), &challenge).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the delay expires: {body}");
    assert!(query_param(&location, "code").is_some());
}

#[tokio::test]
async fn the_ip_limit_is_independent_of_the_identifier_limit() {
    let s = setup_with(|name| (name == "LOCKOUT_IP_LIMIT").then(|| "3".into())).await;
    let challenge = s256_challenge(&verifier());
    for i in 0..3 {
        let (status, _, _) = login(&s, &format!("spray{i}@alpha.test"), "Wrong-Password-123", None, &challenge).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, body) = login(&s, EMAIL, PASSWORD, Some(s.app.a.id), &challenge).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "password spraying from one IP is slowed: {body}");
}

#[tokio::test]
async fn a_trusted_browser_is_not_locked_out_by_strangers_failures() {
    let s = setup().await;
    let challenge = s256_challenge(&verifier());
    let (status, _, _, device) = login_as_device(&s, EMAIL, PASSWORD, Some(s.app.a.id), &challenge, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let device = device.expect("a successful login sets the trusted-device cookie");
    for _ in 0..6 {
        login(&s, EMAIL, "Attacker-Guess-123", None, &challenge).await;
    }
    let (status, _, _) = login(&s, EMAIL, PASSWORD, Some(s.app.a.id), &challenge).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "a stranger's browser is held back");
    let forged = device.replace("vq_device=", "vq_device=0");
    let (status, _, _, _) = login_as_device(&s, EMAIL, PASSWORD, Some(s.app.a.id), &challenge, Some(&forged)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "a forged device cookie counts for nothing");
    let (status, _, body, _) = login_as_device(&s, EMAIL, PASSWORD, Some(s.app.a.id), &challenge, Some(&device)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the owner's trusted browser gets in: {body}");
}

#[tokio::test]
async fn wrong_client_secrets_lock_the_client_out_with_retry_after() {
    let s = setup().await;
    let id = s.integration.0.as_str();
    for _ in 0..5 {
        let (status, _, _) =
            token_request(&s.app, &[("grant_type", "client_credentials")], Some((id, "vqcs_wrong"))).await;
        assert_eq!(status, 401);
    }
    let response = s
        .app
        .client
        .post(format!("{}/oauth/token", s.app.base))
        .form(&[("grant_type", "client_credentials")])
        .basic_auth(id, Some(&s.integration.1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

/// A login in progress as a browser holds it: its cookie and the form's fixed fields.
pub(crate) struct Browser {
    client: reqwest::Client,
    cookie: String,
    fields: Vec<(String, String)>,
    url: String,
}

impl Browser {
    pub(crate) async fn open(s: &OAuthSetup, challenge: &str) -> Browser {
        let client = no_redirects();
        let page = client.get(authorize_url(s, challenge, &[])).send().await.unwrap();
        let cookie = page.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
        let html = page.text().await.unwrap();
        let fields =
            ["client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method", "state", "csrf"]
                .iter()
                .map(|n| (n.to_string(), hidden(&html, n).unwrap()))
                .collect();
        Browser { client, cookie, fields, url: format!("{}/oauth/authorize", s.app.base) }
    }

    /// Posts the form with `extra` fields; returns status, Location and body.
    pub(crate) async fn submit(&self, extra: &[(&str, &str)]) -> (StatusCode, String, String) {
        let mut form = self.fields.clone();
        form.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let response = self.client.post(&self.url).header(COOKIE, &self.cookie).form(&form).send().await.unwrap();
        let status = response.status();
        let location = response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
        (status, location, response.text().await.unwrap())
    }

    pub(crate) async fn password(&self, email: &str, password: &str) -> (StatusCode, String, String) {
        self.submit(&[("step", "password"), ("email", email), ("password", password)]).await
    }

    /// As `password`, through a trusted proxy that says the browser is at `address`.
    pub(crate) async fn password_from(&self, address: &str, email: &str, password: &str) -> StatusCode {
        let mut form = self.fields.clone();
        form.extend(
            [("step", "password"), ("email", email), ("password", password)].map(|(k, v)| (k.into(), v.into())),
        );
        let request = self.client.post(&self.url).header(COOKIE, &self.cookie).header("x-forwarded-for", address);
        request.form(&form).send().await.unwrap().status()
    }
}

pub(crate) fn totp_code(secret: &str, offset: i64) -> String {
    venueql::auth::totp::current_code(secret, offset).unwrap()
}

#[tokio::test]
async fn totp_enrolled_through_graphql_is_required_at_login_and_codes_are_single_use() {
    let s = setup().await;
    let v = verifier();
    let code = code_for(&s, s.app.a.id, &v).await;
    let (_, tokens) = exchange(&s, &code, &v).await;
    let access = tokens["access_token"].as_str().unwrap();

    let begin =
        "mutation($p: String!) { beginTotpEnrollment(reauth: { password: $p }) { secret otpauthUri qrCodeSvg } }";
    let stolen = s.app.gql(access, begin, json!({ "p": "Not-The-Password-1" })).await;
    assert_eq!(error_code(&stolen), "BAD_USER_INPUT", "an access token alone cannot enrol a factor: {stolen}");
    let enrolment = s.app.gql(access, begin, json!({ "p": PASSWORD })).await;
    let enrolment = &enrolment["data"]["beginTotpEnrollment"];
    let secret = enrolment["secret"].as_str().unwrap().to_string();
    assert!(
        enrolment["otpauthUri"].as_str().unwrap().starts_with("otpauth://totp/venueql%3Achef%40alpha%2Etest?secret=")
    );
    assert!(enrolment["qrCodeSvg"].as_str().unwrap().contains("<svg"));
    let confirm = "mutation($c: String!) { confirmTotpEnrollment(code: $c) }";
    let wrong = s.app.gql(access, confirm, json!({ "c": "000000" })).await;
    assert_eq!(error_code(&wrong), "BAD_USER_INPUT");
    let first = totp_code(&secret, 0);
    let recovery = s.app.gql(access, confirm, json!({ "c": first })).await;
    let recovery: Vec<String> = serde_json::from_value(recovery["data"]["confirmTotpEnrollment"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    assert_eq!(s.app.audit_count(&s.app.a, "mfa.enabled").await, 1);

    let challenge = s256_challenge(&v);
    let browser = Browser::open(&s, &challenge).await;
    let (status, _, page) = browser.password(EMAIL, PASSWORD).await;
    assert!(status == 200 && page.contains("Two-factor authentication"), "{status} {page}");
    let ticket = hidden(&page, "ticket").unwrap();
    let (status, _, page) = browser.submit(&[("step", "totp"), ("ticket", &ticket), ("code", &first)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a code is accepted once per time step: {page}");
    let (status, _, page) =
        browser.submit(&[("step", "totp"), ("ticket", &ticket), ("code", &totp_code(&secret, 1))]).await;
    assert!(status == 200 && page.contains("Choose a venue"), "{status} {page}");
    let venue_ticket = hidden(&page, "ticket").unwrap();
    let alpha = s.app.a.id.to_string();
    let (status, location, _) =
        browser.submit(&[("step", "venue"), ("ticket", &venue_ticket), ("venue_id", &alpha)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(query_param(&location, "code").is_some());
    let (status, _, _) = browser.submit(&[("step", "venue"), ("ticket", &ticket), ("venue_id", &alpha)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a TOTP-pending ticket cannot skip the TOTP step");

    for expected in [StatusCode::OK, StatusCode::UNAUTHORIZED] {
        let browser = Browser::open(&s, &challenge).await;
        let (_, _, page) = browser.password(EMAIL, PASSWORD).await;
        let ticket = hidden(&page, "ticket").unwrap();
        let (status, _, _) = browser.submit(&[("step", "totp"), ("ticket", &ticket), ("code", &recovery[0])]).await;
        assert_eq!(status, expected, "a recovery code works exactly once");
    }

    let disable = "mutation($p: String!) { disableTotp(reauth: { password: $p }) }";
    assert_eq!(error_code(&s.app.gql(access, disable, json!({ "p": "Wrong-Password-123" })).await), "BAD_USER_INPUT");
    assert_eq!(s.app.gql(access, disable, json!({ "p": PASSWORD })).await["data"]["disableTotp"], true);
    let (_, _, page) = Browser::open(&s, &challenge).await.password(EMAIL, PASSWORD).await;
    assert!(page.contains("Choose a venue"), "no TOTP step once disabled");
}

#[tokio::test]
async fn a_venue_requiring_mfa_enrols_elevated_staff_during_login_and_only_them() {
    let s = setup().await;
    let boss = "boss@alpha.test";
    venueql::admin::create_staff(&s.app.door, "operator:test", boss, PASSWORD, &BreachCheck::off()).await.unwrap();
    let elevated = Permissions::STAFF_MANAGE | Permissions::MENU_VIEW;
    venueql::admin::grant(&s.app.door, "operator:test", "alpha", boss, elevated).await.unwrap();
    let set = s
        .app
        .gql(
            &s.app.a.full,
            "mutation { updateVenueSettings(input: { requireMfaForElevated: true }) { requireMfaForElevated } }",
            json!({}),
        )
        .await;
    assert_eq!(set["data"]["updateVenueSettings"]["requireMfaForElevated"], true, "{set}");
    assert_eq!(s.app.audit_count(&s.app.a, "venue_settings.updated").await, 1);

    let v = verifier();
    let browser = Browser::open(&s, &s256_challenge(&v)).await;
    let (status, _, page) = browser.password(boss, PASSWORD).await;
    assert!(status == 200 && page.contains("requires two-factor authentication"), "{status} {page}");
    let secret = page.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    let ticket = hidden(&page, "ticket").unwrap();
    let venue = hidden(&page, "venue_id").unwrap();
    let (status, _, page) = browser
        .submit(&[("step", "enroll"), ("ticket", &ticket), ("venue_id", &venue), ("code", &totp_code(&secret, 0))])
        .await;
    assert!(status == 200 && page.contains("recovery-codes"), "{status} {page}");
    let ticket = hidden(&page, "ticket").unwrap();
    let (status, location, _) = browser.submit(&[("step", "venue"), ("ticket", &ticket), ("venue_id", &venue)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let code = query_param(&location, "code").unwrap();
    let (status, tokens) = exchange(&s, &code, &v).await;
    assert_eq!(status, 200);
    let me = s.app.gql(tokens["access_token"].as_str().unwrap(), "{ me { permissions } }", json!({})).await;
    assert_eq!(me["data"]["me"]["permissions"], json!(["MENU_VIEW", "STAFF_MANAGE"]));

    let v = verifier();
    let plain = code_for(&s, s.app.a.id, &v).await;
    assert_eq!(exchange(&s, &plain, &v).await.0, 200, "staff without elevated permissions are not asked for MFA");
}

#[tokio::test]
async fn a_person_lists_and_ends_their_own_sessions() {
    let s = setup().await;
    let v = verifier();
    let code = code_for(&s, s.app.a.id, &v).await;
    let (_, tokens) = exchange(&s, &code, &v).await;
    let access = tokens["access_token"].as_str().unwrap();
    let sessions = s.app.gql(access, "{ mySessions { id clientId current } }", json!({})).await;
    let list = sessions["data"]["mySessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{sessions}");
    assert_eq!((list[0]["clientId"].as_str(), list[0]["current"].as_bool()), (Some(s.spa.as_str()), Some(true)));
    let other =
        s.app.gql(access, "mutation($g: ID!) { revokeSession(id: $g) }", json!({ "g": s.app.a.grant_id })).await;
    assert_eq!(error_code(&other), "NOT_FOUND", "someone else's session");
    let ended = s.app.gql(access, "mutation($g: ID!) { revokeSession(id: $g) }", json!({ "g": list[0]["id"] })).await;
    assert_eq!(ended["data"]["revokeSession"], list[0]["id"]);
    let auth = format!("Bearer {access}");
    let (status, _) = s.app.post("/graphql", &[("authorization", &auth)], r#"{"query":"{ me { actor } }"}"#).await;
    assert_eq!(status, 401);
    let api = s.app.gql(&s.app.a.full, "{ mySessions { id } }", json!({})).await;
    assert_eq!(error_code(&api), "FORBIDDEN", "API tokens have no sessions");
}

#[tokio::test]
async fn a_pos_terminal_exchanges_a_cashiers_pin_for_a_short_lived_token() {
    let s = setup().await;
    let pos = crate::helpers::create_client(
        &s.app.door,
        "operator:test",
        "pos",
        "Till 1",
        Some("alpha"),
        &[],
        Permissions::MENU_VIEW | Permissions::MENU_EDIT | Permissions::ORDERS_QUEUE,
    )
    .await
    .unwrap();
    let (pos_id, pos_secret) = (pos.client_id.as_str(), pos.client_secret.as_deref().unwrap());
    let staff = s.app.gql(&s.app.a.full, "{ staff { id email } }", json!({})).await;
    let chef = staff["data"]["staff"].as_array().unwrap().iter().find(|m| m["email"] == EMAIL).unwrap()["id"].clone();
    let set = "mutation($s: ID!, $p: String!) { setStaffPin(staffId: $s, pin: $p) }";
    assert_eq!(error_code(&s.app.gql(&s.app.a.full, set, json!({ "s": chef, "p": "12a4" })).await), "BAD_USER_INPUT");
    assert_eq!(s.app.gql(&s.app.a.full, set, json!({ "s": chef, "p": "4321" })).await["data"]["setStaffPin"], true);
    assert_eq!(s.app.audit_count(&s.app.a, "staff.pin_set").await, 1);
    let menu_only = venueql::admin::issue_token(&s.app.door, "operator:test", "alpha", "menu", Permissions::MENU_VIEW)
        .await
        .unwrap();
    assert_eq!(error_code(&s.app.gql(&menu_only.token, set, json!({ "s": chef, "p": "1111" })).await), "FORBIDDEN");

    let pin_grant = |pin: &'static str, client: (String, String)| {
        let app = &s.app;
        async move {
            let form = [("grant_type", venueql::auth::pins::PIN_GRANT), ("username", EMAIL), ("pin", pin)];
            token_request(app, &form, Some((&client.0, &client.1))).await
        }
    };
    let terminal = (pos_id.to_string(), pos_secret.to_string());
    let (status, tokens, cache) = pin_grant("4321", terminal.clone()).await;
    assert_eq!((status.as_u16(), cache.as_str()), (200, "no-store"), "{tokens}");
    assert!(tokens.get("refresh_token").is_none(), "PIN tokens are short-lived, without refresh");
    let me = s.app.gql(tokens["access_token"].as_str().unwrap(), ME, json!({})).await;
    assert_eq!(me["data"]["me"]["person"]["email"], EMAIL);
    assert_eq!(me["data"]["me"]["venue"]["slug"], "alpha");
    let (_, body, _) = pin_grant("4321", s.integration.clone()).await;
    assert_eq!(body["error"], "unauthorized_client", "only POS terminals");
    for _ in 0..5 {
        let (status, body, _) = pin_grant("9999", terminal.clone()).await;
        assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")));
    }
    let (status, body, _) = pin_grant("4321", terminal).await;
    assert_eq!(status, 429, "the PIN lockout holds even the right PIN: {body}");
}
