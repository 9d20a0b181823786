//! The money path against the real server, PostgreSQL and the local Stripe (which checks
//! every request against Stripe's OpenAPI spec): onboarding, checkout, verified events
//! making orders exactly once whatever the order or number of deliveries, mismatches,
//! failures mid-way, refunds, disputes, reconciliation and replay.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, error_code};
use venueql::payments::local_stripe;

const QUEUE: &str =
    "{ ordersQueue { id number status amountMinor currency tableRef items { name quantity unitPriceMinor } } }";
const ORDER_MONEY: &str = "query($id: ID!) { order(id: $id) { status refundedMinor refundPendingMinor refundState disputeStatus payment { paymentIntentId chargeId applicationFeeMinor } } }";

fn intent_of(started: &Value) -> String {
    started["clientSecret"].as_str().unwrap().split("_secret_").next().unwrap().to_string()
}

async fn orders_at(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.gql(token, QUEUE, json!({})).await;
    assert!(response["errors"].is_null(), "{response}");
    response["data"]["ordersQueue"].as_array().unwrap().clone()
}

async fn checkout_status(app: &TestApp, slug: &str, started: &Value) -> Value {
    let response = app
        .public_gql(
            slug,
            "query($id: ID!, $secret: String!) { checkout(id: $id, clientSecret: $secret) { status amountMinor orderNumber } }",
            json!({ "id": started["checkoutId"], "secret": started["clientSecret"] }),
        )
        .await;
    response["data"]["checkout"].clone()
}

#[tokio::test]
async fn a_paid_checkout_becomes_one_order_in_the_queue_and_the_stripe_requests_follow_the_spec() {
    let app = TestApp::spawn().await;
    let account = app.onboard(&app.a).await;
    let started = app.start_checkout("alpha", &[(app.a.item_ids[0], 2), (app.a.item_ids[2], 1)]).await;
    // Priced from the database: 2 x 250 + 1 x 550.
    assert_eq!(started["amountMinor"], 1050);
    assert_eq!(started["currency"], "EUR");
    let create = app.stripe.requests().into_iter().find(|r| r.path == "/v1/payment_intents").unwrap();
    assert_eq!(create.param("amount"), Some("1050"));
    assert_eq!(create.param("currency"), Some("eur"));
    assert_eq!(create.param("transfer_data[destination]"), Some(account.as_str()));
    assert_eq!(create.param("on_behalf_of"), Some(account.as_str()));
    assert_eq!(create.param("application_fee_amount"), Some("26"), "2.5% of 1050, rounded half up");
    assert_eq!(create.param("metadata[venue_id]"), Some(app.a.id.to_string().as_str()));
    assert_eq!(create.param("metadata[checkout_id]"), started["checkoutId"].as_str());
    let key = create.idempotency_key.clone().unwrap();
    assert!(key.contains(started["checkoutId"].as_str().unwrap()), "the key is derived from the checkout: {key}");

    // The diner's own "success" changes nothing: no order until Stripe's event.
    assert_eq!(checkout_status(&app, "alpha", &started).await["status"], "PENDING");
    assert!(orders_at(&app, &app.a.full).await.is_empty());

    let event = app.paid_event(&started);
    app.deliver(&event).await;
    let queue = orders_at(&app, &app.a.full).await;
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0]["number"], 1);
    assert_eq!(queue[0]["status"], "PLACED");
    assert_eq!(queue[0]["amountMinor"], 1050);
    assert_eq!(queue[0]["tableRef"], "T7");
    assert_eq!(queue[0]["items"][0], json!({ "name": "Alpha Espresso", "quantity": 2, "unitPriceMinor": 250 }));
    let status = checkout_status(&app, "alpha", &started).await;
    assert_eq!((status["status"].clone(), status["orderNumber"].clone()), (json!("SUCCEEDED"), json!(1)));
    assert_eq!(app.audit_count(&app.a, "order.placed").await, 1);
    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let (actor, target, after): (String, String, Value) =
        sqlx::query_as("SELECT actor, target_id, after FROM audit_events WHERE action = 'order.placed'")
            .fetch_one(tx.conn())
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(target, queue[0]["id"].as_str().unwrap());
    assert!(actor.starts_with("stripe"), "{actor}");
    assert_eq!(
        after,
        json!({ "number": 1, "amount_minor": 1050, "currency": "EUR", "payment_intent": event["data"]["object"]["id"],
            "checkout": started["checkoutId"] })
    );

    // A second checkout gets the next number; the audit chain holds both orders' rows.
    let (_, _) = app.place_order(&app.a, "alpha").await;
    let chains = venueql::audit::verify_all(&app.door, "operator:test", None).await.unwrap();
    assert!(chains.iter().all(|c| c.problems.is_empty()), "{chains:?}");
    let numbers: Vec<i64> = orders_at(&app, &app.a.full).await.iter().map(|o| o["number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, vec![1, 2]);
    assert!(app.stripe.violations().is_empty(), "{:?}", app.stripe.violations());
}

#[tokio::test]
async fn checkout_input_is_checked_and_bad_baskets_change_nothing() {
    let app = TestApp::spawn().await;
    let query = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId } }";
    // Before onboarding: a clear refusal.
    let input = json!({ "items": [{ "menuItemId": app.a.item_ids[0], "quantity": 1 }] });
    let response = app.public_gql("alpha", query, json!({ "input": input })).await;
    assert_eq!(error_code(&response), "UNAVAILABLE", "{response}");
    assert!(response["errors"][0]["message"].as_str().unwrap().contains("onboarding"), "{response}");
    app.onboard(&app.a).await;
    let cases = [
        ("no items", json!({ "items": [] }), "1 to 50"),
        ("zero quantity", json!({ "items": [{ "menuItemId": app.a.item_ids[0], "quantity": 0 }] }), "quantity"),
        ("huge quantity", json!({ "items": [{ "menuItemId": app.a.item_ids[0], "quantity": 100 }] }), "quantity"),
        (
            "unavailable item",
            json!({ "items": [{ "menuItemId": app.a.item_ids[3], "quantity": 1 }] }),
            "not an available item",
        ),
        (
            "another venue's item",
            json!({ "items": [{ "menuItemId": app.b.item_ids[0], "quantity": 1 }] }),
            "not an available item",
        ),
        ("malformed id", json!({ "items": [{ "menuItemId": "nope", "quantity": 1 }] }), "menuItemId"),
        (
            "too much money",
            json!({ "items": (0..50).map(|_| json!({ "menuItemId": app.a.item_ids[2], "quantity": 99 })).collect::<Vec<_>>() }),
            "total",
        ),
        (
            "long note",
            json!({ "items": [{ "menuItemId": app.a.item_ids[0], "quantity": 1, "note": "x".repeat(201) }] }),
            "note",
        ),
        (
            "long table",
            json!({ "items": [{ "menuItemId": app.a.item_ids[0], "quantity": 1 }], "tableRef": "t".repeat(41) }),
            "tableRef",
        ),
    ];
    for (case, input, says) in cases {
        let response = app.public_gql("alpha", query, json!({ "input": input })).await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{case}: {response}");
        assert!(response["errors"][0]["message"].as_str().unwrap().contains(says), "{case}: {response}");
    }
    assert!(app.stripe.requests().iter().all(|r| r.path != "/v1/payment_intents"), "no PaymentIntent for bad input");
    let mut tx = venueql::tenancy::Db::new(app.app_pool.clone()).venue_tx(app.a.venue_id()).await.unwrap();
    let checkouts: i64 = sqlx::query_scalar("SELECT count(*) FROM checkouts").fetch_one(tx.conn()).await.unwrap();
    assert_eq!(checkouts, 0);
}

