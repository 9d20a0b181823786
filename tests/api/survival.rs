//! Crash and restart: the server killed with SIGKILL while Stripe delivers, PostgreSQL
//! stopped in immediate mode and started again under load, SIGTERM under load. Each runs
//! on a private, durable cluster (the suite's own trades durability for speed) with the
//! demo venues of `venueql dev`, and `venueql serve` as its own process.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use venueql::config::StripeConfig;
use venueql::db::{self, RoleUrls};
use venueql::dev::{Cluster, ClusterOptions, DemoSeed, random_secret};
use venueql::payments::local_stripe::LocalStripe;
use venueql::tenancy::{CrossTenantDoor, Db};

use crate::helpers::{PLATFORM_SECRET, ServerProcess, paid_event, serve_on};

/// A private durable cluster with the demo venues, onboarded at a local Stripe.
struct Stack {
    cluster: Option<Cluster>,
    options: ClusterOptions,
    urls: RoleUrls,
    stripe: LocalStripe,
    seed: DemoSeed,
}

impl Stack {
    async fn start(name: &str) -> Stack {
        Stack::start_with(name, Vec::new()).await
    }

    /// A stack whose cluster archives every WAL segment to `archive_dir(name)`.
    async fn start_archiving(name: &str) -> Stack {
        let archive = archive_dir(name);
        let _ = std::fs::remove_dir_all(&archive);
        venueql::dev::cluster::make_postgres_dir(&archive).unwrap();
        let copy = format!("test ! -f {0}/%f && cp %p {0}/%f", archive.display());
        let settings = [("wal_level", "replica".to_string()), ("archive_mode", "on".into()), ("archive_command", copy)];
        Stack::start_with(name, settings.map(|(name, value)| (name.to_string(), value)).to_vec()).await
    }

    async fn start_with(name: &str, settings: Vec<(String, String)>) -> Stack {
        venueql::app::install_tls_provider();
        let dir = std::env::temp_dir().join(format!("venueql-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = ClusterOptions { dir, superuser_password: random_secret(), settings, ..Default::default() };
        let cluster = Cluster::start(&options).expect("a private cluster");
        let options = ClusterOptions { port: Some(cluster.port()), ..options };
        let password = random_secret();
        let urls = RoleUrls {
            app: cluster.url("venueql_app", &password, "venueql"),
            owner: cluster.url("venueql_owner", &password, "venueql"),
            platform: cluster.url("venueql_platform", &password, "venueql"),
        };
        db::init(&cluster.superuser_url("postgres"), &urls, None).await.unwrap();
        db::migrate(&urls.owner).await.unwrap();
        let door = CrossTenantDoor::new(db::pool(&urls.platform, 2).await.unwrap());
        let seed = venueql::dev::seed_demo(&door).await.unwrap();
        let stripe = LocalStripe::start().await.unwrap();
        let settings = StripeConfig {
            secret_key: Some("sk_test_venueql_suite".to_string().into()),
            api_base: stripe.base().to_string(),
            ..Default::default()
        };
        let payments = venueql::payments::Payments::from_config(&settings);
        let app_db = Db::new(db::pool(&urls.app, 2).await.unwrap());
        venueql::dev::onboard_at_local_stripe(&app_db, &payments, &stripe, &seed).await.unwrap();
        app_db.close().await;
        Stack { cluster: Some(cluster), options, urls, stripe, seed }
    }

    fn token(&self) -> String {
        let cafe = &self.seed.venues[0];
        cafe.tokens.iter().find(|t| t.name == "everything").unwrap().token.clone()
    }

    async fn serve(&self) -> ServerProcess {
        let env = [("RATE_LIMITS", "off"), ("QUEUE_SNAPSHOT_MAX_AGE_MS", "3600000"), ("DATABASE_MAX_CONNECTIONS", "8")];
        serve_on(&self.urls.app, self.stripe.base(), &env).await
    }

    fn dir(&self) -> PathBuf {
        self.options.dir.clone()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop();
        }
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// Where the cluster of stack `name` archives its WAL (outside the cluster's directory,
/// as a real archive would be).
fn archive_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("venueql-{name}-archive-{}", std::process::id()))
}

async fn post(client: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// `count` paid checkouts of the demo café (table `c<i>`), not yet reported to venueql.
async fn paid_checkouts(stack: &Stack, server: &ServerProcess, count: usize) -> Vec<(String, Value)> {
    paid_checkouts_at(stack, server, "c", count).await
}

/// `count` paid checkouts of the demo café at tables `<prefix><i>`.
async fn paid_checkouts_at(stack: &Stack, server: &ServerProcess, prefix: &str, count: usize) -> Vec<(String, Value)> {
    let client = reqwest::Client::new();
    let url = format!("{}/v/demo-cafe/graphql", server.base);
    let menu = post(&client, &url, None, json!({ "query": "{ menu { categories { items { id } } } }" })).await;
    let item = menu["data"]["menu"]["categories"][0]["items"][0]["id"].as_str().unwrap().to_string();
    let query = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret } }";
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..count {
        let (client, url, item, gate) = (client.clone(), url.clone(), item.clone(), gate.clone());
        let table = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let input = json!({ "items": [{ "menuItemId": item, "quantity": 1 }], "tableRef": table });
            let started = post(&client, &url, None, json!({ "query": query, "variables": { "input": input } })).await;
            (table, started["data"]["startCheckout"].clone())
        }));
    }
    let mut paid = Vec::new();
    for task in tasks {
        let (table, started) = task.await.unwrap();
        assert!(started.is_object(), "{started}");
        paid.push((table, paid_event(&stack.stripe, &started)));
    }
    paid
}

