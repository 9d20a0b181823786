//! Diner data protection: only ciphertext and keyed hashes in the database, ciphertexts
//! bound to their row and venue, key rotation while requests run, crypto-shredding, the
//! consent gate, permissions on health data, and nothing personal in logs.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TEST_APP_KEY, TestApp, TestVenue, error_code};
use venueql::crypto::{Key, MasterKeys};
use venueql::tenancy::Db;

const EMAIL: &str = "Pea.Nut+allergy@Example.com";
const NOTES: &str = "carries an adrenaline pen; xyzzy-marker";

const DINER_QUERY: &str = "query($id: ID!) { diner(id: $id) { id orderCount allergenProfile { allergens dietaryNotes } sharedAllergenProfile { allergens dietaryNotes } } }";

/// Checks out at `slug` with diner details and pays; returns the order's queue entry. A
/// diner marked `"verified": true` proves their email first (code by mail).
async fn order_with_diner(app: &TestApp, venue: &TestVenue, slug: &str, mut diner: Value) -> Value {
    if app.stripe.requests().iter().all(|r| r.param("metadata[venue_id]") != Some(&venue.id.to_string())) {
        app.onboard(venue).await;
    }
    if diner.as_object_mut().unwrap().remove("verified") == Some(json!(true)) {
        let email = diner["email"].as_str().unwrap().to_string();
        diner["proof"] = json!(app.diner_proof(slug, &email).await);
    }
    // Espresso (no allergens) and the peanut toast.
    let items =
        json!([{ "menuItemId": venue.item_ids[0], "quantity": 1 }, { "menuItemId": venue.item_ids[2], "quantity": 1 }]);
    let response = app
        .public_gql(
            slug,
            "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret amountMinor } }",
            json!({ "input": { "items": items, "diner": diner } }),
        )
        .await;
    assert!(response["errors"].is_null(), "{response}");
    let started = response["data"]["startCheckout"].clone();
    app.deliver(&app.paid_event(&started)).await;
    started
}

async fn diner_ids(app: &TestApp, venue: &TestVenue) -> Vec<String> {
    let response = app.gql(&venue.full, "{ diners { id } }", json!({})).await;
    response["data"]["diners"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect()
}

/// The peanut diner; sharing (or withdrawing) needs a verified email, so such a diner
/// proves it.
fn peanut_diner(share: Option<bool>) -> Value {
    let mut diner = json!({ "email": EMAIL, "allergens": ["PEANUTS", "MILK"], "dietaryNotes": NOTES });
    if let Some(share) = share {
        diner["shareAllergenProfile"] = json!(share);
        diner["verified"] = json!(true);
    }
    diner
}

#[tokio::test]
async fn the_queue_flags_the_peanut_item_for_allergen_viewers_only_and_the_database_holds_only_ciphertext() {
    let app = TestApp::spawn().await;
    order_with_diner(&app, &app.a, "alpha", peanut_diner(None)).await;
    let queue = "{ ordersQueue { number items { name } allergenAlerts { itemName allergens } } }";
    let full = app.gql(&app.a.full, queue, json!({})).await;
    assert_eq!(
        full["data"]["ordersQueue"][0]["allergenAlerts"],
        json!([{ "itemName": "Alpha Peanut Toast", "allergens": ["PEANUTS"] }]),
        "{full}"
    );
    let casual = app.gql(&app.a.casual, queue, json!({})).await;
    assert!(casual["errors"].is_null(), "{casual}");
    assert_eq!(casual["data"]["ordersQueue"][0]["allergenAlerts"], Value::Null, "no flag for the casual token");

    // Everything stored about the diner, read as the superuser: no plaintext anywhere.
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let dump: Vec<(String,)> = sqlx::query_as(
        "SELECT row_to_json(t)::text FROM (SELECT * FROM diners) t \
         UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM checkouts) t \
         UNION ALL SELECT row_to_json(t)::text FROM (SELECT id, diner_id, lines FROM orders) t \
         UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM audit_events) t \
         UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM private.diner_identities) t",
    )
    .fetch_all(&mut superuser)
    .await
    .unwrap();
    let text = dump.iter().map(|(t,)| t.as_str()).collect::<Vec<_>>().join("\n").to_lowercase();
    for secret in ["pea.nut", "example.com", "xyzzy", "adrenaline"] {
        assert!(!text.contains(secret), "{secret:?} is stored in plain text");
    }
    let (allergens, notes): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT allergens, dietary_notes FROM diners").fetch_one(&mut superuser).await.unwrap();
    for (bytes, plain) in [(&allergens, "PEANUTS"), (&notes, "xyzzy")] {
        assert_eq!(bytes[0], 1, "versioned format");
        assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()), "{plain} in the ciphertext bytes");
    }
}

