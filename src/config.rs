//! Typed settings read from the environment (names from SPEC §11); secrets are
//! `SecretString`s so they cannot end up in logs through `Debug`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ipnet::IpNet;
use secrecy::{SecretBox, SecretString};

/// Stripe's API, unless `STRIPE_API_BASE` names another (tests, `venueql dev`).
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

/// Everything `venueql serve` needs to run; built once at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The app role's connection (`DATABASE_URL`).
    pub database_url: SecretString,
    /// Where the server listens (`LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Serve HTTPS in process (`TLS_CERT_FILE`, `TLS_KEY_FILE`); plain HTTP when unset.
    pub tls: Option<TlsFiles>,
    /// A separate listener that serves only `/metrics`, without a token
    /// (`METRICS_LISTEN_ADDR`, e.g. an internal interface).
    pub metrics_listen_addr: Option<SocketAddr>,
    /// The bearer token `/metrics` on the main listener requires (`METRICS_TOKEN`); without
    /// it, the main listener does not serve metrics.
    pub metrics_token: Option<SecretString>,
    /// Suffix of venue host names, `{slug}.{suffix}` (`PUBLIC_HOST_SUFFIX`).
    pub public_host_suffix: Option<String>,
    /// Maximum connections in the app pool (`DATABASE_MAX_CONNECTIONS`).
    pub database_max_connections: u32,
    /// How `DATABASE_URL` reaches PostgreSQL: directly, or through a transaction-pooling
    /// proxy such as PgBouncer (`DATABASE_POOL_MODE`).
    pub database_pool_mode: DatabasePoolMode,
    /// Where the LISTEN connection goes (`DATABASE_LISTEN_URL`); `DATABASE_URL` when unset.
    pub database_listen_url: Option<SecretString>,
    /// Whether GraphQL introspection is answered (`GRAPHQL_INTROSPECTION`).
    pub introspection: bool,
    /// Whether `GET /graphql` serves GraphiQL (`GRAPHIQL`; `venueql dev` turns it on).
    pub graphiql: bool,
    /// Query limits applied to every GraphQL request.
    pub limits: GraphqlLimits,
    /// Largest accepted request body (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Largest Stripe webhook body (`WEBHOOK_MAX_BODY_BYTES`, 512 KiB).
    pub webhook_max_body_bytes: usize,
    /// Webhook deliveries processed at once per process (`WEBHOOK_MAX_CONCURRENCY`, 16);
    /// more wait briefly, then get 503 (Stripe retries).
    pub webhook_max_concurrency: usize,
    /// Time limit for one request (`REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// After SIGTERM, how long `serve` waits for requests in flight before it exits anyway
    /// (`SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// Contact line of `/.well-known/security.txt` (`SECURITY_CONTACT`).
    pub security_contact: String,
    /// `Policy:` of security.txt (`SECURITY_POLICY_URL`); default: this server's
    /// `/.well-known/security-policy`, the disclosure terms of docs/SECURITY.md.
    pub security_policy_url: Option<String>,
    /// The server's public base URL, the OAuth issuer (`PUBLIC_BASE_URL`); when unset,
    /// `http://` plus the address the server bound.
    pub public_base_url: Option<String>,
    /// Lifetime of OAuth access tokens (`ACCESS_TOKEN_TTL_SECS`, default 900).
    pub access_token_ttl: Duration,
    /// Lifetime of OAuth refresh tokens (`REFRESH_TOKEN_TTL_SECS`, default 30 days).
    pub refresh_token_ttl: Duration,
    /// How long an `ordersQueue` snapshot may be served at most (`QUEUE_SNAPSHOT_MAX_AGE_MS`,
    /// default 1000; 0 reads every request fresh). A snapshot is dropped at once when the
    /// venue's orders change; the age bounds staleness should a notification be lost.
    pub queue_snapshot_max_age: Duration,
    /// Stripe settings (`STRIPE_*`).
    pub stripe: StripeConfig,
    /// Breached-password check for passwords set through the API (`HIBP_*`).
    pub breach: BreachSettings,
    /// Brute-force lockout thresholds.
    pub lockout: LockoutLimits,
    /// Master key (`APP_KEY`, base64 of 32 bytes); keys login tickets. When unset, a
    /// random per-process key is used (logins then do not span restarts or replicas).
    pub app_key: Arc<SecretBox<[u8; 32]>>,
    /// Proxies whose forwarding header is believed (`TRUSTED_PROXIES`, CIDRs).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which forwarding header those proxies write (`FORWARDED_HEADER`, x-forwarded-for).
    pub forwarded_header: ForwardedHeader,
    /// How long an invitation to join a venue stays valid (`INVITATION_TTL_HOURS`, 168).
    pub invitation_ttl: Duration,
    /// Absolute lifetime of a session however often it is refreshed (`SESSION_MAX_AGE_SECS`,
    /// 30 days).
    pub session_max_age: Duration,
    /// Outgoing mail (`SMTP_URL`, `MAIL_FROM`, `MAIL_DIR`).
    pub mail: MailConfig,
    /// Rate limits and connection caps (`RATE_LIMIT_*`, `WS_*`).
    pub rate_limits: RateLimitConfig,
    /// How long personal data no longer needed is kept (`RETENTION_*`).
    pub retention: RetentionConfig,
    /// The master keys (only when `APP_KEY` is set, plus the retired ones in
    /// `APP_PREVIOUS_KEYS`) and `IDENTITY_HMAC_KEY`.
    pub keys: crate::crypto::KeyRing,
    /// Critical alerts (`ALERT_WEBHOOK_URL`, `ALERT_WEBHOOK_SECRET`, `ALERT_DIGEST_SECS`).
    pub alerts: crate::audit::alerts::AlertSettings,
    /// The audit trail's write-once copy, when `AUDIT_S3_BUCKET` is set.
    pub worm: Option<crate::audit::worm::WormSettings>,
    /// How often the WORM exporter looks for new audit rows (`AUDIT_EXPORT_INTERVAL_SECS`).
    pub audit_export_interval: Duration,
}

