//! Retention: raw Stripe events, abandoned checkouts and unverified diner statements are
//! deleted after their periods, venue by venue, with an audit row; nothing else goes.

use std::time::Duration;

use serde_json::{Value, json};
use venueql::config::RetentionConfig;
use venueql::payments::local_stripe;
use venueql::retention;
use venueql::tenancy::Db;

use crate::helpers::{TestApp, TestVenue, error_code};

fn keep_days(days: u64) -> RetentionConfig {
    let period = Duration::from_secs(days * 86_400);
    RetentionConfig {
        stripe_events: period,
        abandoned_checkouts: period,
        unverified_diners: period,
        interval: Duration::ZERO,
    }
}

const CHECKOUT: &str =
    "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret } }";
const CHECKOUT_STATE: &str =
    "query($id: ID!, $secret: String!) { checkout(id: $id, clientSecret: $secret) { status } }";

/// Checks out the peanut toast at `slug` for `diner` and pays; returns the checkout.
async fn paid_with_diner(app: &TestApp, venue: &TestVenue, slug: &str, diner: Value) -> Value {
    let items = json!([{ "menuItemId": venue.item_ids[2], "quantity": 1 }]);
    let started = app.public_gql(slug, CHECKOUT, json!({ "input": { "items": items, "diner": diner } })).await;
    let started = started["data"]["startCheckout"].clone();
    assert!(started.is_object(), "{started}");
    app.deliver(&app.paid_event(&started)).await;
    started
}

async fn diner_count(app: &TestApp, venue: &TestVenue) -> usize {
    let diners = app.gql(&venue.full, "{ diners(first: 50) { id } }", json!({})).await;
    diners["data"]["diners"].as_array().unwrap_or_else(|| panic!("{diners}")).len()
}

#[tokio::test]
async fn retention_deletes_only_what_is_past_its_period_venue_by_venue_and_audits_it() {
    let app = TestApp::spawn().await;
    let db = Db::new(app.app_pool.clone());
    app.onboard(&app.a).await;
    app.onboard(&app.b).await;
    // At A: an unverified diner's paid order (still open), a verified diner's paid order,
    // and a checkout nobody paid that Stripe cancelled.
    let unverified = json!({ "email": "walk-in@example.com", "allergens": ["PEANUTS"] });
    paid_with_diner(&app, &app.a, "alpha", unverified).await;
    let proof = app.diner_proof("alpha", "regular@example.com").await;
    paid_with_diner(&app, &app.a, "alpha", json!({ "email": "regular@example.com", "proof": proof })).await;
    let abandoned = app.start_checkout("alpha", &[(app.a.item_ids[0], 1)]).await;
    let intent = abandoned["clientSecret"].as_str().unwrap().split("_secret_").next().unwrap().to_string();
    let cancelled = app.stripe.update(&intent, json!({ "status": "canceled" })).unwrap();
    let cancelled_event = local_stripe::event("payment_intent.canceled", cancelled, None);
    app.deliver(&cancelled_event).await;
    let state = json!({ "id": abandoned["checkoutId"], "secret": abandoned["clientSecret"] });
    let seen = app.public_gql("alpha", CHECKOUT_STATE, state.clone()).await;
    assert_eq!(seen["data"]["checkout"]["status"], "CANCELED", "{seen}");
    // At B: one paid order.
    app.place_order(&app.b, "bravo").await;
    assert_eq!(diner_count(&app, &app.a).await, 2);

    // Within the periods nothing goes; the pass's scan of every venue is on the record.
    let scans = || async {
        let mut platform = app.door.open_cross_tenant("operator:test", "read the scans").await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM platform_audit_events WHERE actor = 'venueql:retention' AND reason LIKE 'venue scan:%'",
        )
        .fetch_one(platform.conn())
        .await
        .unwrap();
        platform.commit().await.unwrap();
        n
    };
    let scans_before = scans().await;
    let kept = retention::run_once(&db, &keep_days(1)).await.unwrap();
    assert!(kept.venues.is_empty(), "{kept:?}");
    assert_eq!(scans().await, scans_before + 1, "one recorded scan per pass");

    // A's pass alone: A's account, two payments and the cancellation lose their bodies,
    // the abandoned checkout goes; the unverified diner stays while their order is open.
    let at_a = retention::run_for_venue(&db, app.a.venue_id(), &keep_days(0)).await.unwrap();
    assert_eq!((at_a.stripe_event_bodies, at_a.abandoned_checkouts, at_a.unverified_diners), (4, 1, 0), "{at_a:?}");
    let gone = app.public_gql("alpha", CHECKOUT_STATE, state).await;
    assert_eq!(error_code(&gone), "NOT_FOUND", "{gone}");
    assert_eq!(diner_count(&app, &app.a).await, 2, "the open order's kitchen alert still needs what was said");
    // The purged event is still known: a late redelivery is a duplicate.
    let again = app.deliver(&cancelled_event).await;
    assert_eq!(again["duplicate"], true, "{again}");

    // B was untouched by A's pass: the full pass now finds B's bodies, and nothing more at A.
    let full = retention::run_once(&db, &keep_days(0)).await.unwrap();
    let at_b = full.venues.iter().find(|v| v.venue_id == app.b.id).unwrap_or_else(|| panic!("{full:?}"));
    assert_eq!(at_b.stripe_event_bodies, 2, "B's account and payment: {full:?}");
    assert!(full.venues.iter().all(|v| v.venue_id != app.a.id), "{full:?}");

    // Once the order is served, the unverified statement goes; the verified diner stays,
    // and the order keeps its lines.
    let orders = app.gql(&app.a.full, "{ orders(first: 10) { edges { node { id } } } }", json!({})).await;
    let edges = orders["data"]["orders"]["edges"].as_array().unwrap().clone();
    for edge in &edges {
        for status in ["PREPARING", "READY", "SERVED"] {
            let advanced = app
                .gql(
                    &app.a.full,
                    "mutation($id: ID!, $s: OrderStatus!) { advanceOrder(id: $id, status: $s) { status } }",
                    json!({ "id": edge["node"]["id"], "s": status }),
                )
                .await;
            assert!(advanced["errors"].is_null(), "{advanced}");
        }
    }
    let served = retention::run_for_venue(&db, app.a.venue_id(), &keep_days(0)).await.unwrap();
    assert_eq!(served.unverified_diners, 1, "{served:?}");
    assert_eq!(diner_count(&app, &app.a).await, 1, "the verified diner stays");
    let history = app.gql(&app.a.full, "{ orders(first: 10) { edges { node { items { name } } } } }", json!({})).await;
    assert_eq!(history["data"]["orders"]["edges"].as_array().unwrap().len(), 2, "{history}");

    // Every pass that deleted something is in the venue's audit chain, with its counts.
    assert_eq!(app.audit_count(&app.a, "retention.purged").await, 2);
    assert_eq!(app.audit_count(&app.b, "retention.purged").await, 1);
}
