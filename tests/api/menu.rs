//! The menu through the real server: queries, mutations, their audit rows, bad input.

use serde_json::json;

use crate::helpers::{TestApp, error_code};

/// An audit row as the menu tests read it.
#[derive(sqlx::FromRow)]
struct AuditRow {
    action: String,
    actor: String,
    request_id: Option<String>,
    ip: Option<String>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

const MENU: &str = "{ menu { categories { id name items { id name priceMinor currency allergens available } } } }";

#[tokio::test]
async fn a_full_token_reads_the_whole_menu_including_unavailable_items() {
    let app = TestApp::spawn().await;
    let response = app.gql(&app.a.full, MENU, json!({})).await;
    let categories = response["data"]["menu"]["categories"].as_array().unwrap();
    let names: Vec<&str> =
        categories.iter().flat_map(|c| c["items"].as_array().unwrap()).map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Alpha Espresso", "Alpha Latte", "Alpha Peanut Toast", "Alpha Secret Soup"]);
    let latte = &categories[0]["items"][1];
    assert_eq!(latte["priceMinor"], 380);
    assert_eq!(latte["currency"], "EUR");
    assert_eq!(latte["allergens"], json!(["MILK"]));
}

#[tokio::test]
async fn the_public_menu_shows_only_available_items_of_that_venue() {
    let app = TestApp::spawn().await;
    let response =
        app.public_gql("alpha", "{ venue { slug name } menu { categories { name items { name } } } }", json!({})).await;
    let text = response.to_string();
    assert!(text.contains("Alpha Peanut Toast") && !text.contains("Alpha Secret Soup"), "{text}");
    assert!(!text.contains("Bravo"), "{text}");
    assert_eq!(response["data"]["venue"]["slug"], "alpha");
}

#[tokio::test]
async fn an_unknown_slug_is_not_found() {
    let app = TestApp::spawn().await;
    let (status, body) = app.post("/v/nowhere/graphql", &[], r#"{"query":"{ menu { categories { name } } }"}"#).await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "NOT_FOUND");
}

#[tokio::test]
async fn search_matches_word_prefixes_within_the_venue() {
    let app = TestApp::spawn().await;
    let query = "query($t: String!) { searchMenu(text: $t) { name } }";
    let found = app.gql(&app.a.full, query, json!({ "t": "pean" })).await;
    assert_eq!(found["data"]["searchMenu"], json!([{ "name": "Alpha Peanut Toast" }]));
    let found = app.gql(&app.a.full, query, json!({ "t": "milk coff" })).await;
    assert_eq!(found["data"]["searchMenu"], json!([{ "name": "Alpha Latte" }]));
    let public = app.public_gql("alpha", query, json!({ "t": "soup" })).await;
    assert_eq!(public["data"]["searchMenu"], json!([]), "unavailable items are not public");
    let bad = app.gql(&app.a.full, query, json!({ "t": " &|! " })).await;
    assert_eq!(error_code(&bad), "BAD_USER_INPUT");
}

#[tokio::test]
async fn creating_updating_and_deleting_items_writes_audit_rows_with_actor_and_request() {
    let app = TestApp::spawn().await;
    let create = "mutation($c: ID!) { createMenuItem(input: { categoryId: $c, name: \"Alpha Mocha\", priceMinor: 450, allergens: [MILK, SOYBEANS] }) { id name priceMinor currency allergens available } }";
    let created = app.gql(&app.a.full, create, json!({ "c": app.a.category_id })).await;
    let item = &created["data"]["createMenuItem"];
    assert_eq!(item["currency"], "EUR");
    assert_eq!(item["allergens"], json!(["MILK", "SOYBEANS"]));
    let id = item["id"].as_str().unwrap().to_string();

    let update = "mutation($id: ID!) { updateMenuItem(id: $id, input: { priceMinor: 475, available: false }) { priceMinor available name } }";
    let updated = app.gql(&app.a.full, update, json!({ "id": id })).await;
    assert_eq!(
        updated["data"]["updateMenuItem"],
        json!({ "priceMinor": 475, "available": false, "name": "Alpha Mocha" })
    );

    let deleted = app.gql(&app.a.full, "mutation($id: ID!) { deleteMenuItem(id: $id) }", json!({ "id": id })).await;
    assert_eq!(deleted["data"]["deleteMenuItem"], id);

    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT action, actor, request_id, host(ip) AS ip, before, after FROM audit_events WHERE target_id = $1 ORDER BY seq",
    )
    .bind(&id)
    .fetch_all(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["menu_item.created", "menu_item.updated", "menu_item.deleted"]);
    for AuditRow { actor, request_id, ip, .. } in &rows {
        assert_eq!(actor, &format!("api_token:{}", app.a.full_id));
        assert!(request_id.as_deref().is_some_and(|r| !r.is_empty()));
        assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(rows[1].before.as_ref().unwrap()["price_minor"], 450);
    assert_eq!(rows[1].after.as_ref().unwrap()["price_minor"], 475);
    assert!(rows[2].after.is_none());
}

#[tokio::test]
async fn categories_can_be_created_renamed_and_deleted_once_empty() {
    let app = TestApp::spawn().await;
    let created = app.gql(&app.a.full, "mutation { createMenuCategory(input: { name: \"Alpha Desserts\", position: 5 }) { id name position items { id } } }", json!({})).await;
    let id = created["data"]["createMenuCategory"]["id"].as_str().unwrap().to_string();
    let renamed = app
        .gql(
            &app.a.full,
            "mutation($id: ID!) { updateMenuCategory(id: $id, input: { name: \"Alpha Sweets\" }) { name position } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(renamed["data"]["updateMenuCategory"], json!({ "name": "Alpha Sweets", "position": 5 }));
    let full = app
        .gql(&app.a.full, "mutation($id: ID!) { deleteMenuCategory(id: $id) }", json!({ "id": app.a.category_id }))
        .await;
    assert_eq!(error_code(&full), "BAD_USER_INPUT");
    assert!(full["errors"][0]["message"].as_str().unwrap().contains("still has 2 item(s)"), "{full}");
    let empty = app.gql(&app.a.full, "mutation($id: ID!) { deleteMenuCategory(id: $id) }", json!({ "id": id })).await;
    assert_eq!(empty["data"]["deleteMenuCategory"], id);
    assert_eq!(app.audit_count(&app.a, "menu_category.deleted").await, 1);
    let duplicate = app
        .gql(&app.a.full, "mutation { createMenuCategory(input: { name: \"Alpha Drinks\" }) { id } }", json!({}))
        .await;
    assert_eq!(error_code(&duplicate), "BAD_USER_INPUT");
    assert_eq!(duplicate["errors"][0]["message"], "a menu category with this name already exists");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let before = app.gql(&app.a.full, MENU, json!({})).await;
    let audit_before = app.audit_count(&app.a, "menu_item.created").await;
    let cases = [
        (
            "createMenuItem(input: { categoryId: $c, name: \"X\", priceMinor: -1 }) { id }",
            "priceMinor must be between 0 and 100000000",
        ),
        (
            "createMenuItem(input: { categoryId: $c, name: \"X\", priceMinor: 100000001 }) { id }",
            "priceMinor must be between 0 and 100000000",
        ),
        (
            "createMenuItem(input: { categoryId: $c, name: \"  \", priceMinor: 100 }) { id }",
            "name must be 1 to 200 characters",
        ),
        (
            "createMenuItem(input: { categoryId: \"not-a-uuid\", name: \"X\", priceMinor: 100 }) { id }",
            "categoryId is not a valid id",
        ),
        ("updateMenuItem(id: \"42\", input: { name: \"X\" }) { id }", "id is not a valid id"),
        (
            "createMenuItem(input: { categoryId: \"00000000-0000-0000-0000-000000000000\", name: \"X\", priceMinor: 1 }) { id }",
            "menu category not found",
        ),
    ];
    for (mutation, message) in cases {
        let query = if mutation.contains("$c") {
            format!("mutation($c: ID!) {{ {mutation} }}")
        } else {
            format!("mutation {{ {mutation} }}")
        };
        let variables = if mutation.contains("$c") { json!({ "c": app.a.category_id }) } else { json!({}) };
        let response = app.gql(&app.a.full, &query, variables).await;
        let got = response["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(got.starts_with(message), "{mutation}: {response}");
        assert!(matches!(error_code(&response), "BAD_USER_INPUT" | "NOT_FOUND"), "{response}");
    }
    let wrong_enum = app.gql(&app.a.full, "mutation($c: ID!) { createMenuItem(input: { categoryId: $c, name: \"X\", priceMinor: 1, allergens: [GLUTEN] }) { id } }", json!({ "c": app.a.category_id })).await;
    assert_eq!(error_code(&wrong_enum), "BAD_USER_INPUT", "{wrong_enum}");
    assert!(
        wrong_enum["errors"][0]["message"].as_str().unwrap().contains("allergens"),
        "names the argument: {wrong_enum}"
    );
    assert_eq!(app.gql(&app.a.full, MENU, json!({})).await, before);
    assert_eq!(app.audit_count(&app.a, "menu_item.created").await, audit_before);
}

#[tokio::test]
async fn tax_rates_are_created_changed_listed_and_deleted_with_audit_rows_and_clear_refusals() {
    let app = TestApp::spawn().await;
    let create =
        "mutation($n: String, $r: Int) { createTaxRate(input: { name: $n, ratePpm: $r }) { id name ratePpm } }";
    let standard = app.gql(&app.a.full, create, json!({ "n": "VAT 20%", "r": 200_000 })).await;
    let standard = &standard["data"]["createTaxRate"];
    assert_eq!((standard["name"].as_str(), standard["ratePpm"].as_i64()), (Some("VAT 20%"), Some(200_000)));
    let reduced = app.gql(&app.a.full, create, json!({ "n": "Sales tax", "r": 88_750 })).await;
    let reduced_id = reduced["data"]["createTaxRate"]["id"].as_str().unwrap().to_string();
    for (vars, says) in [
        (json!({ "n": "VAT 20%", "r": 100_000 }), "already has a tax rate with this name"),
        (json!({ "n": "Odd", "r": 1_000_001 }), "ratePpm must be between 0 and 1000000"),
        (json!({ "n": "Odd", "r": -1 }), "ratePpm must be between 0 and 1000000"),
        (json!({ "n": "  ", "r": 5 }), "name must be 1 to 80 characters"),
        (json!({ "n": "No rate" }), "ratePpm is required"),
    ] {
        let refused = app.gql(&app.a.full, create, vars).await;
        assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
        assert!(refused.to_string().contains(says), "{refused}");
    }
    let update =
        "mutation($id: ID!) { updateTaxRate(id: $id, input: { name: \"NY sales tax 8.875%\" }) { name ratePpm } }";
    let updated = app.gql(&app.a.full, update, json!({ "id": reduced_id })).await;
    assert_eq!(updated["data"]["updateTaxRate"], json!({ "name": "NY sales tax 8.875%", "ratePpm": 88_750 }));
    let listed = app.gql(&app.a.full, "{ taxRates { name ratePpm } }", json!({})).await;
    assert_eq!(
        listed["data"]["taxRates"],
        json!([{ "name": "NY sales tax 8.875%", "ratePpm": 88_750 }, { "name": "VAT 20%", "ratePpm": 200_000 }])
    );
    // The venue's tax settings: mode, default rate (of this venue only), tax number.
    let standard_id = standard["id"].as_str().unwrap().to_string();
    let settings = "mutation($input: UpdateVenueSettingsInput!) { updateVenueSettings(input: $input) { taxMode defaultTaxRateId taxId } }";
    let set = json!({ "input": { "taxMode": "EXCLUSIVE", "defaultTaxRateId": standard_id, "taxId": " GB123456789 " } });
    let saved = app.gql(&app.a.full, settings, set).await;
    assert_eq!(
        saved["data"]["updateVenueSettings"],
        json!({ "taxMode": "EXCLUSIVE", "defaultTaxRateId": standard_id, "taxId": "GB123456789" })
    );
    let in_use =
        app.gql(&app.a.full, "mutation($id: ID!) { deleteTaxRate(id: $id) }", json!({ "id": standard_id })).await;
    assert_eq!(error_code(&in_use), "BAD_USER_INPUT", "{in_use}");
    assert!(in_use.to_string().contains("in use"), "{in_use}");
    // Venue B naming A's rate gets the answer an unknown id gets, and changes nothing.
    for id in [standard_id.clone(), uuid::Uuid::new_v4().to_string()] {
        let foreign = app.gql(&app.b.full, settings, json!({ "input": { "defaultTaxRateId": id } })).await;
        assert_eq!(error_code(&foreign), "NOT_FOUND", "{foreign}");
        assert_eq!(foreign["errors"][0]["message"], "tax rate (defaultTaxRateId) not found");
    }
    // Service charge (taxed at a rate of this venue) and tips.
    let service = "mutation($input: UpdateVenueSettingsInput!) { updateVenueSettings(input: $input) { serviceChargePpm serviceChargeTaxRateId tipsEnabled tipPresetsPpm } }";
    let set = json!({ "input": { "serviceChargePpm": 125_000, "serviceChargeTaxRateId": standard_id, "tipsEnabled": true,
        "tipPresetsPpm": [100_000, 125_000, 150_000] } });
    let saved = app.gql(&app.a.full, service, set).await;
    assert_eq!(
        saved["data"]["updateVenueSettings"],
        json!({ "serviceChargePpm": 125_000, "serviceChargeTaxRateId": standard_id, "tipsEnabled": true,
            "tipPresetsPpm": [100_000, 125_000, 150_000] }),
        "{saved}"
    );
    for (input, says) in [
        (json!({ "serviceChargePpm": 1_000_001 }), "serviceChargePpm must be between 0 and 1000000"),
        (json!({ "tipPresetsPpm": [0] }), "tipPresetsPpm holds at most 5 presets"),
        (json!({ "tipPresetsPpm": [1, 2, 3, 4, 5, 6] }), "tipPresetsPpm holds at most 5 presets"),
    ] {
        let refused = app.gql(&app.a.full, service, json!({ "input": input })).await;
        assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{refused}");
        assert!(refused.to_string().contains(says), "{refused}");
    }
    let foreign = app.gql(&app.b.full, service, json!({ "input": { "serviceChargeTaxRateId": standard_id } })).await;
    assert_eq!(error_code(&foreign), "NOT_FOUND", "{foreign}");
    let untaxed = json!({ "input": { "clearServiceChargeTaxRate": true } });
    assert_eq!(
        app.gql(&app.a.full, service, untaxed).await["data"]["updateVenueSettings"]["serviceChargeTaxRateId"],
        serde_json::Value::Null
    );
    let cleared =
        app.gql(&app.a.full, settings, json!({ "input": { "clearDefaultTaxRate": true, "taxId": "" } })).await;
    assert_eq!(cleared["data"]["updateVenueSettings"]["defaultTaxRateId"], serde_json::Value::Null, "{cleared}");
    assert_eq!(cleared["data"]["updateVenueSettings"]["taxId"], serde_json::Value::Null, "{cleared}");
    let casual = app.gql(&app.a.casual, create, json!({ "n": "Sneaky", "r": 1 })).await;
    assert_eq!(error_code(&casual), "FORBIDDEN", "{casual}");
    let deleted =
        app.gql(&app.a.full, "mutation($id: ID!) { deleteTaxRate(id: $id) }", json!({ "id": reduced_id })).await;
    assert_eq!(deleted["data"]["deleteTaxRate"], reduced_id.as_str());
    let again =
        app.gql(&app.a.full, "mutation($id: ID!) { deleteTaxRate(id: $id) }", json!({ "id": reduced_id })).await;
    assert_eq!(error_code(&again), "NOT_FOUND", "{again}");
    for (action, count) in [("tax_rate.created", 2), ("tax_rate.updated", 1), ("tax_rate.deleted", 1)] {
        assert_eq!(app.audit_count(&app.a, action).await, count, "{action}");
    }
}