/// Rate limits (per minute, for the whole deployment) and WebSocket caps.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    /// `RATE_LIMITS` (`on`/`off`): whether limits apply at all.
    pub enabled: bool,
    /// `RATE_LIMIT_PUBLIC_PER_ADDRESS`: diner operations per minute per address (120).
    pub public_per_address: u32,
    /// `RATE_LIMIT_CHECKOUT_PER_ADDRESS`: `startCheckout`s per minute per address (10).
    pub checkout_per_address: u32,
    /// `RATE_LIMIT_CHECKOUT_PER_VENUE`: `startCheckout`s per minute per venue (300).
    pub checkout_per_venue: u32,
    /// `RATE_LIMIT_STAFF_PER_TOKEN`: staff operations per minute per credential (1200).
    pub staff_per_credential: u32,
    /// `RATE_LIMIT_OAUTH_PER_ADDRESS`: `/oauth/*` requests per minute per address (60).
    pub oauth_per_address: u32,
    /// `RATE_LIMIT_SYNC_SECS`: how often a process counts the live replicas (5).
    pub sync_interval: Duration,
    /// `WS_MAX_CONNECTIONS_PER_TOKEN`: open subscription sockets per credential (5).
    pub ws_per_credential: u32,
    /// `WS_MAX_CONNECTIONS_PER_VENUE`: open subscription sockets per venue (200).
    pub ws_per_venue: u32,
    /// `WS_MAX_SUBSCRIPTIONS`: subscriptions at once on one socket (10).
    pub ws_max_subscriptions: u32,
    /// `WS_INIT_TIMEOUT_SECS`: time to send `connection_init` after connecting (10).
    pub ws_init_timeout: Duration,
    /// `WS_IDLE_TIMEOUT_SECS`: a socket with no message from the client for this long is
    /// closed (120; clients should ping, e.g. graphql-ws's `keepAlive`).
    pub ws_idle_timeout: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            public_per_address: 120,
            checkout_per_address: 10,
            checkout_per_venue: 300,
            staff_per_credential: 1200,
            oauth_per_address: 60,
            sync_interval: Duration::from_secs(5),
            ws_per_credential: 5,
            ws_per_venue: 200,
            ws_max_subscriptions: 10,
            ws_init_timeout: Duration::from_secs(10),
            ws_idle_timeout: Duration::from_secs(120),
        }
    }
}

impl RateLimitConfig {
    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<RateLimitConfig, ConfigError> {
        let d = RateLimitConfig::default();
        let per_minute = |name: &str, default: u32| -> Result<u32, ConfigError> {
            let n: u32 = parse_or(lookup, name, default)?;
            if n == 0 { Err(ConfigError(format!("{name} must be at least 1 (per minute)"))) } else { Ok(n) }
        };
        let secs = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(parse_or(lookup, name, default.as_secs())?.max(1)))
        };
        Ok(RateLimitConfig {
            enabled: match lookup("RATE_LIMITS").as_deref().map(str::trim) {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => return Err(ConfigError(format!("RATE_LIMITS must be on or off, not {other:?}"))),
            },
            public_per_address: per_minute("RATE_LIMIT_PUBLIC_PER_ADDRESS", d.public_per_address)?,
            checkout_per_address: per_minute("RATE_LIMIT_CHECKOUT_PER_ADDRESS", d.checkout_per_address)?,
            checkout_per_venue: per_minute("RATE_LIMIT_CHECKOUT_PER_VENUE", d.checkout_per_venue)?,
            staff_per_credential: per_minute("RATE_LIMIT_STAFF_PER_TOKEN", d.staff_per_credential)?,
            oauth_per_address: per_minute("RATE_LIMIT_OAUTH_PER_ADDRESS", d.oauth_per_address)?,
            sync_interval: secs("RATE_LIMIT_SYNC_SECS", d.sync_interval)?,
            ws_per_credential: per_minute("WS_MAX_CONNECTIONS_PER_TOKEN", d.ws_per_credential)?,
            ws_per_venue: per_minute("WS_MAX_CONNECTIONS_PER_VENUE", d.ws_per_venue)?,
            ws_max_subscriptions: per_minute("WS_MAX_SUBSCRIPTIONS", d.ws_max_subscriptions)?,
            ws_init_timeout: secs("WS_INIT_TIMEOUT_SECS", d.ws_init_timeout)?,
            ws_idle_timeout: secs("WS_IDLE_TIMEOUT_SECS", d.ws_idle_timeout)?,
        })
    }
}

