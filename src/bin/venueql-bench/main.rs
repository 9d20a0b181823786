//! `venueql-bench`, the benchmark (its own binary, not part of the server's): starts a private cluster, a local Stripe and the real server on
//! loopback, seeds two venues, and measures in one run, at each concurrency, the menu
//! query and the orders queue over HTTP and the checkout path, each beside the same SQL
//! through the app pool under the venue scope (RLS on) and (for reads) through a
//! superuser pool with only an explicit `WHERE venue_id` (no isolation); then webhook
//! ingestion of distinct and duplicate signed events. The cost of tenant isolation and
//! of the HTTP/GraphQL layers can be read off side by side, and so can the rate-limit
//! layer's: the menu and the queue are also read from a server with `RATE_LIMITS=off`
//! (the measured server has limits on, set high enough that nothing is refused). Last,
//! the worst `Stripe-Signature` an attacker can send (6,000 `v1=` entries, 1 MB body)
//! is timed in the verifier and over HTTP, 20 clients send fragment bombs in a loop while
//! `/readyz` is timed, and the reset page is timed with and without an account.

mod hostile;
mod orders;
mod signature;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use venueql::access::Permissions;
use venueql::app::install_tls_provider;
use venueql::db::{self, RoleUrls};
use venueql::dev::{Cluster, ClusterOptions, random_secret};
use venueql::menu::{Allergen, CategoryFields, ItemFields};
use venueql::tenancy::{CrossTenantDoor, Db, VenueId};
use venueql::{admin, menu};

/// Options of `venueql-bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchOptions {
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "8,32,64", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Distinct signed payment events delivered in the webhook measurement.
    #[arg(long, default_value_t = 3000)]
    pub webhook_events: usize,
    /// Connections in the server's pool (and in each raw-SQL pool beside it).
    #[arg(long, default_value_t = 16)]
    pub pool_size: u32,
    /// Comma-separated measurements to run: menu, queue, checkout, webhooks, signature,
    /// hostile (default all).
    #[arg(long, value_delimiter = ',', default_value = "menu,queue,checkout,webhooks,signature,hostile")]
    pub only: Vec<String>,
}

impl BenchOptions {
    fn runs(&self, measurement: &str) -> bool {
        self.only.iter().any(|m| m == measurement)
    }
}

/// The load generator makes many small allocations too (requests, JSON): the same
/// allocator as the server's, so the figures compare with earlier runs of the benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type DynError = Box<dyn std::error::Error + Send + Sync>;

const MENU_QUERY: &str =
    r#"{"query":"{ menu { categories { name items { name priceMinor currency allergens available } } } }"}"#;