#[tokio::test]
async fn stripe_calls_retry_with_the_same_idempotency_key_and_fail_clearly() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    app.stripe.fail_next(503, 2);
    let started = app.start_checkout("alpha", &[(app.a.item_ids[0], 1)]).await;
    let attempts: Vec<_> = app.stripe.requests().into_iter().filter(|r| r.path == "/v1/payment_intents").collect();
    assert_eq!(attempts.len(), 3, "two failures, then success");
    assert!(attempts.iter().all(|r| r.idempotency_key == attempts[0].idempotency_key), "retries reuse the key");
    assert!(started["clientSecret"].as_str().unwrap().contains("_secret_"));

    app.stripe.fail_next(500, 10);
    let query = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId } }";
    let input = json!({ "items": [{ "menuItemId": app.a.item_ids[0], "quantity": 1 }] });
    let response = app.public_gql("alpha", query, json!({ "input": input })).await;
    assert_eq!(error_code(&response), "UNAVAILABLE", "{response}");
    assert!(!response.to_string().contains("sk_test"), "no secret in the answer");
}

#[tokio::test]
async fn fifty_concurrent_deliveries_of_one_success_make_exactly_one_order() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let started = app.start_checkout("alpha", &[(app.a.item_ids[1], 3)]).await;
    let event = app.paid_event(&started);
    let deliveries = (0..50).map(|_| app.deliver(&event));
    let answers = futures_util::future::join_all(deliveries).await;
    assert_eq!(answers.iter().filter(|a| a["duplicate"] == false).count(), 1);
    // The same payment reported again under a new event id (a replay) changes nothing.
    let again = local_stripe::event("payment_intent.succeeded", event["data"]["object"].clone(), None);
    app.deliver(&again).await;
    assert_eq!(orders_at(&app, &app.a.full).await.len(), 1);
    assert_eq!(app.audit_count(&app.a, "order.placed").await, 1);
}