/// Where outgoing mail goes and how it is retried.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// `SMTP_URL`: `smtp://` (STARTTLS required unless `?tls=none`... see README),
    /// `smtps://` (implicit TLS), with `user:password@` for AUTH. Holds a credential.
    pub smtp_url: Option<SecretString>,
    /// `MAIL_DIR`: write each mail as a file here instead (what `venueql dev` does).
    pub mail_dir: Option<std::path::PathBuf>,
    /// `MAIL_FROM`: the sender (default `venueql <no-reply@venueql.invalid>`).
    pub from: String,
    /// `MAIL_RETRY_BASE_SECS`: first wait after a failed delivery, doubled per attempt up
    /// to an hour (default 30).
    pub retry_base: Duration,
    /// `MAIL_LEASE_SECS`: how long a worker holds a mail it is sending before another
    /// process may take it over (default 120).
    pub lease: Duration,
}

/// Depth, complexity, alias and batch limits for GraphQL requests.
#[derive(Clone, Copy, Debug)]
pub struct GraphqlLimits {
    /// `GRAPHQL_MAX_DEPTH`.
    pub max_depth: usize,
    /// `GRAPHQL_MAX_COMPLEXITY`.
    pub max_complexity: usize,
    /// `GRAPHQL_MAX_ALIASES`.
    pub max_aliases: usize,
    /// `GRAPHQL_MAX_BATCH`: operations in one JSON array request.
    pub max_batch: usize,
    /// `GRAPHQL_MAX_QUERY_BYTES`: length of one document's text.
    pub max_query_bytes: usize,
    /// `GRAPHQL_MAX_TOKENS`: lexical tokens of one document, counted before it is parsed.
    pub max_tokens: usize,
    /// `GRAPHQL_MAX_NESTING`: how deep `{`, `[` and `(` may nest in one document.
    pub max_nesting: usize,
    /// `GRAPHQL_MAX_SELECTIONS`: fields and fragments of the document once every fragment
    /// spread is expanded (counted without expanding).
    pub max_selections: usize,
    /// `GRAPHQL_MAX_FRAGMENT_SPREADS`: fragment spreads of the expanded document.
    pub max_fragment_spreads: usize,
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        GraphqlLimits {
            max_depth: 10,
            max_complexity: 1000,
            max_aliases: 30,
            max_batch: 10,
            max_query_bytes: 64 * 1024,
            max_tokens: 15_000,
            max_nesting: 64,
            max_selections: 2_000,
            max_fragment_spreads: 500,
        }
    }
}

