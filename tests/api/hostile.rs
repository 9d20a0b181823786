//! Issue 19's attacks, each as a test: fragment bombs on every door (POST on both
//! endpoints, the WebSocket `subscribe`), with `/readyz` answering meanwhile, and nested
//! inline fragments that once hid `startCheckout`s from the per-request rules. The bombs
//! go to a `venueql serve` process of its own, so a frozen worker would show as a
//! timeout here, never as a hung test runner.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, error_code};
use crate::subscription::{connect_to, next_json};

/// `F0` spreads `F1` twice, … `F{levels-1}` spreads `F{levels}` twice: 2^levels copies of
/// `leaf` in about 45 bytes a level.
pub(crate) fn fragment_bomb(levels: usize, on: &str, leaf: &str) -> String {
    let mut query = String::from("query{...F0}");
    for i in 0..levels {
        query.push_str(&format!(" fragment F{i} on {on}{{...F{} ...F{}}}", i + 1, i + 1));
    }
    query.push_str(&format!(" fragment F{levels} on {on}{{{leaf}}}"));
    query
}

/// `startCheckout` aliased `aliases` times inside `depth` nested inline fragments.
pub(crate) fn nested_checkouts(item: &str, depth: usize, aliases: usize) -> String {
    let fields: Vec<String> = (0..aliases)
        .map(|i| {
            format!(
                "a{i}: startCheckout(input: {{ items: [{{ menuItemId: \"{item}\", quantity: 1 }}] }}) {{ checkoutId }}"
            )
        })
        .collect();
    format!("mutation {{ {} {} {} }}", "... { ".repeat(depth), fields.join(" "), "} ".repeat(depth))
}

