//! Cross-tenant tests generated from the live schema: every root field of both schemas
//! must have a case here (a new field without one fails the suite), and each case is run
//! with venue B's credentials against venue A's ids.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};

/// One operation per staff root field, using A's ids through `$item` and `$category`.
const STAFF_CASES: &[(&str, &str)] = &[
    ("me", "query { me { venue { id slug name } person { id email } permissions actor } }"),
    ("venueSettings", "query { venueSettings { requireMfaForElevated } }"),
    (
        "updateVenueSettings",
        "mutation { updateVenueSettings(input: { requireMfaForElevated: true }) { requireMfaForElevated } }",
    ),
    (
        "beginTotpEnrollment",
        "mutation { beginTotpEnrollment(reauth: { password: \"Wrong-Password-1\" }) { secret otpauthUri } }",
    ),
    ("confirmTotpEnrollment", "mutation { confirmTotpEnrollment(code: \"123456\") }"),
    ("disableTotp", "mutation { disableTotp(reauth: { password: \"Wrong-Password-1\" }) }"),
    (
        "changePassword",
        "mutation { changePassword(currentPassword: \"Wrong-Password-1\", newPassword: \"Other-Password-12\") }",
    ),
    ("staff", "query { staff { id email permissions } }"),
    (
        "addStaff",
        "mutation { addStaff(input: { email: \"new@bravo.test\", permissions: [MENU_VIEW] }) { id email status } }",
    ),
    (
        "setStaffPermissions",
        "mutation($staff: ID!) { setStaffPermissions(staffId: $staff, permissions: [MENU_EDIT]) { id } }",
    ),
    ("removeStaff", "mutation($staff: ID!) { removeStaff(staffId: $staff) }"),
    ("setStaffPin", "mutation($staff: ID!) { setStaffPin(staffId: $staff, pin: \"4321\") }"),
    ("clearStaffPin", "mutation($staff: ID!) { clearStaffPin(staffId: $staff) }"),
    ("revokeInvitation", "mutation($invitation: ID!) { revokeInvitation(id: $invitation) }"),
    ("apiClients", "query { apiClients { id name permissions } }"),
    (
        "createApiClient",
        "mutation { createApiClient(input: { name: \"Planted\", kind: INTEGRATION }) { client { id } clientSecret } }",
    ),
    ("revokeApiClient", "mutation($client: ID!) { revokeApiClient(clientId: $client) }"),
    (
        "setApiClientOrigins",
        "mutation($spa: ID!) { setApiClientOrigins(clientId: $spa, allowedOrigins: [\"https://evil.example.com\"]) { id } }",
    ),
    ("mySessions", "query { mySessions { id clientId } }"),
    ("revokeSession", "mutation($grant: ID!) { revokeSession(id: $grant) }"),
    ("menu", "query { menu { categories { id name items { id name } } } }"),
    ("menuItem", "query($item: ID!) { menuItem(id: $item) { id name } }"),
    ("searchMenu", "query { searchMenu(text: \"alpha\") { id name } }"),
    ("taxRates", "query { taxRates { id name ratePpm } }"),
    ("createTaxRate", "mutation { createTaxRate(input: { name: \"Alpha VAT\", ratePpm: 200000 }) { id } }"),
    ("updateTaxRate", "mutation($taxRate: ID!) { updateTaxRate(id: $taxRate, input: { ratePpm: 0 }) { id ratePpm } }"),
    ("deleteTaxRate", "mutation($taxRate: ID!) { deleteTaxRate(id: $taxRate) }"),
    ("createMenuCategory", "mutation { createMenuCategory(input: { name: \"Alpha Drinks\" }) { id } }"),
    (
        "updateMenuCategory",
        "mutation($category: ID!) { updateMenuCategory(id: $category, input: { name: \"Stolen\" }) { id name } }",
    ),
    ("deleteMenuCategory", "mutation($category: ID!) { deleteMenuCategory(id: $category) }"),
    (
        "createMenuItem",
        "mutation($category: ID!) { createMenuItem(input: { categoryId: $category, name: \"Planted\", priceMinor: 1 }) { id } }",
    ),
    ("updateMenuItem", "mutation($item: ID!) { updateMenuItem(id: $item, input: { priceMinor: 1 }) { id } }"),
    ("deleteMenuItem", "mutation($item: ID!) { deleteMenuItem(id: $item) }"),
    ("ordersQueue", "query { ordersQueue { id number items { name } } }"),
    ("orders", "query { orders { edges { cursor node { id number } } } }"),
    (
        "auditEvents",
        "query { auditEvents(first: 50) { edges { cursor node { id actor action targetType targetId before after requestId } } } }",
    ),
    ("order", "query($order: ID!) { order(id: $order) { id number refundedMinor payment { paymentIntentId } } }"),
    ("advanceOrder", "mutation($order: ID!) { advanceOrder(id: $order, status: PREPARING) { id status } }"),
    ("refundOrder", "mutation($order: ID!) { refundOrder(id: $order, amountMinor: 100) { id } }"),
    ("stripeAccount", "query { stripeAccount { accountId chargesEnabled } }"),
    ("diners", "query { diners { id allergenProfile { allergens dietaryNotes } } }"),
    (
        "diner",
        "query($diner: ID!) { diner(id: $diner) { id allergenProfile { allergens } sharedAllergenProfile { allergens } } }",
    ),
    ("exportDiner", "mutation($diner: ID!) { exportDiner(id: $diner) }"),
    ("eraseDiner", "mutation($diner: ID!) { eraseDiner(id: $diner) }"),
    (
        "startStripeOnboarding",
        "mutation { startStripeOnboarding(returnUrl: \"https://b.test\", refreshUrl: \"https://b.test\") { accountId url } }",
    ),
];

