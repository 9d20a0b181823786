//! Stripe webhooks: signed with Stripe's scheme in the test, verified on the raw body,
//! stored once per event id; anything forged, stale, missing or malformed gets 400 and
//! stores nothing.

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use venueql::payments::signature::sign;

const SECRET: &str = "whsec_platform_current";
const PREVIOUS: &str = "whsec_platform_previous";
const CONNECT: &str = "whsec_connect_current";

async fn spawn() -> TestApp {
    TestApp::spawn_with(|name| match name {
        "STRIPE_WEBHOOK_SECRET" => Some(SECRET.into()),
        "STRIPE_WEBHOOK_SECRET_PREVIOUS" => Some(PREVIOUS.into()),
        "STRIPE_CONNECT_WEBHOOK_SECRET" => Some(CONNECT.into()),
        _ => None,
    })
    .await
}

fn event(id: &str, event_type: &str) -> String {
    // An object with the fields Stripe's spec requires of its kind (a PaymentIntent nobody
    // created here, so the event is routed nowhere), in Stripe's own formatting
    // (pretty-printed, with a trailing newline), which must survive as is.
    let object = match event_type.split('.').next() {
        Some("charge") => {
            r#"{ "id": "ch_123", "object": "charge", "amount": 100, "amount_refunded": 100, "currency": "eur", "payment_intent": "pi_123" }"#
        }
        Some("account") => r#"{ "id": "acct_123", "object": "account" }"#,
        _ => {
            r#"{ "id": "pi_123", "object": "payment_intent", "amount": 100, "currency": "eur", "status": "succeeded" }"#
        }
    };
    format!(
        "{{\n  \"id\": \"{id}\",\n  \"object\": \"event\",\n  \"api_version\": \"2023-08-16\",\n  \"created\": 1700000000,\n  \"livemode\": false,\n  \"type\": \"{event_type}\",\n  \"data\": {{ \"object\": {object} }}\n}}\n"
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn deliver(app: &TestApp, path: &str, body: &str, header: Option<String>) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(header) = header {
        request = request.header("stripe-signature", header);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn stored(app: &TestApp) -> i64 {
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&app.urls.owner).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM private.stripe_events").fetch_one(&mut owner).await.unwrap()
}

fn signed(body: &str, secret: &str, at: i64) -> Option<String> {
    Some(sign(body.as_bytes(), &SecretString::from(secret.to_string()), at))
}

#[tokio::test]
async fn a_signed_event_is_stored_once_and_duplicates_are_acknowledged() {
    let app = spawn().await;
    let body = event("evt_1", "payment_intent.succeeded");
    let (status, answer) = deliver(&app, "/webhooks/stripe", &body, signed(&body, SECRET, now())).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(false)), "{answer}");
    let (status, answer) = deliver(&app, "/webhooks/stripe", &body, signed(&body, SECRET, now())).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (200, Some(true)), "{answer}");
    let unknown = event("evt_2", "some.future_event_type");
    assert_eq!(deliver(&app, "/webhooks/stripe", &unknown, signed(&unknown, SECRET, now())).await.0, 200);
    let rotated = event("evt_3", "charge.refunded");
    assert_eq!(
        deliver(&app, "/webhooks/stripe", &rotated, signed(&rotated, PREVIOUS, now())).await.0,
        200,
        "previous secret"
    );
    let connect = event("evt_4", "account.updated");
    assert_eq!(deliver(&app, "/webhooks/stripe/connect", &connect, signed(&connect, CONNECT, now())).await.0, 200);
    assert_eq!(stored(&app).await, 4);
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&app.urls.owner).await.unwrap();
    let raw: String = sqlx::query_scalar("SELECT raw_body FROM private.stripe_events WHERE id = 'evt_1'")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(raw, body, "the raw body is kept exactly");
}

#[tokio::test]
async fn forged_stale_missing_and_malformed_signatures_get_400_and_store_nothing() {
    let app = spawn().await;
    let body = event("evt_bad", "payment_intent.succeeded");
    let cases = [
        ("wrong secret", "/webhooks/stripe", body.clone(), signed(&body, "whsec_attacker", now())),
        ("stale", "/webhooks/stripe", body.clone(), signed(&body, SECRET, now() - 400)),
        ("from the future", "/webhooks/stripe", body.clone(), signed(&body, SECRET, now() + 400)),
        ("missing", "/webhooks/stripe", body.clone(), None),
        ("malformed", "/webhooks/stripe", body.clone(), Some("v1=abc,nonsense".to_string())),
        ("tampered body", "/webhooks/stripe", body.replace("pi_123", "pi_999"), signed(&body, SECRET, now())),
        (
            "platform secret on the Connect endpoint",
            "/webhooks/stripe/connect",
            body.clone(),
            signed(&body, SECRET, now()),
        ),
        (
            "not an event",
            "/webhooks/stripe",
            "{\"object\":\"charge\"}".to_string(),
            signed("{\"object\":\"charge\"}", SECRET, now()),
        ),
    ];
    for (case, path, payload, header) in cases {
        let (status, answer) = deliver(&app, path, &payload, header).await;
        assert_eq!(status, 400, "{case}: {answer}");
    }
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn fifty_concurrent_deliveries_of_one_event_store_it_exactly_once() {
    let app = spawn().await;
    let body = event("evt_concurrent", "payment_intent.succeeded");
    let deliveries = (0..50).map(|_| deliver(&app, "/webhooks/stripe", &body, signed(&body, SECRET, now())));
    let results = futures_util::future::join_all(deliveries).await;
    assert!(results.iter().all(|(status, _)| *status == 200), "{results:?}");
    let fresh = results.iter().filter(|(_, answer)| answer["duplicate"] == json!(false)).count();
    assert_eq!(fresh, 1, "exactly one delivery stored the event");
    assert_eq!(stored(&app).await, 1);
}

#[tokio::test]
async fn an_endpoint_without_a_secret_refuses_with_a_retryable_status() {
    let app = TestApp::spawn_with(|name| (name == "STRIPE_WEBHOOK_SECRET").then(String::new)).await;
    let body = event("evt_x", "payment_intent.succeeded");
    let (status, _) = deliver(&app, "/webhooks/stripe", &body, signed(&body, SECRET, now())).await;
    assert_eq!(status, 503, "not configured: Stripe keeps the event and retries");
}
