//! Direct SQL as the app role: the database itself keeps venues apart.

use sqlx::{Connection, PgConnection};

use crate::helpers::TestApp;
use venueql::tenancy::{Db, VENUE_SETTING};

/// Tenant tables the app role can read.
async fn readable_tenant_tables(conn: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'venue_id' \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relrowsecurity \
           AND has_table_privilege(current_user, c.oid, 'SELECT') ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// Sets the venue the way `VenueTx` does, on a raw connection the test controls.
async fn set_venue(conn: &mut PgConnection, venue: uuid::Uuid) {
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(VENUE_SETTING)
        .bind(venue.to_string())
        .execute(conn)
        .await
        .unwrap();
}

async fn count(conn: &mut PgConnection, table: &str, filter: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} {filter}")).fetch_one(conn).await.unwrap()
}

#[tokio::test]
async fn without_the_venue_setting_every_tenant_table_reads_as_empty() {
    let app = TestApp::spawn().await;
    let mut conn = PgConnection::connect(&app.urls.app).await.unwrap();
    let tables = readable_tenant_tables(&mut conn).await;
    assert!(tables.len() >= 5, "expected the tenant tables, got {tables:?}");
    for table in &tables {
        assert_eq!(count(&mut conn, table, "").await, 0, "{table} leaks rows without a venue");
    }
}

#[tokio::test]
async fn an_emptied_setting_on_a_reused_connection_still_matches_nothing() {
    let app = TestApp::spawn().await;
    let mut conn = PgConnection::connect(&app.urls.app).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    set_venue(&mut tx, app.a.id).await;
    assert!(count(&mut tx, "menu_items", "").await > 0);
    tx.commit().await.unwrap();
    // The setting now reads as '' (not NULL) on this connection.
    let setting: Option<String> =
        sqlx::query_scalar("SELECT current_setting($1, true)").bind(VENUE_SETTING).fetch_one(&mut conn).await.unwrap();
    assert_eq!(setting.as_deref(), Some(""));
    for table in readable_tenant_tables(&mut conn).await {
        assert_eq!(count(&mut conn, &table, "").await, 0, "{table} leaks rows with an empty setting");
    }
}

