//! The reference browser apps of `examples/`, served by `venueql dev` each on its own
//! origin, so that CORS works (or fails) exactly as it would in production:
//!
//! - the kitchen display, registered as demo-cafe's own SPA client (its origin and
//!   redirect URI follow the port it gets);
//! - the diner ordering page, whose origin demo-cafe lists in its settings; beside it
//!   `POST /dev/pay` pays a checkout at the local Stripe stand-in (what Stripe.js and
//!   Stripe's webhook do in production).
//!
//! Each app fetches `config.json` from its own origin. The apps are built once with npm
//! (`npm ci && npm run build` in `examples/`) when `dist/` is missing and npm is there.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower_http::services::ServeDir;

use super::{DevSecrets, DynError};
use crate::access::Permissions;
use crate::admin;
use crate::auth::clients::NewClient;
use crate::tenancy::{CrossTenantDoor, Db};

const ACTOR: &str = "operator:venueql-dev";
/// The venue the apps are for.
const VENUE: &str = "demo-cafe";

/// Where the apps are served.
#[derive(Debug)]
pub struct Apps {
    /// The kitchen display's URL.
    pub kitchen_url: String,
    /// The ordering page's URL.
    pub order_url: String,
    /// Whether the apps are built (otherwise both URLs explain how to build them).
    pub built: bool,
}

/// The examples project: beside the sources this binary was built from, or `./examples`.
fn examples_dir() -> PathBuf {
    let beside_sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    if beside_sources.join("package.json").exists() { beside_sources } else { PathBuf::from("examples") }
}

fn built(dir: &Path) -> bool {
    ["kitchen", "order"].iter().all(|app| dir.join("dist").join(app).join("index.html").exists())
}

/// Builds the apps once when they are not built and npm is available.
fn ensure_built(dir: &Path) -> bool {
    if built(dir) {
        return true;
    }
    if !dir.join("package.json").exists() || Command::new("npm").arg("--version").output().is_err() {
        return false;
    }
    println!("venueql dev: building the example apps once (npm ci && npm run build in {})", dir.display());
    let run = |args: &[&str]| Command::new("npm").args(args).current_dir(dir).status().is_ok_and(|s| s.success());
    let installed = dir.join("node_modules").exists() || run(&["ci", "--no-audit", "--no-fund"]);
    installed && run(&["run", "build"]) && built(dir)
}

/// Binds next to the API's port when that is free (the API's port + `offset`), else anywhere.
async fn bind_near(api: SocketAddr, offset: u16) -> Result<TcpListener, DynError> {
    if api.port() != 0
        && let Ok(listener) = TcpListener::bind((api.ip(), api.port().saturating_add(offset))).await
    {
        return Ok(listener);
    }
    Ok(TcpListener::bind((api.ip(), 0)).await?)
}

fn origin_of(ip: IpAddr, listener: &TcpListener) -> Result<String, DynError> {
    let port = listener.local_addr()?.port();
    Ok(match ip {
        IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
        IpAddr::V4(ip) => format!("http://{ip}:{port}"),
    })
}

/// Registers (or moves) demo-cafe's kitchen client to `origin`.
async fn register_kitchen(door: &CrossTenantDoor, secrets: &mut DevSecrets, origin: &str) -> Result<String, DynError> {
    let redirect = [format!("{origin}/")];
    let origins = [origin.to_string()];
    if let Some(id) = &secrets.kitchen_client {
        admin::update_client(door, ACTOR, id, &redirect, &origins).await.map_err(|e| format!("{e:?}"))?;
        return Ok(id.clone());
    }
    let new = NewClient {
        kind: "spa",
        name: "Kitchen display (venueql dev)",
        redirect_uris: &redirect,
        allowed_origins: &origins,
        permissions: Permissions::empty(),
    };
    let created = admin::create_client(door, ACTOR, &new, Some(VENUE)).await.map_err(|e| format!("{e:?}"))?;
    secrets.kitchen_client = Some(created.client_id.clone());
    Ok(created.client_id)
}

