//! `TestApp::spawn`: a fresh database with two seeded venues (A and B) and the server
//! running against it. Everything here goes through the same library code as production.

use std::sync::OnceLock;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use venueql::access::Permissions;
use venueql::admin;
use venueql::app::Application;
use venueql::config::Config;
use venueql::db::{self, RoleUrls};
use venueql::dev::{Cluster, ClusterOptions, DemoMenu, random_secret, seed_menu};
use venueql::menu::Allergen;
use venueql::payments::local_stripe::{self, LocalStripe};
use venueql::payments::signature::sign;
use venueql::tenancy::{CrossTenantDoor, Db, VenueId};

use crate::smtp::Mailbox;

const TEMPLATE: &str = "venueql_template";
const ACTOR: &str = "operator:test";

/// The suite's cluster, started once per test process.
pub struct TestCluster {
    pub cluster: Cluster,
    pub password: String,
}

impl TestCluster {
    pub fn urls(&self, database: &str) -> RoleUrls {
        RoleUrls {
            app: self.cluster.url("venueql_app", &self.password, database),
            owner: self.cluster.url("venueql_owner", &self.password, database),
            platform: self.cluster.url("venueql_platform", &self.password, database),
        }
    }
}

/// The suite cluster's directory (its `postgres.log` names each line's database).
fn cluster_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("venueql-test-{}", std::process::id()))
}

/// The suite cluster's server log.
pub fn cluster_log() -> std::path::PathBuf {
    cluster_dir().join("postgres.log")
}

/// Removes clusters left by earlier test processes that are gone.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("venueql-test-").and_then(|p| p.parse::<u32>().ok())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Makes [`TEST_AUDIT_KEY`] this process's audit sealing key.
pub fn install_test_audit_key() {
    let keys = venueql::config::key_ring(&|name| (name == "AUDIT_HMAC_KEY").then(|| TEST_AUDIT_KEY.to_string()))
        .expect("the test audit key");
    venueql::app::install_audit_key(&keys).expect("one audit key per test process");
}

pub fn cluster() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        std::thread::spawn(|| {
            venueql::app::install_tls_provider();
            install_test_audit_key();
            remove_stale_clusters();
            let dir = cluster_dir();
            let password = random_secret();
            let cluster = Cluster::start(&ClusterOptions {
                dir,
                superuser_password: password.clone(),
                throwaway: true,
                ..Default::default()
            })
            .expect("start the test PostgreSQL cluster");
            let test_cluster = TestCluster { cluster, password };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let urls = test_cluster.urls(TEMPLATE);
                db::init(&test_cluster.cluster.superuser_url("postgres"), &urls, None).await.expect("db init");
                db::migrate(&urls.owner).await.expect("migrate the template");
            });
            test_cluster
        })
        .join()
        .expect("cluster start-up thread")
    })
}

/// A seeded venue of the test database.
pub struct TestVenue {
    pub id: Uuid,
    /// Token with every permission.
    pub full: String,
    pub full_id: Uuid,
    /// Token with only ORDERS_QUEUE.
    pub casual: String,
    /// Token with no permission at all.
    pub nothing: String,
    /// The first category's id.
    pub category_id: Uuid,
    /// Every item id (the last one is unavailable).
    pub item_ids: Vec<Uuid>,
    /// Item names, all starting with the venue's name prefix.
    pub item_names: Vec<String>,
    /// A staff member of this venue (MENU_VIEW).
    pub staff_id: Uuid,
    /// An integration client of this venue.
    pub client_id: String,
    /// A live grant (session) at this venue.
    pub grant_id: Uuid,
}