/// A setting that could not be read; the message names the variable and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads the server settings from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the server settings through `lookup`, so tests need not touch the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let database_url = lookup("DATABASE_URL")
            .ok_or_else(|| ConfigError("DATABASE_URL is not set: it must be the app role's PostgreSQL URL".into()))?;
        let defaults = GraphqlLimits::default();
        let (database_pool_mode, database_listen_url) = database_pooling(&lookup)?;
        let listen_addr: SocketAddr =
            parse_or(&lookup, "LISTEN_ADDR", "127.0.0.1:8080".parse().expect("valid default"))?;
        Ok(Config {
            database_url: database_url.into(),
            listen_addr,
            tls: TlsFiles::from_lookup(&lookup)?,
            metrics_listen_addr: match lookup("METRICS_LISTEN_ADDR").filter(|a| !a.trim().is_empty()) {
                Some(raw) => Some(raw.trim().parse().map_err(|_| {
                    ConfigError(format!("METRICS_LISTEN_ADDR must be an address like 10.0.0.5:9090, not {raw:?}"))
                })?),
                None => None,
            },
            metrics_token: lookup("METRICS_TOKEN").filter(|t| !t.trim().is_empty()).map(SecretString::from),
            public_host_suffix: lookup("PUBLIC_HOST_SUFFIX").filter(|s| !s.is_empty()).map(|s| s.to_ascii_lowercase()),
            database_max_connections: parse_or(&lookup, "DATABASE_MAX_CONNECTIONS", 16)?,
            database_pool_mode,
            database_listen_url,
            introspection: parse_bool_or(&lookup, "GRAPHQL_INTROSPECTION", false)?,
            graphiql: parse_bool_or(&lookup, "GRAPHIQL", false)?,
            limits: GraphqlLimits {
                max_depth: parse_or(&lookup, "GRAPHQL_MAX_DEPTH", defaults.max_depth)?,
                max_complexity: parse_or(&lookup, "GRAPHQL_MAX_COMPLEXITY", defaults.max_complexity)?,
                max_aliases: parse_or(&lookup, "GRAPHQL_MAX_ALIASES", defaults.max_aliases)?,
                max_batch: parse_or(&lookup, "GRAPHQL_MAX_BATCH", defaults.max_batch)?,
                max_query_bytes: parse_or(&lookup, "GRAPHQL_MAX_QUERY_BYTES", defaults.max_query_bytes)?,
                max_tokens: parse_or(&lookup, "GRAPHQL_MAX_TOKENS", defaults.max_tokens)?,
                max_nesting: parse_or(&lookup, "GRAPHQL_MAX_NESTING", defaults.max_nesting)?,
                max_selections: parse_or(&lookup, "GRAPHQL_MAX_SELECTIONS", defaults.max_selections)?,
                max_fragment_spreads: parse_or(&lookup, "GRAPHQL_MAX_FRAGMENT_SPREADS", defaults.max_fragment_spreads)?,
            },
            max_body_bytes: parse_or(&lookup, "MAX_BODY_BYTES", 1024 * 1024)?,
            webhook_max_body_bytes: parse_or(&lookup, "WEBHOOK_MAX_BODY_BYTES", 512 * 1024)?,
            webhook_max_concurrency: parse_or(&lookup, "WEBHOOK_MAX_CONCURRENCY", 16usize)?.max(1),
            request_timeout: Duration::from_secs(parse_or(&lookup, "REQUEST_TIMEOUT_SECS", 30)?),
            shutdown_grace: Duration::from_secs(parse_or(&lookup, "SHUTDOWN_GRACE_SECS", 35)?),
            security_contact: lookup("SECURITY_CONTACT").unwrap_or_else(|| "mailto:security@venueql.invalid".into()),
            security_policy_url: nonempty(&lookup, "SECURITY_POLICY_URL"),
            public_base_url: lookup("PUBLIC_BASE_URL")
                .filter(|url| !url.is_empty())
                .map(|url| url.trim_end_matches('/').to_string()),
            access_token_ttl: Duration::from_secs(parse_or(&lookup, "ACCESS_TOKEN_TTL_SECS", 900)?),
            refresh_token_ttl: Duration::from_secs(parse_or(&lookup, "REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?),
            queue_snapshot_max_age: Duration::from_millis(parse_or(&lookup, "QUEUE_SNAPSHOT_MAX_AGE_MS", 1000)?),
            app_key: Arc::new(parse_app_key(lookup("APP_KEY"))?),
            keys: key_ring(&lookup)?,
            breach: BreachSettings::from_lookup(&lookup)?,
            stripe: StripeConfig {
                webhook_secrets: secrets_list(&lookup, "STRIPE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET_PREVIOUS"),
                connect_webhook_secrets: secrets_list(
                    &lookup,
                    "STRIPE_CONNECT_WEBHOOK_SECRET",
                    "STRIPE_CONNECT_WEBHOOK_SECRET_PREVIOUS",
                ),
                tolerance_secs: parse_or(&lookup, "STRIPE_WEBHOOK_TOLERANCE_SECS", 300)?,
                secret_key: lookup("STRIPE_SECRET_KEY").filter(|k| !k.trim().is_empty()).map(SecretString::from),
                api_base: lookup("STRIPE_API_BASE")
                    .filter(|b| !b.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.into()),
                retry_backoff: Duration::from_millis(parse_or(&lookup, "STRIPE_RETRY_BACKOFF_MS", 250)?),
                platform_fee_bps: parse_fee_bps(&lookup)?,
                checkout_expiry: Duration::from_secs(parse_or(&lookup, "CHECKOUT_EXPIRY_SECS", 1800)?),
                reconcile_after: Duration::from_secs(parse_or(&lookup, "RECONCILE_AFTER_SECS", 900)?),
                jobs_interval: Duration::from_secs(parse_or(&lookup, "PAYMENT_JOBS_INTERVAL_SECS", 60)?),
            },
            trusted_proxies: parse_trusted_proxies(&lookup("TRUSTED_PROXIES").unwrap_or_default())
                .map_err(ConfigError)?,
            forwarded_header: match lookup("FORWARDED_HEADER").filter(|h| !h.trim().is_empty()) {
                Some(raw) => raw.parse().map_err(ConfigError)?,
                None => Default::default(),
            },
            invitation_ttl: Duration::from_secs(3600 * parse_or(&lookup, "INVITATION_TTL_HOURS", 168u64)?),
            session_max_age: Duration::from_secs(parse_or(&lookup, "SESSION_MAX_AGE_SECS", 30 * 24 * 3600)?),
            rate_limits: RateLimitConfig::from_lookup(&lookup)?,
            alerts: alert_settings(&lookup)?,
            worm: worm_settings(&lookup)?,
            audit_export_interval: Duration::from_secs(parse_or(&lookup, "AUDIT_EXPORT_INTERVAL_SECS", 5)?.max(1)),
            retention: retention(&lookup)?,
            mail: MailConfig {
                smtp_url: lookup("SMTP_URL").filter(|u| !u.trim().is_empty()).map(SecretString::from),
                mail_dir: lookup("MAIL_DIR").filter(|d| !d.trim().is_empty()).map(std::path::PathBuf::from),
                from: lookup("MAIL_FROM")
                    .filter(|f| !f.trim().is_empty())
                    .unwrap_or_else(|| "venueql <no-reply@venueql.invalid>".into()),
                retry_base: Duration::from_secs(parse_or(&lookup, "MAIL_RETRY_BASE_SECS", 30)?),
                lease: Duration::from_secs(parse_or(&lookup, "MAIL_LEASE_SECS", 120)?),
            },
            lockout: LockoutLimits {
                per_identifier: parse_or(&lookup, "LOCKOUT_IDENTIFIER_LIMIT", 5)?,
                per_ip: parse_or(&lookup, "LOCKOUT_IP_LIMIT", 50)?,
                base_delay_secs: parse_or(&lookup, "LOCKOUT_BASE_DELAY_SECS", 30)?,
            },
        })
    }
}

