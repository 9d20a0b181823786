//! `venueql dev`: the embedded default. Starts (or reuses) a private PostgreSQL cluster in
//! the data directory, creates the roles, migrates, seeds two demo venues once, writes
//! `dev.json`, and serves until Ctrl-C/SIGTERM, then stops the server and the cluster. It
//! also runs the local Stripe stand-in (unless `STRIPE_SECRET_KEY` is set), serves the
//! example apps (`apps`), and `dev pay` pays a checkout of the running server.

mod apps;
pub mod cluster;

pub use cluster::{Cluster, ClusterError, ClusterOptions, find_pg_bindir, random_secret};

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::access::Permissions;
use crate::admin;
use crate::app::{Application, shutdown_signal};
use crate::audit::Who;
use crate::auth::breach::BreachCheck;
use crate::config::Config;
use crate::db::{self, RoleUrls};
use crate::error::AppError;
use crate::menu::{self, Allergen, CategoryFields, ItemFields};
use crate::payments::local_stripe::{self, LocalStripe};
use crate::payments::stripe::StripeClient;
use crate::payments::{Payments, accounts, events};
use crate::tenancy::{CrossTenantDoor, Db};

/// The secret key `venueql dev` gives the server when it runs the local Stripe stand-in.
const LOCAL_STRIPE_KEY: &str = "sk_test_venueql_local_dev";

/// Options of `venueql dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Data directory (default `.venueql/`).
    pub data_dir: PathBuf,
    /// Listen address (default `LISTEN_ADDR` or 127.0.0.1:8080).
    pub listen: Option<SocketAddr>,
}

/// Secrets `venueql dev` generates once and keeps in `DIR/secrets.json` (mode 0600).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DevSecrets {
    superuser_password: String,
    owner_password: String,
    app_password: String,
    platform_password: String,
    seed: Option<DemoSeed>,
    /// `APP_KEY` of the dev server (base64), so login pages survive restarts.
    #[serde(default)]
    app_key: Option<String>,
    /// Demo SPA clients by their dev callback URI (one per listen address used).
    #[serde(default)]
    spa_clients: std::collections::BTreeMap<String, String>,
    /// `IDENTITY_HMAC_KEY` of the dev server (base64), so diners are recognised across restarts.
    #[serde(default)]
    identity_hmac_key: Option<String>,
    /// `AUDIT_HMAC_KEY` of the dev server (base64): seals the audit rows.
    #[serde(default)]
    audit_hmac_key: Option<String>,
    /// Signing secret of the dev server's `/webhooks/stripe` (unless set in the environment).
    #[serde(default)]
    stripe_webhook_secret: Option<String>,
    /// Signing secret of the dev server's `/webhooks/stripe/connect`.
    #[serde(default)]
    stripe_connect_webhook_secret: Option<String>,
    /// demo-cafe's kitchen display client (the example app), moved to its port each start.
    #[serde(default)]
    kitchen_client: Option<String>,
}

/// What the demo seed created, as written to `dev.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoSeed {
    /// The demo staff member (member of both venues with every permission).
    pub manager: DemoLogin,
    /// The demo venues.
    pub venues: Vec<DemoVenue>,
}

/// A demo login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoLogin {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// A demo venue and its API tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoVenue {
    /// Slug.
    pub slug: String,
    /// Venue id.
    pub id: Uuid,
    /// API tokens with their permission names.
    pub tokens: Vec<DemoToken>,
}

/// A demo API token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoToken {
    /// What it is for (`everything`, `casual`).
    pub name: String,
    /// Token id.
    pub token_id: Uuid,
    /// The bearer token.
    pub token: String,
    /// Permission names.
    pub permissions: Vec<String>,
}

type DynError = Box<dyn std::error::Error + Send + Sync>;

fn load_or_create_secrets(path: &Path) -> Result<DevSecrets, DynError> {
    if let Ok(text) = fs::read_to_string(path) {
        return Ok(serde_json::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))?);
    }
    let secrets = DevSecrets {
        superuser_password: random_secret(),
        owner_password: random_secret(),
        app_password: random_secret(),
        platform_password: random_secret(),
        seed: None,
        app_key: None,
        spa_clients: Default::default(),
        identity_hmac_key: None,
        audit_hmac_key: None,
        stripe_webhook_secret: None,
        stripe_connect_webhook_secret: None,
        kitchen_client: None,
    };
    save_secrets(path, &secrets)?;
    Ok(secrets)
}