#[tokio::test]
async fn a_payment_that_does_not_match_its_checkout_creates_no_order_anywhere() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    app.onboard(&app.b).await;
    let started = app.start_checkout("alpha", &[(app.a.item_ids[0], 2)]).await;
    let paid = app.paid_event(&started)["data"]["object"].clone();
    let b_checkout = app.start_checkout("bravo", &[(app.b.item_ids[0], 1)]).await;
    let tampered = [
        json!({ "amount": 1, "amount_received": 1 }),
        json!({ "currency": "usd" }),
        json!({ "metadata": { "venue_id": app.b.id.to_string(), "checkout_id": b_checkout["checkoutId"] } }),
        json!({ "metadata": { "venue_id": app.a.id.to_string(), "checkout_id": Uuid::new_v4().to_string() } }),
        json!({ "transfer_data": { "destination": "acct_someoneelse" } }),
        json!({ "application_fee_amount": 0 }),
    ];
    for change in tampered {
        let mut object = paid.clone();
        for (key, value) in change.as_object().unwrap() {
            object[key] = value.clone();
        }
        app.deliver(&local_stripe::event("payment_intent.succeeded", object, None)).await;
    }
    assert!(orders_at(&app, &app.a.full).await.is_empty(), "no order at A");
    assert!(orders_at(&app, &app.b.full).await.is_empty(), "an event for A's checkout never makes an order at B");
    assert_eq!(app.audit_count(&app.a, "payment.mismatch").await, 6, "each mismatch is a critical audit event");
    assert_eq!(app.audit_count(&app.b, "payment.mismatch").await, 0);
    let mut tx = venueql::tenancy::Db::new(app.app_pool.clone()).venue_tx(app.a.venue_id()).await.unwrap();
    let severity: String =
        sqlx::query_scalar("SELECT after->>'severity' FROM audit_events WHERE action = 'payment.mismatch' LIMIT 1")
            .fetch_one(tx.conn())
            .await
            .unwrap();
    assert_eq!(severity, "critical");
    tx.commit().await.unwrap();
    // B's PaymentIntent reported as paid with A's metadata: routed by the PaymentIntent to
    // B, refused there; still no order at either venue.
    let mut object = app.paid_event(&b_checkout)["data"]["object"].clone();
    object["metadata"] = json!({ "venue_id": app.a.id.to_string(), "checkout_id": started["checkoutId"] });
    app.deliver(&local_stripe::event("payment_intent.succeeded", object, None)).await;
    assert!(orders_at(&app, &app.a.full).await.is_empty());
    assert!(orders_at(&app, &app.b.full).await.is_empty());
    // The genuine event still works afterwards.
    app.deliver(&local_stripe::event("payment_intent.succeeded", paid, None)).await;
    assert_eq!(orders_at(&app, &app.a.full).await.len(), 1);
}

#[tokio::test]
async fn a_failure_while_applying_an_event_loses_nothing_when_stripe_retries() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let started = app.start_checkout("alpha", &[(app.a.item_ids[0], 1)]).await;
    let event = app.paid_event(&started);
    // Simulate a crash between storing the event and acknowledging it: the order insert
    // fails inside the handler's transaction.
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&app.urls.owner).await.unwrap();
    sqlx::query(
        "CREATE FUNCTION public.test_crash() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'simulated crash'; END $$",
    )
    .execute(&mut owner)
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER test_crash BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION public.test_crash()")
        .execute(&mut owner)
        .await
        .unwrap();
    let (status, answer) = app.deliver_signed("/webhooks/stripe", crate::helpers::PLATFORM_SECRET, &event).await;
    assert_eq!(status.as_u16(), 500, "non-2xx so Stripe retries: {answer}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM private.stripe_events WHERE id = $1")
        .bind(event["id"].as_str())
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(stored, 0, "the event row rolled back with its effects");
    sqlx::query("DROP TRIGGER test_crash ON orders").execute(&mut owner).await.unwrap();
    let answer = app.deliver(&event).await;
    assert_eq!(answer["duplicate"], false, "the retry is applied, not taken for a duplicate");
    assert_eq!(orders_at(&app, &app.a.full).await.len(), 1);
}

/// The state events decide, without ids (which differ between two servers).
async fn final_state(app: &TestApp) -> Value {
    let mut tx = venueql::tenancy::Db::new(app.app_pool.clone()).venue_tx(app.a.venue_id()).await.unwrap();
    let state: Value = sqlx::query_scalar(
        "SELECT json_build_object(
            'checkouts', (SELECT json_agg(json_build_array(c.table_ref, c.status, c.charge_amount_refunded) ORDER BY c.table_ref) FROM checkouts c),
            'orders', (SELECT json_agg(json_build_array(o.table_ref, o.status, o.number) ORDER BY o.table_ref) FROM orders o),
            'refunds', (SELECT json_agg(json_build_array(r.amount_minor, r.status) ORDER BY r.amount_minor) FROM refunds r),
            'disputes', (SELECT json_agg(json_build_array(d.amount_minor, d.status)) FROM disputes d),
            'account', (SELECT json_build_array(a.charges_enabled, a.requirements_due) FROM stripe_accounts a))",
    )
    .fetch_one(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    state
}