/// Stripe settings.
#[derive(Clone, Debug, Default)]
pub struct StripeConfig {
    /// Signing secrets of `/webhooks/stripe`: current first, then previous (rotation).
    pub webhook_secrets: Vec<SecretString>,
    /// Signing secrets of `/webhooks/stripe/connect`.
    pub connect_webhook_secrets: Vec<SecretString>,
    /// Signature timestamp tolerance in seconds (`STRIPE_WEBHOOK_TOLERANCE_SECS`, 300).
    pub tolerance_secs: i64,
    /// The platform's secret key (`STRIPE_SECRET_KEY`); without it, onboarding, checkout
    /// and refunds answer UNAVAILABLE.
    pub secret_key: Option<SecretString>,
    /// Stripe's API base URL (`STRIPE_API_BASE`, default `https://api.stripe.com`).
    pub api_base: String,
    /// First retry wait of Stripe calls (`STRIPE_RETRY_BACKOFF_MS`, 250; doubled per retry).
    pub retry_backoff: Duration,
    /// The platform's application fee in basis points of each checkout (`PLATFORM_FEE_BPS`, 0).
    pub platform_fee_bps: u32,
    /// How long a checkout waits for payment before it expires (`CHECKOUT_EXPIRY_SECS`, 1800).
    pub checkout_expiry: Duration,
    /// How long after a checkout a paid PaymentIntent without an order is reported
    /// (`RECONCILE_AFTER_SECS`, 900).
    pub reconcile_after: Duration,
    /// How often the expiry and reconciliation job runs (`PAYMENT_JOBS_INTERVAL_SECS`, 60;
    /// 0 turns the job off).
    pub jobs_interval: Duration,
}

fn retention(lookup: &impl Fn(&str) -> Option<String>) -> Result<RetentionConfig, ConfigError> {
    let d = RetentionConfig::default();
    let days = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
        let n: u64 = parse_or(lookup, name, default.as_secs() / 86_400)?;
        if n > 36_500 {
            return Err(ConfigError(format!("{name} must be at most 36500 days, not {n}")));
        }
        Ok(Duration::from_secs(n * 86_400))
    };
    Ok(RetentionConfig {
        stripe_events: days("RETENTION_STRIPE_EVENTS_DAYS", d.stripe_events)?,
        abandoned_checkouts: days("RETENTION_ABANDONED_CHECKOUTS_DAYS", d.abandoned_checkouts)?,
        unverified_diners: days("RETENTION_UNVERIFIED_DINERS_DAYS", d.unverified_diners)?,
        interval: Duration::from_secs(parse_or(lookup, "RETENTION_INTERVAL_SECS", d.interval.as_secs())?),
    })
}

fn parse_fee_bps(lookup: &impl Fn(&str) -> Option<String>) -> Result<u32, ConfigError> {
    let bps: u32 = parse_or(lookup, "PLATFORM_FEE_BPS", 0)?;
    if bps > 10_000 {
        return Err(ConfigError(format!("PLATFORM_FEE_BPS must be 0 to 10000 basis points, not {bps}")));
    }
    Ok(bps)
}

/// The current and (optional) previous secret, skipping unset ones.
fn secrets_list(lookup: &impl Fn(&str) -> Option<String>, current: &str, previous: &str) -> Vec<SecretString> {
    [current, previous]
        .iter()
        .filter_map(|name| lookup(name))
        .filter(|s| !s.is_empty())
        .map(SecretString::from)
        .collect()
}