fn save_secrets(path: &Path, secrets: &DevSecrets) -> Result<(), DynError> {
    fs::write(path, serde_json::to_string_pretty(secrets)?)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The role URLs of a `venueql dev` cluster (the environment wins where set).
fn dev_urls(cluster: &Cluster, secrets: &DevSecrets) -> RoleUrls {
    let env_or = |name: &str, default: String| std::env::var(name).unwrap_or(default);
    RoleUrls {
        app: env_or("DATABASE_URL", cluster.url("venueql_app", &secrets.app_password, "venueql")),
        owner: env_or("DATABASE_OWNER_URL", cluster.url("venueql_owner", &secrets.owner_password, "venueql")),
        platform: env_or(
            "DATABASE_PLATFORM_URL",
            cluster.url("venueql_platform", &secrets.platform_password, "venueql"),
        ),
    }
}

/// Runs `venueql dev` until Ctrl-C or SIGTERM.
pub async fn run(options: DevOptions) -> Result<(), DynError> {
    fs::create_dir_all(&options.data_dir)?;
    let secrets_path = options.data_dir.join("secrets.json");
    let mut secrets = load_or_create_secrets(&secrets_path)?;
    let cluster = Cluster::start(&ClusterOptions {
        dir: options.data_dir.clone(),
        superuser_password: secrets.superuser_password.clone(),
        throwaway: false,
        ..Default::default()
    })?;
    let result = serve_on(&cluster, &options, &secrets_path, &mut secrets).await;
    cluster.stop();
    result
}

/// With `AUDIT_S3_*` pointing at a local S3 (loopback), creates the Object Lock bucket
/// the WORM copy needs, so `venueql dev` ships the audit trail from its first row.
async fn prepare_local_worm(worm: &crate::config::WormSettings) -> Result<(), DynError> {
    let local = worm
        .endpoint
        .host_str()
        .is_some_and(|h| h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()));
    if local {
        crate::app::install_tls_provider();
        crate::audit::worm::WormStore::new(worm)?.create_locked_bucket().await.map_err(|e| e.client_message())?;
        println!("venueql dev: audit rows are copied to bucket {} at {}", worm.bucket, worm.endpoint);
    }
    Ok(())
}