/// The same story of Stripe events for a fresh server, in the given delivery order.
async fn story(order: &[usize], repeat: usize) -> Value {
    let app = TestApp::spawn().await;
    let account = app.onboard(&app.a).await;
    let mut checkouts = Vec::new();
    for table in ["T1", "T2", "T3"] {
        let items = json!([{ "menuItemId": app.a.item_ids[0], "quantity": 4 }]);
        let response = app
            .public_gql(
                "alpha",
                "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret amountMinor } }",
                json!({ "input": { "items": items, "tableRef": table } }),
            )
            .await;
        checkouts.push(response["data"]["startCheckout"].clone());
    }
    // After the onboarding's own account.updated, so the story's account event is newer.
    let t0 = chrono::Utc::now().timestamp() + 100;
    let at = |event: Value, offset: i64| {
        let mut event = event;
        event["created"] = json!(t0 + offset);
        event
    };
    let intent = |i: usize| app.stripe.object(&intent_of(&checkouts[i])).unwrap();
    let paid = |i: usize| {
        let mut object = intent(i);
        object["status"] = json!("succeeded");
        object["amount_received"] = object["amount"].clone();
        object["latest_charge"] = json!(format!("ch_story{i}"));
        object
    };
    let refund = |id: &str, i: usize, amount: i64, status: &str| {
        json!({ "id": id, "object": "refund", "amount": amount, "currency": "eur", "payment_intent": intent_of(&checkouts[i]),
                "charge": format!("ch_story{i}"), "status": status, "metadata": {}, "created": t0 })
    };
    let dispute = |status: &str| {
        json!({ "id": "dp_story", "object": "dispute", "amount": 1000, "currency": "eur", "payment_intent": intent_of(&checkouts[1]),
                "charge": "ch_story1", "reason": "fraudulent", "status": status })
    };
    let mut failed = intent(2);
    failed["last_payment_error"] = json!({ "message": "Your card was declined." });
    let mut account_object = app.stripe.object(&account).unwrap();
    account_object["requirements"]["currently_due"] = json!(["external_account"]);
    let events = vec![
        at(local_stripe::event("payment_intent.succeeded", paid(0), None), 10),
        at(local_stripe::event("refund.updated", refund("re_story1", 0, 300, "pending"), None), 20),
        at(local_stripe::event("refund.updated", refund("re_story1", 0, 300, "succeeded"), None), 30),
        at(
            local_stripe::event(
                "charge.refunded",
                json!({ "id": "ch_story0", "object": "charge", "payment_intent": intent_of(&checkouts[0]), "amount_refunded": 300 }),
                None,
            ),
            31,
        ),
        at(local_stripe::event("payment_intent.succeeded", paid(1), None), 40),
        at(local_stripe::event("charge.dispute.created", dispute("needs_response"), None), 50),
        at(local_stripe::event("charge.dispute.closed", dispute("lost"), None), 60),
        at(local_stripe::event("refund.updated", refund("re_story2", 1, 1000, "succeeded"), None), 70),
        at(local_stripe::event("payment_intent.payment_failed", failed.clone(), None), 80),
        at(
            local_stripe::event(
                "payment_intent.canceled",
                {
                    let mut c = failed;
                    c["status"] = json!("canceled");
                    c
                },
                None,
            ),
            90,
        ),
        at(local_stripe::event("account.updated", account_object, Some(&account)), 100),
    ];
    for _ in 0..repeat {
        for index in order {
            let event = &events[*index];
            let path = if event["type"] == "account.updated" { "/webhooks/stripe/connect" } else { "/webhooks/stripe" };
            let secret = if event["type"] == "account.updated" {
                crate::helpers::CONNECT_SECRET
            } else {
                crate::helpers::PLATFORM_SECRET
            };
            let (status, answer) = app.deliver_signed(path, secret, event).await;
            assert_eq!(status.as_u16(), 200, "{answer}");
        }
    }
    final_state(&app).await
}

#[tokio::test]
async fn the_same_events_shuffled_and_repeated_reach_the_same_final_state() {
    let in_order: Vec<usize> = (0..11).collect();
    let expected = story(&in_order, 1).await;
    assert_eq!(expected["orders"], json!([["T1", "placed", 1], ["T2", "refunded", 2]]), "{expected}");
    assert_eq!(expected["checkouts"], json!([["T1", "succeeded", 300], ["T2", "succeeded", 0], ["T3", "canceled", 0]]));
    assert_eq!(expected["disputes"], json!([[1000, "lost"]]));
    assert_eq!(expected["account"], json!([true, ["external_account"]]));
    let shuffled = [10, 7, 2, 9, 5, 3, 0, 8, 6, 1, 4];
    let state = story(&shuffled, 2).await;
    // Order numbers follow arrival; everything else is decided by the events alone.
    let without_numbers = |state: &Value| {
        let mut state = state.clone();
        for order in state["orders"].as_array_mut().unwrap() {
            order[2] = json!(null);
        }
        state
    };
    assert_eq!(without_numbers(&state), without_numbers(&expected), "shuffled and repeated: {state}");
}