#[tokio::test]
async fn allergens_need_diner_allergens_view_and_diners_need_diners_view() {
    let app = TestApp::spawn().await;
    order_with_diner(&app, &app.a, "alpha", peanut_diner(None)).await;
    let id = diner_ids(&app, &app.a).await[0].clone();
    let full = app.gql(&app.a.full, DINER_QUERY, json!({ "id": id })).await;
    assert_eq!(
        full["data"]["diner"]["allergenProfile"],
        json!({ "allergens": ["PEANUTS", "MILK"], "dietaryNotes": NOTES }),
        "{full}"
    );
    assert_eq!(full["data"]["diner"]["orderCount"], 1);
    let viewer = venueql::admin::issue_token(
        &app.door,
        "operator:test",
        "alpha",
        "diners-only",
        venueql::access::Permissions::DINERS_VIEW,
    )
    .await
    .unwrap();
    let seen = app.gql(&viewer.token, DINER_QUERY, json!({ "id": id })).await;
    assert!(seen["errors"].is_null(), "{seen}");
    assert_eq!(seen["data"]["diner"]["allergenProfile"], Value::Null, "no allergens without DINER_ALLERGENS_VIEW");
    assert!(!seen.to_string().contains("PEANUTS") && !seen.to_string().contains("xyzzy"));
    let casual = app.gql(&app.a.casual, DINER_QUERY, json!({ "id": id })).await;
    assert_eq!(error_code(&casual), "FORBIDDEN");
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_or_venue_fails_to_decrypt_clearly() {
    let app = TestApp::spawn().await;
    order_with_diner(&app, &app.a, "alpha", peanut_diner(None)).await;
    let mut other = peanut_diner(None);
    other["email"] = json!("someone.else@example.com");
    other["allergens"] = json!(["FISH"]);
    order_with_diner(&app, &app.a, "alpha", other.clone()).await;
    order_with_diner(&app, &app.b, "bravo", other).await;
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let a_diners: Vec<(Uuid, Vec<u8>)> =
        sqlx::query_as("SELECT id, allergens FROM diners WHERE venue_id = $1 ORDER BY created_at")
            .bind(app.a.id)
            .fetch_all(&mut superuser)
            .await
            .unwrap();
    let (b_diner, _): (Uuid, Vec<u8>) = sqlx::query_as("SELECT id, allergens FROM diners WHERE venue_id = $1")
        .bind(app.b.id)
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    // The peanut diner's ciphertext copied onto the other diner of A, and onto B's diner.
    for (venue_id, target) in [(app.a.id, a_diners[1].0), (app.b.id, b_diner)] {
        sqlx::query("UPDATE diners SET allergens = $1 WHERE venue_id = $2 AND id = $3")
            .bind(&a_diners[0].1)
            .bind(venue_id)
            .bind(target)
            .execute(&mut superuser)
            .await
            .unwrap();
    }
    for (token, id) in [(&app.a.full, a_diners[1].0), (&app.b.full, b_diner)] {
        let response = app.gql(token, DINER_QUERY, json!({ "id": id })).await;
        assert_eq!(error_code(&response), "DATA_UNREADABLE", "{response}");
        let message = response["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("does not belong here"), "{message}");
        assert!(!response.to_string().contains("PEANUTS"), "never the other diner's data: {response}");
    }
    let untouched = app.gql(&app.a.full, DINER_QUERY, json!({ "id": a_diners[0].0 })).await;
    assert!(untouched["errors"].is_null(), "{untouched}");
}

#[tokio::test]
async fn consent_shares_the_profile_across_venues_until_it_is_withdrawn() {
    let app: &'static TestApp = Box::leak(Box::new(TestApp::spawn().await));
    // Absent consent: B's record of the diner shows no shared profile.
    order_with_diner(app, &app.a, "alpha", peanut_diner(None)).await;
    order_with_diner(app, &app.b, "bravo", json!({ "email": EMAIL, "verified": true })).await;
    let at_b = diner_ids(app, &app.b).await[0].clone();
    let shared = |app: &'static TestApp, id: &str| {
        let id = id.to_string();
        async move {
            app.gql(&app.b.full, DINER_QUERY, json!({ "id": id })).await["data"]["diner"]["sharedAllergenProfile"]
                .clone()
        }
    };
    assert_eq!(shared(app, &at_b).await, Value::Null, "no consent given yet");
    // Consent given at A: B sees the profile.
    order_with_diner(app, &app.a, "alpha", peanut_diner(Some(true))).await;
    let profile = shared(app, &at_b).await;
    assert_eq!(profile["allergens"], json!(["PEANUTS", "MILK"]), "{profile}");
    assert_eq!(profile["dietaryNotes"], NOTES);
    // Withdrawn at A: gone for B at once.
    order_with_diner(app, &app.a, "alpha", peanut_diner(Some(false))).await;
    assert_eq!(shared(app, &at_b).await, Value::Null, "consent withdrawn");

    // The gate is in the database: a venue without this diner gets nothing even when
    // consent stands and it asks the function directly.
    order_with_diner(app, &app.a, "alpha", peanut_diner(Some(true))).await;
    let db = Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.b.venue_id()).await.unwrap();
    let identity: Vec<u8> = sqlx::query_scalar("SELECT identity_hash FROM diners").fetch_one(tx.conn()).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM private.shared_diner_profile($1)")
        .bind(&identity)
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(seen, 1, "B has this diner and consent stands");
    tx.commit().await.unwrap();
    let third = venueql::admin::create_venue(&app.door, "operator:test", "charlie", "Charlie", "EUR").await.unwrap();
    let mut tx = db.venue_tx(third.venue_id()).await.unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM private.shared_diner_profile($1)")
        .bind(&identity)
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(seen, 0, "a venue that never served the diner sees nothing");
    let withdrew: bool = sqlx::query_scalar("SELECT private.withdraw_diner_profile($1)")
        .bind(&identity)
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert!(!withdrew, "and cannot withdraw someone else's consent");
    tx.commit().await.unwrap();
    assert_eq!(shared(app, &at_b).await["allergens"], json!(["PEANUTS", "MILK"]), "still shared");
}