async fn serve_on(
    cluster: &Cluster,
    options: &DevOptions,
    secrets_path: &Path,
    secrets: &mut DevSecrets,
) -> Result<(), DynError> {
    let urls = dev_urls(cluster, secrets);
    db::init(&cluster.superuser_url("postgres"), &urls, None).await?;
    db::migrate(&urls.owner).await?;
    let door = CrossTenantDoor::new(db::pool(&urls.platform, 2).await?);
    let audit_key = match std::env::var("AUDIT_HMAC_KEY") {
        Ok(key) if !key.trim().is_empty() => key,
        _ => secrets.audit_hmac_key.get_or_insert_with(crate::crypto::random_key_base64).clone(),
    };
    let keys = crate::config::key_ring(&|name| (name == "AUDIT_HMAC_KEY").then(|| audit_key.clone()))?;
    crate::app::install_audit_key(&keys)?;
    if secrets.seed.is_none() {
        secrets.seed = Some(seed_demo(&door).await.map_err(|e| format!("seeding the demo venues failed: {e:?}"))?);
    }
    let app_key = secrets.app_key.get_or_insert_with(crate::crypto::random_key_base64).clone();
    let identity_key = secrets.identity_hmac_key.get_or_insert_with(crate::crypto::random_key_base64).clone();
    let webhook_secret =
        secrets.stripe_webhook_secret.get_or_insert_with(|| format!("whsec_{}", random_secret())).clone();
    let connect_secret =
        secrets.stripe_connect_webhook_secret.get_or_insert_with(|| format!("whsec_{}", random_secret())).clone();
    save_secrets(secrets_path, secrets)?;
    // Without a Stripe key, payments go to a local stand-in of Stripe's API on loopback.
    let local_stripe = match std::env::var("STRIPE_SECRET_KEY") {
        Ok(key) if !key.trim().is_empty() => None,
        _ => Some(LocalStripe::start().await?),
    };
    let local_stripe_base = local_stripe.as_ref().map(|s| s.base().to_string());
    let listen = options.listen.map(|a| a.to_string());
    // Without SMTP_URL, mail is written into the data directory, one file per mail.
    let mail_dir = std::env::var("SMTP_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .is_none()
        .then(|| options.data_dir.join("mail").to_string_lossy().into_owned());
    let config = Config::from_lookup(|name| match (name, std::env::var(name).ok()) {
        (_, Some(value)) if !(name == "LISTEN_ADDR" && listen.is_some()) => Some(value),
        ("DATABASE_URL", _) => Some(urls.app.clone()),
        ("LISTEN_ADDR", _) => listen.clone(),
        ("APP_KEY", _) => Some(app_key.clone()),
        ("IDENTITY_HMAC_KEY", _) => Some(identity_key.clone()),
        ("AUDIT_HMAC_KEY", _) => Some(audit_key.clone()),
        ("GRAPHQL_INTROSPECTION" | "GRAPHIQL", _) => Some("true".into()),
        ("STRIPE_WEBHOOK_SECRET", _) => Some(webhook_secret.clone()),
        ("STRIPE_CONNECT_WEBHOOK_SECRET", _) => Some(connect_secret.clone()),
        ("STRIPE_SECRET_KEY", _) => local_stripe_base.as_ref().map(|_| LOCAL_STRIPE_KEY.to_string()),
        ("STRIPE_API_BASE", _) => local_stripe_base.clone(),
        ("MAIL_DIR", _) => mail_dir.clone(),
        _ => None,
    })?;
    let stripe_config = config.stripe.clone();
    if let Some(worm) = &config.worm {
        prepare_local_worm(worm).await?;
    }
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    let app_db = crate::tenancy::Db::new(db::pool(&urls.app, 2).await?);
    if let Some(local) = &local_stripe {
        let payments = crate::payments::Payments::from_config(&stripe_config);
        let seed = secrets.seed.as_ref().expect("seeded above");
        onboard_at_local_stripe(&app_db, &payments, local, seed).await?;
    }
    let oauth = demo_login(&door, secrets, addr).await?;
    let stripe = serde_json::json!({
        "api_base": stripe_config.api_base,
        "local_stand_in": local_stripe.is_some(),
        "webhook_url": format!("http://{addr}/webhooks/stripe"),
        "webhook_secret": webhook_secret,
        "connect_webhook_url": format!("http://{addr}/webhooks/stripe/connect"),
        "connect_webhook_secret": connect_secret,
    });
    let api = apps::ApiSide { addr, issuer: app.issuer(), stripe: &stripe, db: &app_db };
    let apps = apps::start(&door, secrets, api).await?;
    save_secrets(secrets_path, secrets)?;
    let seed = secrets.seed.as_ref().expect("seeded above");
    let apps_json =
        serde_json::json!({ "kitchen_url": apps.kitchen_url, "order_url": apps.order_url, "built": apps.built });
    let dev_json = write_dev_json(&options.data_dir, addr, &urls, seed, &oauth, &stripe, &apps_json)?;
    println!(
        "venueql dev: serving http://{addr}/graphql (GraphiQL in a browser); PostgreSQL on 127.0.0.1:{}",
        cluster.port()
    );
    println!("venueql dev: tokens, URLs and the demo login are in {}", dev_json.display());
    println!(
        "venueql dev: log in as {} (password in dev.json) at:\n  {}",
        seed.manager.email,
        oauth["login_url"].as_str().unwrap_or_default()
    );
    if local_stripe.is_some() {
        println!(
            "venueql dev: payments use a local stand-in of Stripe's API; pay a checkout with\n  venueql dev pay --client-secret <clientSecret from startCheckout>"
        );
    }
    if apps.built {
        println!(
            "venueql dev: example apps for demo-cafe (each on its own origin; sign in to the kitchen as the manager):\n  kitchen display  {}\n  ordering page    {}",
            apps.kitchen_url, apps.order_url
        );
    } else {
        println!(
            "venueql dev: the example apps are not built (needs Node.js and npm): `npm ci && npm run build` in examples/"
        );
    }
    if let Some(dir) = &mail_dir {
        println!("venueql dev: mail (invitations, password resets) is written to {dir}/, one .eml file each");
    }
    println!("venueql dev: Ctrl-C stops the server, then the database");
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// Registers (once per listen address) the demo SPA client whose redirect URI is this
/// server's `/dev/callback`, and returns a ready login URL with its PKCE verifier.
async fn demo_login(
    door: &CrossTenantDoor,
    secrets: &mut DevSecrets,
    addr: SocketAddr,
) -> Result<serde_json::Value, DynError> {
    let redirect_uri = format!("http://{addr}/dev/callback");
    let client_id = match secrets.spa_clients.get(&redirect_uri) {
        Some(id) => id.clone(),
        None => {
            let uris = [redirect_uri.clone(), "http://localhost:5173/callback".to_string()];
            let new = crate::auth::clients::NewClient {
                kind: "spa",
                name: "venueql dev SPA",
                redirect_uris: &uris,
                allowed_origins: &[],
                permissions: Permissions::empty(),
            };
            let created = admin::create_client(door, "operator:venueql-dev", &new, None)
                .await
                .map_err(|e| format!("registering the demo SPA client failed: {e:?}"))?;
            secrets.spa_clients.insert(redirect_uri.clone(), created.client_id.clone());
            created.client_id
        }
    };
    let verifier = random_secret();
    let mut login_url = url::Url::parse(&format!("http://{addr}/oauth/authorize")).expect("valid URL");
    login_url
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("code_challenge", &crate::auth::authorization_code::s256_challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "dev");
    let exchange = format!(
        "curl -s http://{addr}/oauth/token -d grant_type=authorization_code -d client_id={client_id} \\\n  --data-urlencode redirect_uri={redirect_uri} -d code_verifier={verifier} -d code=CODE"
    );
    Ok(serde_json::json!({
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
        "login_url": login_url.to_string(),
        "token_url": format!("http://{addr}/oauth/token"),
        "exchange_example": exchange,
    }))
}

fn write_dev_json(
    dir: &Path,
    addr: SocketAddr,
    urls: &RoleUrls,
    seed: &DemoSeed,
    oauth: &serde_json::Value,
    stripe: &serde_json::Value,
    apps: &serde_json::Value,
) -> Result<PathBuf, DynError> {
    let venues: Vec<serde_json::Value> = seed
        .venues
        .iter()
        .map(|v| {
            serde_json::json!({
                "slug": v.slug,
                "id": v.id,
                "public_graphql_url": format!("http://{addr}/v/{}/graphql", v.slug),
                "tokens": v.tokens,
            })
        })
        .collect();
    let body = serde_json::json!({
        "graphql_url": format!("http://{addr}/graphql"),
        "database_url": urls.app,
        "owner_database_url": urls.owner,
        "platform_database_url": urls.platform,
        "manager": seed.manager,
        "oauth": oauth,
        "stripe": stripe,
        "apps": apps,
        "venues": venues,
    });
    let path = dir.join("dev.json");
    fs::write(&path, serde_json::to_string_pretty(&body)?)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// (category, [(name, description, price_minor, allergens, available)]) of a demo menu.
pub type DemoMenu =
    &'static [(&'static str, &'static [(&'static str, &'static str, i64, &'static [Allergen], bool)])];