#[tokio::test]
async fn refunds_full_partial_and_repeated_are_pending_until_stripe_confirms() {
    let app = TestApp::spawn().await;
    app.place_order(&app.a, "alpha").await; // 2 x 250 + 550 = 1050
    let order = orders_at(&app, &app.a.full).await[0]["id"].clone();
    let refund = |amount: i64| {
        let query = "mutation($id: ID!, $amount: Int!) { refundOrder(id: $id, amountMinor: $amount, reason: \"cold coffee\") { refundedMinor refundPendingMinor refundState } }";
        app.gql(&app.a.full, query, json!({ "id": order, "amount": amount }))
    };
    // Stripe confirms the index-th refund asked for.
    let confirm = |index: usize| {
        let requests: Vec<_> = app.stripe.requests().into_iter().filter(|r| r.path == "/v1/refunds").collect();
        let ours = requests[index].param("metadata[refund_id]").unwrap().to_string();
        let mut object = app
            .stripe
            .find(|o| o["object"] == "refund" && o["metadata"]["refund_id"] == ours.as_str())
            .expect("the refund Stripe created");
        object["status"] = json!("succeeded");
        local_stripe::event("refund.updated", object, None)
    };
    let answer = refund(300).await;
    assert_eq!(
        answer["data"]["refundOrder"],
        json!({ "refundedMinor": 0, "refundPendingMinor": 300, "refundState": "PENDING" })
    );
    let request = app.stripe.requests().into_iter().find(|r| r.path == "/v1/refunds").unwrap();
    assert_eq!(request.param("amount"), Some("300"));
    assert!(request.idempotency_key.as_deref().unwrap().starts_with("venueql-refund-"));
    let event = confirm(0);
    app.deliver(&event).await;
    app.deliver(&event).await; // repeated delivery: no change
    let money = app.gql(&app.a.full, ORDER_MONEY, json!({ "id": order })).await;
    assert_eq!(money["data"]["order"]["refundedMinor"], 300);
    assert_eq!(money["data"]["order"]["refundState"], "PARTIAL");

    refund(300).await;
    // Confirmed through charge.refunded (cumulative amount) instead of refund.updated.
    let charge = json!({ "id": "ch_x", "object": "charge", "payment_intent": money["data"]["order"]["payment"]["paymentIntentId"], "amount_refunded": 600 });
    app.deliver(&local_stripe::event("charge.refunded", charge, None)).await;
    let money = app.gql(&app.a.full, ORDER_MONEY, json!({ "id": order })).await;
    assert_eq!(
        (money["data"]["order"]["refundedMinor"].clone(), money["data"]["order"]["refundPendingMinor"].clone()),
        (json!(600), json!(0))
    );

    let too_much = refund(451).await;
    assert_eq!(error_code(&too_much), "BAD_USER_INPUT", "{too_much}");
    assert!(too_much.to_string().contains("450"), "says what is left: {too_much}");
    refund(450).await;
    app.deliver(&confirm(2)).await;
    let money = app.gql(&app.a.full, ORDER_MONEY, json!({ "id": order })).await;
    assert_eq!(money["data"]["order"]["refundState"], "FULL");
    assert_eq!(money["data"]["order"]["status"], "REFUNDED");
    assert!(orders_at(&app, &app.a.full).await.is_empty(), "a refunded order leaves the queue");
    assert_eq!(app.audit_count(&app.a, "refund.requested").await, 3);
    assert_eq!(app.audit_count(&app.a, "order.refunded").await, 1);
    // The last refund fails at Stripe after all: the order is no longer fully refunded
    // and gets its kitchen status back.
    let mut failed = confirm(2);
    failed["data"]["object"]["status"] = json!("failed");
    failed["created"] = json!(failed["created"].as_i64().unwrap() + 10);
    app.deliver(&failed).await;
    let money = app.gql(&app.a.full, ORDER_MONEY, json!({ "id": order })).await;
    assert_eq!(money["data"]["order"]["status"], "PLACED", "{money}");
    assert_eq!(money["data"]["order"]["refundedMinor"], 600);
    assert_eq!(money["data"]["order"]["refundState"], "PARTIAL");
    assert_eq!(app.audit_count(&app.a, "order.refund_reversed").await, 1);
    let negative = refund(-5).await;
    assert_eq!(error_code(&negative), "BAD_USER_INPUT");
    assert!(app.stripe.violations().is_empty(), "{:?}", app.stripe.violations());
}

#[tokio::test]
async fn disputes_update_the_order_and_raise_critical_audit_events() {
    let app = TestApp::spawn().await;
    let (started, _) = app.place_order(&app.a, "alpha").await;
    let order = orders_at(&app, &app.a.full).await[0]["id"].clone();
    let dispute = |status: &str| {
        json!({ "id": "dp_1Test", "object": "dispute", "amount": 1050, "currency": "eur", "payment_intent": intent_of(&started),
                "charge": "ch_x", "reason": "fraudulent", "status": status })
    };
    app.deliver(&local_stripe::event("charge.dispute.created", dispute("needs_response"), None)).await;
    let money = app.gql(&app.a.full, ORDER_MONEY, json!({ "id": order })).await;
    assert_eq!(money["data"]["order"]["disputeStatus"], "needs_response");
    app.deliver(&local_stripe::event("charge.dispute.closed", dispute("won"), None)).await;
    let money = app.gql(&app.a.full, ORDER_MONEY, json!({ "id": order })).await;
    assert_eq!(money["data"]["order"]["disputeStatus"], "won");
    assert_eq!(app.audit_count(&app.a, "dispute.created").await, 1);
    assert_eq!(app.audit_count(&app.a, "dispute.closed").await, 1);
}

