//! `ordersQueue` snapshots: a venue's queue is served from its last read only until the
//! venue's order notification arrives, the LISTEN connection drops, or the maximum age
//! passes. A change whose notification is "lost" is simulated by writing with triggers
//! off (`session_replication_role = replica`, superuser only): the test's stand-in for a
//! notification the listener never received.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{TestApp, TestVenue};

/// (number, status) of the venue's queue.
async fn queue(app: &TestApp, venue: &TestVenue) -> Vec<(i64, String)> {
    let response = app.gql(&venue.full, "{ ordersQueue { number status } }", json!({})).await;
    assert!(response["errors"].is_null(), "{response}");
    let orders = response["data"]["ordersQueue"].as_array().unwrap();
    orders.iter().map(|o| (o["number"].as_i64().unwrap(), o["status"].as_str().unwrap().to_string())).collect()
}

/// Polls the queue until `expected` (up to 5 s); returns what it showed last.
async fn queue_becomes(app: &TestApp, venue: &TestVenue, expected: &[(i64, &str)]) -> Vec<(i64, String)> {
    let expected: Vec<(i64, String)> = expected.iter().map(|(n, s)| (*n, s.to_string())).collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let shown = queue(app, venue).await;
        if shown == expected || Instant::now() > deadline {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sets order `number`'s status with triggers off: no notification is sent.
async fn change_without_notification(app: &TestApp, number: i64, status: &str) {
    let mut superuser = sqlx::PgConnection::connect(&app.superuser_url()).await.unwrap();
    sqlx::query("SET session_replication_role = replica").execute(&mut superuser).await.unwrap();
    let changed = sqlx::query("UPDATE orders SET status = $2 WHERE number = $1 AND venue_id = $3")
        .bind(number)
        .bind(status)
        .bind(app.a.id)
        .execute(&mut superuser)
        .await
        .unwrap();
    assert_eq!(changed.rows_affected(), 1);
}

/// Announces order `number` of venue A on its channel, as the orders trigger does.
async fn notify(app: &TestApp, number: i64) {
    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.a.venue_id()).await.unwrap();
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM orders WHERE number = $1").bind(number).fetch_one(tx.conn()).await.unwrap();
    let channel = venueql::orders::live::channel(app.a.venue_id());
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(id.to_string()).execute(tx.conn()).await.unwrap();
    tx.commit().await.unwrap();
}

fn placed(numbers: &[i64]) -> Vec<(i64, String)> {
    numbers.iter().map(|n| (*n, "PLACED".to_string())).collect()
}

#[tokio::test]
async fn the_queue_is_served_from_its_snapshot_until_the_venue_s_notification_arrives() {
    let app = TestApp::spawn().await;
    app.place_order(&app.a, "alpha").await;
    app.place_order(&app.b, "bravo").await;
    assert_eq!(queue(&app, &app.a).await, placed(&[1]));
    assert_eq!(queue(&app, &app.b).await, placed(&[1]));

    change_without_notification(&app, 1, "preparing").await;
    assert_eq!(queue(&app, &app.a).await, placed(&[1]), "served from the snapshot: no notification yet");

    // Another venue's notification leaves A's snapshot alone; A's own drops it.
    let db = venueql::tenancy::Db::new(app.app_pool.clone());
    let mut tx = db.venue_tx(app.b.venue_id()).await.unwrap();
    sqlx::query("SELECT pg_notify($1, 'x')")
        .bind(venueql::orders::live::channel(app.b.venue_id()))
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(queue(&app, &app.a).await, placed(&[1]));
    notify(&app, 1).await;
    assert_eq!(queue_becomes(&app, &app.a, &[(1, "PREPARING")]).await, [(1, "PREPARING".to_string())]);
    assert_eq!(queue(&app, &app.b).await, placed(&[1]), "B's queue is B's");

    // This server's own commits drop the snapshot themselves, before answering: with the
    // notification trigger off, nothing else can.
    let mut superuser = sqlx::PgConnection::connect(&app.superuser_url()).await.unwrap();
    sqlx::query("ALTER TABLE orders DISABLE TRIGGER orders_notify").execute(&mut superuser).await.unwrap();
    app.place_order(&app.a, "alpha").await;
    assert_eq!(queue(&app, &app.a).await, [(1, "PREPARING".to_string()), (2, "PLACED".to_string())]);
    let id = app.gql(&app.a.full, "{ ordersQueue { id } }", json!({})).await["data"]["ordersQueue"][1]["id"].clone();
    let advanced: Value = app
        .gql(
            &app.a.full,
            "mutation($id: ID!) { advanceOrder(id: $id, status: CANCELLED) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert!(advanced["errors"].is_null(), "{advanced}");
    assert_eq!(queue(&app, &app.a).await, [(1, "PREPARING".to_string())]);
}

#[tokio::test]
async fn a_lost_notification_is_outlived_by_the_maximum_age_only() {
    let app = TestApp::spawn_with(|name| (name == "QUEUE_SNAPSHOT_MAX_AGE_MS").then(|| "300".into())).await;
    app.place_order(&app.a, "alpha").await;
    assert_eq!(queue(&app, &app.a).await, placed(&[1]));
    change_without_notification(&app, 1, "ready").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(queue(&app, &app.a).await, [(1, "READY".to_string())], "older than 300 ms: read again");
}

#[tokio::test]
async fn losing_the_listen_connection_drops_every_snapshot_and_listening_resumes() {
    let app = TestApp::spawn().await;
    app.place_order(&app.a, "alpha").await;
    assert_eq!(queue(&app, &app.a).await, placed(&[1]));
    change_without_notification(&app, 1, "preparing").await;
    let mut superuser = sqlx::PgConnection::connect(&app.superuser_url()).await.unwrap();
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND usename = 'venueql_app' AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut superuser)
    .await
    .unwrap();
    assert_eq!(terminated, [true], "the server's one LISTEN connection");
    assert_eq!(queue_becomes(&app, &app.a, &[(1, "PREPARING")]).await, [(1, "PREPARING".to_string())]);

    // Once reconnected, the venue's channel is listened to again: snapshots are kept and
    // dropped by notifications as before.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        queue(&app, &app.a).await;
        change_without_notification(&app, 1, "ready").await;
        if queue(&app, &app.a).await == [(1, "PREPARING".to_string())] || Instant::now() > deadline {
            break;
        }
        change_without_notification(&app, 1, "preparing").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queue(&app, &app.a).await, [(1, "PREPARING".to_string())], "a snapshot is served again");
    notify(&app, 1).await;
    assert_eq!(queue_becomes(&app, &app.a, &[(1, "READY")]).await, [(1, "READY".to_string())]);
}