const CAFE_MENU: DemoMenu = &[
    (
        "Coffee",
        &[
            ("Espresso", "Double shot, house blend", 250, &[], true),
            ("Flat White", "Double shot with steamed whole milk", 380, &[Allergen::Milk], true),
            ("Oat Latte", "Double shot with oat milk", 420, &[Allergen::CerealsContainingGluten], true),
        ],
    ),
    (
        "Food",
        &[
            (
                "Butter Croissant",
                "Baked this morning",
                300,
                &[Allergen::CerealsContainingGluten, Allergen::Milk, Allergen::Eggs],
                true,
            ),
            (
                "Peanut Butter Toast",
                "Sourdough, crunchy peanut butter, banana",
                550,
                &[Allergen::Peanuts, Allergen::CerealsContainingGluten],
                true,
            ),
            (
                "Seasonal Soup",
                "Ask the team; served with bread",
                650,
                &[Allergen::Celery, Allergen::CerealsContainingGluten],
                false,
            ),
        ],
    ),
];

const BISTRO_MENU: DemoMenu = &[
    (
        "Starters",
        &[
            (
                "Moules Marinières",
                "Mussels, white wine, cream",
                950,
                &[Allergen::Molluscs, Allergen::Sulphites, Allergen::Milk],
                true,
            ),
            (
                "Caesar Salad",
                "Romaine, anchovy dressing, croutons",
                850,
                &[Allergen::Eggs, Allergen::Fish, Allergen::Milk, Allergen::CerealsContainingGluten],
                true,
            ),
        ],
    ),
    (
        "Mains",
        &[
            (
                "Fish and Chips",
                "Beer-battered haddock, triple-cooked chips",
                1650,
                &[Allergen::Fish, Allergen::CerealsContainingGluten],
                true,
            ),
            (
                "Satay Chicken",
                "Peanut sauce, sesame rice",
                1550,
                &[Allergen::Peanuts, Allergen::Soybeans, Allergen::Sesame],
                true,
            ),
        ],
    ),
];

