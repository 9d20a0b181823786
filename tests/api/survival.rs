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
        venueql::app::install_tls_provider();
        let dir = std::env::temp_dir().join(format!("venueql-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = ClusterOptions { dir, superuser_password: random_secret(), ..Default::default() };
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

async fn post(client: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Value {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// `count` paid checkouts of the demo café (table `c<i>`), not yet reported to venueql.
async fn paid_checkouts(stack: &Stack, server: &ServerProcess, count: usize) -> Vec<(String, Value)> {
    let client = reqwest::Client::new();
    let url = format!("{}/v/demo-cafe/graphql", server.base);
    let menu = post(&client, &url, None, json!({ "query": "{ menu { categories { items { id } } } }" })).await;
    let item = menu["data"]["menu"]["categories"][0]["items"][0]["id"].as_str().unwrap().to_string();
    let query = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret } }";
    let gate = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..count {
        let (client, url, item, gate) = (client.clone(), url.clone(), item.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let input = json!({ "items": [{ "menuItemId": item, "quantity": 1 }], "tableRef": format!("c{i}") });
            let started = post(&client, &url, None, json!({ "query": query, "variables": { "input": input } })).await;
            (format!("c{i}"), started["data"]["startCheckout"].clone())
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
