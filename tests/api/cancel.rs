//! Requests cut off at random moments (a client hanging up mid-request) must never leave
//! a pooled connection inside a transaction: no backend `idle in transaction`, no
//! "transaction in progress" warning from PostgreSQL, and nothing written outside a
//! transaction (lockout counts) lost to a later ROLLBACK.

use std::time::Duration;

use futures_util::StreamExt;

use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_requests_cut_off_at_random_moments_leave_no_connection_in_a_transaction() {
    let app = TestApp::spawn().await;
    let menu =
        serde_json::json!({ "query": "{ menu { categories { name items { name priceMinor } } } me { actor } }" });
    let storm = futures_util::stream::iter(0..2000u64)
        .map(|i| {
            let (app, menu) = (&app, menu.clone());
            async move {
                // A cut-off time spread over the whole life of a request (begin, queries, commit).
                let cut = Duration::from_micros((i * 7919) % 9000);
                let request = app.client.post(format!("{}/graphql", app.base)).bearer_auth(&app.a.full).json(&menu);
                let _ = request.timeout(cut.max(Duration::from_micros(50))).send().await;
            }
        })
        .buffer_unordered(32);
    let failures = futures_util::stream::iter(0..40)
        .map(|i| {
            let app = &app;
            async move {
                let response = app
                    .client
                    .post(format!("{}/oauth/token", app.base))
                    .form(&[("grant_type", "client_credentials")])
                    .basic_auth(format!("vqc_storm{i:04}xxxxxxxxxxxxxx"), Some("vqcs_wrong"))
                    .send()
                    .await
                    .unwrap();
                assert!(matches!(response.status().as_u16(), 401 | 429), "{}", response.status());
            }
        })
        .buffer_unordered(4);
    tokio::join!(storm.collect::<Vec<()>>(), failures.collect::<Vec<()>>());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The superuser reads what the app role cannot: other sessions and the private schema.
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let stuck: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = 'venueql_app' \
         AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&mut superuser)
    .await
    .unwrap();
    assert_eq!(stuck, 0, "pooled connections left idle in a transaction");
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM private.auth_failures WHERE kind = 'client_secret'")
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    assert_eq!(counted, 40, "every failed attempt of the storm is still counted");
    let log = std::fs::read_to_string(crate::helpers::cluster_log()).unwrap();
    let marker = format!("db={} ", app.database);
    let warnings: Vec<&str> =
        log.lines().filter(|l| l.contains(&marker) && l.contains("transaction in progress")).collect();
    assert!(
        warnings.is_empty(),
        "PostgreSQL saw transactions begun twice or ended outside one:\n{}",
        warnings.join("\n")
    );
    let after = app.gql(&app.a.full, "{ me { actor } }", serde_json::json!({})).await;
    assert!(after["errors"].is_null(), "the pool still serves: {after}");
}