#[tokio::test]
async fn a_venue_scope_sees_only_that_venues_rows() {
    let app = TestApp::spawn().await;
    // Rows in every payment table at both venues: an order, a refund and a dispute each.
    for (venue, slug) in [(&app.a, "alpha"), (&app.b, "bravo")] {
        let (started, _) = app.place_order(venue, slug).await;
        let order = app.gql(&venue.full, "{ ordersQueue { id } }", serde_json::json!({})).await["data"]["ordersQueue"]
            [0]["id"]
            .clone();
        let refund = "mutation($id: ID!) { refundOrder(id: $id, amountMinor: 100) { id } }";
        app.gql(&venue.full, refund, serde_json::json!({ "id": order })).await;
        let intent = started["clientSecret"].as_str().unwrap().split("_secret_").next().unwrap();
        let dispute = serde_json::json!({ "id": format!("dp_{slug}"), "object": "dispute", "amount": 100, "currency": "eur",
            "payment_intent": intent, "charge": "ch_x", "reason": "general", "status": "needs_response" });
        app.deliver(&venueql::payments::local_stripe::event("charge.dispute.created", dispute, None)).await;
        // A diner (and so the venue's data key).
        let items = serde_json::json!([{ "menuItemId": venue.item_ids[0], "quantity": 1 }]);
        let diner = serde_json::json!({ "email": format!("diner@{slug}.test"), "allergens": ["EGGS"] });
        let checkout = app
            .public_gql(
                slug,
                "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId } }",
                serde_json::json!({ "input": { "items": items, "diner": diner } }),
            )
            .await;
        assert!(checkout["errors"].is_null(), "{checkout}");
        // An invitation.
        let invite = "mutation { addStaff(input: { email: \"new@example.com\", permissions: [MENU_VIEW] }) { id } }";
        let invited = app.gql(&venue.full, invite, serde_json::json!({})).await;
        assert!(invited["errors"].is_null(), "{invited}");
        // A tax rate.
        let rate = "mutation { createTaxRate(input: { name: \"VAT 20%\", ratePpm: 200000 }) { id } }";
        let created = app.gql(&venue.full, rate, serde_json::json!({})).await;
        assert!(created["errors"].is_null(), "{created}");
    }
    let db = Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let tables = readable_tenant_tables(tx.conn()).await;
    for table in &tables {
        let foreign = count(tx.conn(), table, &format!("WHERE venue_id <> '{}'", app.a.id)).await;
        assert_eq!(foreign, 0, "{table} shows another venue's rows");
        assert!(
            count(tx.conn(), table, "").await > 0
                || ["memberships", "oauth_grants", "venue_settings"].contains(&table.as_str()),
            "{table} shows nothing of A"
        );
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn writing_a_row_for_another_venue_is_refused_by_the_policy() {
    let app = TestApp::spawn().await;
    let db = Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let error = sqlx::query("INSERT INTO menu_categories (venue_id, name) VALUES ($1, 'Injected')")
        .bind(app.b.id)
        .execute(tx.conn())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("row-level security"), "{error}");
}

#[tokio::test]
async fn an_item_cannot_reference_another_venues_category() {
    let app = TestApp::spawn().await;
    let db = Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let error = sqlx::query(
        "INSERT INTO menu_items (venue_id, category_id, name, price_minor, currency) VALUES ($1, $2, 'Cross', 100, 'EUR')",
    )
    .bind(app.a.id)
    .bind(app.b.category_id)
    .execute(tx.conn())
    .await
    .unwrap_err();
    let constraint = error.as_database_error().and_then(|e| e.constraint().map(String::from));
    assert_eq!(constraint.as_deref(), Some("menu_items_category_fkey"), "{error}");
}

#[tokio::test]
async fn updates_and_deletes_of_another_venues_rows_touch_nothing() {
    let app = TestApp::spawn().await;
    let db = Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let updated = sqlx::query("UPDATE menu_items SET name = 'Hacked' WHERE id = $1")
        .bind(app.b.item_ids[0])
        .execute(tx.conn())
        .await
        .unwrap();
    let deleted =
        sqlx::query("DELETE FROM menu_items WHERE id = $1").bind(app.b.item_ids[1]).execute(tx.conn()).await.unwrap();
    assert_eq!((updated.rows_affected(), deleted.rows_affected()), (0, 0));
}

#[tokio::test]
async fn the_private_schema_is_not_readable_by_the_app_role() {
    let app = TestApp::spawn().await;
    let mut conn = PgConnection::connect(&app.urls.app).await.unwrap();
    for table in ["private.api_token_hashes", "private.staff_passwords"] {
        let error = sqlx::query(&format!("SELECT * FROM {table}")).execute(&mut conn).await.unwrap_err();
        assert!(error.to_string().contains("permission denied"), "{table}: {error}");
    }
    let error = sqlx::query("SELECT * FROM staff").execute(&mut conn).await.unwrap_err();
    assert!(error.to_string().contains("permission denied"), "{error}");
}

#[tokio::test]
async fn audit_events_reject_update_delete_and_truncate_even_for_a_superuser() {
    let app = TestApp::spawn().await;
    // The app role lacks the privileges; the superuser (who bypasses RLS and privileges)
    // is stopped by the append-only triggers.
    for (who, url, refusal) in
        [("app", app.urls.app.clone(), "permission denied"), ("superuser", app.superuser_url(), "append-only")]
    {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        for statement in
            ["UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events CASCADE"]
        {
            let mut tx = conn.begin().await.unwrap();
            set_venue(&mut tx, app.a.id).await;
            let error = sqlx::query(statement).execute(&mut *tx).await.expect_err(statement).to_string();
            assert!(error.contains(refusal), "{who}: {statement} was not refused as expected: {error}");
        }
    }
    assert_eq!(app.audit_count(&app.a, "venue.created").await, 1);
}

#[tokio::test]
async fn audit_verify_detects_an_edit_made_by_a_superuser() {
    let app = TestApp::spawn().await;
    let actor = "operator:test";
    let reports = venueql::audit::verify_all(&app.door, actor, None).await.unwrap();
    assert!(reports.iter().all(|r| r.problems.is_empty() && r.events > 0), "{reports:?}");

    let mut superuser = PgConnection::connect(&app.superuser_url()).await.unwrap();
    sqlx::raw_sql(
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete; \
         UPDATE audit_events SET actor = 'operator:someone-else' WHERE seq = 2 AND venue_id = (SELECT id FROM venues WHERE slug = 'alpha'); \
         ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_no_update_delete;",
    )
    .execute(&mut superuser)
    .await
    .unwrap();
    let reports = venueql::audit::verify_all(&app.door, actor, None).await.unwrap();
    let alpha = reports.iter().find(|r| r.venue == "alpha").unwrap();
    assert_eq!(alpha.problems, vec!["event 2: content does not match its hash (edited)".to_string()]);
    assert!(reports.iter().find(|r| r.venue == "bravo").unwrap().problems.is_empty());
}

#[tokio::test]
async fn the_cross_tenant_door_records_every_opening_with_its_reason() {
    let app = TestApp::spawn().await;
    let mut conn = PgConnection::connect(&app.urls.platform).await.unwrap();
    // The server's own jobs record their venue scans here too: count this actor's rows.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM platform_audit_events WHERE actor = 'operator:test'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let tx = app.door.open_cross_tenant("operator:test", "checking the door").await.unwrap();
    tx.commit().await.unwrap();
    let (after, reason): (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM platform_audit_events WHERE actor = 'operator:test'), \
                (SELECT reason FROM platform_audit_events WHERE actor = 'operator:test' ORDER BY id DESC LIMIT 1)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((after, reason.as_str()), (before + 1, "checking the door"));
    let error = app.door.open_cross_tenant("operator:test", "").await.err().expect("an empty reason is refused");
    assert!(error.to_string().contains("platform_audit_reason_present"), "{error}");
}
