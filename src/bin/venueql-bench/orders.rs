//! The payments half of `venueql-bench`: the orders queue (50 open orders of 1–5 items),
//! the checkout path (priced from the menu, PaymentIntent created at the local Stripe on
//! loopback) and webhook ingestion (distinct signed events, each making an order, then the
//! same events again as duplicates), each beside the raw SQL of the same work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{DynError, Sample, drive, summarise};
use venueql::access::Permissions;
use venueql::payments::local_stripe::{self, LocalStripe};
use venueql::payments::signature::sign;
use venueql::tenancy::{CrossTenantDoor, Db, VenueId};

/// Platform webhook signing secret of the bench server.
pub const PLATFORM_SECRET: &str = "whsec_bench_platform";
/// Connect webhook signing secret of the bench server.
pub const CONNECT_SECRET: &str = "whsec_bench_connect";

pub(super) const QUEUE_QUERY: &str =
    r#"{"query":"{ ordersQueue { id number status tableRef createdAt items { name quantity unitPriceMinor } } }"}"#;

/// The bench venue, onboarded, with its menu and a full-permission token.
pub(super) struct Shop {
    pub venue: VenueId,
    pub slug: String,
    pub token: String,
    pub items: Vec<Uuid>,
    pub base: String,
    pub client: reqwest::Client,
}

impl Shop {
    async fn graphql(&self, path: &str, auth: Option<&str>, body: Value) -> Result<Value, DynError> {
        let mut request = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        let answer: Value = request.send().await?.json().await?;
        if !answer["errors"].is_null() {
            return Err(format!("{path}: {answer}").into());
        }
        Ok(answer["data"].clone())
    }

    async fn deliver(&self, path: &str, secret: &str, event: &Value) -> Result<(), DynError> {
        let (body, header) = signed(secret, event);
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("stripe-signature", header)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("webhook answered {}", response.status()).into());
        }
        Ok(())
    }

    /// Starts a checkout of `lines` (item index, quantity); returns the client secret.
    async fn checkout(&self, lines: &[(usize, i32)]) -> Result<String, DynError> {
        let items: Vec<Value> =
            lines.iter().map(|(i, q)| json!({ "menuItemId": self.items[*i], "quantity": q })).collect();
        let query = "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { clientSecret } }";
        let data = self
            .graphql(
                &format!("/v/{}/graphql", self.slug),
                None,
                json!({ "query": query, "variables": { "input": { "items": items, "tableRef": "B1" } } }),
            )
            .await?;
        Ok(data["startCheckout"]["clientSecret"].as_str().unwrap_or_default().to_string())
    }
}

fn signed(secret: &str, event: &Value) -> (String, String) {
    let body = event.to_string();
    let header = sign(body.as_bytes(), &SecretString::from(secret.to_string()), chrono::Utc::now().timestamp());
    (body, header)
}

/// The `payment_intent.succeeded` event for a checkout's PaymentIntent (marked paid at
/// the local Stripe).
fn paid_event(stripe: &LocalStripe, client_secret: &str) -> Option<Value> {
    let intent = client_secret.split("_secret_").next()?;
    let amount = stripe.object(intent)?["amount"].clone();
    let charge = format!("ch_{}", local_stripe::random_id(24));
    let object =
        stripe.update(intent, json!({ "status": "succeeded", "amount_received": amount, "latest_charge": charge }))?;
    Some(local_stripe::event("payment_intent.succeeded", object, None))
}

/// Onboards the venue at the local Stripe and places `orders` open orders of 1–5 lines.
pub(super) async fn open_shop(
    door: &CrossTenantDoor,
    stripe: &LocalStripe,
    base: &str,
    slug: &str,
    venue: VenueId,
    orders: usize,
) -> Result<Shop, DynError> {
    let token = venueql::admin::issue_token(door, "operator:venueql-bench", slug, "bench-full", Permissions::all())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut tx = door.open_cross_tenant("operator:venueql-bench", "bench item ids").await?.into_venue(venue).await?;
    let items: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM menu_items ORDER BY name").fetch_all(tx.conn()).await?;
    tx.commit().await?;
    let shop = Shop {
        venue,
        slug: slug.to_string(),
        token: token.token,
        items,
        base: base.to_string(),
        client: reqwest::Client::new(),
    };
    let onboard = json!({ "query": "mutation { startStripeOnboarding(returnUrl: \"https://bench.test/done\", refreshUrl: \"https://bench.test/again\") { accountId } }" });
    let data = shop.graphql("/graphql", Some(&shop.token), onboard).await?;
    let account = data["startStripeOnboarding"]["accountId"].as_str().unwrap_or_default().to_string();
    let ready = json!({ "charges_enabled": true, "payouts_enabled": true, "details_submitted": true,
        "requirements": { "currently_due": [], "disabled_reason": null } });
    let object = stripe.update(&account, ready).ok_or("the local Stripe lost the account")?;
    shop.deliver(
        "/webhooks/stripe/connect",
        CONNECT_SECRET,
        &local_stripe::event("account.updated", object, Some(&account)),
    )
    .await?;
    for n in 0..orders {
        let lines: Vec<(usize, i32)> =
            (0..=(n % 5)).map(|line| ((n + line * 7) % shop.items.len(), 1 + (line % 3) as i32)).collect();
        let secret = shop.checkout(&lines).await?;
        let event = paid_event(stripe, &secret).ok_or("no PaymentIntent for the checkout")?;
        shop.deliver("/webhooks/stripe", PLATFORM_SECRET, &event).await?;
    }
    Ok(shop)
}

