//! The audit trail's write-once copy on a real S3 implementation: moto's server, from the
//! virtualenv `scripts/test.sh` prepares, on loopback. Every row reaches the locked bucket
//! in order; Object Lock refuses to delete or replace a batch; a process killed between a
//! PUT and its cursor update leaves no gap and no duplicate; `audit verify --against-worm`
//! catches an edit, a forward-recomputed chain, a deleted tail and an inserted row.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use rusty_s3::actions::{DeleteObject, GetObject, HeadObject, PutObject, S3Action};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit_log::tamper;
use crate::helpers::{KillOnDrop, TEST_AUDIT_KEY, TestApp, free_port};
use venueql::audit::worm::{WormStore, shipped_rows};
use venueql::config::WormSettings;

/// moto's S3 server on a loopback port of its own.
pub struct Moto {
    pub endpoint: String,
    _child: KillOnDrop,
}

fn moto_server() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/moto_server");
    assert!(path.exists(), "{} is missing: scripts/test.sh installs moto[server] there", path.display());
    path
}

impl Moto {
    pub async fn start() -> Moto {
        venueql::app::install_tls_provider();
        let port = free_port();
        let child = std::process::Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut child = KillOnDrop(child);
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            if reqwest::get(&endpoint).await.is_ok_and(|r| r.status().is_success()) {
                return Moto { endpoint, _child: child };
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("moto_server exited ({status}) before answering on port {port}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "moto_server did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new bucket with Object Lock, and the settings that ship to it through `endpoint`.
    pub async fn bucket(&self, endpoint: &str) -> (WormStore, Vec<(String, String)>) {
        let bucket = format!("audit-{}", Uuid::new_v4().simple());
        let env: Vec<(String, String)> = [
            ("AUDIT_S3_BUCKET", bucket.as_str()),
            ("AUDIT_S3_ENDPOINT", endpoint),
            ("AUDIT_S3_REGION", "eu-west-1"),
            ("AUDIT_S3_ACCESS_KEY_ID", "venueql-audit"),
            ("AUDIT_S3_SECRET_ACCESS_KEY", "not-checked-by-moto"),
            ("AUDIT_RETENTION_DAYS", "3"),
            ("AUDIT_EXPORT_INTERVAL_SECS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let store = WormStore::new(&settings(&self.endpoint, &bucket)).unwrap();
        store.create_locked_bucket().await.unwrap();
        (store, env)
    }
}

fn settings(endpoint: &str, bucket: &str) -> WormSettings {
    WormSettings {
        endpoint: endpoint.parse().unwrap(),
        bucket: bucket.to_string(),
        region: "eu-west-1".into(),
        access_key_id: "venueql-audit".into(),
        secret_access_key: "not-checked-by-moto".to_string().into(),
        retention_days: 3,
    }
}

fn lookup(env: &[(String, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let env = env.to_vec();
    move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

async fn rename(app: &TestApp, token: &str, item: Uuid, name: &str) {
    let rename = "mutation($id: ID!, $name: String!) { updateMenuItem(id: $id, input: { name: $name }) { id } }";
    let changed = app.gql(token, rename, json!({ "id": item, "name": name })).await;
    assert!(changed["errors"].is_null(), "{changed}");
}

async fn events_of(app: &TestApp) -> Vec<(Uuid, i64)> {
    let reports = venueql::audit::verify_all(&app.door, "operator:test", None).await.unwrap();
    [(app.a.id, "alpha"), (app.b.id, "bravo")]
        .into_iter()
        .map(|(id, slug)| (id, reports.iter().find(|r| r.venue == slug).unwrap().events))
        .collect()
}

/// Waits until the copy holds every row of both venues; returns the copy's row numbers
/// of each venue after checking they are 1, 2, 3… with no gap, repeat or problem.
async fn wait_until_shipped(app: &TestApp, store: &WormStore) {
    let start = Instant::now();
    loop {
        let mut complete = true;
        for (venue, events) in events_of(app).await {
            let (rows, problems) = shipped_rows(store, venue).await.unwrap();
            assert!(problems.is_empty(), "{problems:?}");
            let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "in order, no gap, no repeat");
            complete &= seqs.len() as i64 == events;
        }
        if complete {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the WORM copy did not catch up within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn venue_report<'a>(reports: &'a [venueql::audit::ChainReport], slug: &str) -> &'a venueql::audit::ChainReport {
    reports.iter().find(|r| r.venue == slug).unwrap()
}

#[tokio::test]
async fn every_row_reaches_the_locked_bucket_and_verify_against_it_catches_an_edit_and_a_deleted_tail() {
    let moto = Moto::start().await;
    let (store, env) = moto.bucket(&moto.endpoint).await;
    let app = TestApp::spawn_with(lookup(&env)).await;
    for (venue, name) in [(&app.a, "Cortado"), (&app.b, "Ristretto"), (&app.a, "Lungo")] {
        rename(&app, &venue.full, venue.item_ids[0], name).await;
    }
    wait_until_shipped(&app, &store).await;
    let (rows, _) = shipped_rows(&store, app.a.id).await.unwrap();
    assert!(rows.iter().all(|r| r.seal.is_some() && r.venue_id == app.a.id), "each row carries its seal");
    assert_eq!(rows.last().unwrap().after.as_ref().unwrap()["name"], "Lungo");
    assert!(!store.list("audit/platform/").await.unwrap().is_empty(), "the platform's audit rows too");

    let reports = venueql::audit::verify_all(&app.door, "operator:test", Some(&store)).await.unwrap();
    for report in &reports {
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!((report.worm_events, report.not_yet_in_worm), (Some(report.events), Some(0)), "{report:?}");
    }

    locked_batches_can_be_neither_deleted_nor_replaced(&moto, &store, &env, app.a.id).await;

    // A superuser edits alpha's row 2 and recomputes the chain; deletes bravo's last 2 rows.
    tamper::edit_and_rechain(&app, app.a.id, 2).await;
    tamper::delete_tail(&app, app.b.id, 2).await;
    let inside = venueql::audit::verify_all(&app.door, "operator:test", None).await.unwrap();
    assert!(venue_report(&inside, "bravo").problems.is_empty(), "a deleted tail leaves an intact chain behind");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_venueql"))
        .args(["audit", "verify", "--against-worm"])
        .env("DATABASE_PLATFORM_URL", &app.urls.platform)
        .env("AUDIT_HMAC_KEY", TEST_AUDIT_KEY)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(!output.status.success(), "tampering fails the verification");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{output:?}"));
    assert_eq!(report["intact"], false);
    let problems = |slug: &str| -> Vec<String> {
        let venue = report["venues"].as_array().unwrap().iter().find(|v| v["venue"] == slug).unwrap();
        venue["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
    };
    let alpha = problems("alpha");
    assert!(alpha.iter().any(|p| p.starts_with("event 2: differs from its WORM copy")), "{alpha:?}");
    assert!(alpha.iter().any(|p| p.starts_with("event 2: its keyed seal does not match")), "{alpha:?}");
    assert!(alpha.iter().any(|p| p.contains("was written over 1 time(s)")), "the forged version is named: {alpha:?}");
    assert!(!alpha.iter().any(|p| p.contains("unreadable")), "and the locked original is what was read: {alpha:?}");
    let bravo = problems("bravo");
    let events = venue_report(&inside, "bravo").events;
    for seq in [events + 1, events + 2] {
        let deleted = format!("event {seq}: in the WORM copy but not in the database (deleted)");
        assert!(bravo.contains(&deleted), "{bravo:?}");
    }
}

/// Object Lock as the tests' S3 enforces it on a shipped batch: compliance mode with a
/// retention date; deleting the version is refused; a write of the same name is refused
/// (If-None-Match) and a plain overwrite only adds a version, the original stays readable.
async fn locked_batches_can_be_neither_deleted_nor_replaced(
    moto: &Moto,
    store: &WormStore,
    env: &[(String, String)],
    venue: Uuid,
) {
    let bucket_name = &env.iter().find(|(k, _)| k == "AUDIT_S3_BUCKET").unwrap().1;
    let name = store.list(&format!("audit/venues/{venue}/")).await.unwrap().remove(0);
    let original = store.get(&name).await.unwrap();
    let bucket = rusty_s3::Bucket::new(
        moto.endpoint.parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        bucket_name.clone(),
        "eu-west-1",
    )
    .unwrap();
    let credentials = rusty_s3::Credentials::new("someone-else", "with-full-access");
    let http = reqwest::Client::new();
    let ttl = Duration::from_secs(60);

    let head = http.head(HeadObject::new(&bucket, Some(&credentials), &name).sign(ttl)).send().await.unwrap();
    let header = |n: &str| head.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(header("x-amz-object-lock-mode").as_deref(), Some("COMPLIANCE"));
    assert!(header("x-amz-object-lock-retain-until-date").is_some());
    let version = header("x-amz-version-id").expect("a versioned bucket");

    let mut delete = DeleteObject::new(&bucket, Some(&credentials), &name);
    delete.query_mut().insert("versionId", version.clone());
    let refused = http.delete(delete.sign(ttl)).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("AccessDenied"));

    let put = PutObject::new(&bucket, Some(&credentials), &name);
    let conditional = http.put(put.sign(ttl)).header("if-none-match", "*").body("forged").send().await.unwrap();
    assert_eq!(conditional.status(), 412, "a batch's name is taken once");
    let overwrite = http.put(put.sign(ttl)).body("forged").send().await.unwrap();
    assert!(overwrite.status().is_success(), "S3 keeps versions: an overwrite adds one");
    let mut get = GetObject::new(&bucket, Some(&credentials), &name);
    get.query_mut().insert("versionId", version);
    let kept = http.get(get.sign(ttl)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(kept.to_vec(), original, "the locked version is still there, unchanged");
}

#[tokio::test]
async fn verify_against_the_worm_copy_catches_an_inserted_row() {
    let moto = Moto::start().await;
    let (store, env) = moto.bucket(&moto.endpoint).await;
    let app = TestApp::spawn_with(lookup(&env)).await;
    rename(&app, &app.a.full, app.a.item_ids[0], "Cortado").await;
    wait_until_shipped(&app, &store).await;
    tamper::insert_row(&app, app.a.id, 3).await;
    let reports = venueql::audit::verify_all(&app.door, "operator:test", Some(&store)).await.unwrap();
    let alpha = &venue_report(&reports, "alpha").problems;
    assert!(alpha.iter().any(|p| p.starts_with("event 3: differs from its WORM copy")), "{alpha:?}");
    assert!(alpha.iter().any(|p| p.starts_with("event 3: has no keyed seal")), "{alpha:?}");
    assert!(venue_report(&reports, "bravo").problems.is_empty());
}

/// Forwards every request to moto, except that it answers nothing to the first PUT of a
/// venue batch after moto stored it: the server's exporter waits forever, and is killed.
#[derive(Clone)]
struct Proxy {
    target: String,
    hold_next_put: Arc<AtomicBool>,
    held: Arc<tokio::sync::Notify>,
    http: reqwest::Client,
}

async fn forward(State(proxy): State<Proxy>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = proxy.http.request(method.clone(), format!("{}{path}", proxy.target));
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.body(body).send().await.unwrap();
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap();
    let batch_put = method == Method::PUT && path.contains("/audit/venues/");
    if batch_put && status.is_success() && proxy.hold_next_put.swap(false, Ordering::SeqCst) {
        proxy.held.notify_one();
        std::future::pending::<()>().await;
    }
    let mut response = (status, bytes).into_response();
    for (name, value) in &answer_headers {
        if name != "content-length" && name != "transfer-encoding" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

#[tokio::test]
async fn a_process_killed_between_the_put_and_the_cursor_leaves_no_gap_and_no_duplicate() {
    let moto = Moto::start().await;
    let proxy = Proxy {
        target: moto.endpoint.clone(),
        hold_next_put: Arc::new(AtomicBool::new(true)),
        held: Arc::new(tokio::sync::Notify::new()),
        http: reqwest::Client::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new().fallback(forward).with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let (store, env) = moto.bucket(&proxy_url).await;
    let app = TestApp::spawn().await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    let mut first = app.serve_process(&env).await;
    tokio::time::timeout(Duration::from_secs(30), proxy.held.notified()).await.expect("a batch was stored");
    first.kill9();
    let stored = store.list("audit/venues/").await.unwrap();
    assert_eq!(stored.len(), 1, "one batch stored, its cursor never moved: {stored:?}");
    let mut superuser = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
    let cursors: i64 =
        sqlx::query_scalar("SELECT count(*) FROM private.audit_export_cursors WHERE stream LIKE 'venue:%'")
            .fetch_one(&mut superuser)
            .await
            .unwrap();
    assert_eq!(cursors, 0);

    // More rows arrive before the restart, so the next batch from that cursor is longer
    // than the stored one: the exporter must adopt the stored batch, not write an overlap.
    for name in ["Cortado", "Lungo"] {
        rename(&app, &app.a.full, app.a.item_ids[0], name).await;
        rename(&app, &app.b.full, app.b.item_ids[0], name).await;
    }
    let _second = app.serve_process(&env).await;
    wait_until_shipped(&app, &store).await;
    let names = store.list("audit/venues/").await.unwrap();
    assert!(names.contains(&stored[0]), "the batch stored before the crash is kept: {names:?}");
}

/// The platform stream's ids in the copy, in order.
async fn shipped_platform_ids(store: &WormStore) -> Vec<i64> {
    let mut ids = Vec::new();
    for name in store.list("audit/platform/").await.unwrap() {
        let body = store.get(&name).await.unwrap();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            ids.push(serde_json::from_slice::<Value>(line).unwrap()["id"].as_i64().unwrap());
        }
    }
    ids
}

#[tokio::test]
async fn the_platform_stream_waits_for_a_row_still_in_flight_and_passes_one_rolled_back() {
    let moto = Moto::start().await;
    let (store, env) = moto.bucket(&moto.endpoint).await;
    let app = TestApp::spawn_with(lookup(&env)).await;
    wait_until_shipped(&app, &store).await;

    // A door transaction holds its audit row (an id) uncommitted while later rows commit.
    let held = app.door.open_cross_tenant("operator:test", "held open by the test").await.unwrap();
    let later = app.door.open_cross_tenant("operator:test", "committed after").await.unwrap();
    later.commit().await.unwrap();
    let rolled_back = app.door.open_cross_tenant("operator:test", "rolled back").await.unwrap();
    drop(rolled_back);
    let last = app.door.open_cross_tenant("operator:test", "last").await.unwrap();
    last.commit().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = shipped_platform_ids(&store).await;
    let max_shipped = *waiting.last().unwrap();
    let count_before: i64 = {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM platform_audit_events").fetch_one(&mut conn).await.unwrap()
    };
    assert!(
        (max_shipped as usize) < count_before as usize + 2,
        "rows after the one in flight wait: shipped up to {max_shipped}"
    );
    assert_eq!(waiting, (1..=max_shipped).collect::<Vec<_>>(), "no id is skipped");

    held.commit().await.unwrap();
    let start = Instant::now();
    loop {
        let ids = shipped_platform_ids(&store).await;
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.superuser_url()).await.unwrap();
        let committed: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM platform_audit_events ORDER BY id").fetch_all(&mut conn).await.unwrap();
        if ids == committed {
            assert!(committed.windows(2).any(|w| w[1] == w[0] + 2), "the rolled-back id is a gap passed over");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "copy {ids:?} never matched {committed:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