impl TestVenue {
    pub fn venue_id(&self) -> VenueId {
        VenueId::from_door(self.id)
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub database: String,
    pub urls: RoleUrls,
    pub door: CrossTenantDoor,
    /// The app role's pool, for direct SQL checks.
    pub app_pool: PgPool,
    pub a: TestVenue,
    pub b: TestVenue,
    /// The local Stripe the server talks to (`STRIPE_API_BASE`).
    pub stripe: LocalStripe,
    /// The SMTP server the server's mail goes to (`SMTP_URL`).
    pub mail: Mailbox,
    /// The PgBouncer the server's pool goes through, when it does.
    _pgbouncer: Option<crate::pgbouncer::PgBouncer>,
}

/// The test server's master key and identity key (base64 of 32 bytes).
pub const TEST_APP_KEY: &str = "dGVzdCBtYXN0ZXIga2V5IG9mIHZlbnVlcWwgc3VpdGU=";
pub const TEST_IDENTITY_KEY: &str = "dGVzdCBpZGVudGl0eSBrZXkgb2YgdmVudWVxbCB0c3Q=";
/// `AUDIT_HMAC_KEY` of every test server (and of this process, which seals the audit rows
/// its fixtures write).
pub const TEST_AUDIT_KEY: &str = "dGVzdCBhdWRpdCBzZWFsIGtleSBvZiB2ZW51ZXFsIHRzdA==";

/// The test server's master keys (`TEST_APP_KEY`), for calling library functions directly.
pub fn test_master() -> venueql::crypto::MasterKeys {
    use base64::Engine;
    let bytes: [u8; 32] =
        base64::engine::general_purpose::STANDARD.decode(TEST_APP_KEY).unwrap().try_into().expect("32 bytes");
    venueql::crypto::MasterKeys::new(venueql::crypto::Key::from_bytes(bytes), vec![])
}

/// Signing secrets of the test server's webhook endpoints.
pub const PLATFORM_SECRET: &str = "whsec_test_platform";
pub const CONNECT_SECRET: &str = "whsec_test_connect";

const MENU_A: DemoMenu = &[
    (
        "Alpha Drinks",
        &[
            ("Alpha Espresso", "alpha coffee", 250, &[], true),
            ("Alpha Latte", "alpha milk coffee", 380, &[Allergen::Milk], true),
        ],
    ),
    (
        "Alpha Food",
        &[
            ("Alpha Peanut Toast", "alpha toast", 550, &[Allergen::Peanuts], true),
            ("Alpha Secret Soup", "alpha unavailable", 650, &[Allergen::Celery], false),
        ],
    ),
];

const MENU_B: DemoMenu = &[
    (
        "Bravo Drinks",
        &[
            ("Bravo Espresso", "bravo coffee", 260, &[], true),
            ("Bravo Latte", "bravo milk coffee", 390, &[Allergen::Milk], true),
        ],
    ),
    (
        "Bravo Food",
        &[
            ("Bravo Peanut Toast", "bravo toast", 560, &[Allergen::Peanuts], true),
            ("Bravo Secret Soup", "bravo unavailable", 660, &[Allergen::Celery], false),
        ],
    ),
];

async fn seed_venue(door: &CrossTenantDoor, app_db: &Db, slug: &str, menu: DemoMenu) -> TestVenue {
    let venue = admin::create_venue(door, ACTOR, slug, slug, "EUR").await.expect("create venue");
    seed_menu(door, ACTOR, venue.venue_id(), menu).await.expect("seed menu");
    let issue = |name: &'static str, permissions: Permissions| async move {
        admin::issue_token(door, ACTOR, slug, name, permissions).await.expect("issue token")
    };
    let full = issue("full", Permissions::all()).await;
    let casual = issue("casual", Permissions::ORDERS_QUEUE).await;
    let nothing = issue("nothing", Permissions::empty()).await;
    let member = venueql::admin::create_staff(
        door,
        ACTOR,
        &format!("member@{slug}.test"),
        "Member-Password-123",
        &venueql::auth::breach::BreachCheck::off(),
    )
    .await
    .unwrap();
    venueql::admin::grant(door, ACTOR, slug, &member.email, Permissions::MENU_VIEW).await.unwrap();
    let client =
        create_client(door, ACTOR, "integration", "Books", Some(slug), &[], Permissions::MENU_VIEW).await.unwrap();
    let found = venueql::auth::oauth::find_client(app_db, &client.client_id).await.unwrap().unwrap();
    let lifetimes = venueql::auth::oauth::TokenLifetimes {
        access: std::time::Duration::from_secs(900),
        refresh: std::time::Duration::from_secs(900),
        session: std::time::Duration::from_secs(3600),
    };
    venueql::auth::sessions::client_credentials(app_db, lifetimes, &found).await.unwrap();
    let mut tx = app_db.venue_tx(venue.venue_id()).await.unwrap();
    let grant_id: Uuid = sqlx::query_scalar("SELECT id FROM oauth_grants LIMIT 1").fetch_one(tx.conn()).await.unwrap();
    let category_id: Uuid = sqlx::query_scalar("SELECT id FROM menu_categories ORDER BY position LIMIT 1")
        .fetch_one(tx.conn())
        .await
        .unwrap();
    let items: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT i.id, i.name FROM menu_items i JOIN menu_categories c ON (c.venue_id, c.id) = (i.venue_id, i.category_id) \
         ORDER BY c.position, i.position",
    )
    .fetch_all(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    TestVenue {
        id: venue.id,
        full: full.token,
        full_id: full.token_id,
        casual: casual.token,
        nothing: nothing.token,
        category_id,
        item_ids: items.iter().map(|(id, _)| *id).collect(),
        item_names: items.into_iter().map(|(_, name)| name).collect(),
        staff_id: member.id,
        client_id: client.client_id,
        grant_id,
    }
}