async fn post_timed(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    body: String,
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let mut request = client.post(url).header("content-type", "application/json").timeout(Duration::from_secs(10));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.body(body).send().await.expect("the server answers a bomb within 10 s");
    let status = response.status();
    let value = response.json().await.unwrap_or(Value::Null);
    (status, value, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_bombs_are_refused_at_once_on_every_door_and_readyz_keeps_answering() {
    let app = TestApp::spawn().await;
    let server = app.serve_process(&[]).await;
    let client = reqwest::Client::new();
    let auth = format!("Bearer {}", app.a.full);
    let staff_url = format!("{}/graphql", server.base);
    let public_url = format!("{}/v/alpha/graphql", server.base);
    let staff_bomb = json!({ "query": fragment_bomb(30, "StaffQuery", "me{permissions}") }).to_string();
    let public_bomb = json!({ "query": fragment_bomb(30, "PublicQuery", "venue{slug}") }).to_string();
    assert!(staff_bomb.len() < 1600, "a 1.5 KB request: {}", staff_bomb.len());

    let (status, body, took) = post_timed(&client, &staff_url, Some(&auth), staff_bomb.clone()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::OK, "BAD_USER_INPUT"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("fragment spreads"), "{body}");
    eprintln!("2^30 bomb on /graphql answered in {took:?}");
    let (status, body, took) = post_timed(&client, &public_url, None, public_bomb.clone()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::OK, "BAD_USER_INPUT"), "{body}");
    eprintln!("2^30 bomb on /v/alpha/graphql answered in {took:?}");

    // Four clients each send bombs in a loop for two seconds; /readyz is asked meanwhile.
    let stop = Instant::now() + Duration::from_secs(2);
    let mut bombers = Vec::new();
    for i in 0..4 {
        let (client, url, body, auth) = if i % 2 == 0 {
            (client.clone(), staff_url.clone(), staff_bomb.clone(), Some(auth.clone()))
        } else {
            (client.clone(), public_url.clone(), public_bomb.clone(), None)
        };
        bombers.push(tokio::spawn(async move {
            let mut sent = 0;
            while Instant::now() < stop {
                let (status, _, _) = post_timed(&client, &url, auth.as_deref(), body.clone()).await;
                assert!(status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS, "{status}");
                sent += 1;
            }
            sent
        }));
    }
    let mut slowest = Duration::ZERO;
    while Instant::now() < stop {
        let started = Instant::now();
        let ready = client.get(format!("{}/readyz", server.base)).timeout(Duration::from_secs(5)).send().await;
        assert_eq!(ready.expect("/readyz answers during the bombs").status(), StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sent = 0;
    for bomber in bombers {
        sent += bomber.await.unwrap();
    }
    eprintln!("{sent} bombs from 4 clients in 2 s; slowest /readyz {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "/readyz took {slowest:?} while bombs arrived");

    // The WebSocket door checks the same budget before subscribing.
    let (mut socket, ack) = connect_to(&server.base, &app.a.full).await;
    assert_eq!(ack.unwrap()["type"], "connection_ack");
    let bomb =
        fragment_bomb(30, "StaffSubscription", "ordersQueueChanged{number}").replacen("query{", "subscription{", 1);
    let message = json!({ "id": "bomb", "type": "subscribe", "payload": { "query": bomb } });
    let started = Instant::now();
    socket.send(Message::Text(message.to_string().into())).await.unwrap();
    let answer = next_json(&mut socket, Duration::from_secs(10)).await.expect("an answer to the bomb");
    assert!(answer.to_string().contains("BAD_USER_INPUT"), "{answer}");
    assert!(answer.to_string().contains("fragment spreads"), "{answer}");
    eprintln!("2^30 bomb over /graphql/ws answered in {:?}", started.elapsed());
}

fn payment_intents(app: &TestApp) -> usize {
    app.stripe.requests().iter().filter(|r| r.path == "/v1/payment_intents" && r.method == "POST").count()
}

#[tokio::test]
async fn checkouts_hidden_in_nested_fragments_are_counted_and_at_most_one_runs() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let item = app.a.item_ids[0].to_string();
    let before = payment_intents(&app);
    // 17 nested inline fragments, 30 aliases, a batch of 10: once 300 PaymentIntents.
    let flood: Vec<Value> = (0..10).map(|_| json!({ "query": nested_checkouts(&item, 17, 30) })).collect();
    let (status, body) = app.post("/v/alpha/graphql", &[], json!(flood).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BAD_USER_INPUT"), "{body}");
    assert!(body.to_string().contains("starts 300"), "{body}");
    // The same through a fragment spread twice, and two nested ones in one document.
    let spread = format!(
        "mutation {{ ...F ...F }} fragment F on PublicMutation {{ ... {{ ... {{ startCheckout(input: {{ items: [{{ menuItemId: \"{item}\", quantity: 1 }}] }}) {{ checkoutId }} }} }} }}"
    );
    let (status, body) = app.post("/v/alpha/graphql", &[], json!({ "query": spread }).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BAD_USER_INPUT"), "{body}");
    let (status, body) =
        app.post("/v/alpha/graphql", &[], json!({ "query": nested_checkouts(&item, 17, 2) }).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BAD_USER_INPUT"), "{body}");
    // A document naming the field that cannot be counted is refused, not passed as none.
    let broken = format!("mutation {{ startCheckout(input: {{ items: [{{ menuItemId: \"{item}\" ");
    let (status, body) = app.post("/v/alpha/graphql", &[], json!({ "query": broken }).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(payment_intents(&app), before, "no PaymentIntent for any refused request");
    // One checkout, however deeply nested, is one.
    let one = app.public_gql("alpha", &nested_checkouts(&item, 17, 1), json!({})).await;
    assert!(one["data"]["a0"]["checkoutId"].is_string(), "{one}");
    assert_eq!(payment_intents(&app), before + 1);
}

#[tokio::test]
async fn a_second_x_venue_header_or_x_venue_on_the_diner_endpoint_is_refused() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {}", app.a.full);
    let body = r#"{"query":"{ me { actor } }"}"#;
    for second in ["alpha", "bravo"] {
        let headers = [("authorization", auth.as_str()), ("x-venue", "alpha"), ("x-venue", second)];
        let (status, answer) = app.post("/graphql", &headers, body).await;
        assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, "BAD_REQUEST"), "{answer}");
        assert!(answer.to_string().contains("one X-Venue"), "{answer}");
    }
    let (status, answer) = app.post("/graphql", &[("authorization", auth.as_str()), ("x-venue", "alpha")], body).await;
    assert_eq!(status, StatusCode::OK, "one header naming the token's venue: {answer}");
    let menu = r#"{"query":"{ venue { slug } }"}"#;
    for named in ["alpha", "bravo"] {
        let (status, answer) = app.post("/v/alpha/graphql", &[("x-venue", named)], menu).await;
        assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, "BAD_REQUEST"), "{answer}");
    }
}

#[tokio::test]
async fn an_account_object_with_only_what_stripe_requires_is_applied_and_an_unreadable_event_is_never_acknowledged() {
    use crate::helpers::{CONNECT_SECRET, PLATFORM_SECRET};
    use venueql::payments::local_stripe;
    let receiver = crate::audit_log::AlertReceiver::start().await;
    let app = TestApp::spawn_with(receiver.settings(60)).await;
    let account = app.onboard(&app.a).await;
    // Stripe's spec requires only `id` and `object` of an account: no `created`, no flags.
    let bare = json!({ "id": account, "object": "account" });
    let event = local_stripe::event("account.updated", bare, Some(&account));
    let (status, answer) = app.deliver_signed("/webhooks/stripe/connect", CONNECT_SECRET, &event).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(!answer["outcome"].as_str().unwrap().starts_with("ignored"), "{answer}");
    let state = app.gql(&app.a.full, "{ stripeAccount { chargesEnabled payoutsEnabled } }", json!({})).await;
    assert_eq!(state["data"]["stripeAccount"]["chargesEnabled"], true, "absent is not false: {state}");

    // A payment_intent.succeeded whose object lacks what venueql reads (`amount`): not
    // acknowledged (Stripe retries), not stored as received, kept aside, one alert.
    let started = app.start_checkout("alpha", &[(app.a.item_ids[0], 1)]).await;
    let mut paid = app.paid_event(&started);
    paid["data"]["object"].as_object_mut().unwrap().remove("amount");
    for _ in 0..2 {
        let (status, answer) = app.deliver_signed("/webhooks/stripe", PLATFORM_SECRET, &paid).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
        assert_eq!(error_code(&answer), "EVENT_UNREADABLE", "{answer}");
    }
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let id = paid["id"].as_str().unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM private.stripe_events WHERE id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(stored, 0, "not stored as received: Stripe's retry will apply it");
    let (deliveries, reason): (i32, String) =
        sqlx::query_as("SELECT deliveries, reason FROM private.stripe_unreadable_events WHERE id = $1")
            .bind(id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(deliveries, 2);
    assert!(reason.contains("amount"), "{reason}");
    let alerts =
        receiver.wait_for(Duration::from_secs(10), |a| a.iter().any(|a| a["kind"] == "stripe_event_unreadable")).await;
    assert_eq!(alerts.iter().filter(|a| a["kind"] == "stripe_event_unreadable").count(), 1, "{alerts:#?}");
    let orders = app.gql(&app.a.full, "{ ordersQueue { number } }", json!({})).await;
    assert_eq!(orders["data"]["ordersQueue"], json!([]), "no order from an event that was not read");
    // Delivered again whole (as after a fix), it is applied once and forgotten.
    let whole = app.paid_event(&started);
    let mut retried = whole.clone();
    retried["id"] = json!(id);
    app.deliver(&retried).await;
    let orders = app.gql(&app.a.full, "{ ordersQueue { number } }", json!({})).await;
    assert_eq!(orders["data"]["ordersQueue"].as_array().map(Vec::len), Some(1), "{orders}");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM private.stripe_unreadable_events WHERE id = $1")
        .bind(id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(kept, 0);
}

#[tokio::test]
async fn sigterm_stops_the_server_within_its_grace_period_even_with_a_request_that_never_ends() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn().await;
    let mut server = app.serve_process(&[("SHUTDOWN_GRACE_SECS", "1"), ("REQUEST_TIMEOUT_SECS", "120")]).await;
    // A request whose body never finishes arriving: in flight until the request timeout.
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v/alpha/graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"query\":"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(server.child.0.id() as libc::pid_t, libc::SIGTERM) };
    let exited = loop {
        if let Some(status) = server.child.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = exited.expect("the server exits after SIGTERM within its grace period, not the request timeout");
    eprintln!("exited {:?} after SIGTERM ({status})", started.elapsed());
    assert!(!status.success(), "a forced exit says so with a failing status");
    drop(stalled);
}