fn decode_key(name: &str, raw: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| ConfigError(format!("{name} must be base64 (standard alphabet)")))?;
    bytes.try_into().map_err(|b: Vec<u8>| ConfigError(format!("{name} must decode to 32 bytes, not {}", b.len())))
}

fn nonempty(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Reads `ALERT_WEBHOOK_URL` (http or https), `ALERT_WEBHOOK_SECRET` and
/// `ALERT_DIGEST_SECS` (default 300).
pub fn alert_settings(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<crate::audit::alerts::AlertSettings, ConfigError> {
    let webhook_url = match nonempty(lookup, "ALERT_WEBHOOK_URL") {
        Some(raw) => {
            let url = url::Url::parse(&raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| ConfigError(format!("ALERT_WEBHOOK_URL must be an http(s) URL, not {raw:?}")))?;
            Some(url)
        }
        None => None,
    };
    let digest_secs: u64 = parse_or(lookup, "ALERT_DIGEST_SECS", 300)?;
    if digest_secs == 0 {
        return Err(ConfigError("ALERT_DIGEST_SECS must be at least 1".into()));
    }
    Ok(crate::audit::alerts::AlertSettings {
        webhook_url,
        webhook_secret: nonempty(lookup, "ALERT_WEBHOOK_SECRET").map(SecretString::from),
        digest: Duration::from_secs(digest_secs),
    })
}

/// Reads the WORM copy's settings: none without `AUDIT_S3_BUCKET`; with it, the endpoint,
/// region and credentials are required and `AUDIT_RETENTION_DAYS` defaults to 2557 (seven
/// years).
pub fn worm_settings(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<crate::audit::worm::WormSettings>, ConfigError> {
    let Some(bucket) = nonempty(lookup, "AUDIT_S3_BUCKET") else {
        return Ok(None);
    };
    let required = |name: &str| {
        nonempty(lookup, name).ok_or_else(|| ConfigError(format!("{name} is required when AUDIT_S3_BUCKET is set")))
    };
    let raw_endpoint = required("AUDIT_S3_ENDPOINT")?;
    let endpoint = url::Url::parse(&raw_endpoint)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| ConfigError(format!("AUDIT_S3_ENDPOINT must be an http(s) URL, not {raw_endpoint:?}")))?;
    let retention_days: u32 = parse_or(lookup, "AUDIT_RETENTION_DAYS", 2557)?;
    if retention_days == 0 {
        return Err(ConfigError("AUDIT_RETENTION_DAYS must be at least 1".into()));
    }
    Ok(Some(crate::audit::worm::WormSettings {
        endpoint,
        bucket,
        region: required("AUDIT_S3_REGION")?,
        access_key_id: required("AUDIT_S3_ACCESS_KEY_ID")?,
        secret_access_key: SecretString::from(required("AUDIT_S3_SECRET_ACCESS_KEY")?),
        retention_days,
    }))
}

/// The key ring from the process environment (the CLI's keys and admin commands).
pub fn key_ring_from_env() -> Result<crate::crypto::KeyRing, ConfigError> {
    key_ring(&|name| std::env::var(name).ok())
}

/// Reads `APP_KEY`, `APP_PREVIOUS_KEYS`, `IDENTITY_HMAC_KEY` and `AUDIT_HMAC_KEY`.
pub fn key_ring(lookup: &impl Fn(&str) -> Option<String>) -> Result<crate::crypto::KeyRing, ConfigError> {
    use crate::crypto::{Key, MasterKeys};
    let master = match lookup("APP_KEY").filter(|k| !k.trim().is_empty()) {
        Some(current) => {
            let current = Key::from_bytes(decode_key("APP_KEY", &current)?);
            let mut previous = Vec::new();
            for raw in lookup("APP_PREVIOUS_KEYS").unwrap_or_default().split(',').filter(|k| !k.trim().is_empty()) {
                previous.push(Key::from_bytes(decode_key("APP_PREVIOUS_KEYS", raw)?));
            }
            Some(Arc::new(MasterKeys::new(current, previous)))
        }
        None => None,
    };
    let identity = match lookup("IDENTITY_HMAC_KEY").filter(|k| !k.trim().is_empty()) {
        Some(raw) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw.trim())
                .map_err(|_| ConfigError("IDENTITY_HMAC_KEY must be base64 (standard alphabet)".into()))?;
            if bytes.len() < 32 {
                let message = format!("IDENTITY_HMAC_KEY must decode to at least 32 bytes, not {}", bytes.len());
                return Err(ConfigError(message));
            }
            Some(Arc::new(SecretBox::new(Box::new(bytes))))
        }
        None => None,
    };
    let audit = match nonempty(lookup, "AUDIT_HMAC_KEY") {
        Some(raw) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|_| ConfigError("AUDIT_HMAC_KEY must be base64 (standard alphabet)".into()))?;
            crate::audit::seal::SealKey::new(bytes.clone()).map_err(ConfigError)?;
            Some(Arc::new(SecretBox::new(Box::new(bytes))))
        }
        None => None,
    };
    Ok(crate::crypto::KeyRing { master, identity, audit })
}