/// Delivers a signed event; `Some(status)` when the server answered.
async fn deliver(client: &reqwest::Client, base: &str, event: &Value) -> Option<StatusCode> {
    let body = event.to_string();
    let secret = secrecy::SecretString::from(PLATFORM_SECRET.to_string());
    let header = venueql::payments::signature::sign(body.as_bytes(), &secret, chrono::Utc::now().timestamp());
    let request = client
        .post(format!("{base}/webhooks/stripe"))
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(20));
    request.send().await.ok().map(|r| r.status())
}

/// Delivers every event, `parallel` at a time; returns the tables whose delivery was
/// acknowledged (2xx), in any order.
async fn deliver_all(base: &str, events: &[(String, Value)], parallel: usize) -> BTreeSet<String> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(parallel).build().unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::new();
    for (table, event) in events.iter().cloned() {
        let (client, base, gate) = (client.clone(), base.to_string(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let status = deliver(&client, &base, &event).await;
            status.is_some_and(|s| s.is_success()).then_some(table)
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for task in tasks {
        if let Some(table) = task.await.unwrap() {
            acknowledged.insert(table);
        }
    }
    acknowledged
}

/// The tables of every order of the café (paging through the history).
async fn order_tables(base: &str, token: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut tables = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = "query($after: String) { orders(first: 100, after: $after) { edges { node { tableRef } } pageInfo { hasNextPage endCursor } } }";
        let page = post(
            &client,
            &format!("{base}/graphql"),
            Some(token),
            json!({ "query": query, "variables": { "after": after } }),
        )
        .await;
        let orders = &page["data"]["orders"];
        let edges = orders["edges"].as_array().unwrap_or_else(|| panic!("{page}"));
        tables.extend(edges.iter().map(|e| e["node"]["tableRef"].as_str().unwrap().to_string()));
        if orders["pageInfo"]["hasNextPage"] != true {
            return tables;
        }
        after = orders["pageInfo"]["endCursor"].as_str().map(String::from);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_delivery_loses_no_acknowledged_event_and_retries_apply_each_once() {
    let stack = Stack::start("kill9").await;
    let mut server = stack.serve().await;
    let events = paid_checkouts(&stack, &server, 1_200).await;
    // Stripe delivers all 1,200 at once; the server is killed while they arrive.
    let delivering = {
        let (base, events) = (server.base.clone(), events.clone());
        tokio::spawn(async move { deliver_all(&base, &events, 32).await })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.kill9();
    let acknowledged = delivering.await.unwrap();
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < events.len(),
        "killed mid-way: {} acknowledged",
        acknowledged.len()
    );

    // Restarted: every acknowledged event's order is there.
    let server = stack.serve().await;
    let token = stack.token();
    let stored: BTreeSet<String> = order_tables(&server.base, &token).await.into_iter().collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|t| !stored.contains(*t)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // Stripe's retries: every unacknowledged event again, and duplicates of the others.
    let retried = deliver_all(&server.base, &events, 32).await;
    assert_eq!(retried.len(), events.len(), "every retry is acknowledged");
    let tables = order_tables(&server.base, &token).await;
    let distinct: BTreeSet<&String> = tables.iter().collect();
    assert_eq!((tables.len(), distinct.len()), (events.len(), events.len()), "every event applied exactly once");
    println!(
        "kill -9: {} of {} acknowledged before the kill, none lost, all applied once after retries",
        acknowledged.len(),
        events.len()
    );
}

async fn ready(client: &reqwest::Client, base: &str) -> Option<StatusCode> {
    client.get(format!("{base}/readyz")).timeout(Duration::from_secs(3)).send().await.ok().map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_nothing_and_the_server_recovers_by_itself() {
    let mut stack = Stack::start("pgrestart").await;
    let server = stack.serve().await;
    let token = stack.token();
    let events = paid_checkouts(&stack, &server, 300).await;
    let (mut socket, ack) = crate::subscription::connect_to(&server.base, &token).await;
    assert_eq!(ack.unwrap()["type"], "connection_ack");
    crate::subscription::subscribe(&mut socket).await;
    let queue = json!({ "query": "{ ordersQueue { tableRef } }" });
    let client = reqwest::Client::new();
    post(&client, &format!("{}/graphql", server.base), Some(&token), queue.clone()).await;

    // Deliveries run steadily (8 at a time) while PostgreSQL goes down and comes back.
    let delivering = {
        let (base, events) = (server.base.clone(), events.clone());
        tokio::spawn(async move { deliver_all(&base, &events, 8).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    stack.cluster.take().unwrap().stop_immediately();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&client, &server.base).await != Some(StatusCode::SERVICE_UNAVAILABLE) {
        assert!(Instant::now() < deadline, "/readyz must say not ready while the database is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Meanwhile a request says the database is unavailable: not a server bug.
    let down = post(&client, &format!("{}/graphql", server.base), Some(&token), queue.clone()).await;
    assert_eq!(down["errors"][0]["extensions"]["code"], "UNAVAILABLE", "{down}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.cluster = Some(Cluster::start(&stack.options).expect("PostgreSQL starts again on its port"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&client, &server.base).await != Some(StatusCode::OK) {
        assert!(Instant::now() < deadline, "the server must recover without a restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acknowledged = delivering.await.unwrap();

    // No acknowledged event was lost (the database replayed its WAL).
    let stored: BTreeSet<String> = order_tables(&server.base, &token).await.into_iter().collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|t| !stored.contains(*t)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // Stripe retries what was not acknowledged; each event is applied once.
    let retried = deliver_all(&server.base, &events, 8).await;
    assert_eq!(retried.len(), events.len());
    assert_eq!(order_tables(&server.base, &token).await.len(), events.len());
    // The queue snapshot was rebuilt: it shows every order.
    let listed = post(&client, &format!("{}/graphql", server.base), Some(&token), queue).await;
    assert_eq!(listed["data"]["ordersQueue"].as_array().unwrap().len(), events.len(), "{listed}");
    // The subscription resumed: after the updates of the run, a new order reaches it.
    while crate::subscription::next_json(&mut socket, Duration::from_secs(1)).await.is_some() {}
    let late = paid_checkouts(&stack, &server, 1).await;
    assert_eq!(deliver_all(&server.base, &late, 1).await.len(), 1);
    let heard = crate::subscription::next_json(&mut socket, Duration::from_secs(5)).await;
    let heard = heard.expect("the subscriber hears of orders after the restart");
    assert_eq!(heard["payload"]["data"]["ordersQueueChanged"]["number"], events.len() + 1, "{heard}");
    println!("PostgreSQL restart: {} of {} acknowledged during the run, none lost", acknowledged.len(), events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_what_it_acknowledged_closes_sockets_with_1001_and_exits_0() {
    let stack = Stack::start("sigterm").await;
    let mut server = stack.serve().await;
    let token = stack.token();
    let events = paid_checkouts(&stack, &server, 400).await;
    let (mut socket, ack) = crate::subscription::connect_to(&server.base, &token).await;
    assert_eq!(ack.unwrap()["type"], "connection_ack");
    let delivering = {
        let (base, events) = (server.base.clone(), events.clone());
        tokio::spawn(async move { deliver_all(&base, &events, 16).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exited_cleanly = tokio::task::spawn_blocking(move || {
        let clean = server.child.terminate();
        (clean, server)
    });
    // The socket is told the server is going away.
    let mut closed = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame)))) => {
                closed = frame.map(|f| u16::from(f.code));
                break;
            }
            Ok(Some(Ok(_))) => continue,
            _ => break,
        }
    }
    assert_eq!(closed, Some(1001), "sockets close with 1001 (going away)");
    let (clean, _server) = exited_cleanly.await.unwrap();
    assert!(clean, "SIGTERM ends the server with exit status 0");
    let acknowledged = delivering.await.unwrap();

    // Everything it acknowledged is stored; a new server applies the rest once.
    let server = stack.serve().await;
    let stored: BTreeSet<String> = order_tables(&server.base, &token).await.into_iter().collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|t| !stored.contains(*t)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert_eq!(deliver_all(&server.base, &events, 16).await.len(), events.len());
    assert_eq!(order_tables(&server.base, &token).await.len(), events.len());
    println!("SIGTERM: {} of {} acknowledged before the stop, none lost", acknowledged.len(), events.len());
}

/// The point-in-time recovery drill of docs/OPERATIONS.md: a base backup, WAL archived as
/// it fills, changes, then a restore to a moment between two batches of changes; the
/// restored database has the first batch and not the second, and its audit chains verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_and_the_wal_archive_restore_to_a_point_in_time() {
    let mut stack = Stack::start_archiving("pitr").await;
    let archive = archive_dir("pitr");
    let superuser = stack.cluster.as_ref().unwrap().superuser_url("postgres");
    let admin = db::pool(&superuser, 1).await.unwrap();

    // 1. The base backup, as the operator's nightly job would take it.
    let restore_dir = std::env::temp_dir().join(format!("venueql-pitr-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&restore_dir);
    let bindir = venueql::dev::cluster::find_pg_bindir().unwrap();
    let mut backup =
        venueql::dev::cluster::unprivileged_command_in(&bindir.join("pg_basebackup"), &restore_dir).unwrap();
    let port = stack.options.port.unwrap().to_string();
    let output = backup
        .args(["-h", "127.0.0.1", "-p", &port, "-U", venueql::dev::cluster::SUPERUSER])
        .args(["-D", &restore_dir.join("pgdata").display().to_string(), "-X", "stream", "--checkpoint=fast"])
        .env("PGPASSWORD", &stack.options.superuser_password)
        .output()
        .unwrap();
    assert!(output.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&output.stderr));

    // 2. Changes after the backup: batch A, the recovery target, batch B.
    let server = stack.serve().await;
    let token = stack.token();
    let batch_a = change_batch(&stack, &server, &token, "a").await;
    let audited_at_target = audit_verify(&stack.urls.platform).1;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target: String = sqlx::query_scalar("SELECT clock_timestamp()::text").fetch_one(&admin).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let batch_b = change_batch(&stack, &server, &token, "b").await;
    assert_eq!(order_tables(&server.base, &token).await.len(), batch_a.len() + batch_b.len());
    let switched: String =
        sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())").fetch_one(&admin).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let archived: Option<String> =
            sqlx::query_scalar("SELECT last_archived_wal FROM pg_stat_archiver").fetch_one(&admin).await.unwrap();
        if archived.is_some_and(|archived| archived >= switched) {
            break;
        }
        assert!(Instant::now() < deadline, "WAL segment {switched} was not archived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await;
    drop(server);

    // 3. Disaster: the cluster is gone. Restore the base backup, replay the archive up to
    //    the target, promote, on the same port.
    stack.cluster.take().unwrap().stop();
    let signal = restore_dir.join("pgdata/recovery.signal");
    std::fs::write(&signal, "").unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(restore_dir.join("pgdata")).unwrap());
    std::os::unix::fs::chown(&signal, Some(owner), None).unwrap();
    let recovery = [
        ("restore_command", format!("cp {}/%f %p", archive.display())),
        ("recovery_target_time", target.clone()),
        ("recovery_target_action", "promote".into()),
    ];
    let restored = ClusterOptions {
        dir: restore_dir.clone(),
        settings: recovery.map(|(name, value)| (name.to_string(), value)).to_vec(),
        ..stack.options.clone()
    };
    stack.cluster = Some(Cluster::start(&restored).expect("the restored cluster starts"));
    let admin = db::pool(&superuser, 1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&admin).await.unwrap() {
        assert!(Instant::now() < deadline, "recovery did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await;

    // 4. Batch A is there, batch B is not, and every audit chain verifies.
    let server = stack.serve().await;
    let tables: BTreeSet<String> = order_tables(&server.base, &token).await.into_iter().collect();
    assert_eq!(tables, batch_a.iter().cloned().collect(), "restored to {target}");
    let menu = post(
        &reqwest::Client::new(),
        &format!("{}/graphql", server.base),
        Some(&token),
        json!({ "query": "{ menu { categories { items { name } } } }" }),
    )
    .await;
    let menu = menu.to_string();
    assert!(menu.contains("Drill item a") && !menu.contains("Drill item b"), "{menu}");
    let (intact, audited) = audit_verify(&stack.urls.platform);
    assert!(intact, "the restored audit chains verify");
    assert_eq!(audited, audited_at_target, "audit rows as they were at the target");
    drop(server);
    let _ = std::fs::remove_dir_all(&restore_dir);
    let _ = std::fs::remove_dir_all(&archive);
}

/// One batch of the drill: a menu item (an audited mutation) named after `batch` and
/// three paid orders at tables `<batch>0..2`; returns the tables.
async fn change_batch(stack: &Stack, server: &ServerProcess, token: &str, batch: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let url = format!("{}/graphql", server.base);
    let menu = post(&client, &url, Some(token), json!({ "query": "{ menu { categories { id } } }" })).await;
    let category = menu["data"]["menu"]["categories"][0]["id"].clone();
    let create = "mutation($c: ID!, $n: String!) { createMenuItem(input: { categoryId: $c, name: $n, priceMinor: 100 }) { id } }";
    let variables = json!({ "c": category, "n": format!("Drill item {batch}") });
    let created = post(&client, &url, Some(token), json!({ "query": create, "variables": variables })).await;
    assert!(created["errors"].is_null(), "{created}");
    let events = paid_checkouts_at(stack, server, batch, 3).await;
    let acknowledged = deliver_all(&server.base, &events, 3).await;
    assert_eq!(acknowledged.len(), 3);
    acknowledged.into_iter().collect()
}

/// `venueql audit verify` as an operator runs it: (every chain intact, the demo café's
/// audit rows).
fn audit_verify(platform_url: &str) -> (bool, i64) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_venueql"))
        .args(["audit", "verify"])
        .env("DATABASE_PLATFORM_URL", platform_url)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("audit verify: {}", String::from_utf8_lossy(&output.stderr)));
    let cafe = report["venues"].as_array().unwrap().iter().find(|v| v["venue"] == "demo-cafe").unwrap().clone();
    (output.status.success() && report["intact"] == true, cafe["events"].as_i64().unwrap())
}