/// Makes `origin` demo-cafe's diner-page origin (audited, only when it changes).
async fn allow_order_page(db: &Db, origin: &str) -> Result<(), DynError> {
    let venue = crate::venues::find_by_slug(db, VENUE).await.map_err(|e| format!("{e:?}"))?;
    let venue = venue.ok_or("the demo venue is missing")?;
    let mut tx = db.venue_tx(venue.venue_id()).await?;
    let mut settings = crate::venues::settings(&mut tx).await.map_err(|e| format!("{e:?}"))?;
    if settings.allowed_origins != [origin] {
        settings.allowed_origins = vec![origin.to_string()];
        let who = crate::audit::Who::operator(ACTOR);
        crate::venues::update_settings(&mut tx, &who, settings).await.map_err(|e| format!("{e:?}"))?;
    }
    tx.commit().await?;
    Ok(())
}

#[derive(Clone)]
struct AppState {
    config: Value,
    stripe: Value,
}

async fn config_json(State(app): State<AppState>) -> Response {
    axum::Json(app.config).into_response()
}

/// `POST /dev/pay` beside the ordering page: `{"clientSecret": "pi_…_secret_…"}`.
async fn pay(State(app): State<AppState>, axum::Json(body): axum::Json<Value>) -> Response {
    let Some(secret) = body["clientSecret"].as_str() else {
        return (StatusCode::BAD_REQUEST, "send {\"clientSecret\": \"…\"}").into_response();
    };
    match super::pay_checkout(&app.stripe, secret).await {
        Ok(paid) => axum::Json(paid).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

async fn not_built() -> Response {
    let page = "<!doctype html><title>venueql dev</title><h1>The example apps are not built</h1>\
        <p>Install Node.js and npm, run <code>npm ci &amp;&amp; npm run build</code> in <code>examples/</code>, \
        then restart <code>venueql dev</code>.</p>";
    (StatusCode::SERVICE_UNAVAILABLE, Html(page)).into_response()
}

fn serve(listener: TcpListener, router: Router) {
    tokio::spawn(async move { axum::serve(listener, router).await });
}

fn app_router(dist: Option<PathBuf>, state: AppState, with_pay: bool) -> Router {
    let mut router = Router::new().route("/config.json", get(config_json));
    if with_pay {
        router = router.route("/dev/pay", post(pay));
    }
    let router = match dist {
        Some(dist) => router.fallback_service(ServeDir::new(dist)),
        None => router.fallback(not_built),
    };
    router.with_state(state)
}

/// What the apps need from the running dev server.
pub struct ApiSide<'a> {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The OAuth issuer (also the API's base URL).
    pub issuer: &'a str,
    /// dev.json's `stripe` section (local stand-in or not).
    pub stripe: &'a Value,
    /// The app role's pool (venue settings change in a venue transaction).
    pub db: &'a Db,
}

/// Builds (if needed), registers and serves both apps; returns their URLs.
pub async fn start(door: &CrossTenantDoor, secrets: &mut DevSecrets, api: ApiSide<'_>) -> Result<Apps, DynError> {
    let dir = examples_dir();
    let built = ensure_built(&dir);
    let kitchen = bind_near(api.addr, 1).await?;
    let order = bind_near(api.addr, 2).await?;
    let (kitchen_origin, order_origin) = (origin_of(api.addr.ip(), &kitchen)?, origin_of(api.addr.ip(), &order)?);
    let client_id = register_kitchen(door, secrets, &kitchen_origin).await?;
    allow_order_page(api.db, &order_origin).await?;
    let issuer = api.issuer;
    let websocket = format!("{}/graphql/ws", issuer.replacen("http", "ws", 1));
    let kitchen_config = json!({ "issuer": issuer, "graphqlUrl": format!("{issuer}/graphql"), "websocketUrl": websocket,
        "clientId": client_id, "redirectUri": format!("{kitchen_origin}/") });
    let payment = if api.stripe["local_stand_in"] == true {
        json!({ "mode": "local", "payUrl": "./dev/pay" })
    } else {
        json!({ "mode": "stripe", "publishableKey": std::env::var("STRIPE_PUBLISHABLE_KEY").unwrap_or_default() })
    };
    let order_config = json!({ "graphqlUrl": format!("{issuer}/v/{VENUE}/graphql"), "payment": payment });
    let dist = |app: &str| built.then(|| dir.join("dist").join(app));
    let state = |config: Value| AppState { config, stripe: api.stripe.clone() };
    serve(kitchen, app_router(dist("kitchen"), state(kitchen_config), false));
    serve(order, app_router(dist("order"), state(order_config), true));
    Ok(Apps { kitchen_url: format!("{kitchen_origin}/"), order_url: format!("{order_origin}/"), built })
}
