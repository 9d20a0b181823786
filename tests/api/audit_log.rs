//! The venue's audit log (`auditEvents`), the security events it carries, the keyed seals
//! that survive a superuser, and critical alerts to a receiver on loopback.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::Connection;
use uuid::Uuid;

use crate::helpers::{TestApp, error_code};
use venueql::audit::alerts::{self, AlertKind};
use venueql::tenancy::Db;

const LOG: &str = "query($first: Int = 30, $after: String, $filter: AuditEventFilter) { auditEvents(first: $first, after: $after, filter: $filter) { \
    edges { cursor node { id sequence occurredAt actor actorType action targetType targetId before after critical requestId ip } } \
    pageInfo { hasNextPage endCursor } } }";

/// The signing secret of the alert receiver in these tests.
pub const ALERT_SECRET: &str = "alert-signing-secret-of-the-tests";

/// An HTTP receiver of alerts on loopback that checks every signature, and can be down.
pub struct AlertReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
    /// While true, every delivery is answered 503.
    pub down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if state.down.load(Ordering::SeqCst) {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = headers.get("venueql-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(signature_holds(header, &body), "an alert arrived with a bad signature: {header:?}");
    let alert: Value = serde_json::from_slice(&body).expect("an alert is JSON");
    state.received.lock().unwrap().push(alert);
    StatusCode::OK
}

/// Verifies `t=…,v1=…` as a receiver would, with its own HMAC.
fn signature_holds(header: &str, body: &[u8]) -> bool {
    let parts: Vec<(&str, &str)> = header.split(',').filter_map(|p| p.split_once('=')).collect();
    let (Some(t), Some(v1)) = (
        parts.iter().find(|(k, _)| *k == "t").map(|(_, v)| *v),
        parts.iter().find(|(k, _)| *k == "v1").map(|(_, v)| *v),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(ALERT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    expected == v1
}

impl AlertReceiver {
    pub async fn start() -> AlertReceiver {
        let state = ReceiverState {
            received: Arc::new(Mutex::new(Vec::new())),
            down: Arc::new(AtomicBool::new(false)),
            refused: Arc::new(AtomicUsize::new(0)),
        };
        let router = axum::Router::new().route("/alerts", axum::routing::post(receive)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        AlertReceiver { url, received: state.received, down: state.down, refused: state.refused }
    }

    /// The settings that send a server's alerts here, with `digest_secs` windows.
    pub fn settings(&self, digest_secs: u64) -> impl Fn(&str) -> Option<String> + use<> {
        let url = self.url.clone();
        move |name| match name {
            "ALERT_WEBHOOK_URL" => Some(url.clone()),
            "ALERT_WEBHOOK_SECRET" => Some(ALERT_SECRET.into()),
            "ALERT_DIGEST_SECS" => Some(digest_secs.to_string()),
            _ => None,
        }
    }

    /// Every alert received so far (each delivery once, by id).
    pub fn alerts(&self) -> Vec<Value> {
        let mut seen = std::collections::BTreeSet::new();
        self.received.lock().unwrap().iter().filter(|a| seen.insert(a["id"].as_i64())).cloned().collect()
    }

    /// Waits until `done` holds for the alerts received (at most `limit`).
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let alerts = self.alerts();
            if done(&alerts) || start.elapsed() > limit {
                return alerts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn log(app: &TestApp, token: &str, variables: Value) -> Value {
    app.gql(token, LOG, variables).await
}

fn edges(answer: &Value) -> Vec<Value> {
    answer["data"]["auditEvents"]["edges"].as_array().unwrap_or_else(|| panic!("no audit events: {answer}")).clone()
}

#[tokio::test]
async fn the_audit_log_is_the_venues_own_paged_filtered_and_needs_audit_view() {
    let app = TestApp::spawn().await;
    let rename = "mutation($id: ID!, $name: String!) { updateMenuItem(id: $id, input: { name: $name }) { id } }";
    for name in ["Flat white", "Long black", "Cortado"] {
        let changed = app.gql(&app.a.full, rename, json!({ "id": app.a.item_ids[0], "name": name })).await;
        assert!(changed["errors"].is_null(), "{changed}");
    }

    let first = log(&app, &app.a.full, json!({ "first": 2 })).await;
    let page = edges(&first);
    assert_eq!(page.len(), 2, "{first}");
    assert_eq!(first["data"]["auditEvents"]["pageInfo"]["hasNextPage"], true);
    let newest = &page[0]["node"];
    assert_eq!(newest["action"], "menu_item.updated");
    assert_eq!(newest["actorType"], "API_TOKEN");
    assert_eq!(newest["actor"], format!("api_token:{}", app.a.full_id));
    assert_eq!(newest["after"]["name"], "Cortado", "{newest}");
    assert_eq!(newest["before"]["name"], "Long black", "{newest}");
    assert!(newest["requestId"].as_str().is_some_and(|r| !r.is_empty()), "{newest}");
    assert_eq!(newest["ip"], "127.0.0.1");
    assert_eq!(newest["critical"], false);
    let after = first["data"]["auditEvents"]["pageInfo"]["endCursor"].clone();
    let second = edges(&log(&app, &app.a.full, json!({ "first": 2, "after": after })).await);
    let last_seq = page[1]["node"]["sequence"].as_i64().unwrap();
    assert!(second.iter().all(|e| e["node"]["sequence"].as_i64().unwrap() < last_seq), "pages go back in time");

    let all_a = edges(&log(&app, &app.a.full, json!({ "first": 30 })).await);
    let filtered = edges(&log(&app, &app.a.full, json!({ "filter": { "actions": ["menu_item.updated"] } })).await);
    assert_eq!(filtered.len(), 3);
    let by_actor = edges(&log(&app, &app.a.full, json!({ "filter": { "actorTypes": ["OPERATOR"] } })).await);
    assert!(
        !by_actor.is_empty() && by_actor.iter().all(|e| e["node"]["actor"].as_str().unwrap().starts_with("operator:"))
    );
    let future = edges(&log(&app, &app.a.full, json!({ "filter": { "from": "2999-01-01T00:00:00Z" } })).await);
    assert!(future.is_empty());

    // Venue B reads its own log: none of A's events, and A's cursor means nothing there.
    let a_ids: Vec<&Value> = all_a.iter().map(|e| &e["node"]["id"]).collect();
    let b_page = edges(&log(&app, &app.b.full, json!({ "first": 30 })).await);
    assert!(!b_page.is_empty());
    assert!(b_page.iter().all(|e| !a_ids.contains(&&e["node"]["id"])), "B sees none of A's events");
    let b_filtered = edges(&log(&app, &app.b.full, json!({ "filter": { "actions": ["menu_item.updated"] } })).await);
    assert!(b_filtered.is_empty(), "A's menu changes are not in B's log");

    // Without AUDIT_VIEW (a casual: the queue only), nothing.
    let casual = log(&app, &app.a.casual, json!({})).await;
    assert_eq!(error_code(&casual), "FORBIDDEN", "{casual}");
    assert!(casual["data"].is_null() || casual["data"]["auditEvents"].is_null());

    // Bad arguments are the caller's mistake, named.
    for variables in [
        json!({ "after": "bm90LWEtY3Vyc29y" }),
        json!({ "first": 0 }),
        json!({ "first": -1 }),
        json!({ "filter": { "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z" } }),
    ] {
        let refused = log(&app, &app.a.full, variables.clone()).await;
        assert_eq!(error_code(&refused), "BAD_USER_INPUT", "{variables}: {refused}");
    }
}

#[tokio::test]
async fn a_request_naming_another_venue_is_refused_and_written_into_that_venues_log() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {}", app.b.full);
    let headers = [("authorization", auth.as_str()), ("x-venue", "alpha")];
    let refusals = (0..100).map(|_| app.post("/graphql", &headers, r#"{"query":"{ me { actor } }"}"#));
    for (status, body) in join_all(refusals).await {
        assert_eq!(status, 403, "{body}");
    }
    let refused =
        edges(&log(&app, &app.a.full, json!({ "filter": { "actions": ["security.cross_venue_refused"] } })).await);
    assert_eq!(refused.len(), 1, "one row per credential and minute, however many refusals at once: {refused:?}");
    let event = &refused[0]["node"];
    assert_eq!(event["critical"], true);
    assert_eq!(event["actor"], format!("api_token:{}", app.b.full_id));
    assert_eq!(event["after"]["credential_venue"], app.b.id.to_string());
    let in_b =
        edges(&log(&app, &app.b.full, json!({ "filter": { "actions": ["security.cross_venue_refused"] } })).await);
    assert!(in_b.is_empty(), "the refusal is the named venue's event");
    let unknown = app
        .post(
            "/graphql",
            &[("authorization", &format!("Bearer {}", app.b.full)), ("x-venue", "no-such-venue")],
            r#"{"query":"{ me { actor } }"}"#,
        )
        .await;
    assert_eq!(unknown.0, 403);
}

fn lockouts_at(alerts: &[Value], venue: Uuid) -> Vec<&Value> {
    alerts.iter().filter(|a| a["venue_id"] == venue.to_string() && a["kind"] == "lockout").collect()
}

#[tokio::test]
async fn a_thousand_lockouts_make_one_alert_then_digests_and_none_is_lost_while_the_receiver_is_down() {
    let receiver = AlertReceiver::start().await;
    let app = TestApp::spawn_with(receiver.settings(2)).await;
    let db = Db::new(app.app_pool.clone());
    receiver.down.store(true, Ordering::SeqCst);
    for batch in 0..20 {
        join_all((0..50).map(|i| {
            let db = db.clone();
            let venue = app.a.venue_id();
            async move {
                let summary = format!("password locked out for 30 s (attempt {})", batch * 50 + i);
                alerts::raise(&db, AlertKind::Lockout, Some(venue), &summary).await.unwrap();
            }
        }))
        .await;
    }
    alerts::raise(&db, AlertKind::Lockout, Some(app.b.venue_id()), "one lockout at bravo").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(receiver.refused.load(Ordering::SeqCst) > 0, "deliveries were tried while the receiver was down");
    assert!(receiver.alerts().is_empty());
    receiver.down.store(false, Ordering::SeqCst);

    let count_at = |alerts: &[Value], venue: Uuid| -> i64 {
        lockouts_at(alerts, venue).iter().map(|a| a["count"].as_i64().unwrap()).sum()
    };
    let alerts = receiver
        .wait_for(Duration::from_secs(60), |alerts| {
            count_at(alerts, app.a.id) == 1_000 && count_at(alerts, app.b.id) == 1
        })
        .await;
    assert_eq!(count_at(&alerts, app.a.id), 1_000, "every lockout is counted once: {alerts:#?}");
    let at_a = lockouts_at(&alerts, app.a.id);
    let singles: Vec<&&Value> = at_a.iter().filter(|a| a["digest"] == false).collect();
    assert_eq!(singles.len(), 1, "one alert at once, the rest in digests: {at_a:#?}");
    assert_eq!(singles[0]["count"], 1);
    assert!(at_a.len() <= 4, "1,000 lockouts make a handful of deliveries, not 1,000: {}", at_a.len());
    assert!(at_a.iter().all(|a| a["kind"] == "lockout" && a["text"].as_str().unwrap().contains("lockout")));
    let at_b = lockouts_at(&alerts, app.b.id);
    assert_eq!((at_b.len(), &at_b[0]["digest"]), (1, &json!(false)), "bravo's window is its own");

    // A quiet window later, the next event goes at once again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let before = receiver.alerts().len();
    alerts::raise(&db, AlertKind::Lockout, Some(app.a.venue_id()), "after the quiet").await.unwrap();
    let later = receiver.wait_for(Duration::from_secs(10), |a| a.len() > before).await;
    let newest = later.iter().max_by_key(|a| a["id"].as_i64()).unwrap();
    assert_eq!((newest["digest"].clone(), newest["summary"].clone()), (json!(false), json!("after the quiet")));
}

#[tokio::test]
async fn a_refresh_token_reuse_makes_one_signed_alert_and_a_critical_row_in_the_venues_log() {
    let receiver = AlertReceiver::start().await;
    let s = crate::oauth::setup_with(receiver.settings(2)).await;
    let v = crate::oauth::verifier();
    let code = crate::oauth::code_for(&s, s.app.a.id, &v).await;
    let (_, first) = crate::oauth::exchange(&s, &code, &v).await;
    let app = &s.app;
    let spa = s.spa.clone();
    let refresh = |token: String| {
        let spa = spa.clone();
        async move {
            let form =
                [("grant_type", "refresh_token"), ("refresh_token", token.as_str()), ("client_id", spa.as_str())];
            crate::oauth::token_request(app, &form, None).await.0
        }
    };
    let old = first["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh(old.clone()).await, 200);
    assert_eq!(refresh(old.clone()).await, 400, "the reuse");
    assert_eq!(refresh(old).await, 400, "and again: the family is already revoked");

    let alerts = receiver.wait_for(Duration::from_secs(10), |a| !a.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = [alerts, receiver.alerts()].concat();
    let reuse: std::collections::BTreeSet<i64> =
        alerts.iter().filter(|a| a["kind"] == "refresh_token_reuse").map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(reuse.len(), 1, "one alert: {alerts:#?}");
    let alert = alerts.iter().find(|a| a["kind"] == "refresh_token_reuse").unwrap();
    assert_eq!(alert["venue_id"], s.app.a.id.to_string());
    assert_eq!(alert["count"], 1);
    assert!(alert["text"].as_str().unwrap().contains("refresh_token_reuse"), "Slack's text: {alert}");
    assert!(!alert.to_string().contains(crate::oauth::EMAIL), "no personal data in an alert");

    let rows =
        edges(&log(&s.app, &s.app.a.full, json!({ "filter": { "actions": ["oauth.refresh_token_reused"] } })).await);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["node"]["critical"], true);
    assert_eq!(rows[0]["node"]["actorType"], "OAUTH_CLIENT");
}

/// Superuser tampering with a venue's audit rows, as an attacker with database access would.
pub mod tamper {
    use super::*;

    pub async fn superuser(app: &TestApp) -> sqlx::PgConnection {
        let mut conn = sqlx::PgConnection::connect(&app.superuser_url()).await.unwrap();
        sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER ALL").execute(&mut conn).await.unwrap();
        sqlx::query("ALTER TABLE audit_seals DISABLE TRIGGER ALL").execute(&mut conn).await.unwrap();
        conn
    }

    /// Recomputes the plain chain from `from` on, exactly as the trigger would.
    pub async fn rechain(conn: &mut sqlx::PgConnection, venue: Uuid, from: i64) {
        let last: i64 = sqlx::query_scalar("SELECT max(seq) FROM audit_events WHERE venue_id = $1")
            .bind(venue)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        // One row at a time, in order: each row's prev_hash is the row before's new hash
        // (the canonical text the hash covers leaves both hashes out).
        for seq in from..=last {
            sqlx::query(
                "UPDATE audit_events a SET prev_hash = p.prev, \
                        row_hash = sha256(p.prev || convert_to(public.audit_canonical(a), 'UTF8')) \
                 FROM (SELECT COALESCE((SELECT row_hash FROM audit_events WHERE venue_id = $1 AND seq = $2 - 1), \
                       '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) AS prev) p \
                 WHERE a.venue_id = $1 AND a.seq = $2",
            )
            .bind(venue)
            .bind(seq)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
    }

    /// Edits row `seq` and recomputes the chain forward (the seals cannot be remade).
    pub async fn edit_and_rechain(app: &TestApp, venue: Uuid, seq: i64) {
        let mut conn = superuser(app).await;
        sqlx::query("UPDATE audit_events SET actor = 'operator:nobody' WHERE venue_id = $1 AND seq = $2")
            .bind(venue)
            .bind(seq)
            .execute(&mut conn)
            .await
            .unwrap();
        rechain(&mut conn, venue, seq).await;
    }

    /// Deletes the newest `n` rows and their seals (the chain that remains is intact).
    pub async fn delete_tail(app: &TestApp, venue: Uuid, n: i64) {
        let mut conn = superuser(app).await;
        for table in ["audit_seals", "audit_events"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE venue_id = $1 AND seq > (SELECT max(seq) - $2 FROM audit_events WHERE venue_id = $1)"
            ))
            .bind(venue)
            .bind(n)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }

    /// Inserts a forged row at `seq`, moving the later rows (and their seals) up by one,
    /// and recomputes the chain forward.
    pub async fn insert_row(app: &TestApp, venue: Uuid, seq: i64) {
        let mut conn = superuser(app).await;
        sqlx::query("SET session_replication_role = replica").execute(&mut conn).await.unwrap();
        for table in ["audit_seals", "audit_events"] {
            sqlx::query(&format!("UPDATE {table} SET seq = -seq - 1 WHERE venue_id = $1 AND seq >= $2"))
                .bind(venue)
                .bind(seq)
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(&format!("UPDATE {table} SET seq = -seq WHERE venue_id = $1 AND seq < 0"))
                .bind(venue)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO audit_events (venue_id, seq, actor, action, prev_hash, row_hash) \
             VALUES ($1, $2, 'operator:nobody', 'menu_item.updated', '', '')",
        )
        .bind(venue)
        .bind(seq)
        .execute(&mut conn)
        .await
        .unwrap();
        rechain(&mut conn, venue, seq).await;
    }
}

fn problems_of(reports: &[venueql::audit::ChainReport], slug: &str) -> Vec<String> {
    reports.iter().find(|r| r.venue == slug).unwrap().problems.clone()
}

#[tokio::test]
async fn a_superuser_who_recomputes_the_chain_forward_is_caught_by_the_keyed_seals() {
    let app = TestApp::spawn().await;
    let actor = "operator:test";
    let reports = venueql::audit::verify_all(&app.door, actor, None).await.unwrap();
    assert!(reports.iter().all(|r| r.problems.is_empty() && r.events > 0), "{reports:?}");

    tamper::edit_and_rechain(&app, app.a.id, 2).await;
    let reports = venueql::audit::verify_all(&app.door, actor, None).await.unwrap();
    let problems = problems_of(&reports, "alpha");
    assert!(
        !problems.iter().any(|p| p.contains("does not match its hash") || p.contains("prev_hash")),
        "the plain chain was recomputed and holds: {problems:?}"
    );
    assert!(problems.iter().any(|p| p.starts_with("event 2: its keyed seal does not match")), "{problems:?}");
    let events = reports.iter().find(|r| r.venue == "alpha").unwrap().events;
    assert_eq!(problems.len() as i64, events - 1, "every re-chained row from 2 on: {problems:?}");
    assert!(problems_of(&reports, "bravo").is_empty());

    // Removing the seals as well does not help.
    let mut conn = tamper::superuser(&app).await;
    sqlx::query("DELETE FROM audit_seals WHERE venue_id = $1").bind(app.a.id).execute(&mut conn).await.unwrap();
    let reports = venueql::audit::verify_all(&app.door, actor, None).await.unwrap();
    assert!(problems_of(&reports, "alpha").iter().all(|p| p.ends_with("has no keyed seal")));
}

#[tokio::test]
async fn a_burst_of_bad_webhook_signatures_is_one_alert_and_one_sentry_message_without_personal_data() {
    venueql::app::install_tls_provider();
    let (sentry_port, received) = crate::sentry::fake_sentry().await;
    let dsn = format!("http://publickey@127.0.0.1:{sentry_port}/42");
    // This test's thread gets a Sentry client; the in-process server runs on its runtime.
    // Not dropped on a failure: closing the client waits for its sends, which the fake
    // Sentry on this (then stopped) runtime would never answer.
    let sentry_guard = std::mem::ManuallyDrop::new(sentry::init((dsn, sentry::ClientOptions::default())));
    let receiver = AlertReceiver::start().await;
    let app = TestApp::spawn_with(receiver.settings(60)).await;
    let event = json!({ "id": "evt_forged", "object": "event", "type": "payment_intent.succeeded", "livemode": false,
        "created": 1_700_000_000, "api_version": "2024-06-20", "data": { "object": {} } });
    for _ in 0..25 {
        let (status, _) = app.deliver_signed("/webhooks/stripe", "whsec_not_the_secret", &event).await;
        assert_eq!(status, 400);
    }
    let alerts =
        receiver.wait_for(Duration::from_secs(10), |a| a.iter().any(|a| a["kind"] == "signature_failure_burst")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bursts: Vec<Value> = receiver.alerts().into_iter().filter(|a| a["kind"] == "signature_failure_burst").collect();
    assert_eq!(bursts.len(), 1, "20 refusals make a burst, the next 5 do not make another: {alerts:#?}");
    assert!(bursts[0]["venue_id"].is_null() && bursts[0]["summary"].as_str().unwrap().starts_with("20 refused"));

    let deadline = Instant::now() + Duration::from_secs(10);
    let message = loop {
        let found = received.lock().unwrap().iter().find(|b| b.contains("signature_failure_burst")).cloned();
        if let Some(message) = found {
            break message;
        }
        assert!(Instant::now() < deadline, "no Sentry message for the alert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(message.contains("\"alert.kind\":\"signature_failure_burst\""), "tagged with its kind: {message}");
    let event: Value = message
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &Value| v["message"].is_string())
        .unwrap();
    let text = event["message"].as_str().unwrap();
    assert!(text.starts_with(":rotating_light: venueql critical: `signature_failure_burst`"), "{text}");
    assert!(!text.contains('@') && !message.contains("whsec_"), "no personal data or secrets: {message}");
    tokio::task::spawn_blocking(move || drop(std::mem::ManuallyDrop::into_inner(sentry_guard))).await.unwrap();
}

#[tokio::test]
async fn rows_written_before_keyed_seals_are_sealed_once_by_seal_existing_unless_the_chain_is_broken() {
    let app = TestApp::spawn().await;
    let mut conn = tamper::superuser(&app).await;
    sqlx::query("DELETE FROM audit_seals").execute(&mut conn).await.unwrap();
    let reports = venueql::audit::verify_all(&app.door, "operator:test", None).await.unwrap();
    assert!(problems_of(&reports, "alpha").iter().all(|p| p.ends_with("has no keyed seal")));
    let seal = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_venueql"))
            .args(["audit", "seal-existing"])
            .env("DATABASE_PLATFORM_URL", &app.urls.platform)
            .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let sealed = seal();
    assert!(sealed.status.success(), "{sealed:?}");
    let report: Value = serde_json::from_slice(&sealed.stdout).unwrap();
    assert!(report["venues"].as_array().unwrap().iter().all(|v| v["sealed"].as_i64().unwrap() > 0), "{report}");
    let reports = venueql::audit::verify_all(&app.door, "operator:test", None).await.unwrap();
    assert!(reports.iter().all(|r| r.problems.is_empty()), "{reports:?}");
    let again: Value = serde_json::from_slice(&seal().stdout).unwrap();
    assert!(again["venues"].as_array().unwrap().iter().all(|v| v["sealed"] == 0), "once: {again}");

    // A broken chain is not blessed.
    sqlx::query("DELETE FROM audit_seals WHERE venue_id = $1").bind(app.b.id).execute(&mut conn).await.unwrap();
    sqlx::query("UPDATE audit_events SET actor = 'operator:nobody' WHERE venue_id = $1 AND seq = 2")
        .bind(app.b.id)
        .execute(&mut conn)
        .await
        .unwrap();
    let refused = seal();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("bravo: the audit chain does not verify at event 2"), "{err}");
}

#[tokio::test]
async fn seal_existing_refuses_to_re_bless_a_rewrite_whose_seals_were_deleted_from_there() {
    let app = TestApp::spawn().await;
    let events = venueql::audit::verify_all(&app.door, "operator:test", None).await.unwrap();
    let events = events.iter().find(|r| r.venue == "alpha").unwrap().events;
    assert!(events >= 3, "{events}");
    // A superuser edits row 2, recomputes the chain forward and deletes the seals from there.
    tamper::edit_and_rechain(&app, app.a.id, 2).await;
    let mut conn = tamper::superuser(&app).await;
    sqlx::query("DELETE FROM audit_seals WHERE venue_id = $1 AND seq >= 2")
        .bind(app.a.id)
        .execute(&mut conn)
        .await
        .unwrap();
    let sealed = std::process::Command::new(env!("CARGO_BIN_EXE_venueql"))
        .args(["audit", "seal-existing"])
        .env("DATABASE_PLATFORM_URL", &app.urls.platform)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!sealed.status.success(), "{sealed:?}");
    let err = String::from_utf8_lossy(&sealed.stderr);
    assert!(err.contains("alpha: event 2 has no keyed seal although event 1 before it is sealed"), "{err}");
    let reports = venueql::audit::verify_all(&app.door, "operator:test", None).await.unwrap();
    let problems = problems_of(&reports, "alpha");
    assert_eq!(problems.len() as i64, events - 1, "still caught by verify: {problems:?}");
}