#[tokio::test]
async fn an_unpaid_anonymous_checkout_can_neither_read_the_shared_profile_nor_lower_allergens() {
    let app = TestApp::spawn().await;
    // The real diner: paid at A, sharing their profile.
    order_with_diner(&app, &app.a, "alpha", peanut_diner(Some(true))).await;
    let checkout = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId } }";
    let unpaid = |slug: &'static str, item: Uuid, diner: Value| {
        let app = &app;
        async move {
            let items = json!([{ "menuItemId": item, "quantity": 1 }]);
            let response = app.public_gql(slug, checkout, json!({ "input": { "items": items, "diner": diner } })).await;
            assert!(response["errors"].is_null(), "{response}");
        }
    };
    // Someone who knows the email, at venue B, without paying: B learns nothing.
    app.onboard(&app.b).await;
    let items = json!([{ "menuItemId": app.b.item_ids[0], "quantity": 1 }]);
    let withdraw = json!({ "email": EMAIL, "shareAllergenProfile": false });
    let refused = app.public_gql("bravo", checkout, json!({ "input": { "items": items, "diner": withdraw } })).await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "consent changes need a verified email: {refused}");
    unpaid("bravo", app.b.item_ids[0], json!({ "email": EMAIL })).await;
    let at_b = diner_ids(&app, &app.b).await[0].clone();
    let seen = app.gql(&app.b.full, DINER_QUERY, json!({ "id": at_b })).await;
    assert_eq!(seen["data"]["diner"]["sharedAllergenProfile"], Value::Null, "{seen}");
    // ...and the unpaid "stop sharing" changed nothing.
    let at_a = diner_ids(&app, &app.a).await[0].clone();
    let own = app.gql(&app.a.full, DINER_QUERY, json!({ "id": at_a })).await;
    assert_eq!(own["data"]["diner"]["sharedAllergenProfile"]["allergens"], json!(["PEANUTS", "MILK"]), "{own}");
    // At A, a checkout claiming no allergens and other notes does not lower what A holds:
    // the order in the kitchen still warns about peanuts.
    unpaid("alpha", app.a.item_ids[0], json!({ "email": EMAIL, "allergens": [], "dietaryNotes": "nothing at all" }))
        .await;
    let own = app.gql(&app.a.full, DINER_QUERY, json!({ "id": at_a })).await;
    assert_eq!(
        own["data"]["diner"]["allergenProfile"],
        json!({ "allergens": ["PEANUTS", "MILK"], "dietaryNotes": NOTES })
    );
    let queue = app.gql(&app.a.full, "{ ordersQueue { allergenAlerts { itemName allergens } } }", json!({})).await;
    assert_eq!(
        queue["data"]["ordersQueue"][0]["allergenAlerts"],
        json!([{ "itemName": "Alpha Peanut Toast", "allergens": ["PEANUTS"] }])
    );
    // A new allergen is added, though: more caution is always safe.
    unpaid("alpha", app.a.item_ids[0], json!({ "email": EMAIL, "allergens": ["SESAME"] })).await;
    let own = app.gql(&app.a.full, DINER_QUERY, json!({ "id": at_a })).await;
    assert_eq!(own["data"]["diner"]["allergenProfile"]["allergens"], json!(["PEANUTS", "MILK", "SESAME"]));
}

