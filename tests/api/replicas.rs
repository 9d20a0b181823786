//! Two `venueql serve` processes on one database, as replicas behind a load balancer:
//! whatever one starts, the other finishes. Each scenario runs twice: replicas connected
//! to PostgreSQL directly, and replicas behind PgBouncer in transaction pooling mode.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use venueql::auth::authorization_code::s256_challenge;

use crate::helpers::{PLATFORM_SECRET, ServerProcess, TestApp, serve_on};
use crate::oauth::{EMAIL, OAuthSetup, PASSWORD, REDIRECT, hidden, no_redirects, query_param, setup, verifier};
use crate::pgbouncer::PgBouncer;
use crate::subscription::{connect_to, next_json, subscribe};

/// Snapshots live until a notification drops them, so a missed drop shows as a stale queue.
const REPLICA: &[(&str, &str)] = &[("QUEUE_SNAPSHOT_MAX_AGE_MS", "3600000"), ("HIBP_MODE", "off")];

async fn replicas(app: &TestApp) -> (ServerProcess, ServerProcess) {
    (app.serve_process(REPLICA).await, app.serve_process(REPLICA).await)
}

/// Two replicas whose `DATABASE_URL` is `pgbouncer` (transaction pooling); LISTEN goes to
/// PostgreSQL directly, as `DATABASE_LISTEN_URL` says.
async fn replicas_behind(pgbouncer: &PgBouncer, app: &TestApp) -> (ServerProcess, ServerProcess) {
    let pooled = pgbouncer.url("venueql_app", &app.database);
    let env: Vec<(&str, &str)> =
        [REPLICA, &[("DATABASE_POOL_MODE", "transaction"), ("DATABASE_LISTEN_URL", app.urls.app.as_str())]].concat();
    let a = serve_on(&pooled, app.stripe.base(), &env).await;
    let b = serve_on(&pooled, app.stripe.base(), &env).await;
    (a, b)
}

async fn gql(base: &str, token: &str, query: &str, variables: Value) -> Value {
    let client = reqwest::Client::new();
    let body = json!({ "query": query, "variables": variables });
    client.post(format!("{base}/graphql")).bearer_auth(token).json(&body).send().await.unwrap().json().await.unwrap()
}