impl TestApp {
    /// A fresh database with venues A and B and the server on a free port.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| None).await
    }

    /// As `spawn`, with the server's pool going through a PgBouncer of its own in
    /// transaction pooling mode (`DATABASE_POOL_MODE=transaction`, LISTEN direct).
    pub async fn spawn_behind_pgbouncer() -> TestApp {
        let pgbouncer = crate::pgbouncer::PgBouncer::start(cluster());
        TestApp::spawn_configured(|_| None, Some(pgbouncer)).await
    }

    /// As `spawn`, with extra settings (`name -> value`) for the server.
    pub async fn spawn_with(settings: impl Fn(&str) -> Option<String>) -> TestApp {
        TestApp::spawn_configured(settings, None).await
    }

    async fn spawn_configured(
        settings: impl Fn(&str) -> Option<String>,
        pgbouncer: Option<crate::pgbouncer::PgBouncer>,
    ) -> TestApp {
        let cluster = cluster();
        let database = format!("t_{}", Uuid::new_v4().simple());
        let urls = cluster.urls(&database);
        db::create_database(&cluster.cluster.superuser_url("postgres"), &urls, Some(TEMPLATE))
            .await
            .expect("create the test database");
        let door = CrossTenantDoor::new(db::pool(&urls.platform, 2).await.unwrap());
        let app_pool = db::pool(&urls.app, 4).await.unwrap();
        let app_db = Db::new(app_pool.clone());
        let a = seed_venue(&door, &app_db, "alpha", MENU_A).await;
        let b = seed_venue(&door, &app_db, "bravo", MENU_B).await;

        let app_url = urls.app.clone();
        let pooled_url = pgbouncer.as_ref().map(|pgbouncer| pgbouncer.url("venueql_app", &database));
        let stripe = LocalStripe::start().await.expect("start the local Stripe");
        let stripe_base = stripe.base().to_string();
        let mail = Mailbox::start().await;
        let smtp_url = mail.url();
        let config = Config::from_lookup(|name| {
            settings(name).or_else(|| match name {
                "STRIPE_SECRET_KEY" => Some("sk_test_venueql_suite".into()),
                "STRIPE_API_BASE" => Some(stripe_base.clone()),
                "STRIPE_WEBHOOK_SECRET" => Some(PLATFORM_SECRET.into()),
                "STRIPE_CONNECT_WEBHOOK_SECRET" => Some(CONNECT_SECRET.into()),
                "STRIPE_RETRY_BACKOFF_MS" => Some("5".into()),
                "PAYMENT_JOBS_INTERVAL_SECS" => Some("0".into()),
                "PLATFORM_FEE_BPS" => Some("250".into()),
                "APP_KEY" => Some(TEST_APP_KEY.into()),
                "IDENTITY_HMAC_KEY" => Some(TEST_IDENTITY_KEY.into()),
                "AUDIT_HMAC_KEY" => Some(crate::helpers::TEST_AUDIT_KEY.into()),
                "DATABASE_URL" => Some(pooled_url.clone().unwrap_or_else(|| app_url.clone())),
                "DATABASE_POOL_MODE" if pooled_url.is_some() => Some("transaction".into()),
                "DATABASE_LISTEN_URL" if pooled_url.is_some() => Some(app_url.clone()),
                "LISTEN_ADDR" => Some("127.0.0.1:0".into()),
                "DATABASE_MAX_CONNECTIONS" => Some("4".into()),
                "PUBLIC_HOST_SUFFIX" => Some("venues.test".into()),
                "GRAPHQL_INTROSPECTION" => Some("true".into()),
                "HIBP_MODE" => Some("off".into()),
                "SMTP_URL" => Some(smtp_url.clone()),
                // Every test server shares 127.0.0.1: limits are on only in the tests of limits.
                "RATE_LIMITS" => Some("off".into()),
                "MAIL_RETRY_BASE_SECS" => Some("1".into()),
                // Queue snapshots live until a notification drops them: a missing drop
                // shows as a stale queue instead of being hidden by the age limit.
                "QUEUE_SNAPSHOT_MAX_AGE_MS" => Some("3600000".into()),
                _ => None,
            })
        })
        .expect("test config");
        let app = Application::build(config).await.expect("build the server");
        let base = format!("http://{}", app.local_addr());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        TestApp {
            base,
            client: reqwest::Client::new(),
            database,
            urls,
            door,
            app_pool,
            a,
            b,
            stripe,
            mail,
            _pgbouncer: pgbouncer,
        }
    }

    /// POSTs a raw body to `path` with extra headers; returns status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.body(body).send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
        (status, json)
    }

    /// A staff GraphQL request with `token`.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> Value {
        let auth = format!("Bearer {token}");
        let body = json!({ "query": query, "variables": variables }).to_string();
        let (status, json) = self.post("/graphql", &[("authorization", &auth)], body).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json
    }

    /// A diner GraphQL request at `/v/{slug}/graphql`.
    pub async fn public_gql(&self, slug: &str, query: &str, variables: Value) -> Value {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let (status, json) = self.post(&format!("/v/{slug}/graphql"), &[], body).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json
    }

    /// Delivers `event` to a webhook endpoint, signed with Stripe's scheme and `secret`.
    pub async fn deliver_signed(&self, path: &str, secret: &str, event: &Value) -> (StatusCode, Value) {
        let body = event.to_string();
        let header =
            sign(body.as_bytes(), &secrecy::SecretString::from(secret.to_string()), chrono::Utc::now().timestamp());
        self.post(path, &[("stripe-signature", &header)], body).await
    }

    /// Delivers a platform event (payments, refunds, disputes); asserts 200.
    pub async fn deliver(&self, event: &Value) -> Value {
        let (status, answer) = self.deliver_signed("/webhooks/stripe", PLATFORM_SECRET, event).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }

    /// Onboards `venue` at the local Stripe: the account is created through GraphQL, then
    /// Stripe "finishes" onboarding and sends the signed `account.updated`.
    pub async fn onboard(&self, venue: &TestVenue) -> String {
        let response = self
            .gql(
                &venue.full,
                "mutation { startStripeOnboarding(returnUrl: \"https://venue.test/done\", refreshUrl: \"https://venue.test/again\") { accountId url } }",
                json!({}),
            )
            .await;
        let account = response["data"]["startStripeOnboarding"]["accountId"].as_str().expect("account id").to_string();
        let ready = json!({ "charges_enabled": true, "payouts_enabled": true, "details_submitted": true,
            "requirements": { "currently_due": [], "disabled_reason": null } });
        let object = self.stripe.update(&account, ready).unwrap();
        let event = local_stripe::event("account.updated", object, Some(&account));
        let (status, answer) = self.deliver_signed("/webhooks/stripe/connect", CONNECT_SECRET, &event).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        account
    }

    /// Starts a checkout at `slug` for `(item, quantity)` lines; returns the GraphQL data.
    pub async fn start_checkout(&self, slug: &str, lines: &[(Uuid, i32)]) -> Value {
        let items: Vec<Value> = lines.iter().map(|(id, q)| json!({ "menuItemId": id, "quantity": q })).collect();
        let response = self
            .public_gql(
                slug,
                "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId clientSecret amountMinor currency } }",
                json!({ "input": { "items": items, "tableRef": "T7" } }),
            )
            .await;
        assert!(response["errors"].is_null(), "{response}");
        response["data"]["startCheckout"].clone()
    }

    /// Marks the checkout's PaymentIntent paid at the local Stripe and returns the signed
    /// `payment_intent.succeeded` event (not yet delivered).
    pub fn paid_event(&self, started: &Value) -> Value {
        paid_event(&self.stripe, started)
    }

    /// Onboards (once), checks out one espresso and one toast at `venue` and pays: an order.
    pub async fn place_order(&self, venue: &TestVenue, slug: &str) -> (Value, Value) {
        if self.stripe.requests().iter().all(|r| r.param("metadata[venue_id]") != Some(&venue.id.to_string())) {
            self.onboard(venue).await;
        }
        let started = self.start_checkout(slug, &[(venue.item_ids[0], 2), (venue.item_ids[2], 1)]).await;
        let event = self.paid_event(&started);
        self.deliver(&event).await;
        (started, event)
    }

    /// Number of audit events at `venue` with `action`.
    pub async fn audit_count(&self, venue: &TestVenue, action: &str) -> i64 {
        let db = Db::new(self.app_pool.clone());
        let mut tx = db.venue_tx(venue.venue_id()).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = $1")
            .bind(action)
            .fetch_one(tx.conn())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        n
    }

    /// Breaks the database under the running server (the owner renames a column the menu
    /// reads), so the next menu query fails inside the server.
    pub async fn break_menu_items(&self) {
        let mut owner = <sqlx::PgConnection as sqlx::Connection>::connect(&self.urls.owner).await.unwrap();
        sqlx::query("ALTER TABLE menu_items RENAME COLUMN description TO description_gone")
            .execute(&mut owner)
            .await
            .unwrap();
    }

    /// The superuser URL of this test's database (only for tamper and role-check tests).
    pub fn superuser_url(&self) -> String {
        cluster().cluster.superuser_url(&self.database)
    }
}