/// Decodes `APP_KEY` (base64 of exactly 32 bytes), or makes a random one when unset.
fn parse_app_key(raw: Option<String>) -> Result<SecretBox<[u8; 32]>, ConfigError> {
    let mut key = [0u8; 32];
    match raw.filter(|k| !k.trim().is_empty()) {
        Some(raw) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw.trim())
                .map_err(|_| ConfigError("APP_KEY must be base64 (standard alphabet)".into()))?;
            if bytes.len() != 32 {
                return Err(ConfigError(format!("APP_KEY must decode to 32 bytes, not {}", bytes.len())));
            }
            key.copy_from_slice(&bytes);
        }
        None => {
            tracing::warn!("APP_KEY is not set: using a random key; login pages will not survive a restart");
            getrandom::fill(&mut key).expect("the OS random source is available");
        }
    }
    Ok(SecretBox::new(Box::new(key)))
}

fn parse_or<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, ConfigError> {
    match lookup(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| ConfigError(format!("{name} has an invalid value {raw:?}"))),
    }
}

fn parse_bool_or(lookup: &impl Fn(&str) -> Option<String>, name: &str, default: bool) -> Result<bool, ConfigError> {
    match lookup(name).as_deref().map(str::trim) {
        None => Ok(default),
        Some("1" | "true" | "on" | "yes") => Ok(true),
        Some("0" | "false" | "off" | "no") => Ok(false),
        Some(other) => Err(ConfigError(format!("{name} must be true or false, not {other:?}"))),
    }
}

/// The PEM certificate chain and private key of in-process HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `TLS_CERT_FILE`: the server's certificate first, then its intermediates.
    pub cert_file: std::path::PathBuf,
    /// `TLS_KEY_FILE`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

impl TlsFiles {
    fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<TlsFiles>, ConfigError> {
        let set = |name| lookup(name).filter(|value: &String| !value.trim().is_empty());
        match (set("TLS_CERT_FILE"), set("TLS_KEY_FILE")) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert_file: cert.into(), key_file: key.into() })),
            (Some(_), None) => {
                Err(ConfigError("TLS_CERT_FILE is set but TLS_KEY_FILE is not: HTTPS needs both".into()))
            }
            (None, Some(_)) => {
                Err(ConfigError("TLS_KEY_FILE is set but TLS_CERT_FILE is not: HTTPS needs both".into()))
            }
        }
    }
}

impl Config {
    /// Whether clients reach this server over HTTPS: in process, or through a proxy that
    /// terminates TLS for an `https://` `PUBLIC_BASE_URL`. Responses then carry HSTS.
    pub fn serves_https(&self) -> bool {
        self.tls.is_some() || self.public_base_url.as_deref().is_some_and(|url| url.starts_with("https://"))
    }
}

/// How the app pool reaches PostgreSQL (`DATABASE_POOL_MODE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DatabasePoolMode {
    /// `direct` (the default): `DATABASE_URL` is PostgreSQL itself, or a session-pooling
    /// proxy. Statements are prepared once per connection and cached.
    #[default]
    Direct,
    /// `transaction`: `DATABASE_URL` is a transaction-pooling proxy (PgBouncer
    /// `pool_mode = transaction`). Nothing is cached on a server connection and every
    /// statement runs inside a transaction; LISTEN, which needs a session of its own,
    /// must then connect elsewhere (`DATABASE_LISTEN_URL`).
    Transaction,
}

/// Reads `DATABASE_POOL_MODE` and `DATABASE_LISTEN_URL` (which defaults to `DATABASE_URL`
/// but must be given when that is a transaction pooler).
fn database_pooling(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(DatabasePoolMode, Option<SecretString>), ConfigError> {
    let listen_url = lookup("DATABASE_LISTEN_URL").filter(|url| !url.trim().is_empty());
    let mode = match lookup("DATABASE_POOL_MODE").as_deref().map(str::trim).unwrap_or("direct") {
        "direct" | "" => DatabasePoolMode::Direct,
        "transaction" => DatabasePoolMode::Transaction,
        other => return Err(ConfigError(format!("DATABASE_POOL_MODE must be direct or transaction, not {other:?}"))),
    };
    if mode == DatabasePoolMode::Transaction && listen_url.is_none() {
        return Err(ConfigError(
            "DATABASE_POOL_MODE=transaction needs DATABASE_LISTEN_URL: LISTEN cannot work through a transaction pooler, so it connects to PostgreSQL directly (the app role's URL without the pooler)"
                .into(),
        ));
    }
    Ok((mode, listen_url.map(SecretString::from)))
}

/// Which forwarding header the trusted proxies write (`FORWARDED_HEADER`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, cloud load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded`.
    Forwarded,
}