/// Subscription fields, tested over `/graphql/ws` in `subscription.rs` (venue B receives
/// nothing of A; a token without ORDERS_QUEUE is refused; a revoked token is cut off).
const WEBSOCKET_CASES: &[&str] = &["ordersQueueChanged"];

/// Fields a queue-only token (ORDERS_QUEUE) may use.
const QUEUE_FIELDS: &[&str] = &["ordersQueue", "order", "advanceOrder"];

/// Staff root fields any valid credential may use (no permission bits).
const NO_BITS_NEEDED: &[&str] = &["me"];

/// One operation per diner root field.
const PUBLIC_CASES: &[(&str, &str)] = &[
    ("venue", "query { venue { slug name } }"),
    (
        "checkout",
        "query($checkout: ID!, $secret: String!) { checkout(id: $checkout, clientSecret: $secret) { id status orderNumber } }",
    ),
    (
        "startCheckout",
        "mutation($item: ID!) { startCheckout(input: { items: [{ menuItemId: $item, quantity: 1 }] }) { checkoutId amountMinor } }",
    ),
    ("menu", "query { menu { categories { id name items { id name } } } }"),
    ("searchMenu", "query { searchMenu(text: \"alpha\") { id name } }"),
    ("requestDinerCode", "mutation { requestDinerCode(email: \"alpha.diner@example.com\") }"),
    (
        "verifyDinerCode",
        "mutation { verifyDinerCode(email: \"alpha.diner@example.com\", code: \"123456\") { proof expiresAt } }",
    ),
];

async fn root_fields(app: &TestApp, path: &str, token: Option<&str>) -> BTreeSet<String> {
    let query = r#"{"query":"{ __schema { queryType { fields { name } } mutationType { fields { name } } subscriptionType { fields { name } } } }"}"#;
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (_, body) = app.post(path, &headers, query).await;
    ["queryType", "mutationType", "subscriptionType"]
        .iter()
        .flat_map(|t| body["data"]["__schema"][t]["fields"].as_array().cloned().unwrap_or_default())
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

fn assert_covered(live: BTreeSet<String>, cases: &[(&str, &str)], which: &str) {
    let websocket = WEBSOCKET_CASES.iter().filter(|name| live.contains(**name));
    let covered: BTreeSet<String> =
        cases.iter().map(|(name, _)| *name).chain(websocket.copied()).map(str::to_string).collect();
    let missing: Vec<&String> = live.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "{which} root fields without a cross-tenant case (add them to {which}_CASES): {missing:?}"
    );
    assert!(live.len() == covered.len(), "{which}_CASES names fields the schema does not have");
}

/// Venue A's paid order: (order id, checkout id, client secret, PaymentIntent id).
/// Dietary notes of venue A's diner: must never reach venue B.
const A_DINER_NOTES: &str = "alpha-only dietary secret";