async fn http_ok(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(response) => {
            response.status().is_success() && response.bytes().await.is_ok_and(|b| !b.starts_with(b"{\"errors"))
        }
        Err(_) => false,
    }
}

/// The queue over HTTP (from the server's snapshot, from a server without the rate-limit
/// layer, and from one with snapshots off), through the app role with RLS, and as
/// superuser without isolation.
pub(super) async fn measure_queue(
    shop: &Arc<Shop>,
    bases: &super::Bases,
    app_db: &Db,
    superuser: &PgPool,
    concurrency: usize,
    seconds: u64,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (label, base) in [
        ("graphql ordersQueue (50 orders) HTTP", bases.limited.as_str()),
        ("graphql ordersQueue HTTP, rate limits off", bases.unlimited.as_str()),
        ("graphql ordersQueue HTTP, snapshots off", bases.fresh.as_str()),
    ] {
        let (s, url) = (shop.clone(), format!("{base}/graphql"));
        samples.push(
            drive(label, concurrency, seconds, move || {
                let request = s.client.post(&url).bearer_auth(&s.token).header("content-type", "application/json");
                http_ok(request.body(QUEUE_QUERY))
            })
            .await,
        );
    }
    let (db, venue) = (app_db.clone(), shop.venue);
    samples.push(
        drive("raw SQL queue, app role (RLS)", concurrency, seconds, move || {
            let db = db.clone();
            async move {
                let Ok(mut tx) = db.venue_tx(venue).await else {
                    return false;
                };
                let ok = venueql::orders::queue(&mut tx).await.is_ok_and(|orders| orders.len() == 50);
                ok && tx.commit().await.is_ok()
            }
        })
        .await,
    );
    let pool = superuser.clone();
    let sql = Arc::new(format!(
        "{} WHERE o.venue_id = $1 AND o.status IN ('placed', 'preparing', 'ready') ORDER BY o.created_at, o.number",
        venueql::orders::ORDER_SELECT
    ));
    samples.push(
        drive("raw SQL queue, no isolation (superuser)", concurrency, seconds, move || {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                let Ok(mut tx) = pool.begin().await else {
                    return false;
                };
                let rows: Result<Vec<venueql::orders::Order>, _> =
                    sqlx::query_as(&sql).bind(venue.as_uuid()).fetch_all(&mut *tx).await;
                rows.is_ok_and(|r| r.len() == 50) && tx.commit().await.is_ok()
            }
        })
        .await,
    );
    samples
}

/// The checkout's own SQL (price, insert checkout and lines, record the PaymentIntent)
/// through the app role under the venue scope, without HTTP, GraphQL or Stripe.
async fn raw_checkout_sql(db: &Db, venue: VenueId, items: &[Uuid]) -> Result<(), sqlx::Error> {
    let mut tx = db.venue_tx(venue).await?;
    let priced: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT id, price_minor FROM menu_items WHERE id = ANY($1) AND available")
            .bind(items)
            .fetch_all(tx.conn())
            .await?;
    let total: i64 = priced.iter().map(|(_, p)| p).sum::<i64>().max(50);
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO checkouts (venue_id, amount_minor, currency, application_fee_minor, expires_at) \
         VALUES ($1, $2, 'EUR', 0, now() + interval '30 minutes') RETURNING id",
    )
    .bind(venue.as_uuid())
    .bind(total)
    .fetch_one(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO checkout_items (venue_id, checkout_id, line, menu_item_id, name, unit_price_minor, quantity) \
         SELECT $1, $2, l.line, l.item, 'raw', 100, 1 FROM unnest($3::uuid[]) WITH ORDINALITY AS l(item, line)",
    )
    .bind(venue.as_uuid())
    .bind(id)
    .bind(items)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("UPDATE checkouts SET status = 'pending', payment_intent_id = $2 WHERE id = $1")
        .bind(id)
        .bind(format!("pi_raw{}", id.simple()))
        .execute(tx.conn())
        .await?;
    tx.commit().await
}