#[tokio::test]
async fn onboarding_creates_one_account_and_account_updated_keeps_it_current() {
    let app = TestApp::spawn().await;
    let onboard = "mutation { startStripeOnboarding(returnUrl: \"https://alpha.test/done\", refreshUrl: \"https://alpha.test/again\") { accountId url } }";
    let first = app.gql(&app.a.full, onboard, json!({})).await;
    let second = app.gql(&app.a.full, onboard, json!({})).await;
    let account = first["data"]["startStripeOnboarding"]["accountId"].as_str().unwrap().to_string();
    assert_eq!(second["data"]["startStripeOnboarding"]["accountId"], account.as_str(), "reused");
    assert!(first["data"]["startStripeOnboarding"]["url"].as_str().unwrap().contains(&account));
    let creates = app.stripe.requests().into_iter().filter(|r| r.path == "/v1/accounts").count();
    assert_eq!(creates, 1, "the account is created once");
    let created = app.stripe.requests().into_iter().find(|r| r.path == "/v1/accounts").unwrap();
    assert_eq!(created.param("type"), Some("express"));
    let view = "{ stripeAccount { accountId chargesEnabled payoutsEnabled detailsSubmitted requirementsDue } }";
    let state = app.gql(&app.a.full, view, json!({})).await;
    assert_eq!(state["data"]["stripeAccount"]["chargesEnabled"], false);
    assert!(!state["data"]["stripeAccount"]["requirementsDue"].as_array().unwrap().is_empty());

    let object = app
        .stripe
        .update(
            &account,
            json!({ "charges_enabled": true, "payouts_enabled": true, "details_submitted": true,
        "requirements": { "currently_due": [], "disabled_reason": null } }),
        )
        .unwrap();
    let newer = local_stripe::event("account.updated", object, Some(&account));
    let mut older = local_stripe::event("account.updated", app.stripe.object(&account).unwrap(), Some(&account));
    older["data"]["object"]["charges_enabled"] = json!(false);
    older["created"] = json!(newer["created"].as_i64().unwrap() - 60);
    for event in [&newer, &older] {
        let (status, answer) =
            app.deliver_signed("/webhooks/stripe/connect", crate::helpers::CONNECT_SECRET, event).await;
        assert_eq!(status.as_u16(), 200, "{answer}");
    }
    let state = app.gql(&app.a.full, view, json!({})).await;
    assert_eq!(
        state["data"]["stripeAccount"]["chargesEnabled"], true,
        "the older event arrived last and lost: {state}"
    );
    assert_eq!(state["data"]["stripeAccount"]["requirementsDue"], json!([]));
    assert_eq!(app.audit_count(&app.a, "stripe_account.created").await, 1);
    assert_eq!(app.audit_count(&app.a, "stripe_onboarding.link_created").await, 2, "every link is audited");
    // Now the venue takes payments.
    app.start_checkout("alpha", &[(app.a.item_ids[0], 1)]).await;
    let bad = app
        .gql(
            &app.a.full,
            "mutation { startStripeOnboarding(returnUrl: \"javascript:alert(1)\", refreshUrl: \"x\") { url } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT", "{bad}");
    assert!(app.stripe.violations().is_empty(), "{:?}", app.stripe.violations());
}

#[tokio::test]
async fn without_a_stripe_key_payment_operations_say_so() {
    let app = TestApp::spawn_with(|name| (name == "STRIPE_SECRET_KEY").then(String::new)).await;
    let response = app
        .gql(
            &app.a.full,
            "mutation { startStripeOnboarding(returnUrl: \"https://a.test\", refreshUrl: \"https://a.test\") { url } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&response), "UNAVAILABLE");
    assert!(response.to_string().contains("STRIPE_SECRET_KEY"), "{response}");
}

#[tokio::test]
async fn a_casual_sees_the_queue_but_not_history_refunds_or_payments() {
    let app = TestApp::spawn().await;
    app.place_order(&app.a, "alpha").await;
    let queue = orders_at(&app, &app.a.casual).await;
    assert_eq!(queue.len(), 1);
    let order = queue[0]["id"].clone();
    let advance = "mutation($id: ID!) { advanceOrder(id: $id, status: PREPARING) { status } }";
    let answer = app.gql(&app.a.casual, advance, json!({ "id": order })).await;
    assert_eq!(answer["data"]["advanceOrder"]["status"], "PREPARING", "{answer}");
    let refused = [
        "{ orders { edges { node { id } } } }",
        "{ ordersQueue { payment { paymentIntentId } } }",
        "{ ordersQueue { refundedMinor } }",
        "{ ordersQueue { refunds { id } } }",
        "{ stripeAccount { accountId } }",
    ];
    for query in refused {
        let response = app.gql(&app.a.casual, query, json!({})).await;
        assert_eq!(error_code(&response), "FORBIDDEN", "{query}: {response}");
        assert!(!response.to_string().contains("pi_"), "{query}: {response}");
    }
    let refund = app
        .gql(
            &app.a.casual,
            "mutation($id: ID!) { refundOrder(id: $id, amountMinor: 100) { id } }",
            json!({ "id": order }),
        )
        .await;
    assert_eq!(error_code(&refund), "FORBIDDEN");
}

#[tokio::test]
async fn orders_move_through_the_kitchen_only_by_valid_steps_and_are_audited() {
    let app = TestApp::spawn().await;
    app.place_order(&app.a, "alpha").await;
    let order = orders_at(&app, &app.a.full).await[0]["id"].clone();
    let app = &app;
    let step = |status: &'static str| {
        let query = format!("mutation($id: ID!) {{ advanceOrder(id: $id, status: {status}) {{ status }} }}");
        let order = order.clone();
        async move { app.gql(&app.a.full, &query, json!({ "id": order })).await }
    };
    let skipped = step("SERVED").await;
    assert_eq!(error_code(&skipped), "BAD_USER_INPUT", "{skipped}");
    assert!(skipped.to_string().contains("placed cannot become served"));
    for status in ["PREPARING", "READY", "SERVED"] {
        assert_eq!(step(status).await["data"]["advanceOrder"]["status"], status);
    }
    assert_eq!(error_code(&step("CANCELLED").await), "BAD_USER_INPUT", "served is final");
    assert_eq!(error_code(&step("REFUNDED").await), "BAD_USER_INPUT", "refunded comes only from Stripe");
    assert_eq!(app.audit_count(&app.a, "order.status_changed").await, 3);
    assert!(orders_at(app, &app.a.full).await.is_empty(), "served orders leave the queue");
    let history = app
        .gql(
            &app.a.full,
            "{ orders(first: 1) { edges { cursor node { number status } } pageInfo { hasNextPage endCursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(history["data"]["orders"]["edges"][0]["node"], json!({ "number": 1, "status": "SERVED" }));
}

#[tokio::test]
async fn history_pages_with_cursors_and_filters() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        app.place_order(&app.a, "alpha").await;
    }
    let page = |after: Option<String>| {
        let query = "query($after: String) { orders(first: 2, after: $after) { edges { cursor node { number } } pageInfo { hasNextPage endCursor } } }";
        app.gql(&app.a.full, query, json!({ "after": after }))
    };
    let mut numbers = Vec::new();
    let mut after = None;
    loop {
        let response = page(after.clone()).await;
        let orders = &response["data"]["orders"];
        numbers.extend(orders["edges"].as_array().unwrap().iter().map(|e| e["node"]["number"].as_i64().unwrap()));
        if orders["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = orders["pageInfo"]["endCursor"].as_str().map(str::to_string);
    }
    assert_eq!(numbers, vec![5, 4, 3, 2, 1]);
    let filtered = app
        .gql(&app.a.full, "{ orders(filter: { statuses: [SERVED] }) { edges { node { number } } } }", json!({}))
        .await;
    assert_eq!(filtered["data"]["orders"]["edges"], json!([]));
    let bad = app.gql(&app.a.full, "{ orders(after: \"bm9wZQ\") { edges { cursor } } }", json!({})).await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT");
    let big = app.gql(&app.a.full, "{ orders(first: 101) { edges { cursor } } }", json!({})).await;
    assert_eq!(error_code(&big), "BAD_USER_INPUT");
}