/// A hosted page (login, invitation, reset) as a browser without JavaScript sees it.
#[derive(Clone, Debug)]
pub struct HostedPage {
    pub status: StatusCode,
    pub html: String,
    /// The CSRF cookie the page set (or the one carried along).
    pub cookie: String,
}

impl HostedPage {
    /// The value of hidden field `name`.
    pub fn hidden(&self, name: &str) -> Option<String> {
        hidden_field(&self.html, name)
    }
}

/// The value of hidden input `name` in `html`.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..].split('"').next()?.replace("&amp;", "&"))
}

/// GETs a hosted page (absolute URL, e.g. a link from a mail).
pub async fn hosted_get(client: &reqwest::Client, url: &str) -> HostedPage {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("vq_csrf"))
        .unwrap_or_default();
    HostedPage { status, html: response.text().await.unwrap(), cookie }
}

/// Submits the form of `page` to `base` + `path` with its hidden token and CSRF value plus `fields`.
pub async fn hosted_post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    page: &HostedPage,
    fields: &[(&str, &str)],
) -> HostedPage {
    let mut form: Vec<(String, String)> =
        ["csrf", "token"].iter().filter_map(|name| page.hidden(name).map(|value| (name.to_string(), value))).collect();
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let response =
        client.post(format!("{base}{path}")).header("cookie", &page.cookie).form(&form).send().await.unwrap();
    let status = response.status();
    HostedPage { status, html: response.text().await.unwrap(), cookie: page.cookie.clone() }
}