#[tokio::test]
async fn venue_rekeying_while_requests_run_loses_nothing() {
    let app = TestApp::spawn().await;
    for n in 0..30 {
        let mut diner = peanut_diner(None);
        diner["email"] = json!(format!("diner{n}@example.com"));
        order_with_diner(&app, &app.a, "alpha", diner).await;
    }
    let current = Key::from_bytes(decode(TEST_APP_KEY));
    let master = MasterKeys::new(current, vec![]);
    let ids = diner_ids(&app, &app.a).await;
    assert_eq!(ids.len(), 30);
    // Readers and new checkouts keep going while the venue is re-keyed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, app_ref) = (stop.clone(), &app);
        async move {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = app_ref
                    .gql(
                        &app_ref.a.full,
                        "{ diners { allergenProfile { allergens } } ordersQueue { allergenAlerts { itemName } } }",
                        json!({}),
                    )
                    .await;
                assert!(response["errors"].is_null(), "a read failed during rotation: {response}");
                reads += 1;
            }
            reads
        }
    };
    let rotation = async {
        let result = venueql::diners::rotate_venue_key(&app.door, "operator:test", &master, app.a.venue_id()).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    };
    let (reads, rotated) = tokio::join!(reader, rotation);
    let (version, rows) = rotated.unwrap();
    assert_eq!(version, 2);
    assert_eq!(rows, 30, "every row re-encrypted");
    assert!(reads > 0);
    let response = app.gql(&app.a.full, "{ diners { allergenProfile { allergens dietaryNotes } } }", json!({})).await;
    let profiles = response["data"]["diners"].as_array().unwrap();
    assert!(profiles.iter().all(|d| d["allergenProfile"]["allergens"] == json!(["PEANUTS", "MILK"])), "{response}");
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let old: i64 = sqlx::query_scalar("SELECT count(*) FROM diners WHERE get_byte(allergens, 4) <> 2")
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    assert_eq!(old, 0, "no row left under the old key");
}