/// The checkout over HTTP (with the local Stripe) beside its raw SQL.
pub(super) async fn measure_checkout(shop: &Arc<Shop>, app_db: &Db, concurrency: usize, seconds: u64) -> Vec<Sample> {
    let s = shop.clone();
    let mut samples = vec![
        drive("graphql startCheckout HTTP (+ local Stripe)", concurrency, seconds, move || {
            let s = s.clone();
            async move { s.checkout(&[(0, 1), (3, 2)]).await.is_ok_and(|secret| secret.contains("_secret_")) }
        })
        .await,
    ];
    let (db, venue, items) = (app_db.clone(), shop.venue, Arc::new(vec![shop.items[0], shop.items[3]]));
    samples.push(
        drive("raw SQL checkout, app role (RLS)", concurrency, seconds, move || {
            let (db, items) = (db.clone(), items.clone());
            async move { raw_checkout_sql(&db, venue, &items).await.is_ok() }
        })
        .await,
    );
    samples
}

/// Delivers every (body, signature) once from `concurrency` workers; all must answer 2xx.
async fn deliver_all(shop: &Arc<Shop>, label: &str, concurrency: usize, events: Arc<Vec<(String, String)>>) -> Sample {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("{}/webhooks/stripe", shop.base);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (events, next, client, url) = (events.clone(), next.clone(), shop.client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((body, header)) = events.get(index) else { break };
                let t = Instant::now();
                let request = client
                    .post(&url)
                    .header("stripe-signature", header)
                    .header("content-type", "application/json")
                    .body(body.clone());
                match request.send().await {
                    Ok(r) if r.status().is_success() => latencies.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors): (Vec<Duration>, usize) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await.expect("bench task");
        latencies.extend(l);
        errors += e;
    }
    summarise(label, concurrency, started.elapsed(), latencies, errors)
}

/// Webhook ingestion: `count` distinct paid checkouts, spread over `shops`, delivered
/// once (each makes an order), then all again (duplicates, no effect). Returns the two
/// samples and how many orders the events made.
pub(super) async fn measure_webhooks(
    shops: &[Arc<Shop>],
    stripe: &LocalStripe,
    app_db: &Db,
    concurrency: usize,
    count: usize,
) -> Result<(Vec<Sample>, i64), DynError> {
    let orders_before = count_orders(app_db, shops).await?;
    let mut events = Vec::with_capacity(count);
    use futures_util::StreamExt;
    let secrets: Vec<Result<String, DynError>> = futures_util::stream::iter(0..count)
        .map(|n| async move {
            let shop = &shops[n % shops.len()];
            shop.checkout(&[(n % shop.items.len(), 1)]).await
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for secret in secrets {
        let event = paid_event(stripe, &secret?).ok_or("no PaymentIntent for a checkout")?;
        events.push(signed(PLATFORM_SECRET, &event));
    }
    let events = Arc::new(events);
    let venues = if shops.len() == 1 { "1 venue".to_string() } else { format!("{} venues", shops.len()) };
    let label = format!("webhook: distinct events, {venues}");
    let distinct = deliver_all(&shops[0], &label, concurrency, events.clone()).await;
    let label = format!("webhook: same events again, {venues}");
    let duplicates = deliver_all(&shops[0], &label, concurrency, events).await;
    let made = count_orders(app_db, shops).await? - orders_before;
    Ok((vec![distinct, duplicates], made))
}

async fn count_orders(app_db: &Db, shops: &[Arc<Shop>]) -> Result<i64, DynError> {
    let mut total = 0;
    for shop in shops {
        let mut tx = app_db.venue_tx(shop.venue).await?;
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(tx.conn()).await?;
        tx.commit().await?;
        total += orders;
    }
    Ok(total)
}

/// The raw cost of the event store: one signed event's row, inserted and committed.
pub(super) async fn measure_raw_event_store(app_db: &Db, concurrency: usize) -> Sample {
    let db = app_db.clone();
    drive("raw SQL event store insert, app role", concurrency, 3, move || {
        let db = db.clone();
        async move {
            let Ok(mut tx) = db.resolving_tx().await else {
                return false;
            };
            let id = format!("evt_raw{}", Uuid::new_v4().simple());
            let stored: Result<bool, _> = sqlx::query_scalar(
                "SELECT private.store_stripe_event($1, 'platform', 'bench.raw', NULL, false, NULL, 0, '{}')",
            )
            .bind(id)
            .fetch_one(tx.conn())
            .await;
            stored.is_ok_and(|s| s) && tx.commit().await.is_ok()
        }
    })
    .await
}
