//! `venueql verify-isolation`, the shipped cross-tenant check: 0 leaks against the real
//! server, and a leaky field (and a leaky mutation) caught in a server built to leak.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_graphql::{Context, ID, Object, Schema, SimpleObject, Subscription};
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;

/// Runs verify-isolation with `extra` arguments; while it watches subscriptions, `during`
/// runs (the process says on stderr when the watch begins).
async fn verify_isolation_while<F: std::future::Future<Output = ()>>(
    url: &str,
    tokens: (&str, &str),
    extra: &[&str],
    during: F,
) -> (bool, Value, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_venueql"))
        .args(["verify-isolation", "--url", url, "--token-a", tokens.0, "--token-b", tokens.1])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (watching, mut watch_started) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut watching = Some(watching);
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("watching subscriptions")
                && let Some(tx) = watching.take()
            {
                let _ = tx.send(());
            }
            text.push_str(&line);
            line.clear();
        }
        text
    });
    if (&mut watch_started).await.is_ok() {
        during.await;
    }
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    let stderr = reader.join().unwrap();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("no JSON report: {stderr}"));
    (status.success(), report, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_leaks_nothing_of_venue_a_to_venue_bs_token_on_any_field() {
    let s = crate::oauth::setup_with(|name| (name == "GRAPHQL_INTROSPECTION").then(|| "true".into())).await;
    let app = &s.app;
    for _ in 0..2 {
        app.place_order(&app.a, "alpha").await;
    }
    // A person who works at bravo (and alpha): the person-only fields are attacked too.
    let person = crate::identity::sign_in(&s, crate::oauth::EMAIL, crate::oauth::PASSWORD, app.b.id).await;
    let person = person["access_token"].as_str().unwrap().to_string();
    let extra = ["--person-token-b", person.as_str(), "--watch-secs", "4"];
    // Venue A takes two orders while B's sockets are watched.
    let orders = async {
        for _ in 0..2 {
            app.place_order(&app.a, "alpha").await;
        }
    };
    let (passed, report, summary) = verify_isolation_while(&app.base, (&app.a.full, &app.b.full), &extra, orders).await;
    assert!(passed, "{summary}");
    assert_eq!(report["leaks"], serde_json::json!([]), "{summary}");
    assert!(report["venue_a_ids"].as_u64().unwrap() >= 10, "A's ids were collected: {report}");
    assert!(report["requests"].as_u64().unwrap() > 200, "{summary}");
    let attacked: Vec<&str> =
        report["fields_attacked"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    for field in [
        "query order",
        "query menuItem",
        "mutation advanceOrder",
        "mutation updateMenuItem",
        "mutation refundOrder",
        "mutation advanceOrder (person)",
        "query checkout (diner)",
        "mutation startCheckout (diner)",
    ] {
        assert!(attacked.contains(&field), "{field} was attacked: {attacked:?}");
    }
    assert_eq!(report["diner_endpoint"], format!("{}/v/bravo/graphql", app.base), "{summary}");
    let watch = &report["subscriptions"];
    assert!(watch["fields"].to_string().contains("ordersQueueChanged"), "{summary}");
    assert!(watch["events_a"].as_u64().unwrap() >= 2, "A's orders happened during the watch: {summary}");
    assert_eq!(watch["events_b"], 0, "B's sockets saw nothing of A: {summary}");
    assert!(summary.contains("0 leak(s)"), "{summary}");
    for (field, answers) in report["answers"].as_object().unwrap() {
        let reached = answers.as_object().unwrap().keys().any(|code| code != "BAD_USER_INPUT");
        assert!(reached, "{field} was refused for its arguments only, never reached the venue check: {answers}");
    }
}

/// A two-venue item store whose `item` field forgets the venue check, and whose
/// `renameItem` mutation does too: the kind of mistake the check is for.
struct Leaky {
    items: Mutex<BTreeMap<String, (String, String)>>,
    renames: tokio::sync::broadcast::Sender<Item>,
}

#[derive(SimpleObject, Clone)]
struct Item {
    id: ID,
    name: String,
}

fn venue_of(ctx: &Context<'_>) -> String {
    ctx.data::<String>().cloned().unwrap_or_default()
}

struct Query;

#[Object]
impl Query {
    /// The caller's items (correct).
    async fn items(&self, ctx: &Context<'_>) -> Vec<Item> {
        let store = ctx.data::<Arc<Leaky>>().unwrap().items.lock().unwrap();
        let venue = venue_of(ctx);
        store
            .iter()
            .filter(|(_, (v, _))| *v == venue)
            .map(|(id, (_, name))| Item { id: ID(id.clone()), name: name.clone() })
            .collect()
    }

    /// One item: the venue check is missing.
    async fn item(&self, ctx: &Context<'_>, id: ID) -> Option<Item> {
        let store = ctx.data::<Arc<Leaky>>().unwrap().items.lock().unwrap();
        store.get(id.as_str()).map(|(_, name)| Item { id: id.clone(), name: name.clone() })
    }

    /// One item, checked (correct).
    async fn own_item(&self, ctx: &Context<'_>, id: ID) -> Option<Item> {
        let store = ctx.data::<Arc<Leaky>>().unwrap().items.lock().unwrap();
        let venue = venue_of(ctx);
        store.get(id.as_str()).filter(|(v, _)| *v == venue).map(|(_, name)| Item { id: id.clone(), name: name.clone() })
    }
}

struct Mutation;

#[Object]
impl Mutation {
    /// Renames an item: the venue check is missing, and nothing is returned.
    async fn rename_item(&self, ctx: &Context<'_>, id: ID, name: String) -> bool {
        let leaky = ctx.data::<Arc<Leaky>>().unwrap();
        let renamed = leaky.items.lock().unwrap().get_mut(id.as_str()).map(|item| item.1 = name.clone()).is_some();
        let _ = leaky.renames.send(Item { id, name });
        renamed
    }
}

struct LeakySubscription;

#[Subscription]
impl LeakySubscription {
    /// Every rename, of every venue: the venue check is missing.
    async fn item_renamed(&self, ctx: &Context<'_>) -> impl futures_util::Stream<Item = Item> + use<> {
        let receiver = ctx.data::<Arc<Leaky>>().unwrap().renames.subscribe();
        futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.ok().map(|item| (item, receiver))
        })
    }
}