impl TestApp {
    /// GETs a hosted page (absolute URL, e.g. a link from a mail).
    pub async fn hosted_get(&self, url: &str) -> HostedPage {
        hosted_get(&self.client, url).await
    }

    /// Submits the form of `page` to `path` with its hidden token and CSRF value plus `fields`.
    pub async fn hosted_post(&self, path: &str, page: &HostedPage, fields: &[(&str, &str)]) -> HostedPage {
        hosted_post(&self.client, &self.base, path, page, fields).await
    }
}

impl TestApp {
    /// `addStaff` with `token` at its venue: the GraphQL answer.
    pub async fn invite(&self, token: &str, email: &str, permissions: &[&str]) -> Value {
        let query = "mutation($email: String!, $permissions: [Permission!]!) { addStaff(input: { email: $email, permissions: $permissions }) { id email permissions status invitationExpiresAt } }";
        self.gql(token, query, json!({ "email": email, "permissions": permissions })).await
    }

    /// A diner's proof of `email` at `slug`: the code is asked for, read from the mail and
    /// exchanged, as a diner's page would.
    pub async fn diner_proof(&self, slug: &str, email: &str) -> String {
        self.mail_settled().await;
        let to = email.trim().to_lowercase();
        let nth = self.mail.received().iter().filter(|m| m.to.contains(&to)).count();
        let asked =
            self.public_gql(slug, "mutation($e: String!) { requestDinerCode(email: $e) }", json!({ "e": email })).await;
        assert_eq!(asked["data"]["requestDinerCode"], true, "{asked}");
        let (_, body) = self.mail.wait_for_nth(&to, nth).await.text();
        let code = body.split("Your code is ").nth(1).expect("a code in the mail")[..6].to_string();
        let verify = "mutation($e: String!, $c: String!) { verifyDinerCode(email: $e, code: $c) { proof expiresAt } }";
        let verified = self.public_gql(slug, verify, json!({ "e": email, "c": code })).await;
        verified["data"]["verifyDinerCode"]["proof"].as_str().unwrap_or_else(|| panic!("{verified}")).to_string()
    }