async fn a_order(app: &TestApp) -> (String, String, String, String, String) {
    let items = json!([{ "menuItemId": app.a.item_ids[2], "quantity": 1 }]);
    let proof = app.diner_proof("alpha", "alpha.diner@example.com").await;
    let diner = json!({ "email": "alpha.diner@example.com", "allergens": ["CELERY"], "dietaryNotes": A_DINER_NOTES,
        "shareAllergenProfile": true, "proof": proof });
    let response = app
        .public_gql(
            "alpha",
            "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret } }",
            json!({ "input": { "items": items, "diner": diner } }),
        )
        .await;
    let started = response["data"]["startCheckout"].clone();
    let event = app.paid_event(&started);
    app.deliver(&event).await;
    let ids = app.gql(&app.a.full, "{ ordersQueue { id } diners { id } }", json!({})).await;
    (
        ids["data"]["ordersQueue"][0]["id"].as_str().unwrap().to_string(),
        started["checkoutId"].as_str().unwrap().to_string(),
        started["clientSecret"].as_str().unwrap().to_string(),
        event["data"]["object"]["id"].as_str().unwrap().to_string(),
        ids["data"]["diners"][0]["id"].as_str().unwrap().to_string(),
    )
}

/// Venue A's ids and secrets used by the cases.
struct AOrder {
    order: String,
    checkout: String,
    client_secret: String,
    payment_intent: String,
    account: String,
    diner: String,
    /// A pending invitation of venue A.
    invitation: String,
    /// Venue A's own SPA client (its origin is [`A_APP_ORIGIN`]).
    spa: String,
    /// Venue A's tax rate (named [`A_TAX_RATE`]).
    tax_rate: String,
}

/// The name of venue A's tax rate: never shown to venue B.
const A_TAX_RATE: &str = "Alpha-only VAT rate";

/// The web origin of venue A's own app and diner page: never shown to venue B.
const A_APP_ORIGIN: &str = "https://alpha-kitchen.example.com";

/// The email venue A invited: never shown to venue B.
const A_INVITED: &str = "invited.by.alpha@example.com";

/// Everything of venue A that must never appear in venue B's responses.
fn a_secrets(app: &TestApp, order: &AOrder) -> Vec<String> {
    let mut secrets = app.a.item_names.clone();
    secrets.extend(app.a.item_ids.iter().map(|id| id.to_string()));
    secrets.push(app.a.category_id.to_string());
    secrets.push(app.a.id.to_string());
    secrets.extend([app.a.staff_id.to_string(), app.a.client_id.clone(), app.a.grant_id.to_string()]);
    secrets.extend([
        order.order.clone(),
        order.checkout.clone(),
        order.client_secret.clone(),
        order.payment_intent.clone(),
        order.account.clone(),
        order.diner.clone(),
        A_DINER_NOTES.to_string(),
        order.invitation.clone(),
        A_INVITED.to_string(),
        order.spa.clone(),
        A_APP_ORIGIN.to_string(),
        order.tax_rate.clone(),
        A_TAX_RATE.to_string(),
    ]);
    secrets
}

fn variables(app: &TestApp, order: &AOrder) -> Value {
    json!({ "item": app.a.item_ids[0], "category": app.a.category_id, "staff": app.a.staff_id,
        "client": app.a.client_id, "grant": app.a.grant_id, "order": order.order,
        "checkout": order.checkout, "secret": order.client_secret, "diner": order.diner,
        "invitation": order.invitation, "spa": order.spa, "taxRate": order.tax_rate })
}

/// Venue A, onboarded at Stripe, with one paid order.
async fn with_a_order() -> (TestApp, AOrder) {
    a_order_on(TestApp::spawn().await).await
}