/// Seeds a venue's menu through the door.
pub async fn seed_menu(
    door: &CrossTenantDoor,
    actor: &str,
    venue: crate::tenancy::VenueId,
    menu: DemoMenu,
) -> Result<(), AppError> {
    let tx = door.open_cross_tenant(actor, "seed demo menu").await?;
    let mut tx = tx.into_venue(venue).await?;
    let who = Who::operator(actor);
    for (position, (category, items)) in menu.iter().enumerate() {
        let fields = CategoryFields { name: Some((*category).into()), position: Some(position as i32) };
        let category = menu::create_category(&mut tx, &who, fields).await?;
        for (item_position, (name, description, price, allergens, available)) in items.iter().enumerate() {
            let fields = ItemFields {
                category_id: Some(category.id),
                name: Some((*name).into()),
                description: Some((*description).into()),
                price_minor: Some(*price),
                allergens: Some(allergens.to_vec()),
                available: Some(*available),
                position: Some(item_position as i32),
            };
            menu::create_item(&mut tx, &who, fields).await?;
        }
    }
    Ok(tx.commit().await?)
}

/// Seeds the two demo venues, their menus, a manager and two tokens per venue (one with
/// every permission, one "casual" with only ORDERS_QUEUE).
pub async fn seed_demo(door: &CrossTenantDoor) -> Result<DemoSeed, AppError> {
    let actor = "operator:venueql-dev";
    let manager =
        DemoLogin { email: "manager@demo.venueql.test".into(), password: format!("Dev-{}-9a", random_secret()) };
    admin::create_staff(door, actor, &manager.email, &manager.password, &BreachCheck::off()).await?;
    let mut venues = Vec::new();
    for (slug, name, currency, menu) in
        [("demo-cafe", "Demo Café", "EUR", CAFE_MENU), ("demo-bistro", "Demo Bistro", "GBP", BISTRO_MENU)]
    {
        let venue = admin::create_venue(door, actor, slug, name, currency).await?;
        seed_menu(door, actor, venue.venue_id(), menu).await?;
        admin::grant(door, actor, slug, &manager.email, Permissions::all()).await?;
        let mut tokens = Vec::new();
        for (token_name, permissions) in [("everything", Permissions::all()), ("casual", Permissions::ORDERS_QUEUE)] {
            let issued = admin::issue_token(door, actor, slug, token_name, permissions).await?;
            tokens.push(DemoToken {
                name: token_name.into(),
                token_id: issued.token_id,
                token: issued.token,
                permissions: permissions.names().into_iter().map(String::from).collect(),
            });
        }
        venues.push(DemoVenue { slug: slug.into(), id: venue.id, tokens });
    }
    Ok(DemoSeed { manager, venues })
}