    /// Waits until the outbox has sent everything queued so far.
    pub async fn mail_settled(&self) {
        let db = Db::new(self.app_pool.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while venueql::mail::waiting(&db).await.unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "the outbox did not drain");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The `nth` invitation link mailed to `email`.
    pub async fn invitation_link(&self, email: &str, nth: usize) -> String {
        self.mail.wait_for_nth(email, nth).await.link("/oauth/invitation").0
    }

    /// Invites a new person with `token` and accepts as them, choosing `password`;
    /// returns their staff id (as the venue's staff list shows it).
    pub async fn join_as_new_person(&self, token: &str, email: &str, permissions: &[&str], password: &str) -> Uuid {
        self.mail_settled().await;
        let nth = self.mail.received().iter().filter(|m| m.to.iter().any(|t| t == email)).count();
        let invited = self.invite(token, email, permissions).await;
        assert!(invited["errors"].is_null(), "{invited}");
        let page = self.hosted_get(&self.invitation_link(email, nth).await).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        let done = self
            .hosted_post(
                "/oauth/invitation",
                &page,
                &[("step", "create"), ("password", password), ("password2", password)],
            )
            .await;
        assert!(done.html.contains("id=\"accepted\""), "{}", done.html);
        let staff = self.gql(token, "{ staff { id email status } }", json!({})).await;
        let id = staff["data"]["staff"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["email"] == email && m["status"] == "ACTIVE")
            .unwrap_or_else(|| panic!("{email} is not a member: {staff}"))["id"]
            .as_str()
            .unwrap()
            .to_string();
        id.parse().unwrap()
    }
}

/// The `extensions.code` of the first error, or "" when there is none.
pub fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Sends SIGTERM and waits for the process; true when it exited successfully.
    pub fn terminate(&mut self) -> bool {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        self.0.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Marks the checkout's PaymentIntent paid at `stripe` and returns the signed-to-be
/// `payment_intent.succeeded` event.
pub fn paid_event(stripe: &LocalStripe, started: &Value) -> Value {
    let secret = started["clientSecret"].as_str().unwrap();
    let intent_id = secret.split("_secret_").next().unwrap();
    let amount = stripe.object(intent_id).unwrap()["amount"].clone();
    let charge = format!("ch_{}", local_stripe::random_id(24));
    let object = stripe
        .update(intent_id, json!({ "status": "succeeded", "amount_received": amount, "latest_charge": charge }))
        .unwrap();
    local_stripe::event("payment_intent.succeeded", object, None)
}

/// A `venueql serve` process (killed when dropped).
pub struct ServerProcess {
    pub child: KillOnDrop,
    pub base: String,
    /// Its stderr (shown when it does not start; removed when dropped).
    log: std::path::PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

impl ServerProcess {
    /// Kills the process with SIGKILL (a crash: nothing is flushed or finished).
    pub fn kill9(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

/// Starts `venueql serve` as its own process on `database_url` with the suite's settings
/// (keys, the local Stripe at `stripe_base`, its webhook secrets) plus `env`, and waits
/// until it answers `/healthz`.
pub async fn serve_on(database_url: &str, stripe_base: &str, env: &[(&str, &str)]) -> ServerProcess {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("venueql-serve-{}-{port}.log", std::process::id()));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_venueql"));
    command
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("APP_KEY", TEST_APP_KEY)
        .env("IDENTITY_HMAC_KEY", TEST_IDENTITY_KEY)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
        .env("STRIPE_SECRET_KEY", "sk_test_venueql_suite")
        .env("STRIPE_API_BASE", stripe_base)
        .env("STRIPE_WEBHOOK_SECRET", PLATFORM_SECRET)
        .env("STRIPE_CONNECT_WEBHOOK_SECRET", CONNECT_SECRET)
        .env("PAYMENT_JOBS_INTERVAL_SECS", "0")
        .env("HIBP_MODE", "off")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the server's log file"));
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().map(KillOnDrop).expect("start venueql serve");
    // With TLS_CERT_FILE the server speaks HTTPS, under the name its test certificate has.
    let https = env.iter().any(|(name, _)| *name == "TLS_CERT_FILE");
    let base = if https { format!("https://localhost:{port}") } else { format!("http://127.0.0.1:{port}") };
    let probe = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while probe.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "venueql serve did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ServerProcess { child, base, log }
}

impl TestApp {
    /// Starts `venueql serve` as its own process on this test's database, with the test
    /// server's settings plus `env`, and waits until it answers `/healthz`.
    pub async fn serve_process(&self, env: &[(&str, &str)]) -> ServerProcess {
        serve_on(&self.urls.app, self.stripe.base(), env).await
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Registers a client through the door as `admin create-client` does (no web origins).
pub async fn create_client(
    door: &venueql::tenancy::CrossTenantDoor,
    actor: &str,
    kind: &str,
    name: &str,
    venue: Option<&str>,
    redirect_uris: &[String],
    permissions: Permissions,
) -> Result<venueql::auth::clients::CreatedClient, venueql::error::AppError> {
    let new = venueql::auth::clients::NewClient { kind, name, redirect_uris, allowed_origins: &[], permissions };
    venueql::admin::create_client(door, actor, &new, venue).await
}