impl std::str::FromStr for ForwardedHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<ForwardedHeader, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            other => Err(format!("FORWARDED_HEADER must be x-forwarded-for or forwarded, not {other:?}")),
        }
    }
}

/// Parses `TRUSTED_PROXIES`: comma-separated CIDRs or single addresses.
pub fn parse_trusted_proxies(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("TRUSTED_PROXIES: {entry:?} is not a CIDR (e.g. 10.0.0.0/8) or an address"))
        })
        .collect()
}

/// Where breached passwords are looked up (`HIBP_MODE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreachMode {
    /// No check (`off`).
    Off,
    /// The range API (`online`): `HIBP_API_BASE`, `HIBP_TIMEOUT_MS`.
    Online {
        /// API base URL.
        base: String,
        /// Request timeout.
        timeout: Duration,
    },
    /// A local sorted `SHA1:COUNT` file (`offline`, `HIBP_OFFLINE_FILE`).
    Offline(std::path::PathBuf),
}

/// The breached-password check's settings (`HIBP_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreachSettings {
    /// Where to look.
    pub mode: BreachMode,
    /// Accept the password (with a warning) when the source cannot be consulted
    /// (`HIBP_FAIL_OPEN`, default true); otherwise refuse it.
    pub fail_open: bool,
}

impl BreachSettings {
    /// No check at all.
    pub fn off() -> BreachSettings {
        BreachSettings { mode: BreachMode::Off, fail_open: true }
    }

    /// Reads `HIBP_MODE` (default `online`), `HIBP_API_BASE`, `HIBP_TIMEOUT_MS`,
    /// `HIBP_OFFLINE_FILE` and `HIBP_FAIL_OPEN`.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<BreachSettings, ConfigError> {
        let fail_open = match lookup("HIBP_FAIL_OPEN").as_deref().map(str::trim) {
            None | Some("true" | "1" | "yes" | "on") => true,
            Some("false" | "0" | "no" | "off") => false,
            Some(other) => return Err(ConfigError(format!("HIBP_FAIL_OPEN must be true or false, not {other:?}"))),
        };
        let mode = match lookup("HIBP_MODE").as_deref().map(str::trim).unwrap_or("online") {
            "off" => BreachMode::Off,
            "online" => BreachMode::Online {
                base: lookup("HIBP_API_BASE").unwrap_or_else(|| "https://api.pwnedpasswords.com".into()),
                timeout: Duration::from_millis(parse_or(lookup, "HIBP_TIMEOUT_MS", 3000)?),
            },
            "offline" => {
                let path = lookup("HIBP_OFFLINE_FILE")
                    .ok_or_else(|| ConfigError("HIBP_MODE=offline needs HIBP_OFFLINE_FILE".into()))?;
                if !std::path::Path::new(&path).is_file() {
                    return Err(ConfigError(format!("HIBP_OFFLINE_FILE {path:?} is not a readable file")));
                }
                BreachMode::Offline(path.into())
            }
            other => return Err(ConfigError(format!("HIBP_MODE must be online, offline or off, not {other:?}"))),
        };
        Ok(BreachSettings { mode, fail_open })
    }
}

/// How long each kind of data is kept (`RETENTION_*`).
#[derive(Clone, Copy, Debug)]
pub struct RetentionConfig {
    /// `RETENTION_STRIPE_EVENTS_DAYS` (30): raw Stripe event bodies, from receipt.
    pub stripe_events: Duration,
    /// `RETENTION_ABANDONED_CHECKOUTS_DAYS` (30): expired or cancelled checkouts, from
    /// their last change.
    pub abandoned_checkouts: Duration,
    /// `RETENTION_UNVERIFIED_DINERS_DAYS` (30): unverified diner statements, from their
    /// last change (and only once none of their orders is open).
    pub unverified_diners: Duration,
    /// `RETENTION_INTERVAL_SECS` (3600): how often the server runs the job; 0 turns it off
    /// (then run `venueql retention run` from a scheduler).
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |n: u64| Duration::from_secs(n * 24 * 3600);
        RetentionConfig {
            stripe_events: days(30),
            abandoned_checkouts: days(30),
            unverified_diners: days(30),
            interval: Duration::from_secs(3600),
        }
    }
}

/// Thresholds and the first delay (`LOCKOUT_IDENTIFIER_LIMIT`, `LOCKOUT_IP_LIMIT`,
/// `LOCKOUT_BASE_DELAY_SECS`).
#[derive(Clone, Copy, Debug)]
pub struct LockoutLimits {
    /// Failures per identifier before delays start (default 5).
    pub per_identifier: i32,
    /// Failures per client address before delays start (default 50).
    pub per_ip: i32,
    /// First delay in seconds; doubles per further failure, at most 15 minutes (default 30).
    pub base_delay_secs: i32,
}

impl Default for LockoutLimits {
    fn default() -> Self {
        LockoutLimits { per_identifier: 5, per_ip: 50, base_delay_secs: 30 }
    }
}