/// Throughput and latency of one measurement.
struct Sample {
    label: String,
    concurrency: usize,
    requests: usize,
    errors: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarise(
    label: &str,
    concurrency: usize,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
    errors: usize,
) -> Sample {
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Sample {
        label: label.to_string(),
        concurrency,
        requests: latencies.len(),
        errors,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

/// Runs `work` from `concurrency` tasks for `seconds`, timing each call.
async fn drive<F, Fut>(label: &str, concurrency: usize, seconds: u64, work: F) -> Sample
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let work = Arc::new(work);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < deadline {
                let t = Instant::now();
                if work().await { latencies.push(t.elapsed()) } else { errors += 1 }
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await.expect("bench task");
        latencies.extend(l);
        errors += e;
    }
    summarise(label, concurrency, started.elapsed(), latencies, errors)
}

async fn raw_menu_sql(conn: &mut sqlx::PgConnection, venue: Uuid) -> Result<usize, sqlx::Error> {
    let categories: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM menu_categories WHERE venue_id = $1 ORDER BY position, name")
            .bind(venue)
            .fetch_all(&mut *conn)
            .await?;
    let items: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT id, name, price_minor FROM menu_items WHERE venue_id = $1 AND (available OR $2) ORDER BY position, name",
    )
    .bind(venue)
    .bind(true)
    .fetch_all(&mut *conn)
    .await?;
    Ok(categories.len() + items.len())
}

async fn seed_bench_venue(door: &CrossTenantDoor, slug: &str) -> Result<(VenueId, String), DynError> {
    let actor = "operator:venueql-bench";
    let venue = admin::create_venue(door, actor, slug, slug, "EUR").await.map_err(|e| format!("{e:?}"))?;
    let tx = door.open_cross_tenant(actor, "seed bench menu").await?;
    let mut tx = tx.into_venue(venue.venue_id()).await?;
    let who = venueql::audit::Who::operator(actor);
    for c in 0..5 {
        let fields = CategoryFields { name: Some(format!("Category {c}")), position: Some(c) };
        let category = menu::create_category(&mut tx, &who, fields).await.map_err(|e| format!("{e:?}"))?;
        for i in 0..8 {
            let fields = ItemFields {
                category_id: Some(category.id),
                name: Some(format!("Item {c}-{i}")),
                description: Some("A bench item with a description of typical length".into()),
                price_minor: Some(450 + i64::from(i) * 10),
                allergens: Some(vec![Allergen::Milk, Allergen::Eggs]),
                available: Some(true),
                position: Some(i),
            };
            menu::create_item(&mut tx, &who, fields).await.map_err(|e| format!("{e:?}"))?;
        }
    }
    tx.commit().await?;
    let token =
        admin::issue_token(door, actor, slug, "bench", Permissions::MENU_VIEW).await.map_err(|e| format!("{e:?}"))?;
    Ok((venue.venue_id(), token.token))
}

/// A memory figure (`VmRSS`, `VmHWM`: peak) of a process, in MB.
fn memory_mb(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The server under test as its own process (`venueql serve`, the binary built beside this one), so that its
/// memory is measured apart from the load generator and the local Stripe; killed on drop.
struct ServerProcess {
    child: std::process::Child,
}

impl ServerProcess {
    /// Starts `venueql serve` with exactly `env` (plus a free loopback port) and waits
    /// until `/healthz` answers; returns it with its base URL.
    async fn start(env: &[(&str, String)]) -> Result<(ServerProcess, String), DynError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = std::process::Command::new(server_binary()?);
        command
            .arg("serve")
            .env_clear()
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let server = ServerProcess { child: command.spawn()? };
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            if Instant::now() > deadline {
                return Err("venueql serve did not answer /healthz within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((server, base))
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary built beside this one (`cargo build --release` builds both).
fn server_binary() -> Result<std::path::PathBuf, DynError> {
    let server = std::env::current_exe()?.with_file_name("venueql");
    if server.is_file() {
        Ok(server)
    } else {
        Err(format!("{} is missing: build the server first (cargo build --release)", server.display()).into())
    }
}

/// Command-line options of the benchmark.
#[derive(clap::Parser)]
#[command(name = "venueql-bench", about = "Measure venueql: menu, queue, checkout, webhooks, rate limits, signatures")]
struct Cli {
    #[command(flatten)]
    options: BenchOptions,
}

fn main() -> std::process::ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("venueql-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark and prints a table and one JSON line per measurement.
async fn run(options: BenchOptions) -> Result<(), DynError> {
    install_tls_provider();
    let dir = std::env::temp_dir().join(format!("venueql-bench-{}", std::process::id()));
    let superuser_password = random_secret();
    let cluster = Cluster::start(&ClusterOptions { dir: dir.clone(), superuser_password, ..Default::default() })?;
    let result = measure(&cluster, &options).await;
    cluster.stop();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(cluster: &Cluster, options: &BenchOptions) -> Result<(), DynError> {
    let secret = random_secret();
    let urls = RoleUrls {
        app: cluster.url("venueql_app", &secret, "venueql"),
        owner: cluster.url("venueql_owner", &secret, "venueql"),
        platform: cluster.url("venueql_platform", &secret, "venueql"),
    };
    db::init(&cluster.superuser_url("postgres"), &urls, None).await?;
    db::migrate(&urls.owner).await?;
    // The keys every replica shares: made for this run, and the audit key also sealing
    // the rows this process writes while seeding.
    let keys: Vec<(&str, String)> = ["APP_KEY", "IDENTITY_HMAC_KEY", "AUDIT_HMAC_KEY"]
        .into_iter()
        .map(|name| (name, venueql::crypto::random_key_base64()))
        .collect();
    let ring = venueql::config::key_ring(&|name| keys.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))?;
    venueql::app::install_audit_key(&ring)?;
    let door = CrossTenantDoor::new(db::pool(&urls.platform, 2).await?);
    let (venue, token) = seed_bench_venue(&door, "bench-a").await?;
    seed_bench_venue(&door, "bench-b").await?;

    let max_concurrency = options.concurrency.iter().copied().max().unwrap_or(8);
    let pool_size = options.pool_size;
    let stripe = venueql::payments::local_stripe::LocalStripe::start().await?;
    let mut server_env = vec![
        ("DATABASE_URL", urls.app.clone()),
        ("DATABASE_MAX_CONNECTIONS", pool_size.to_string()),
        ("STRIPE_SECRET_KEY", "sk_test_venueql_bench".into()),
        ("STRIPE_API_BASE", stripe.base().to_string()),
        ("STRIPE_WEBHOOK_SECRET", orders::PLATFORM_SECRET.into()),
        ("STRIPE_CONNECT_WEBHOOK_SECRET", orders::CONNECT_SECRET.into()),
        ("PLATFORM_FEE_BPS", "250".into()),
        ("PAYMENT_JOBS_INTERVAL_SECS", "0".into()),
        ("RETENTION_INTERVAL_SECS", "0".into()),
        ("RUST_LOG", "info".into()),
    ];
    server_env.extend(keys.iter().map(|(name, value)| (*name, value.clone())));
    // Rate limits on (the default), every bucket far above what the bench sends: the
    // layer does all its work and refuses nothing.
    let unrefused = u32::MAX.to_string();
    for name in [
        "RATE_LIMIT_PUBLIC_PER_ADDRESS",
        "RATE_LIMIT_CHECKOUT_PER_ADDRESS",
        "RATE_LIMIT_CHECKOUT_PER_VENUE",
        "RATE_LIMIT_STAFF_PER_TOKEN",
        "RATE_LIMIT_OAUTH_PER_ADDRESS",
    ] {
        server_env.push((name, unrefused.clone()));
    }
    // The reset timing asks for one account's link many times: no lockout in the way.
    for name in ["LOCKOUT_IDENTIFIER_LIMIT", "LOCKOUT_IP_LIMIT"] {
        server_env.push((name, "1000000".into()));
    }
    let (server, base) = ServerProcess::start(&server_env).await?;
    // The same server without the rate-limit layer.
    let mut unlimited_env = server_env.clone();
    unlimited_env.push(("RATE_LIMITS", "off".into()));
    let (unlimited_server, unlimited_base) = ServerProcess::start(&unlimited_env).await?;
    // The same server with queue snapshots off: every ordersQueue reads the database.
    server_env.push(("QUEUE_SNAPSHOT_MAX_AGE_MS", "0".into()));
    let (fresh_server, fresh_base) = ServerProcess::start(&server_env).await?;
    let bases = Bases { limited: base.clone(), unlimited: unlimited_base, fresh: fresh_base };

    let client = reqwest::Client::builder().pool_max_idle_per_host(max_concurrency).build()?;
    let app_db = Db::new(db::pool(&urls.app, pool_size).await?);
    let superuser: PgPool = db::pool(&cluster.superuser_url("venueql"), pool_size).await?;
    let auth = format!("Bearer {token}");
    let shop = Arc::new(orders::open_shop(&door, &stripe, &base, "bench-a", venue, 50).await?);

    let mut samples = Vec::new();
    for &concurrency in &options.concurrency {
        if options.runs("menu") {
            samples.extend(
                measure_menu(&client, &bases, &auth, &app_db, &superuser, venue, concurrency, options.seconds).await,
            );
        }
        if options.runs("queue") {
            samples
                .extend(orders::measure_queue(&shop, &bases, &app_db, &superuser, concurrency, options.seconds).await);
        }
        if options.runs("checkout") {
            samples.extend(orders::measure_checkout(&shop, &app_db, concurrency, options.seconds).await);
        }
    }
    let mut made = Vec::new();
    if options.runs("webhooks") {
        made = measure_all_webhooks(&door, &stripe, &base, &shop, &app_db, &mut samples, options).await?;
    }
    let signature = if options.runs("signature") { Some(signature::measure(&client, &base).await?) } else { None };
    let hostile_figures = if options.runs("hostile") {
        Some(measure_hostile(&door, &base, &auth, options.seconds, &mut samples).await?)
    } else {
        None
    };
    println!(
        "{:<40} {:>5} {:>9} {:>7} {:>10} {:>9} {:>9}",
        "measurement", "conc", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
    for s in &samples {
        println!(
            "{:<40} {:>5} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2}",
            s.label, s.concurrency, s.requests, s.errors, s.per_second, s.p50_ms, s.p99_ms
        );
    }
    for s in &samples {
        println!(
            "{}",
            serde_json::json!({ "measurement": s.label, "concurrency": s.concurrency, "requests": s.requests,
                "errors": s.errors, "per_second": s.per_second.round(), "p50_ms": s.p50_ms, "p99_ms": s.p99_ms })
        );
    }
    let exactly_once = made.iter().all(|n| *n == options.webhook_events as i64);
    if options.runs("webhooks") {
        println!(
            "webhook effects: each run of {} distinct events (then the same again) made {made:?} orders (exactly once: {exactly_once})",
            options.webhook_events
        );
    }
    if let Some(signature) = signature {
        signature.print();
    }
    if let Some((slowest, (dearest_median, dearest_max), reset)) = hostile_figures {
        println!("/readyz while 20 clients sent fragment bombs: slowest {slowest:.2} ms");
        println!(
            "the dearest document the budget admits (1,999 selections, validated then refused for complexity): median {dearest_median:.2} ms, slowest {dearest_max:.2} ms"
        );
        reset.print();
    }
    let pid = server.pid();
    println!(
        "server (venueql serve, its own process) resident memory: {:.0} MB now, {:.0} MB peak (VmHWM) over the whole run",
        memory_mb(&pid, "VmRSS"),
        memory_mb(&pid, "VmHWM")
    );
    drop(server);
    drop(unlimited_server);
    drop(fresh_server);
    Ok(())
}

/// The hostile measurements: fragment bombs with `/readyz` beside them (their samples go
/// to `samples`), the dearest admitted document, and the reset page's timing both ways.
async fn measure_hostile(
    door: &CrossTenantDoor,
    base: &str,
    auth: &str,
    seconds: u64,
    samples: &mut Vec<Sample>,
) -> Result<(f64, (f64, f64), hostile::ResetTiming), DynError> {
    let (bombs, ready, slowest) = hostile::measure_bombs(base, auth, "bench-a", 20, seconds).await?;
    samples.extend([bombs, ready]);
    let known = "known@bench.invalid";
    let breach = venueql::auth::breach::BreachCheck::off();
    admin::create_staff(door, "operator:venueql-bench", known, "Bench-Known-Pass-1", &breach)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let dearest = hostile::measure_dearest_admitted(base, auth, 200).await?;
    Ok((slowest, dearest, hostile::measure_reset_timing(base, known, 100).await?))
}

/// Base URLs of the servers under test, all on one database.
pub(crate) struct Bases {
    /// Rate limits on (refusing nothing), queue snapshots on: the production setup.
    pub limited: String,
    /// The same with `RATE_LIMITS=off`.
    pub unlimited: String,
    /// Queue snapshots off.
    pub fresh: String,
}

/// The menu over HTTP (with and without the rate-limit layer), beside its SQL with RLS
/// and without isolation.
#[allow(clippy::too_many_arguments)]
async fn measure_menu(
    client: &reqwest::Client,
    bases: &Bases,
    auth: &str,
    app_db: &Db,
    superuser: &PgPool,
    venue: VenueId,
    concurrency: usize,
    seconds: u64,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (label, base) in
        [("graphql menu over HTTP", &bases.limited), ("graphql menu over HTTP, rate limits off", &bases.unlimited)]
    {
        let (client, url, auth) = (client.clone(), format!("{base}/graphql"), auth.to_string());
        samples.push(
            drive(label, concurrency, seconds, move || {
                let request = client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(MENU_QUERY);
                async move {
                    match request.send().await {
                        Ok(response) => {
                            response.status().is_success()
                                && response.bytes().await.is_ok_and(|b| !b.starts_with(b"{\"errors"))
                        }
                        Err(_) => false,
                    }
                }
            })
            .await,
        );
    }
    let db = app_db.clone();
    samples.push(
        drive("raw SQL, app role, venue scope (RLS)", concurrency, seconds, move || {
            let db = db.clone();
            async move {
                let Ok(mut tx) = db.venue_tx(venue).await else {
                    return false;
                };
                let ok = raw_menu_sql(tx.conn(), venue.as_uuid()).await.is_ok_and(|n| n == 45);
                ok && tx.commit().await.is_ok()
            }
        })
        .await,
    );
    let pool = superuser.clone();
    samples.push(
        drive("raw SQL, no isolation (superuser)", concurrency, seconds, move || {
            let pool = pool.clone();
            async move {
                let Ok(mut tx) = pool.begin().await else {
                    return false;
                };
                let ok = raw_menu_sql(&mut tx, venue.as_uuid()).await.is_ok_and(|n| n == 45);
                ok && tx.commit().await.is_ok()
            }
        })
        .await,
    );
    samples
}

/// Webhooks: all events for one venue (serialised by its order numbers and audit
/// chain), then spread over four venues as the platform endpoint sees them; returns how
/// many orders each run made.
async fn measure_all_webhooks(
    door: &CrossTenantDoor,
    stripe: &venueql::payments::local_stripe::LocalStripe,
    base: &str,
    shop: &Arc<orders::Shop>,
    app_db: &Db,
    samples: &mut Vec<Sample>,
    options: &BenchOptions,
) -> Result<Vec<i64>, DynError> {
    let mut shops = vec![shop.clone()];
    for slug in ["bench-c", "bench-d", "bench-e"] {
        let (venue, _) = seed_bench_venue(door, slug).await?;
        shops.push(Arc::new(orders::open_shop(door, stripe, base, slug, venue, 0).await?));
    }
    let mut made = Vec::new();
    for spread in [1, shops.len()] {
        let (webhook_samples, orders) =
            orders::measure_webhooks(&shops[..spread], stripe, app_db, 32, options.webhook_events).await?;
        samples.extend(webhook_samples);
        made.push(orders);
    }
    samples.push(orders::measure_raw_event_store(app_db, 32).await);
    Ok(made)
}