#[tokio::test]
async fn master_rotation_while_requests_run_loses_nothing() {
    use base64::Engine;
    // The deployment before: keys wrapped by OLD. The servers now run with the new
    // APP_KEY and OLD in APP_PREVIOUS_KEYS; then the operator re-wraps.
    let old = [3u8; 32];
    let old_b64 = base64::engine::general_purpose::STANDARD.encode(old);
    let previous = old_b64.clone();
    let app = TestApp::spawn_with(move |name| (name == "APP_PREVIOUS_KEYS").then(|| previous.clone())).await;
    let before = MasterKeys::new(Key::from_bytes(old), vec![]);
    let db = Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    venueql::keys::active_key(&mut tx, &before).await.unwrap();
    venueql::keys::platform_key(tx.conn(), &before, None).await.unwrap();
    tx.commit().await.unwrap();
    for n in 0..10 {
        let mut diner = peanut_diner(Some(true));
        diner["email"] = json!(format!("rotating{n}@example.com"));
        order_with_diner(&app, &app.a, "alpha", diner).await;
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reader = async {
        let mut reads = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
            let query = "{ diners { allergenProfile { allergens } sharedAllergenProfile { allergens } } ordersQueue { allergenAlerts { itemName } } }";
            let response = app.gql(&app.a.full, query, json!({})).await;
            assert!(response["errors"].is_null(), "a read failed during the master rotation: {response}");
            reads += 1;
        }
        reads
    };
    let rotation = async {
        let now = MasterKeys::new(Key::from_bytes(decode(TEST_APP_KEY)), vec![Key::from_bytes(old)]);
        let result = venueql::keys::rotate_master(&app.door, "operator:test", &now).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    };
    let (reads, rewrapped) = tokio::join!(reader, rotation);
    assert!(rewrapped.unwrap() >= 2, "the venue key and the platform key were re-wrapped");
    assert!(reads > 0);
    // The old master can be forgotten: the new one alone opens everything.
    let only_new = MasterKeys::new(Key::from_bytes(decode(TEST_APP_KEY)), vec![]);
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    assert!(venueql::keys::venue_keys(&mut tx, &before).await.is_err(), "the old master no longer opens them");
    let keys = venueql::keys::venue_keys(&mut tx, &only_new).await.unwrap();
    let diners = venueql::diners::list(&mut tx, 100, None).await.unwrap();
    assert_eq!(diners.len(), 10);
    for diner in &diners {
        assert_eq!(venueql::diners::open(&keys, app.a.venue_id(), diner).unwrap().allergens.len(), 2);
        let shared = venueql::diners::shared_profile(&mut tx, &only_new, diner).await.unwrap();
        assert_eq!(shared.unwrap().allergens.len(), 2);
    }
}

fn decode(b64: &str) -> [u8; 32] {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap().try_into().unwrap()
}