/// Onboards venue A of `app` and gives it one paid order, an invitation and an SPA client.
async fn a_order_on(app: TestApp) -> (TestApp, AOrder) {
    let account = app.onboard(&app.a).await;
    let (order, checkout, client_secret, payment_intent, diner) = a_order(&app).await;
    let invited = app.invite(&app.a.full, A_INVITED, &["MENU_VIEW"]).await;
    let invitation = invited["data"]["addStaff"]["id"].as_str().expect("A's invitation").to_string();
    let spa = app
        .gql(
            &app.a.full,
            "mutation($o: String!) { createApiClient(input: { name: \"Alpha kitchen\", kind: SPA, \
             redirectUris: [\"https://alpha-kitchen.example.com/\"], allowedOrigins: [$o] }) { client { id } } }",
            json!({ "o": A_APP_ORIGIN }),
        )
        .await;
    let spa = spa["data"]["createApiClient"]["client"]["id"].as_str().unwrap_or_else(|| panic!("{spa}")).to_string();
    let origins = app
        .gql(
            &app.a.full,
            "mutation($o: String!) { updateVenueSettings(input: { allowedOrigins: [$o] }) { allowedOrigins } }",
            json!({ "o": A_APP_ORIGIN }),
        )
        .await;
    assert_eq!(origins["data"]["updateVenueSettings"]["allowedOrigins"], json!([A_APP_ORIGIN]), "{origins}");
    let rate = app
        .gql(
            &app.a.full,
            "mutation($n: String!) { createTaxRate(input: { name: $n, ratePpm: 200000 }) { id } }",
            json!({ "n": A_TAX_RATE }),
        )
        .await;
    let tax_rate = rate["data"]["createTaxRate"]["id"].as_str().unwrap_or_else(|| panic!("{rate}")).to_string();
    (app, AOrder { order, checkout, client_secret, payment_intent, account, diner, invitation, spa, tax_rate })
}

async fn a_state(app: &TestApp) -> Vec<Value> {
    let mut states = Vec::new();
    for query in [
        "{ menu { categories { id name items { id name priceMinor } } } }",
        "{ venueSettings { requireMfaForElevated allowedOrigins } }",
        "{ apiClients { id kind redirectUris allowedOrigins } }",
        "{ ordersQueue { id status refundedMinor refundPendingMinor } }",
        "{ stripeAccount { accountId chargesEnabled } }",
        "{ diners { id allergenProfile { allergens dietaryNotes } sharedAllergenProfile { allergens } } }",
        "{ staff { id email status permissions } }",
        "{ taxRates { id name ratePpm } }",
    ] {
        states.push(app.gql(&app.a.full, query, json!({})).await);
    }
    states
}

#[tokio::test]
async fn venue_b_can_neither_see_nor_change_venue_a_through_any_staff_field() {
    let (app, order) = with_a_order().await;
    b_cannot_see_or_change_a(&app, &order).await;
}

/// The same attack with the server's pool behind PgBouncer in transaction pooling mode:
/// the venue setting is transaction-local, so a server connection PgBouncer hands from
/// one venue's transaction to the other's carries nothing across.
#[tokio::test]
async fn through_pgbouncer_venue_b_can_neither_see_nor_change_venue_a() {
    let (app, order) = a_order_on(TestApp::spawn_behind_pgbouncer().await).await;
    b_cannot_see_or_change_a(&app, &order).await;
}

/// Every staff field with venue B's token and venue A's ids: refused or harmless, no A
/// secret in any answer, A's state unchanged, no refund at Stripe.
async fn b_cannot_see_or_change_a(app: &TestApp, order: &AOrder) {
    assert_covered(root_fields(app, "/graphql", Some(&app.b.full)).await, STAFF_CASES, "STAFF");
    let before = a_state(app).await;
    for (field, operation) in STAFF_CASES {
        let response = app.gql(&app.b.full, operation, variables(app, order)).await;
        let text = response.to_string();
        for secret in a_secrets(app, order) {
            assert!(!text.contains(&secret), "{field}: venue B saw venue A's {secret:?}: {text}");
        }
        let data = &response["data"][field];
        let refused = ["NOT_FOUND", "FORBIDDEN"].contains(&error_code(&response));
        let harmless = data.is_null()
            || data.is_array()
            || data.get("categories").is_some()
            || data.get("id").is_some()
            || data.get("edges").is_some()
            || data.get("accountId").is_some()
            || data["venue"]["slug"] == "bravo"
            || data.get("requireMfaForElevated").is_some()
            || data.get("clientSecret").is_some();
        assert!(refused || harmless, "{field}: unexpected answer {text}");
        if operation.starts_with("mutation") && !refused {
            // A mutation that succeeded must have acted on B's own venue only.
            assert!(
                [
                    "createMenuCategory",
                    "createMenuItem",
                    "createTaxRate",
                    "updateVenueSettings",
                    "addStaff",
                    "createApiClient",
                    "startStripeOnboarding"
                ]
                .contains(field),
                "{field} succeeded across venues: {text}"
            );
        }
    }
    assert_eq!(before, a_state(app).await, "venue A changed under venue B's mutations");
    let b_settings = app.gql(&app.b.full, "{ venueSettings { requireMfaForElevated } }", json!({})).await;
    assert_eq!(b_settings["data"]["venueSettings"]["requireMfaForElevated"], true, "B's own update took effect");
    assert!(app.stripe.requests().iter().all(|r| r.path != "/v1/refunds"), "no refund reached Stripe");
}