#[tokio::test]
async fn reconciliation_reports_a_paid_checkout_without_an_order_and_replay_recovers_it() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let started = app.start_checkout("alpha", &[(app.a.item_ids[0], 1)]).await;
    let lost = app.paid_event(&started); // paid at Stripe; the webhook never arrives
    let config = venueql::config::StripeConfig {
        secret_key: Some("sk_test_venueql_suite".to_string().into()),
        api_base: app.stripe.base().to_string(),
        checkout_expiry: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let payments = venueql::payments::Payments::from_config(&config);
    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    // The operator's command, then the server's periodic pass (same code).
    let (succeeded, report) = stripe_cli(&app, &["reconcile"]).await;
    assert!(!succeeded, "exit 1 when a paid PaymentIntent has no order: {report}");
    assert_eq!(report["paid_without_order"], json!([intent_of(&started)]));
    assert_eq!(app.audit_count(&app.a, "payment.without_order").await, 1);
    let again = venueql::payments::jobs::run_once(&db, &payments).await.unwrap();
    assert!(again.paid_without_order.is_empty(), "reported once");

    app.stripe.put(lost.clone());
    let (succeeded, replayed) = stripe_cli(&app, &["replay", lost["id"].as_str().unwrap()]).await;
    assert!(succeeded, "{replayed}");
    assert_eq!((replayed["applied"].clone(), replayed["outcome"].clone()), (json!(true), json!("order #1 placed")));
    let twice = venueql::payments::jobs::replay(&db, &payments, lost["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(twice, venueql::payments::intake::Ingested::Duplicate);
    assert_eq!(orders_at(&app, &app.a.full).await.len(), 1);
    let bad = venueql::payments::jobs::replay(&db, &payments, "evt_../../v1/accounts").await;
    assert_eq!(bad.unwrap_err().code(), "BAD_USER_INPUT");
    assert!(app.stripe.violations().is_empty(), "{:?}", app.stripe.violations());
}

/// Runs `venueql stripe ARGS` against this test's database and local Stripe.
async fn stripe_cli(app: &TestApp, args: &[&str]) -> (bool, Value) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_venueql"))
        .arg("stripe")
        .args(args)
        .env("DATABASE_URL", &app.urls.app)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
        .env("STRIPE_SECRET_KEY", "sk_test_venueql_suite")
        .env("STRIPE_API_BASE", app.stripe.base())
        .env("RECONCILE_AFTER_SECS", "0")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let json = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("venueql stripe {args:?}: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.success(), json)
}

#[tokio::test]
async fn unpaid_checkouts_expire_and_their_payment_intents_are_cancelled() {
    // Checkouts of this server expire at once.
    let app = TestApp::spawn_with(|name| (name == "CHECKOUT_EXPIRY_SECS").then(|| "0".to_string())).await;
    app.onboard(&app.a).await;
    let started = app.start_checkout("alpha", &[(app.a.item_ids[0], 1)]).await;
    let config = venueql::config::StripeConfig {
        secret_key: Some("sk_test_venueql_suite".to_string().into()),
        api_base: app.stripe.base().to_string(),
        checkout_expiry: std::time::Duration::ZERO,
        reconcile_after: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let payments = venueql::payments::Payments::from_config(&config);
    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    let report = venueql::payments::jobs::run_once(&db, &payments).await.unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    assert_eq!(checkout_status(&app, "alpha", &started).await["status"], "EXPIRED");
    assert_eq!(app.stripe.object(&intent_of(&started)).unwrap()["status"], "canceled");
    let cancel = app.stripe.requests().into_iter().find(|r| r.path.ends_with("/cancel")).unwrap();
    assert!(cancel.idempotency_key.unwrap().contains(started["checkoutId"].as_str().unwrap()));
}

#[tokio::test]
async fn the_queue_costs_the_same_number_of_statements_for_5_and_50_orders() {
    let app = TestApp::spawn().await;
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&mut superuser).await.unwrap();
    let statements_for_queue = |expected: usize| {
        let app = &app;
        async move {
            let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
            sqlx::query("SELECT pg_stat_statements_reset()").execute(&mut superuser).await.unwrap();
            let queue = orders_at(app, &app.a.full).await;
            assert_eq!(queue.len(), expected);
            assert!(queue.iter().all(|o| !o["items"].as_array().unwrap().is_empty()));
            let count: i64 = sqlx::query_scalar(&format!(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
                     WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                     AND r.rolname = 'venueql_app' AND {NOT_BACKGROUND}"
            ))
            .fetch_one(&mut superuser)
            .await
            .unwrap();
            count
        }
    };
    // The first ordersQueue of a venue also LISTENs to its channel (once per process):
    // done here, so that both counts are of the queue alone.
    assert!(orders_at(&app, &app.a.full).await.is_empty());
    for _ in 0..5 {
        app.place_order(&app.a, "alpha").await;
    }
    let five = statements_for_queue(5).await;
    for _ in 0..45 {
        app.place_order(&app.a, "alpha").await;
    }
    let fifty = statements_for_queue(50).await;
    assert!(five > 0, "statements were counted");
    assert_eq!(five, fifty, "statements for 5 orders: {five}, for 50: {fifty}");
    println!("ordersQueue with items: {fifty} SQL statements for 50 orders (auth and transaction included)");
}

/// Leaves out the statistics query itself and the statements of the server's background
/// workers (alert outbox, WORM exporter, rate-limit sync, mail outbox, payment jobs),
/// which run on the same role at their own pace and would make the counts flaky.
const NOT_BACKGROUND: &str = "s.query NOT LIKE '%pg_stat_statements%' AND s.query NOT LIKE '%plan_alerts%' \
     AND s.query NOT LIKE '%alert_deliver%' AND s.query NOT LIKE '%audit_export%' AND s.query NOT LIKE '%_instance(%' AND s.query NOT LIKE '%mail%' \
     AND s.query NOT LIKE '%open_venue_scan%' AND s.query NOT LIKE '%unsettled_payment_intents%'";

/// The statements the app role ran while `query` was answered.
async fn statements_for(app: &TestApp, query: &str) -> (i64, Value) {
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&mut superuser).await.unwrap();
    sqlx::query("SELECT pg_stat_statements_reset()").execute(&mut superuser).await.unwrap();
    let answer = app.gql(&app.a.full, query, json!({})).await;
    let count: i64 = sqlx::query_scalar(&format!(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
         WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND r.rolname = 'venueql_app' \
         AND {NOT_BACKGROUND}"
    ))
    .fetch_one(&mut superuser)
    .await
    .unwrap();
    (count, answer)
}

#[tokio::test]
async fn a_page_of_history_asking_for_every_field_costs_the_same_statements_for_5_and_20_orders() {
    let app = TestApp::spawn().await;
    let page = "{ orders(first: 20) { edges { cursor node { id number status amountMinor currency tableRef createdAt \
        updatedAt items { menuItemId name quantity unitPriceMinor note } allergenAlerts { itemName allergens } \
        refundedMinor refundPendingMinor refundState refunds { id stripeRefundId amountMinor status reason requestedBy createdAt } \
        payment { paymentIntentId chargeId amountMinor currency applicationFeeMinor } disputeStatus } } \
        pageInfo { hasNextPage endCursor } } }";
    let refund = "mutation($id: ID!) { refundOrder(id: $id, amountMinor: 50) { id } }";
    let place = |n: usize| {
        let app = &app;
        async move {
            for _ in 0..n {
                app.place_order(&app.a, "alpha").await;
                let newest = app.gql(&app.a.full, "{ orders(first: 1) { edges { node { id } } } }", json!({})).await;
                let id = newest["data"]["orders"]["edges"][0]["node"]["id"].clone();
                app.gql(&app.a.full, refund, json!({ "id": id })).await;
            }
        }
    };
    place(5).await;
    let (five, answer) = statements_for(&app, page).await;
    assert!(answer["errors"].is_null(), "{answer}");
    assert_eq!(answer["data"]["orders"]["edges"].as_array().unwrap().len(), 5);
    place(15).await;
    let (twenty, answer) = statements_for(&app, page).await;
    let edges = answer["data"]["orders"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 20);
    assert!(edges.iter().all(|e| e["node"]["refunds"].as_array().unwrap().len() == 1), "{answer}");
    assert!(five > 0);
    assert_eq!(five, twenty, "statements for a page of 5 orders: {five}, of 20: {twenty}");
}

#[tokio::test]
async fn the_thirty_thousand_transaction_document_is_refused_before_execution() {
    let app = TestApp::spawn().await;
    app.place_order(&app.a, "alpha").await;
    let aliases: Vec<String> =
        (0..30).map(|i| format!("a{i}: orders(first: 100) {{ edges {{ node {{ refunds {{ id }} }} }} }}")).collect();
    let document = format!("{{ {} }}", aliases.join(" "));
    let (count, answer) = statements_for(&app, &document).await;
    assert_eq!(error_code(&answer), "QUERY_LIMIT_EXCEEDED", "{answer}");
    assert!(answer["data"].is_null());
    assert!(count < 10, "refused before any resolver ran: {count} statements");
    let one = statements_for(&app, "{ orders(first: 100) { edges { node { refunds { id } } } } }").await.1;
    assert!(one["errors"].is_null(), "one honest page is fine: {one}");
}
