//! HTTP: routes and middleware (request id, client address, access log and metrics, body
//! and time limits, panic catching, CORS doors, the `/oauth` rate limit). Handlers:
//! `graphql` (the two GraphQL endpoints), `subscriptions` (`/graphql/ws`), `oauth` (the
//! token endpoint family), `login` (the hosted pages: sign-in, MFA, invitation, reset,
//! sharing `pages`), `webhooks` (Stripe), `ops`
//! (health, readiness, metrics, security.txt).

pub mod client_addr;
pub mod cors;
pub mod graphql;
pub mod login;
pub mod oauth;
pub mod ops;
pub mod pages;
pub mod subscriptions;
pub mod tls;
pub mod webhooks;

use std::time::Instant;

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use std::sync::Arc;

use self::client_addr::ClientAddr;
use crate::auth::breach::BreachCheck;
use crate::config::Config;
use crate::observability::{Metrics, REQUEST_SCOPE, RequestScope};
use crate::schema::{PublicSchema, StaffSchema};
use crate::tenancy::Db;

/// Shared, cheaply cloned state of every request.
#[derive(Clone)]
pub struct AppState {
    /// The app role's pool, behind the tenancy API.
    pub db: Db,
    /// Staff/integration schema.
    pub staff_schema: StaffSchema,
    /// Diner schema.
    pub public_schema: PublicSchema,
    /// Settings.
    pub config: Arc<Config>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The OAuth issuer: `PUBLIC_BASE_URL`, or `http://` + the bound address.
    pub issuer: String,
    /// Stripe client and payment settings.
    pub payments: crate::payments::Payments,
    /// The breached-password check (hosted invitation and reset pages).
    pub breach: BreachCheck,
    /// Live order changes (LISTEN/NOTIFY), for subscriptions.
    pub orders_hub: crate::orders::live::OrdersHub,
    /// This process's share of the deployment's rate limits and connection caps.
    pub limits: crate::limits::Limits,
    /// Subscription sockets open in this process, per credential and venue.
    pub open_sockets: Arc<crate::http::subscriptions::OpenSockets>,
    /// Becomes true when the server starts shutting down (WebSockets close with 1001).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Permits for webhook deliveries being processed at once (`WEBHOOK_MAX_CONCURRENCY`).
    pub webhook_permits: Arc<tokio::sync::Semaphore>,
    /// Counts refused webhook signatures: a burst raises a critical alert.
    pub signature_failures: Arc<crate::audit::alerts::Burst>,
}

impl AppState {
    /// Whether the database answers and all migrations are applied.
    pub async fn migrations_current(&self) -> Result<bool, sqlx::Error> {
        crate::db::migrations_current(self.db.platform_level()).await
    }
}

/// The request id of the current request (from a well-formed `X-Request-Id`, or new).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    Router::new()
        .route(
            "/graphql",
            post(graphql::staff)
                .get(graphql::graphiql)
                .options(preflight_only)
                .route_layer(middleware::from_fn_with_state(state.clone(), cors::staff_door)),
        )
        .route("/graphql/ws", get(subscriptions::websocket))
        .route(
            "/v/{slug}/graphql",
            post(graphql::public)
                .options(preflight_only)
                .route_layer(middleware::from_fn_with_state(state.clone(), cors::public_door)),
        )
        .merge(oauth_routes(&state))
        .route("/dev/callback", get(login::dev_callback))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata).route_layer(middleware::from_fn(cors::public_metadata)),
        )
        .route("/webhooks/stripe", post(webhooks::platform).layer(DefaultBodyLimit::max(config.webhook_max_body_bytes)))
        .route(
            "/webhooks/stripe/connect",
            post(webhooks::connect).layer(DefaultBodyLimit::max(config.webhook_max_body_bytes)),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/.well-known/security.txt", get(ops::security_txt))
        .route("/.well-known/security-policy", get(ops::security_policy))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout))
        .layer(CatchPanicLayer::custom(|_| {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
        }))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The OAuth endpoints and hosted pages, limited per client address.
fn oauth_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/oauth/authorize", get(login::authorize_page).post(login::authorize_submit))
        .route(
            "/oauth/token",
            post(oauth::token)
                .options(preflight_only)
                .route_layer(middleware::from_fn_with_state(state.clone(), cors::oauth_door)),
        )
        .route("/oauth/invitation", get(login::invitation::invitation_page).post(login::invitation::invitation_submit))
        .route("/oauth/reset", get(login::reset::reset_page).post(login::reset::reset_submit))
        .route(
            "/oauth/revoke",
            post(oauth::revoke)
                .options(preflight_only)
                .route_layer(middleware::from_fn_with_state(state.clone(), cors::oauth_door)),
        )
        .route("/oauth/introspect", post(oauth::introspect))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_oauth))
}

