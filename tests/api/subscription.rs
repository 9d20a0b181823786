//! `ordersQueueChanged` over graphql-transport-ws at `/graphql/ws`, with a stock
//! WebSocket client: new orders arrive live, only at their own venue, only for tokens with
//! ORDERS_QUEUE, and a revoked token stops receiving them.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestApp;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const SUBSCRIPTION: &str = "subscription { ordersQueueChanged { number status items { name quantity } } }";

/// Opens a graphql-transport-ws connection and sends `connection_init` with `token`;
/// returns the socket and the server's first answer.
pub(crate) async fn connect(app: &TestApp, token: &str) -> (Socket, Option<Value>) {
    connect_to(&app.base, token).await
}

/// As [`connect`], to the server at `base`.
pub(crate) async fn connect_to(base: &str, token: &str) -> (Socket, Option<Value>) {
    let url = format!("{}/graphql/ws", base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.expect("WebSocket handshake");
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(Message::Text(init.to_string().into())).await.unwrap();
    let first = next_json(&mut socket, Duration::from_secs(5)).await;
    (socket, first)
}

/// The next JSON message, or None on close or timeout.
pub(crate) async fn next_json(socket: &mut Socket, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

pub(crate) async fn subscribe(socket: &mut Socket) {
    let message = json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION } });
    socket.send(Message::Text(message.to_string().into())).await.unwrap();
    // The subscription LISTENs before it is served; give the server a moment to get there.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn staff_receive_new_and_changed_orders_of_their_venue_live() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let (mut casual, ack) = connect(&app, &app.a.casual).await;
    assert_eq!(ack.unwrap()["type"], "connection_ack");
    subscribe(&mut casual).await;
    let (mut other_venue, _) = connect(&app, &app.b.full).await;
    subscribe(&mut other_venue).await;

    let paid_at = Instant::now();
    app.place_order(&app.a, "alpha").await;
    let update = next_json(&mut casual, Duration::from_secs(5)).await.expect("the new order arrives");
    let latency = paid_at.elapsed();
    assert_eq!(update["type"], "next", "{update}");
    assert_eq!(update["id"], "1");
    let order = &update["payload"]["data"]["ordersQueueChanged"];
    assert_eq!(order["number"], 1, "{update}");
    assert_eq!(order["status"], "PLACED");
    assert_eq!(order["items"][0], json!({ "name": "Alpha Espresso", "quantity": 2 }));
    println!("order delivered to the subscriber {latency:?} after the webhook was sent");

    let id = app.gql(&app.a.full, "{ ordersQueue { id } }", json!({})).await["data"]["ordersQueue"][0]["id"].clone();
    app.gql(&app.a.full, "mutation($id: ID!) { advanceOrder(id: $id, status: PREPARING) { id } }", json!({ "id": id }))
        .await;
    let update = next_json(&mut casual, Duration::from_secs(5)).await.expect("the status change arrives");
    assert_eq!(update["payload"]["data"]["ordersQueueChanged"]["status"], "PREPARING");

    assert!(next_json(&mut other_venue, Duration::from_millis(500)).await.is_none(), "venue B saw nothing of A");
}

#[tokio::test]
async fn a_subscription_needs_a_valid_token_with_orders_queue_and_ends_when_it_is_revoked() {
    let app = TestApp::spawn().await;
    let (_, answer) = connect(&app, "vqat_not_a_real_token").await;
    assert!(
        answer.as_ref().is_none_or(|a| a["type"] != "connection_ack"),
        "an unknown token is not acknowledged: {answer:?}"
    );

    let (mut nothing, ack) = connect(&app, &app.a.nothing).await;
    assert_eq!(ack.unwrap()["type"], "connection_ack");
    let message = json!({ "id": "1", "type": "subscribe", "payload": { "query": SUBSCRIPTION } });
    nothing.send(Message::Text(message.to_string().into())).await.unwrap();
    let refused = next_json(&mut nothing, Duration::from_secs(5)).await.unwrap();
    assert!(refused.to_string().contains("FORBIDDEN"), "{refused}");

    // The socket authenticated once: it serves subscriptions only, never a mutation.
    let (mut full, _) = connect(&app, &app.a.full).await;
    let mutation = json!({ "id": "2", "type": "subscribe", "payload": { "query": "mutation { deleteMenuItem(id: \"00000000-0000-0000-0000-000000000000\") }" } });
    full.send(Message::Text(mutation.to_string().into())).await.unwrap();
    let answer = next_json(&mut full, Duration::from_secs(5)).await.unwrap();
    assert!(answer.to_string().contains("only subscriptions are served"), "{answer}");

    app.onboard(&app.a).await;
    let (mut casual, _) = connect(&app, &app.a.casual).await;
    subscribe(&mut casual).await;
    let casual_id = {
        let mut tx = venueql::tenancy::Db::new(app.app_pool.clone()).venue_tx(app.a.venue_id()).await.unwrap();
        let id: uuid::Uuid =
            sqlx::query_scalar("SELECT id FROM api_tokens WHERE name = 'casual'").fetch_one(tx.conn()).await.unwrap();
        tx.commit().await.unwrap();
        id
    };
    venueql::admin::revoke_token(&app.door, "operator:test", "alpha", casual_id).await.unwrap();
    app.place_order(&app.a, "alpha").await;
    let update = next_json(&mut casual, Duration::from_secs(5)).await.expect("an answer");
    assert!(update["payload"]["data"].is_null() || update["type"] == "error", "no order for a revoked token: {update}");
    assert!(!update.to_string().contains("Alpha Espresso"), "{update}");
}

#[tokio::test]
async fn the_subscription_flags_allergens_for_tokens_allowed_to_see_them() {
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let query = "subscription { ordersQueueChanged { number allergenAlerts { itemName allergens } } }";
    let mut sockets = Vec::new();
    for token in [&app.a.full, &app.a.casual] {
        let (mut socket, ack) = connect(&app, token).await;
        assert_eq!(ack.unwrap()["type"], "connection_ack");
        let message = json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
        socket.send(Message::Text(message.to_string().into())).await.unwrap();
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = json!([{ "menuItemId": app.a.item_ids[2], "quantity": 1 }]);
    let diner = json!({ "phone": "+353 87 123 4567", "allergens": ["PEANUTS"] });
    let started = app
        .public_gql(
            "alpha",
            "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret } }",
            json!({ "input": { "items": items, "diner": diner } }),
        )
        .await["data"]["startCheckout"]
        .clone();
    app.deliver(&app.paid_event(&started)).await;
    let full = next_json(&mut sockets[0], Duration::from_secs(5)).await.expect("an update");
    assert_eq!(
        full["payload"]["data"]["ordersQueueChanged"]["allergenAlerts"],
        json!([{ "itemName": "Alpha Peanut Toast", "allergens": ["PEANUTS"] }]),
        "{full}"
    );
    let casual = next_json(&mut sockets[1], Duration::from_secs(5)).await.expect("an update");
    assert_eq!(casual["payload"]["data"]["ordersQueueChanged"]["allergenAlerts"], Value::Null, "{casual}");
}