#[tokio::test]
async fn an_offboarded_venues_diner_data_cannot_be_read_and_the_shredding_is_audited() {
    let app = TestApp::spawn().await;
    order_with_diner(&app, &app.a, "alpha", peanut_diner(None)).await;
    let id = diner_ids(&app, &app.a).await[0].clone();
    let destroyed = venueql::admin::offboard_venue(&app.door, "operator:test", "alpha").await.unwrap();
    assert_eq!(destroyed, 1);
    let response = app.gql(&app.a.full, DINER_QUERY, json!({ "id": id })).await;
    assert_eq!(error_code(&response), "DATA_UNREADABLE", "{response}");
    assert!(response["errors"][0]["message"].as_str().unwrap().contains("destroyed"), "{response}");
    assert_eq!(app.audit_count(&app.a, "venue.offboarded").await, 1);
    // Nor can new diner data be written under a fresh key.
    let items = json!([{ "menuItemId": app.a.item_ids[0], "quantity": 1 }]);
    let refused = app
        .public_gql(
            "alpha",
            "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId } }",
            json!({ "input": { "items": items, "diner": peanut_diner(None) } }),
        )
        .await;
    assert_eq!(error_code(&refused), "DATA_UNREADABLE", "{refused}");
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let wrapped: i64 =
        sqlx::query_scalar("SELECT count(*) FROM venue_data_keys WHERE venue_id = $1 AND wrapped IS NOT NULL")
            .bind(app.a.id)
            .fetch_one(&mut superuser)
            .await
            .unwrap();
    assert_eq!(wrapped, 0, "no wrapped key is left");
}

#[tokio::test]
async fn export_and_erasure_are_audited_and_erasure_removes_the_diner() {
    let app = TestApp::spawn().await;
    order_with_diner(&app, &app.a, "alpha", peanut_diner(Some(true))).await;
    let id = diner_ids(&app, &app.a).await[0].clone();
    let export = app.gql(&app.a.full, "mutation($id: ID!) { exportDiner(id: $id) }", json!({ "id": id })).await;
    let document: Value = serde_json::from_str(export["data"]["exportDiner"].as_str().unwrap()).unwrap();
    assert_eq!(document["diner"]["allergens"], json!(["PEANUTS", "MILK"]));
    assert_eq!(document["diner"]["dietary_notes"], NOTES);
    assert_eq!(document["orders"][0]["number"], 1);
    assert_eq!(document["shared_allergen_profile"]["allergens"], json!(["PEANUTS", "MILK"]));
    let refused = app.gql(&app.a.casual, "mutation($id: ID!) { eraseDiner(id: $id) }", json!({ "id": id })).await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    let erased = app.gql(&app.a.full, "mutation($id: ID!) { eraseDiner(id: $id) }", json!({ "id": id })).await;
    assert_eq!(erased["data"]["eraseDiner"], true, "{erased}");
    assert!(diner_ids(&app, &app.a).await.is_empty());
    let queue = app.gql(&app.a.full, "{ ordersQueue { number allergenAlerts { itemName } } }", json!({})).await;
    assert_eq!(queue["data"]["ordersQueue"][0]["allergenAlerts"], json!([]), "the order stays, unlinked: {queue}");
    assert_eq!(app.audit_count(&app.a, "diner.exported").await, 1);
    assert_eq!(app.audit_count(&app.a, "diner.erased").await, 1);
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let profiles: i64 =
        sqlx::query_scalar("SELECT count(*) FROM private.diner_profiles").fetch_one(&mut superuser).await.unwrap();
    assert_eq!(profiles, 0, "the shared profile went with the erasure");
}

