//! Logs (JSON, with request ids from the request span), Sentry (only when `SENTRY_DSN`
//! is set, scrubbed) and Prometheus metrics.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber: JSON lines unless `LOG_FORMAT=text`; level from
/// `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if std::env::var("LOG_FORMAT").as_deref() == Ok("text") {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    };
}

/// Starts Sentry when `SENTRY_DSN` is set; keep the guard alive for the process lifetime.
/// Nothing is sent without a DSN. Events carry no request bodies or headers, and
/// `before_send` drops any request data and scrubs known secret headers anyway.
pub fn init_sentry() -> Option<sentry::ClientInitGuard> {
    let dsn = std::env::var("SENTRY_DSN").ok().filter(|d| !d.is_empty())?;
    let mut options = sentry::ClientOptions::default();
    options.environment = std::env::var("SENTRY_ENVIRONMENT").ok().map(Into::into);
    options.release = sentry::release_name!();
    options.send_default_pii = false;
    options.before_send = Some(std::sync::Arc::new(|mut event| {
        if let Some(request) = event.request.as_mut() {
            request.data = None;
            request.cookies = None;
            request.headers.retain(|name, _| {
                !matches!(name.to_ascii_lowercase().as_str(), "authorization" | "cookie" | "stripe-signature")
            });
        }
        Some(event)
    }));
    Some(sentry::init((dsn, options)))
}

/// What error reports need to know about the request being served.
pub struct RequestScope {
    /// The request id.
    pub request_id: String,
    /// The venue, once the credential has been verified.
    pub venue: std::sync::OnceLock<String>,
}

tokio::task_local! {
    /// Set by the HTTP middleware for the duration of each request.
    pub static REQUEST_SCOPE: RequestScope;
}

/// Records the request's venue in its log span and for error reports.
pub fn set_request_venue(venue: &str) {
    tracing::Span::current().record("venue", venue);
    let _ = REQUEST_SCOPE.try_with(|scope| scope.venue.set(venue.to_string()));
}

/// Logs an internal error (the current span carries the request id and venue) and
/// reports it to Sentry tagged with both.
pub fn report_internal(error: &(dyn std::error::Error + 'static)) {
    tracing::error!(error = %error, "internal error");
    let (request_id, venue) = REQUEST_SCOPE
        .try_with(|scope| (Some(scope.request_id.clone()), scope.venue.get().cloned()))
        .unwrap_or((None, None));
    sentry::with_scope(
        |scope| {
            if let Some(request_id) = &request_id {
                scope.set_tag("request_id", request_id);
            }
            if let Some(venue) = &venue {
                scope.set_tag("venue", venue);
            }
        },
        || sentry::capture_error(error),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationOutcomeLabels {
    kind: String,
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Prometheus metrics of one server process.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    graphql_operations: Family<OperationOutcomeLabels, Counter>,
    graphql_duration: HistogramFamily<OperationLabels>,
    pool_connections: Gauge,
    pool_idle: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("venueql");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration: HistogramFamily<RouteLabels> = Family::new_with_constructor(latency_histogram);
        let graphql_operations = Family::<OperationOutcomeLabels, Counter>::default();
        let graphql_duration: HistogramFamily<OperationLabels> = Family::new_with_constructor(latency_histogram);
        let pool_connections = Gauge::default();
        let pool_idle = Gauge::default();
        registry.register("http_requests", "HTTP requests by route, method and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_duration.clone());
        registry.register("graphql_operations", "GraphQL operations by kind and outcome", graphql_operations.clone());
        registry.register(
            "graphql_operation_duration_seconds",
            "GraphQL execution latency by operation kind",
            graphql_duration.clone(),
        );
        registry.register("db_pool_connections", "Open connections in the app pool", pool_connections.clone());
        registry.register("db_pool_idle_connections", "Idle connections in the app pool", pool_idle.clone());
        Metrics {
            registry,
            http_requests,
            http_duration,
            graphql_operations,
            graphql_duration,
            pool_connections,
            pool_idle,
        }
    }

    /// Counts one HTTP request and its latency.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let labels = HttpLabels { route: route.to_string(), method: method.to_string(), status };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&RouteLabels { route: route.to_string() }).observe(elapsed.as_secs_f64());
    }

    /// Counts one GraphQL operation and its execution latency.
    pub fn observe_graphql(&self, kind: &str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        let labels = OperationOutcomeLabels { kind: kind.to_string(), outcome: outcome.to_string() };
        self.graphql_operations.get_or_create(&labels).inc();
        self.graphql_duration.get_or_create(&OperationLabels { kind: kind.to_string() }).observe(elapsed.as_secs_f64());
    }

    /// Renders the text exposition format, with the pool gauges read now.
    pub fn render(&self, pool_connections: u32, pool_idle: usize) -> String {
        self.pool_connections.set(i64::from(pool_connections));
        self.pool_idle.set(pool_idle as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
