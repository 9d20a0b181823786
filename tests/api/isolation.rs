//! `venueql verify-isolation`, the shipped cross-tenant check: 0 leaks against the real
//! server, and a leaky field (and a leaky mutation) caught in a server built to leak.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_graphql::{Context, EmptySubscription, ID, Object, Schema, SimpleObject};
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;

use crate::helpers::TestApp;

fn verify_isolation(url: &str, token_a: &str, token_b: &str) -> (bool, Value, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_venueql"))
        .args(["verify-isolation", "--url", url, "--token-a", token_a, "--token-b", token_b])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("no JSON report: {stderr}"));
    (output.status.success(), report, stderr)
}

#[tokio::test]
async fn the_server_leaks_nothing_of_venue_a_to_venue_bs_token_on_any_field() {
    let app = TestApp::spawn_with(|name| (name == "GRAPHQL_INTROSPECTION").then(|| "true".into())).await;
    for _ in 0..2 {
        app.place_order(&app.a, "alpha").await;
    }
    let (url, a, b) = (app.base.clone(), app.a.full.clone(), app.b.full.clone());
    let (passed, report, summary) = tokio::task::spawn_blocking(move || verify_isolation(&url, &a, &b)).await.unwrap();
    assert!(passed, "{summary}");
    assert_eq!(report["leaks"], serde_json::json!([]), "{summary}");
    assert!(report["venue_a_ids"].as_u64().unwrap() >= 10, "A's ids were collected: {report}");
    assert!(report["requests"].as_u64().unwrap() > 200, "{summary}");
    let attacked: Vec<&str> =
        report["fields_attacked"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    for field in
        ["query order", "query menuItem", "mutation advanceOrder", "mutation updateMenuItem", "mutation refundOrder"]
    {
        assert!(attacked.contains(&field), "{field} was attacked: {attacked:?}");
    }
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
}

#[derive(SimpleObject)]
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
        let mut store = ctx.data::<Arc<Leaky>>().unwrap().items.lock().unwrap();
        store.get_mut(id.as_str()).map(|item| item.1 = name).is_some()
    }
}

type LeakySchema = Schema<Query, Mutation, EmptySubscription>;

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
    });
    let schema = Schema::build(Query, Mutation, EmptySubscription).data(store).finish();
    let router = axum::Router::new().route("/graphql", axum::routing::post(leaky_graphql)).with_state(schema);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let (passed, report, summary) =
        tokio::task::spawn_blocking(move || verify_isolation(&url, "token-a", "token-b")).await.unwrap();
    assert!(!passed, "leaks fail the check: {summary}");
    let leaks = report["leaks"].as_array().unwrap();
    let fields: Vec<&str> = leaks.iter().map(|l| l["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"item"), "the leaky read is reported: {summary}");
    assert!(fields.contains(&"items"), "A's items changed under B's token (the leaky write): {summary}");
    assert!(!fields.contains(&"ownItem"), "the checked field is not: {summary}");
    assert!(summary.contains("LEAK query item with id a-item-"), "{summary}");
}