#[tokio::test]
async fn bad_diner_details_are_refused_without_echoing_them() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let items = json!([{ "menuItemId": app.a.item_ids[0], "quantity": 1 }]);
    for (diner, says) in [
        (json!({ "email": "not-an-address-xyzzy" }), "email"),
        (json!({ "phone": "0871234567-xyzzy" }), "E.164"),
        (json!({ "email": "a@example.com", "phone": "+35312345678" }), "exactly one"),
        (json!({ "allergens": ["PEANUTS"] }), "exactly one"),
        (json!({ "email": "a@example.com", "dietaryNotes": "x".repeat(501) }), "500"),
    ] {
        let response = app
            .public_gql(
                "alpha",
                "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId } }",
                json!({ "input": { "items": items, "diner": diner } }),
            )
            .await;
        assert_eq!(error_code(&response), "BAD_USER_INPUT", "{response}");
        let message = response["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(!message.contains("xyzzy"), "the error repeats the identifier: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_and_health_data_never_reach_logs_or_error_reports() {
    use crate::helpers::{KillOnDrop, PLATFORM_SECRET, TEST_IDENTITY_KEY, free_port};
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let (sentry_port, received) = crate::sentry::fake_sentry().await;
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("venueql-diner-log-{}.txt", Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_venueql"))
        .arg("serve")
        .env("DATABASE_URL", &app.urls.app)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("APP_KEY", TEST_APP_KEY)
        .env("IDENTITY_HMAC_KEY", TEST_IDENTITY_KEY)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
        .env("STRIPE_SECRET_KEY", "sk_test_venueql_suite")
        .env("STRIPE_API_BASE", app.stripe.base())
        .env("STRIPE_WEBHOOK_SECRET", PLATFORM_SECRET)
        .env("SENTRY_DSN", format!("http://publickey@127.0.0.1:{sentry_port}/42"))
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .map(KillOnDrop)
        .expect("start venueql serve");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "venueql serve did not start");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut request = client.post(format!("{base}{path}")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().json::<Value>().await.unwrap_or(Value::Null) }
    };
    let email = "Secret.Diner.Marker@Example.org";
    let notes = "notes-marker-qwertz";
    let items = json!([{ "menuItemId": app.a.item_ids[2], "quantity": 1 }]);
    let checkout = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret } }";
    let proof = app.diner_proof("alpha", email).await;
    let diner = json!({ "email": email, "allergens": ["SESAME", "PEANUTS"], "dietaryNotes": notes, "shareAllergenProfile": true,
        "proof": proof });
    let started = post(
        "/v/alpha/graphql",
        None,
        json!({ "query": checkout, "variables": { "input": { "items": items, "diner": diner } } }),
    )
    .await;
    let started = started["data"]["startCheckout"].clone();
    let event = app.paid_event(&started);
    let body = event.to_string();
    let signature = venueql::payments::signature::sign(
        body.as_bytes(),
        &secrecy::SecretString::from(PLATFORM_SECRET.to_string()),
        chrono::Utc::now().timestamp(),
    );
    let paid = client
        .post(format!("{base}/webhooks/stripe"))
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let seen = post("/graphql", Some(&app.a.full), json!({ "query": "{ ordersQueue { allergenAlerts { allergens } } diners { id allergenProfile { dietaryNotes } } }" })).await;
    assert_eq!(seen["data"]["diners"][0]["allergenProfile"]["dietaryNotes"], notes, "{seen}");
    let id = seen["data"]["diners"][0]["id"].clone();
    post(
        "/graphql",
        Some(&app.a.full),
        json!({ "query": "mutation($id: ID!) { exportDiner(id: $id) }", "variables": { "id": id } }),
    )
    .await;
    let bad = json!({ "email": format!("{email}@@"), "allergens": ["SESAME"], "dietaryNotes": notes });
    post(
        "/v/alpha/graphql",
        None,
        json!({ "query": checkout, "variables": { "input": { "items": items, "diner": bad } } }),
    )
    .await;
    // An internal error while diner data is being handled reaches Sentry.
    let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&app.urls.owner).await.unwrap();
    sqlx::query("ALTER TABLE diners RENAME COLUMN dietary_notes TO dietary_notes_gone")
        .execute(&mut owner)
        .await
        .unwrap();
    let failed = post(
        "/v/alpha/graphql",
        None,
        json!({ "query": checkout, "variables": { "input": { "items": items, "diner": diner } } }),
    )
    .await;
    assert_eq!(error_code(&failed), "INTERNAL", "{failed}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !received.lock().unwrap().iter().any(|b| b.contains("\"exception\"")) {
        assert!(std::time::Instant::now() < deadline, "no error report reached the fake Sentry");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(server.terminate(), "venueql serve did not exit cleanly");
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.lines().count() > 20, "debug logs were captured: {} lines", logs.lines().count());
    let reports = received.lock().unwrap().join("\n");
    for (what, text) in [("logs", logs.to_lowercase()), ("error reports", reports.to_lowercase())] {
        for secret in ["secret.diner.marker", "example.org", "notes-marker-qwertz", "sesame"] {
            assert!(!text.contains(secret), "{secret:?} appears in the {what}");
        }
    }
}