/// `OPTIONS` on a browser-facing route: a CORS preflight is answered by the route's
/// door ([`cors`]) before this runs; anything else is not a preflight.
async fn preflight_only() -> Response {
    let message = "OPTIONS is answered only as a CORS preflight from an allowed origin";
    error_response(StatusCode::METHOD_NOT_ALLOWED, "BAD_REQUEST", message)
}

/// `RATE_LIMIT_OAUTH_PER_ADDRESS`.
async fn limit_oauth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
    let key = client.map(|ip| crate::auth::lockout::counted_address(ip).to_string()).unwrap_or_default();
    match state.limits.check(crate::limits::Bucket::OauthPerAddress, &key, 1) {
        Ok(()) => next.run(request).await,
        Err(limited) => RequestError::limited(limited).into_response(),
    }
}

/// The router of `METRICS_LISTEN_ADDR`: `/metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics_listener))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "only /metrics is served here") })
        .with_state(state)
}

/// A JSON error body in GraphQL's shape, for failures before GraphQL execution.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, axum::Json(body)).into_response()
}

/// A request refused before GraphQL execution: status, stable code, safe message.
#[derive(Debug)]
pub struct RequestError {
    /// HTTP status.
    pub status: StatusCode,
    /// `extensions.code`.
    pub code: &'static str,
    /// What is wrong, for the client.
    pub message: String,
    /// Seconds to wait before retrying (429s).
    pub retry_after: Option<u32>,
}

impl RequestError {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> RequestError {
        RequestError { status, code, message: message.into(), retry_after: None }
    }

    /// 429 `RATE_LIMITED` with `Retry-After`.
    pub fn limited(limited: crate::limits::Limited) -> RequestError {
        RequestError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "RATE_LIMITED",
            message: limited.message,
            retry_after: Some(limited.retry_after_secs),
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status, self.code, &self.message);
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static("Bearer realm=\"venueql\"");
            response.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

fn valid_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = (1..=64).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| text.to_string())
}

/// A low-cardinality route label for metrics and logs.
fn route_label(path: &str) -> &'static str {
    match path {
        "/graphql" => "/graphql",
        "/graphql/ws" => "/graphql/ws",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/.well-known/security.txt" => "/.well-known/security.txt",
        "/.well-known/security-policy" => "/.well-known/security-policy",
        "/oauth/authorize" => "/oauth/authorize",
        "/webhooks/stripe" => "/webhooks/stripe",
        "/webhooks/stripe/connect" => "/webhooks/stripe/connect",
        "/oauth/token" => "/oauth/token",
        "/oauth/invitation" => "/oauth/invitation",
        "/oauth/reset" => "/oauth/reset",
        "/oauth/revoke" => "/oauth/revoke",
        "/oauth/introspect" => "/oauth/introspect",
        "/.well-known/oauth-authorization-server" => "/.well-known/oauth-authorization-server",
        p if p.starts_with("/v/") && p.ends_with("/graphql") => "/v/{slug}/graphql",
        _ => "other",
    }
}

/// Assigns the request id, runs the request inside a span carrying it, echoes it in the
/// response, logs one line per request and records HTTP metrics.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let config = &state.config;
    let client = peer.map(|peer| {
        client_addr::client_addr(peer, request.headers(), &config.trusted_proxies, config.forwarded_header)
    });
    request.extensions_mut().insert(ClientAddr(client.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())));
    let route = route_label(request.uri().path());
    let method = request.method().to_string();
    // Error level, so the request id and venue stay on error lines whatever the log filter.
    let span = tracing::error_span!(
        "request",
        request_id = %request_id,
        method = %method,
        route = route,
        venue = tracing::field::Empty
    );
    let started = Instant::now();
    let scope = RequestScope { request_id: request_id.clone(), venue: Default::default() };
    let mut response = REQUEST_SCOPE.scope(scope, next.run(request).instrument(span.clone())).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe_http(route, &method, status, elapsed);
    span.in_scope(|| tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request finished"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    if config.serves_https() {
        response.headers_mut().insert(axum::http::header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    response
}

/// Browsers that reached the server over HTTPS keep to HTTPS for a year, subdomains too.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";