type LeakySchema = Schema<Query, Mutation, LeakySubscription>;

async fn leaky_graphql(
    State(schema): State<LeakySchema>,
    headers: HeaderMap,
    request: async_graphql_axum::GraphQLRequest,
) -> async_graphql_axum::GraphQLResponse {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let venue = match token {
        "Bearer token-a" => "a",
        "Bearer token-b" => "b",
        _ => "",
    };
    schema.execute(request.into_inner().data(venue.to_string())).await.into()
}

#[tokio::test]
async fn a_deliberately_leaky_field_and_mutation_are_caught() {
    let store = Arc::new(Leaky {
        items: Mutex::new(BTreeMap::from([
            ("a-item-1".to_string(), ("a".to_string(), "Alpha's secret recipe".to_string())),
            ("a-item-2".to_string(), ("a".to_string(), "Alpha's other dish".to_string())),
            ("b-item-1".to_string(), ("b".to_string(), "Bravo's dish".to_string())),
        ])),
        renames: tokio::sync::broadcast::channel(16).0,
    });
    let schema = Schema::build(Query, Mutation, LeakySubscription).data(store).finish();
    let router = axum::Router::new()
        .route("/graphql", axum::routing::post(leaky_graphql))
        .route_service("/graphql/ws", async_graphql_axum::GraphQLSubscription::new(schema.clone()))
        .with_state(schema);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // While B's socket is watched, A renames its own item (as A may).
    venueql::app::install_tls_provider();
    let http = reqwest::Client::new();
    let rename = async {
        let body = serde_json::json!({ "query": "mutation { renameItem(id: \"a-item-1\", name: \"Renamed by A\") }" });
        let sent = http.post(format!("{url}/graphql")).bearer_auth("token-a").json(&body).send().await.unwrap();
        assert!(sent.status().is_success());
    };
    let (passed, report, summary) =
        verify_isolation_while(&url, ("token-a", "token-b"), &["--watch-secs", "2"], rename).await;
    assert!(!passed, "leaks fail the check: {summary}");
    let leaks = report["leaks"].as_array().unwrap();
    let fields: Vec<&str> = leaks.iter().map(|l| l["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"item"), "the leaky read is reported: {summary}");
    assert!(fields.contains(&"items"), "A's items changed under B's token (the leaky write): {summary}");
    assert!(!fields.contains(&"ownItem"), "the checked field is not: {summary}");
    assert!(summary.contains("LEAK query item with id a-item-"), "{summary}");
    assert!(
        leaks.iter().any(|l| l["operation"] == "subscription" && l["id"] == "a-item-1"),
        "B's socket received A's rename: {summary}"
    );
}