#[tokio::test]
async fn a_paid_but_unverified_email_neither_reads_nor_changes_anyone_s_shared_profile() {
    let app = TestApp::spawn().await;
    // The real diner shares their profile from A, having proved their email there.
    order_with_diner(&app, &app.a, "alpha", peanut_diner(Some(true))).await;
    // Venue B (or anyone) pays €0.50-ish with the same email, without the code.
    order_with_diner(&app, &app.b, "bravo", json!({ "email": EMAIL, "allergens": ["PEANUTS"] })).await;
    let at_b = diner_ids(&app, &app.b).await[0].clone();
    let seen = app.gql(&app.b.full, DINER_QUERY, json!({ "id": at_b })).await;
    assert_eq!(seen["data"]["diner"]["sharedAllergenProfile"], Value::Null, "B cannot read it: {seen}");
    assert_eq!(
        seen["data"]["diner"]["allergenProfile"]["allergens"],
        json!(["PEANUTS"]),
        "what was said at B stays at B"
    );
    let queue = app.gql(&app.b.full, "{ ordersQueue { allergenAlerts { itemName allergens } } }", json!({})).await;
    assert_eq!(
        queue["data"]["ordersQueue"][0]["allergenAlerts"],
        json!([{ "itemName": "Bravo Peanut Toast", "allergens": ["PEANUTS"] }]),
        "the unverified statement still reaches this order's kitchen: {queue}"
    );
    // B erasing its diner (or a proof from A) cannot touch the shared profile.
    let erased = app.gql(&app.b.full, "mutation($id: ID!) { eraseDiner(id: $id) }", json!({ "id": at_b })).await;
    assert_eq!(erased["data"]["eraseDiner"], true, "{erased}");
    let proof_at_a = app.diner_proof("alpha", EMAIL).await;
    let items = json!([{ "menuItemId": app.b.item_ids[0], "quantity": 1 }]);
    let replayed = json!({ "email": EMAIL, "shareAllergenProfile": false, "proof": proof_at_a });
    let checkout = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId } }";
    let refused = app.public_gql("bravo", checkout, json!({ "input": { "items": items, "diner": replayed } })).await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "a proof holds only at its venue: {refused}");
    let overwrite = json!({ "email": EMAIL, "allergens": ["EGGS"], "shareAllergenProfile": true });
    let refused = app.public_gql("bravo", checkout, json!({ "input": { "items": items, "diner": overwrite } })).await;
    assert_eq!(error_code(&refused), "BAD_USER_INPUT", "no overwrite without the code: {refused}");
    let at_a = diner_ids(&app, &app.a).await[0].clone();
    let own = app.gql(&app.a.full, DINER_QUERY, json!({ "id": at_a })).await;
    assert_eq!(own["data"]["diner"]["sharedAllergenProfile"]["allergens"], json!(["PEANUTS", "MILK"]), "{own}");

    // Codes: wrong ones count, five tries per code, and the right one then fails too.
    app.public_gql("alpha", "mutation($e: String!) { requestDinerCode(email: $e) }", json!({ "e": "try@example.com" }))
        .await;
    let verify = "mutation($c: String!) { verifyDinerCode(email: \"try@example.com\", code: $c) { proof } }";
    for _ in 0..5 {
        let wrong = app.public_gql("alpha", verify, json!({ "c": "000000" })).await;
        assert!(matches!(error_code(&wrong), "BAD_USER_INPUT" | "RATE_LIMITED"), "{wrong}");
    }
    let (_, body) = app.mail.wait_for("try@example.com").await.text();
    let code = body.split("Your code is ").nth(1).unwrap()[..6].to_string();
    let late = app.public_gql("alpha", verify, json!({ "c": code })).await;
    assert!(late["data"].is_null(), "a code tried five times is spent: {late}");
}