async fn deliver(base: &str, event: &Value) -> (StatusCode, Value) {
    let body = event.to_string();
    let secret = secrecy::SecretString::from(PLATFORM_SECRET.to_string());
    let header = venueql::payments::signature::sign(body.as_bytes(), &secret, chrono::Utc::now().timestamp());
    let response = reqwest::Client::new()
        .post(format!("{base}/webhooks/stripe"))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_begun_on_one_replica_finishes_on_the_other_and_its_tokens_work_on_both() {
    let s = setup().await;
    let (a, b) = replicas(&s.app).await;
    login_across(&s, &a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_a_login_begun_on_one_replica_finishes_on_the_other() {
    let s = setup().await;
    let pgbouncer = PgBouncer::start(crate::helpers::cluster());
    let (a, b) = replicas_behind(&pgbouncer, &s.app).await;
    login_across(&s, &a, &b).await;
}

/// Hosted login split across `a` and `b`, then the code, access and refresh tokens used
/// on the other replica each time.
async fn login_across(s: &OAuthSetup, a: &ServerProcess, b: &ServerProcess) {
    let verifier = verifier();
    let mut authorize = url::Url::parse(&format!("{}/oauth/authorize", a.base)).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.spa)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &s256_challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "replicas");
    // The page (and its CSRF cookie) comes from A ...
    let client = no_redirects();
    let page = client.get(authorize.as_str()).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let html = page.text().await.unwrap();
    let mut form: Vec<(String, String)> =
        ["client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method", "state", "csrf"]
            .iter()
            .map(|n| (n.to_string(), hidden(&html, n).unwrap()))
            .collect();
    form.extend([
        ("step".into(), "password".into()),
        ("email".into(), EMAIL.into()),
        ("password".into(), PASSWORD.into()),
    ]);
    // ... the password goes to B, which asks for the venue; the choice goes back to A.
    let post = |base: &str, fields: Vec<(String, String)>| {
        let request = client.post(format!("{base}/oauth/authorize")).header("cookie", &cookie).form(&fields);
        async move { request.send().await.unwrap() }
    };
    let chosen = post(&b.base, form.clone()).await;
    let html = chosen.text().await.unwrap();
    let ticket = hidden(&html, "ticket").unwrap_or_else(|| panic!("B asks for the venue: {html}"));
    let mut venue_step = form[..7].to_vec();
    venue_step.extend([
        ("step".into(), "venue".into()),
        ("ticket".into(), ticket),
        ("venue_id".into(), s.app.a.id.to_string()),
    ]);
    let done = post(&a.base, venue_step).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER, "A accepts B's ticket");
    let code = query_param(done.headers()["location"].to_str().unwrap(), "code").unwrap();
    // The code is exchanged at B, the access token used at A, the refresh at B again.
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", s.spa.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens: Value =
        client.post(format!("{}/oauth/token", b.base)).form(&exchange).send().await.unwrap().json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap_or_else(|| panic!("{tokens}"));
    let me = gql(&a.base, access, "{ me { venue { slug } person { email } } }", json!({})).await;
    assert_eq!(me["data"]["me"]["person"]["email"], EMAIL, "{me}");
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ("client_id", s.spa.as_str()),
    ];
    let refreshed: Value =
        client.post(format!("{}/oauth/token", b.base)).form(&refresh).send().await.unwrap().json().await.unwrap();
    let again = refreshed["access_token"].as_str().unwrap_or_else(|| panic!("{refreshed}"));
    assert_eq!(
        gql(&a.base, again, "{ me { venue { slug } } }", json!({})).await["data"]["me"]["venue"]["slug"],
        "alpha"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_made_through_one_replica_reach_the_other_live_once_and_in_its_queue() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let (a, b) = replicas(&app).await;
    orders_across(&app, &a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_orders_reach_the_other_replica_live_once_and_in_its_queue() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let pgbouncer = PgBouncer::start(crate::helpers::cluster());
    let (a, b) = replicas_behind(&pgbouncer, &app).await;
    orders_across(&app, &a, &b).await;
}

/// A diner checks out on `a`; the paid event is delivered ten times across both; `b`'s
/// subscriber hears of the order once and `b`'s queue snapshot follows `a`'s changes.
async fn orders_across(app: &TestApp, a: &ServerProcess, b: &ServerProcess) {
    // B's kitchen: a live subscription and a queue snapshot.
    let (mut socket, ack) = connect_to(&b.base, &app.a.full).await;
    assert_eq!(ack.unwrap()["type"], "connection_ack");
    subscribe(&mut socket).await;
    let queue = "{ ordersQueue { number status } }";
    assert_eq!(gql(&b.base, &app.a.full, queue, json!({})).await["data"]["ordersQueue"], json!([]));

    // A diner checks out on A and pays; Stripe delivers the event, duplicated, to both.
    let checkout = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { clientSecret } }";
    let input = json!({ "input": { "items": [{ "menuItemId": app.a.item_ids[0], "quantity": 1 }], "tableRef": "T7" } });
    let client = reqwest::Client::new();
    let body = json!({ "query": checkout, "variables": input });
    let answer: Value =
        client.post(format!("{}/v/alpha/graphql", a.base)).json(&body).send().await.unwrap().json().await.unwrap();
    assert!(answer["errors"].is_null(), "{answer}");
    let started = answer["data"]["startCheckout"].clone();
    let event = app.paid_event(&started);
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let base = if i % 2 == 0 { a.base.clone() } else { b.base.clone() };
        let event = event.clone();
        deliveries.push(tokio::spawn(async move { deliver(&base, &event).await }));
    }
    let mut applied = 0;
    for delivery in deliveries {
        let (status, answer) = delivery.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        applied += usize::from(answer["duplicate"] == false);
    }
    assert_eq!(applied, 1, "one delivery applied the event, the others were duplicates");
    let update = next_json(&mut socket, Duration::from_secs(5)).await.expect("B's subscriber hears of A's order");
    assert_eq!(update["payload"]["data"]["ordersQueueChanged"]["status"], "PLACED", "{update}");

    // B's snapshot is dropped by the notification of A's change (its age limit is an hour).
    let orders = gql(&a.base, &app.a.full, "{ ordersQueue { id number } }", json!({})).await;
    let orders = orders["data"]["ordersQueue"].as_array().unwrap().clone();
    assert_eq!(orders.len(), 1, "exactly one order: {orders:?}");
    let advance = "mutation($id: ID!) { advanceOrder(id: $id, status: PREPARING) { status } }";
    assert!(gql(&a.base, &app.a.full, advance, json!({ "id": orders[0]["id"] })).await["errors"].is_null());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = gql(&b.base, &app.a.full, queue, json!({})).await;
        if seen["data"]["ordersQueue"][0]["status"] == "PREPARING" {
            break;
        }
        assert!(Instant::now() < deadline, "B still serves its old snapshot: {seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