#[tokio::test]
async fn a_token_without_the_needed_bits_is_refused_every_staff_field() {
    let (app, order) = with_a_order().await;
    for token in [&app.a.casual, &app.a.nothing] {
        for (field, operation) in STAFF_CASES.iter().filter(|(f, _)| !NO_BITS_NEEDED.contains(f)) {
            if token == &app.a.casual && QUEUE_FIELDS.contains(field) {
                continue;
            }
            let response = app.gql(token, operation, variables(&app, &order)).await;
            assert_eq!(error_code(&response), "FORBIDDEN", "{field}: {response}");
            assert!(response["data"].is_null() || response["data"][field].is_null(), "{field}: {response}");
        }
    }
}

#[tokio::test]
async fn no_mutation_of_either_endpoint_creates_an_order() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let order = AOrder {
        order: uuid::Uuid::new_v4().to_string(),
        checkout: uuid::Uuid::new_v4().to_string(),
        client_secret: "pi_x_secret_y".into(),
        payment_intent: "pi_x".into(),
        account: String::new(),
        diner: uuid::Uuid::new_v4().to_string(),
        invitation: uuid::Uuid::new_v4().to_string(),
        spa: "vqc_unknownunknownunknown".into(),
        tax_rate: uuid::Uuid::new_v4().to_string(),
    };
    for (_, operation) in STAFF_CASES.iter().filter(|(_, op)| op.starts_with("mutation")) {
        app.gql(&app.a.full, operation, variables(&app, &order)).await;
    }
    for (_, operation) in PUBLIC_CASES.iter().filter(|(_, op)| op.starts_with("mutation")) {
        app.public_gql("alpha", operation, variables(&app, &order)).await;
    }
    let queue = app.gql(&app.a.full, "{ ordersQueue { id } orders { edges { cursor } } }", json!({})).await;
    assert_eq!(queue["data"]["ordersQueue"], json!([]), "{queue}");
    assert_eq!(queue["data"]["orders"]["edges"], json!([]), "{queue}");
}

#[tokio::test]
async fn venue_bs_public_endpoint_never_shows_venue_a() {
    let (app, order) = with_a_order().await;
    app.onboard(&app.b).await;
    assert_covered(root_fields(&app, "/v/bravo/graphql", None).await, PUBLIC_CASES, "PUBLIC");
    for (field, operation) in PUBLIC_CASES {
        let response = app.public_gql("bravo", operation, variables(&app, &order)).await;
        let text = response.to_string();
        let allowed = match *field {
            // A's checkout and A's menu item do not exist at B.
            "checkout" => error_code(&response) == "NOT_FOUND",
            "startCheckout" => error_code(&response) == "BAD_USER_INPUT",
            // No code was sent at B: a guess proves nothing there.
            "verifyDinerCode" => error_code(&response) == "BAD_USER_INPUT",
            _ => response["errors"].is_null(),
        };
        assert!(allowed, "{field}: {text}");
        for secret in a_secrets(&app, &order) {
            assert!(!text.contains(&secret), "{field}: B's public endpoint shows A's {secret:?}");
        }
    }
    let own = app.public_gql("alpha", PUBLIC_CASES[1].1, variables(&app, &order)).await;
    assert_eq!(own["data"]["checkout"]["orderNumber"], 1, "the same query works at A: {own}");
}

#[tokio::test]
async fn the_public_endpoint_has_no_staff_fields_or_mutations() {
    let app = TestApp::spawn().await;
    let response = app.public_gql("alpha", "mutation { deleteMenuItem(id: \"x\") }", json!({})).await;
    assert_eq!(error_code(&response), "GRAPHQL_VALIDATION_FAILED", "{response}");
    let response = app.public_gql("alpha", "{ menuItem(id: \"x\") { id } }", json!({})).await;
    assert_eq!(error_code(&response), "GRAPHQL_VALIDATION_FAILED", "{response}");
}
