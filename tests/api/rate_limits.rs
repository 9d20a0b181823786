//! Rate limits as an attacker meets them: the batched `startCheckout` flood, floods from
//! one address at the diner, staff and OAuth doors, subscription sockets, and the limits
//! of two server processes on one database (they share the limit, not multiply it).

use std::time::Duration;

use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, error_code};
use crate::subscription::{connect, next_json};

/// A test server with limits on and these per-minute limits.
async fn limited(settings: &'static [(&'static str, &'static str)]) -> TestApp {
    TestApp::spawn_with(move |name| {
        if name == "RATE_LIMITS" {
            return Some("on".into());
        }
        settings.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    })
    .await
}

fn checkout_body(app: &TestApp, aliases: usize) -> Value {
    let fields: Vec<String> = (0..aliases)
        .map(|i| {
            format!(
                "c{i}: startCheckout(input: {{ items: [{{ menuItemId: \"{}\", quantity: 1 }}] }}) {{ checkoutId }}",
                app.a.item_ids[0]
            )
        })
        .collect();
    json!({ "query": format!("mutation {{ {} }}", fields.join(" ")) })
}

async fn post_public(app: &TestApp, base: &str, body: &Value) -> (StatusCode, Option<String>, Value) {
    let response = app.client.post(format!("{base}/v/alpha/graphql")).json(body).send().await.unwrap();
    let status = response.status();
    let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (status, retry, response.json().await.unwrap())
}

fn payment_intents(app: &TestApp) -> usize {
    app.stripe.requests().iter().filter(|r| r.path == "/v1/payment_intents" && r.method == "POST").count()
}

#[tokio::test]
async fn the_batched_checkout_flood_creates_nothing_and_checkouts_stop_at_the_limit_with_retry_after() {
    let app = limited(&[("RATE_LIMIT_CHECKOUT_PER_ADDRESS", "10"), ("RATE_LIMIT_PUBLIC_PER_ADDRESS", "1000")]).await;
    app.onboard(&app.a).await;
    let before = payment_intents(&app);
    // 10 documents of 30 aliased startCheckouts in one request.
    let flood = Value::Array((0..10).map(|_| checkout_body(&app, 30)).collect());
    let (status, _, body) = post_public(&app, &app.base, &flood).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert!(body.to_string().contains("one checkout"), "{body}");
    let (status, _, body) = post_public(&app, &app.base, &checkout_body(&app, 2)).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "BAD_USER_INPUT"), "two aliases: {body}");
    assert_eq!(payment_intents(&app), before, "no PaymentIntent for a refused request");

    let mut created = 0;
    let mut refusal = None;
    for _ in 0..15 {
        let (status, retry, body) = post_public(&app, &app.base, &checkout_body(&app, 1)).await;
        match status {
            StatusCode::OK => created += 1,
            StatusCode::TOO_MANY_REQUESTS => refusal = Some((retry, body)),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(created, 10, "the limit");
    assert_eq!(payment_intents(&app), before + 10, "no PaymentIntent beyond the limit");
    let (retry, body) = refusal.expect("a refusal");
    assert!(retry.unwrap().parse::<u32>().unwrap() >= 1);
    assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");
}

#[tokio::test]
async fn floods_from_one_address_or_credential_get_429_at_every_door() {
    let app = limited(&[
        ("RATE_LIMIT_PUBLIC_PER_ADDRESS", "5"),
        ("RATE_LIMIT_STAFF_PER_TOKEN", "3"),
        ("RATE_LIMIT_OAUTH_PER_ADDRESS", "3"),
    ])
    .await;
    let menu = json!({ "query": "{ menu { categories { name } } }" });
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..6 {
            out.push(post_public(&app, &app.base, &menu).await.0.as_u16());
        }
        out
    };
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "diner endpoint, per address");
    let staff = |token: String| {
        let (app, menu) = (&app, menu.clone());
        async move {
            app.client
                .post(format!("{}/graphql", app.base))
                .bearer_auth(token)
                .json(&menu)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(staff(app.a.full.clone()).await.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429], "staff endpoint, per credential");
    assert_eq!(staff(app.b.full.clone()).await, 200, "another credential has its own limit");
    let batch = Value::Array((0..4).map(|_| json!({ "query": "{ me { actor } }" })).collect());
    let batched =
        app.client.post(format!("{}/graphql", app.base)).bearer_auth(&app.a.casual).json(&batch).send().await.unwrap();
    assert_eq!(batched.status(), 429, "every operation of a batch counts");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = app
            .client
            .post(format!("{}/oauth/token", app.base))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 400, 429], "OAuth endpoints, per address");
}

#[tokio::test]
async fn subscription_sockets_are_capped_timed_out_and_limited_in_subscriptions() {
    let app =
        limited(&[("WS_MAX_CONNECTIONS_PER_TOKEN", "1"), ("WS_MAX_SUBSCRIPTIONS", "1"), ("WS_INIT_TIMEOUT_SECS", "1")])
            .await;
    let (mut first, ack) = connect(&app, &app.a.full).await;
    assert_eq!(ack.unwrap()["type"], "connection_ack");
    let (_second, refused) = connect(&app, &app.a.full).await;
    assert!(refused.is_none(), "a second socket of the same credential is closed at connection_init: {refused:?}");
    let (_other, ack) = connect(&app, &app.a.casual).await;
    assert_eq!(ack.unwrap()["type"], "connection_ack", "another credential may connect");
    let subscribe = |id: &str| json!({ "id": id, "type": "subscribe", "payload": { "query": "subscription { ordersQueueChanged { number } }" } });
    first.send(Message::Text(subscribe("1").to_string().into())).await.unwrap();
    first.send(Message::Text(subscribe("2").to_string().into())).await.unwrap();
    let answer = next_json(&mut first, Duration::from_secs(5)).await.expect("an answer to the second subscription");
    assert_eq!(answer["id"], "2", "{answer}");
    assert_eq!(answer["payload"]["errors"][0]["extensions"]["code"], "RATE_LIMITED", "{answer}");

    // A socket that never says connection_init is closed with 4408.
    let url = format!("{}/graphql/ws", app.base.replace("http://", "ws://"));
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut silent, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut silent)).await.unwrap();
    match closed {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4408),
        other => panic!("expected a 4408 close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_server_processes_share_one_limit_instead_of_multiplying_it() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let settings = [("RATE_LIMITS", "on"), ("RATE_LIMIT_CHECKOUT_PER_ADDRESS", "10"), ("RATE_LIMIT_SYNC_SECS", "1")];
    let first = app.serve_process(&settings).await;
    let second = app.serve_process(&settings).await;
    // Each process counts the live replicas (these two and the test's own server).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = payment_intents(&app);
    let mut created = 0;
    for i in 0..30 {
        let base = if i % 2 == 0 { &first.base } else { &second.base };
        let (status, _, body) = post_public(&app, base, &checkout_body(&app, 1)).await;
        match status {
            StatusCode::OK => created += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}: {body}"),
        }
    }
    assert!(created > 0 && created <= 10, "{created} checkouts through two processes with a limit of 10 per address");
    assert_eq!(payment_intents(&app) - before, created);
}