/// Onboards each demo venue that has no Stripe account yet at the local stand-in: the
/// account is created through the same code as `startStripeOnboarding`, then "Stripe"
/// reports onboarding complete with an `account.updated` applied through the webhook's
/// own store-and-apply path.
pub async fn onboard_at_local_stripe(
    db: &Db,
    payments: &Payments,
    stripe: &LocalStripe,
    seed: &DemoSeed,
) -> Result<(), DynError> {
    let who = Who::operator("operator:venueql-dev");
    for venue in &seed.venues {
        let venue_id = crate::tenancy::VenueId::from_door(venue.id);
        let mut tx = db.venue_tx(venue_id).await?;
        let existing = accounts::find(&mut tx).await.map_err(|e| format!("{e:?}"))?;
        tx.commit().await?;
        if existing.is_some() {
            continue;
        }
        let link = accounts::start_onboarding(db, payments, venue_id, &who, "http://localhost/", "http://localhost/")
            .await
            .map_err(|e| format!("onboarding {} at the local Stripe failed: {e:?}", venue.slug))?;
        let ready = serde_json::json!({ "charges_enabled": true, "payouts_enabled": true, "details_submitted": true,
            "requirements": { "currently_due": [], "disabled_reason": null } });
        let account = stripe.update(&link.account_id, ready).ok_or("the local Stripe lost the account")?;
        let event = local_stripe::event("account.updated", account, Some(&link.account_id));
        let raw = event.to_string();
        let envelope = events::parse(raw.as_bytes()).map_err(|e| format!("{e:?}"))?;
        crate::payments::intake::ingest(db, payments, None, events::Endpoint::Connect, &envelope, &raw)
            .await
            .map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

/// `venueql dev pay --client-secret S`: plays the diner's card payment and Stripe's
/// webhook for a checkout of the running dev server: confirms the PaymentIntent at the
/// dev server's Stripe (`pm_card_visa`), then sends the `payment_intent.succeeded` event,
/// signed with the dev server's webhook secret, to its `/webhooks/stripe`.
pub async fn pay(data_dir: &Path, client_secret: &str) -> Result<serde_json::Value, DynError> {
    let dev_json = data_dir.join("dev.json");
    let text = fs::read_to_string(&dev_json)
        .map_err(|e| format!("cannot read {} (is `venueql dev` running?): {e}", dev_json.display()))?;
    let dev: serde_json::Value = serde_json::from_str(&text)?;
    pay_checkout(&dev["stripe"], client_secret).await
}

/// Pays a checkout at the dev server's local Stripe and delivers the signed webhook;
/// `stripe` is dev.json's `stripe` section.
async fn pay_checkout(stripe: &serde_json::Value, client_secret: &str) -> Result<serde_json::Value, DynError> {
    if stripe["local_stand_in"] != true {
        return Err("the dev server uses a real Stripe account: pay with Stripe.js or the Stripe CLI instead".into());
    }
    let intent = client_secret
        .split_once("_secret_")
        .map(|(id, _)| id)
        .filter(|id| id.starts_with("pi_") && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .ok_or("--client-secret must be the clientSecret startCheckout returned (pi_…_secret_…)")?;
    let api_base = stripe["api_base"].as_str().ok_or("dev.json has no stripe.api_base")?;
    let client = StripeClient::new(api_base, LOCAL_STRIPE_KEY.to_string().into(), Default::default());
    let params = vec![("payment_method".to_string(), "pm_card_visa".to_string())];
    let paid = client
        .post(&format!("/v1/payment_intents/{intent}/confirm"), &format!("venueql-dev-pay-{intent}"), &params)
        .await?;
    let event = local_stripe::event("payment_intent.succeeded", paid, None);
    let body = event.to_string();
    let secret = stripe["webhook_secret"].as_str().ok_or("dev.json has no stripe.webhook_secret")?;
    let signature = crate::payments::signature::sign(
        body.as_bytes(),
        &secrecy::SecretString::from(secret.to_string()),
        chrono::Utc::now().timestamp(),
    );
    let url = stripe["webhook_url"].as_str().ok_or("dev.json has no stripe.webhook_url")?;
    let response = reqwest::Client::new()
        .post(url)
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("the webhook answered {status}: {answer}").into());
    }
    Ok(
        serde_json::json!({ "payment_intent": intent, "event": event["id"], "webhook_status": status.as_u16(), "webhook_answer": answer }),
    )
}
