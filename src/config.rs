//! Typed settings read from the environment (names from SPEC §11); secrets are
//! `SecretString`s so they cannot end up in logs through `Debug`.
//!
//! Every setting is declared once, with [`settings!`]: its field, its doc comment, and how
//! it is read from its variable with its default (`env.secs("REQUEST_TIMEOUT_SECS", 30)?`).
//! Reading goes through [`Env`], the one reader of variables, so each error names the
//! variable and what is wrong with its value; a group's `Default` is what an empty
//! environment reads, so a default is written in one place.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ipnet::IpNet;
use secrecy::{SecretBox, SecretString};

/// Stripe's API, unless `STRIPE_API_BASE` names another (tests, `venueql dev`).
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

/// A setting that could not be read; the message names the variable and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The environment as settings see it: the one reader of every variable.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Env<'a> {
    /// Reads variables through `lookup` (the process environment, or a test's table).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Env<'a> {
        Env { lookup }
    }

    /// An environment with nothing set: reading from it gives every default.
    pub fn empty() -> Env<'static> {
        Env { lookup: &|_| None }
    }

    /// The value as set (untrimmed; None when unset).
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// The trimmed value, when set and not blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.raw(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    /// The trimmed value, or `default` when unset or blank.
    pub fn text_or(&self, name: &str, default: &str) -> String {
        self.text(name).unwrap_or_else(|| default.to_string())
    }

    /// A secret value (never logged), when set and not blank.
    pub fn secret(&self, name: &str) -> Option<SecretString> {
        self.text(name).map(SecretString::from)
    }

    /// A path, when set and not blank.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.text(name).map(PathBuf::from)
    }

    /// A value parsed as `T`, or `default` when unset.
    pub fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| ConfigError(format!("{name} has an invalid value {raw:?}"))),
        }
    }

    /// A number that must be at least 1 (`what` says per what, for the error).
    pub fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
        &self,
        name: &str,
        default: T,
        what: &str,
    ) -> Result<T, ConfigError> {
        let n = self.number(name, default)?;
        if n < T::from(1) { Err(ConfigError(format!("{name} must be at least 1{what}"))) } else { Ok(n) }
    }

    /// Seconds, `default` when unset.
    pub fn secs(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.number(name, default)?))
    }

    /// Milliseconds, `default` when unset.
    pub fn millis(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.number(name, default)?))
    }

    /// Whole days up to a century, `default` when unset.
    pub fn days(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        let n: u64 = self.number(name, default)?;
        if n > 36_500 {
            return Err(ConfigError(format!("{name} must be at most 36500 days, not {n}")));
        }
        Ok(Duration::from_secs(n * 86_400))
    }

    /// `true`/`false` (also 1/0, on/off, yes/no), `default` when unset.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(name).as_deref().map(str::trim) {
            None => Ok(default),
            Some("1" | "true" | "on" | "yes") => Ok(true),
            Some("0" | "false" | "off" | "no") => Ok(false),
            Some(other) => Err(ConfigError(format!("{name} must be true or false, not {other:?}"))),
        }
    }

    /// One of `choices` (the first is the default when unset).
    pub fn choice(&self, name: &str, choices: &[&'static str]) -> Result<&'static str, ConfigError> {
        match self.raw(name).as_deref().map(str::trim) {
            None | Some("") => Ok(choices[0]),
            Some(value) => choices
                .iter()
                .copied()
                .find(|c| *c == value)
                .ok_or_else(|| ConfigError(format!("{name} must be {}, not {value:?}", one_of(choices)))),
        }
    }

    /// An http(s) URL, when set.
    pub fn http_url(&self, name: &str) -> Result<Option<url::Url>, ConfigError> {
        let Some(raw) = self.text(name) else { return Ok(None) };
        url::Url::parse(&raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .map(Some)
            .ok_or_else(|| ConfigError(format!("{name} must be an http(s) URL, not {raw:?}")))
    }

    /// A value that must be set when `because` is (the error says so).
    pub fn required_with(&self, name: &str, because: &str) -> Result<String, ConfigError> {
        self.text(name).ok_or_else(|| ConfigError(format!("{name} is required when {because} is set")))
    }
}

/// `a, b or c`.
fn one_of(choices: &[&str]) -> String {
    match choices {
        [] => String::new(),
        [only] => (*only).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Declares a group of settings: each field with its doc comment, its type and how it is
/// read through the group's `Env` (`= env.secs("NAME", 30)?`). Generates the struct and
/// its `read`; the one place a setting is added.
macro_rules! settings {
    (
        $(#[doc = $group_doc:literal])+
        #[derive($($derive:ident),*)]
        pub struct $name:ident($env:ident) {
            $( $(#[doc = $doc:literal])+ pub $field:ident: $ty:ty = $read:expr, )+
        }
    ) => {
        $(#[doc = $group_doc])+
        #[derive($($derive),*)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl $name {
            /// Reads the group from the environment; the error names the first variable
            /// that is wrong.
            pub fn read($env: Env<'_>) -> Result<$name, ConfigError> {
                Ok($name { $( $field: $read, )+ })
            }
        }
    };
}

/// The defaults of a group: what an empty environment reads.
macro_rules! default_from_empty_env {
    ($($name:ident),+) => {
        $(impl Default for $name {
            fn default() -> $name {
                $name::read(Env::empty()).expect("every default is a valid setting")
            }
        })+
    };
}

settings! {
    /// Everything `venueql serve` needs to run; built once at start.
    #[derive(Clone, Debug)]
    pub struct Config(env) {
        /// The app role's connection (`DATABASE_URL`).
        pub database_url: SecretString = env.secret("DATABASE_URL").ok_or_else(|| {
            ConfigError("DATABASE_URL is not set: it must be the app role's PostgreSQL URL".into())
        })?,
        /// Where the server listens (`LISTEN_ADDR`).
        pub listen_addr: SocketAddr = env.number("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
        /// Serve HTTPS in process (`TLS_CERT_FILE`, `TLS_KEY_FILE`); plain HTTP when unset.
        pub tls: Option<TlsFiles> = TlsFiles::read(env)?,
        /// A separate listener that serves only `/metrics`, without a token
        /// (`METRICS_LISTEN_ADDR`, e.g. an internal interface).
        pub metrics_listen_addr: Option<SocketAddr> = match env.text("METRICS_LISTEN_ADDR") {
            Some(raw) => Some(raw.parse().map_err(|_| {
                ConfigError(format!("METRICS_LISTEN_ADDR must be an address like 10.0.0.5:9090, not {raw:?}"))
            })?),
            None => None,
        },
        /// The bearer token `/metrics` on the main listener requires (`METRICS_TOKEN`); without
        /// it, the main listener does not serve metrics.
        pub metrics_token: Option<SecretString> = env.secret("METRICS_TOKEN"),
        /// Suffix of venue host names, `{slug}.{suffix}` (`PUBLIC_HOST_SUFFIX`).
        pub public_host_suffix: Option<String> = env.text("PUBLIC_HOST_SUFFIX").map(|s| s.to_ascii_lowercase()),
        /// Maximum connections in the app pool (`DATABASE_MAX_CONNECTIONS`).
        pub database_max_connections: u32 = env.number("DATABASE_MAX_CONNECTIONS", 16)?,
        /// How `DATABASE_URL` reaches PostgreSQL: directly, or through a transaction-pooling
        /// proxy such as PgBouncer (`DATABASE_POOL_MODE`).
        pub database_pool_mode: DatabasePoolMode = DatabasePoolMode::read(env)?,
        /// Where the LISTEN connection goes (`DATABASE_LISTEN_URL`); `DATABASE_URL` when unset.
        pub database_listen_url: Option<SecretString> = database_listen_url(env)?,
        /// Whether GraphQL introspection is answered (`GRAPHQL_INTROSPECTION`).
        pub introspection: bool = env.flag("GRAPHQL_INTROSPECTION", false)?,
        /// Whether `GET /graphql` serves GraphiQL (`GRAPHIQL`; `venueql dev` turns it on).
        pub graphiql: bool = env.flag("GRAPHIQL", false)?,
        /// Query limits applied to every GraphQL request.
        pub limits: GraphqlLimits = GraphqlLimits::read(env)?,
        /// Largest accepted request body (`MAX_BODY_BYTES`).
        pub max_body_bytes: usize = env.number("MAX_BODY_BYTES", 1024 * 1024)?,
        /// Largest Stripe webhook body (`WEBHOOK_MAX_BODY_BYTES`, 512 KiB).
        pub webhook_max_body_bytes: usize = env.number("WEBHOOK_MAX_BODY_BYTES", 512 * 1024)?,
        /// Webhook deliveries processed at once per process (`WEBHOOK_MAX_CONCURRENCY`, 16);
        /// more wait briefly, then get 503 (Stripe retries).
        pub webhook_max_concurrency: usize = env.number("WEBHOOK_MAX_CONCURRENCY", 16usize)?.max(1),
        /// Time limit for one request (`REQUEST_TIMEOUT_SECS`).
        pub request_timeout: Duration = env.secs("REQUEST_TIMEOUT_SECS", 30)?,
        /// After SIGTERM, how long `serve` waits for requests in flight before it exits anyway
        /// (`SHUTDOWN_GRACE_SECS`).
        pub shutdown_grace: Duration = env.secs("SHUTDOWN_GRACE_SECS", 35)?,
        /// Contact line of `/.well-known/security.txt` (`SECURITY_CONTACT`).
        pub security_contact: String = env.raw("SECURITY_CONTACT").unwrap_or_else(|| "mailto:security@venueql.invalid".into()),
        /// `Policy:` of security.txt (`SECURITY_POLICY_URL`); default: this server's
        /// `/.well-known/security-policy`, the disclosure terms of docs/SECURITY.md.
        pub security_policy_url: Option<String> = env.text("SECURITY_POLICY_URL"),
        /// The server's public base URL, the OAuth issuer (`PUBLIC_BASE_URL`); when unset,
        /// `http://` plus the address the server bound.
        pub public_base_url: Option<String> = env.text("PUBLIC_BASE_URL").map(|url| url.trim_end_matches('/').to_string()),
        /// Lifetime of OAuth access tokens (`ACCESS_TOKEN_TTL_SECS`, default 900).
        pub access_token_ttl: Duration = env.secs("ACCESS_TOKEN_TTL_SECS", 900)?,
        /// Lifetime of OAuth refresh tokens (`REFRESH_TOKEN_TTL_SECS`, default 30 days).
        pub refresh_token_ttl: Duration = env.secs("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
        /// How long an `ordersQueue` snapshot may be served at most (`QUEUE_SNAPSHOT_MAX_AGE_MS`,
        /// default 1000; 0 reads every request fresh). A snapshot is dropped at once when the
        /// venue's orders change; the age bounds staleness should a notification be lost.
        pub queue_snapshot_max_age: Duration = env.millis("QUEUE_SNAPSHOT_MAX_AGE_MS", 1000)?,
        /// Master key (`APP_KEY`, base64 of 32 bytes); keys login tickets. When unset, a
        /// random per-process key is used (logins then do not span restarts or replicas).
        pub app_key: Arc<SecretBox<[u8; 32]>> = Arc::new(parse_app_key(env.raw("APP_KEY"))?),
        /// The master keys (only when `APP_KEY` is set, plus the retired ones in
        /// `APP_PREVIOUS_KEYS`), `IDENTITY_HMAC_KEY` and `AUDIT_HMAC_KEY`.
        pub keys: crate::crypto::KeyRing = read_key_ring(env)?,
        /// Breached-password check for passwords set through the API (`HIBP_*`).
        pub breach: BreachSettings = BreachSettings::read(env)?,
        /// Stripe settings (`STRIPE_*`).
        pub stripe: StripeConfig = StripeConfig::read(env)?,
        /// Proxies whose forwarding header is believed (`TRUSTED_PROXIES`, CIDRs).
        pub trusted_proxies: Vec<IpNet> = parse_trusted_proxies(&env.raw("TRUSTED_PROXIES").unwrap_or_default()).map_err(ConfigError)?,
        /// Which forwarding header those proxies write (`FORWARDED_HEADER`, x-forwarded-for).
        pub forwarded_header: ForwardedHeader = match env.text("FORWARDED_HEADER") {
            Some(raw) => raw.parse().map_err(ConfigError)?,
            None => ForwardedHeader::default(),
        },
        /// How long an invitation to join a venue stays valid (`INVITATION_TTL_HOURS`, 168).
        pub invitation_ttl: Duration = Duration::from_secs(3600 * env.number("INVITATION_TTL_HOURS", 168u64)?),
        /// Absolute lifetime of a session however often it is refreshed (`SESSION_MAX_AGE_SECS`,
        /// 30 days).
        pub session_max_age: Duration = env.secs("SESSION_MAX_AGE_SECS", 30 * 24 * 3600)?,
        /// Rate limits and connection caps (`RATE_LIMIT_*`, `WS_*`).
        pub rate_limits: RateLimitConfig = RateLimitConfig::read(env)?,
        /// Critical alerts (`ALERT_WEBHOOK_URL`, `ALERT_WEBHOOK_SECRET`, `ALERT_DIGEST_SECS`).
        pub alerts: AlertSettings = AlertSettings::read(env)?,
        /// The audit trail's write-once copy, when `AUDIT_S3_BUCKET` is set.
        pub worm: Option<WormSettings> = WormSettings::read(env)?,
        /// How often the WORM exporter looks for new audit rows (`AUDIT_EXPORT_INTERVAL_SECS`).
        pub audit_export_interval: Duration = Duration::from_secs(env.number("AUDIT_EXPORT_INTERVAL_SECS", 5u64)?.max(1)),
        /// How long personal data no longer needed is kept (`RETENTION_*`).
        pub retention: RetentionConfig = RetentionConfig::read(env)?,
        /// Outgoing mail (`SMTP_URL`, `MAIL_FROM`, `MAIL_DIR`).
        pub mail: MailConfig = MailConfig::read(env)?,
        /// Brute-force lockout thresholds.
        pub lockout: LockoutLimits = LockoutLimits::read(env)?,
    }
}

impl Config {
    /// Reads the server settings from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the server settings through `lookup`, so tests need not touch the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::read(Env::new(&lookup))
    }

    /// Whether clients reach this server over HTTPS: in process, or through a proxy that
    /// terminates TLS for an `https://` `PUBLIC_BASE_URL`. Responses then carry HSTS.
    pub fn serves_https(&self) -> bool {
        self.tls.is_some() || self.public_base_url.as_deref().is_some_and(|url| url.starts_with("https://"))
    }
}

settings! {
    /// Rate limits (per minute, for the whole deployment) and WebSocket caps.
    #[derive(Clone, Debug)]
    pub struct RateLimitConfig(env) {
        /// `RATE_LIMITS` (`on`/`off`): whether limits apply at all.
        pub enabled: bool = env.choice("RATE_LIMITS", &["on", "off"])? == "on",
        /// `RATE_LIMIT_PUBLIC_PER_ADDRESS`: diner operations per minute per address (120).
        pub public_per_address: u32 = env.positive("RATE_LIMIT_PUBLIC_PER_ADDRESS", 120, " (per minute)")?,
        /// `RATE_LIMIT_CHECKOUT_PER_ADDRESS`: `startCheckout`s per minute per address (10).
        pub checkout_per_address: u32 = env.positive("RATE_LIMIT_CHECKOUT_PER_ADDRESS", 10, " (per minute)")?,
        /// `RATE_LIMIT_CHECKOUT_PER_VENUE`: `startCheckout`s per minute per venue (300).
        pub checkout_per_venue: u32 = env.positive("RATE_LIMIT_CHECKOUT_PER_VENUE", 300, " (per minute)")?,
        /// `RATE_LIMIT_STAFF_PER_TOKEN`: staff operations per minute per credential (1200).
        pub staff_per_credential: u32 = env.positive("RATE_LIMIT_STAFF_PER_TOKEN", 1200, " (per minute)")?,
        /// `RATE_LIMIT_OAUTH_PER_ADDRESS`: `/oauth/*` requests per minute per address (60).
        pub oauth_per_address: u32 = env.positive("RATE_LIMIT_OAUTH_PER_ADDRESS", 60, " (per minute)")?,
        /// `RATE_LIMIT_SYNC_SECS`: how often a process counts the live replicas (5).
        pub sync_interval: Duration = Duration::from_secs(env.number("RATE_LIMIT_SYNC_SECS", 5u64)?.max(1)),
        /// `WS_MAX_CONNECTIONS_PER_TOKEN`: open subscription sockets per credential (5).
        pub ws_per_credential: u32 = env.positive("WS_MAX_CONNECTIONS_PER_TOKEN", 5, "")?,
        /// `WS_MAX_CONNECTIONS_PER_VENUE`: open subscription sockets per venue (200).
        pub ws_per_venue: u32 = env.positive("WS_MAX_CONNECTIONS_PER_VENUE", 200, "")?,
        /// `WS_MAX_SUBSCRIPTIONS`: subscriptions at once on one socket (10).
        pub ws_max_subscriptions: u32 = env.positive("WS_MAX_SUBSCRIPTIONS", 10, "")?,
        /// `WS_INIT_TIMEOUT_SECS`: time to send `connection_init` after connecting (10).
        pub ws_init_timeout: Duration = Duration::from_secs(env.number("WS_INIT_TIMEOUT_SECS", 10u64)?.max(1)),
        /// `WS_IDLE_TIMEOUT_SECS`: a socket with no message from the client for this long is
        /// closed (120; clients should ping, e.g. graphql-ws's `keepAlive`).
        pub ws_idle_timeout: Duration = Duration::from_secs(env.number("WS_IDLE_TIMEOUT_SECS", 120u64)?.max(1)),
    }
}

settings! {
    /// Where outgoing mail goes and how it is retried.
    #[derive(Clone, Debug)]
    pub struct MailConfig(env) {
        /// `SMTP_URL`: `smtp://` (STARTTLS required unless `?tls=none`... see README),
        /// `smtps://` (implicit TLS), with `user:password@` for AUTH. Holds a credential.
        pub smtp_url: Option<SecretString> = env.secret("SMTP_URL"),
        /// `MAIL_DIR`: write each mail as a file here instead (what `venueql dev` does).
        pub mail_dir: Option<PathBuf> = env.path("MAIL_DIR"),
        /// `MAIL_FROM`: the sender (default `venueql <no-reply@venueql.invalid>`).
        pub from: String = env.text_or("MAIL_FROM", "venueql <no-reply@venueql.invalid>"),
        /// `MAIL_RETRY_BASE_SECS`: first wait after a failed delivery, doubled per attempt up
        /// to an hour (default 30).
        pub retry_base: Duration = env.secs("MAIL_RETRY_BASE_SECS", 30)?,
        /// `MAIL_LEASE_SECS`: how long a worker holds a mail it is sending before another
        /// process may take it over (default 120).
        pub lease: Duration = env.secs("MAIL_LEASE_SECS", 120)?,
    }
}

settings! {
    /// The document limits of GraphQL requests: the budget checked before anything expands
    /// a fragment, then depth, complexity, aliases and batch size.
    #[derive(Clone, Copy, Debug)]
    pub struct GraphqlLimits(env) {
        /// `GRAPHQL_MAX_DEPTH`.
        pub max_depth: usize = env.number("GRAPHQL_MAX_DEPTH", 10)?,
        /// `GRAPHQL_MAX_COMPLEXITY`.
        pub max_complexity: usize = env.number("GRAPHQL_MAX_COMPLEXITY", 1000)?,
        /// `GRAPHQL_MAX_ALIASES`.
        pub max_aliases: usize = env.number("GRAPHQL_MAX_ALIASES", 30)?,
        /// `GRAPHQL_MAX_BATCH`: operations in one JSON array request.
        pub max_batch: usize = env.number("GRAPHQL_MAX_BATCH", 10)?,
        /// `GRAPHQL_MAX_QUERY_BYTES`: length of one document's text.
        pub max_query_bytes: usize = env.number("GRAPHQL_MAX_QUERY_BYTES", 64 * 1024)?,
        /// `GRAPHQL_MAX_TOKENS`: lexical tokens of one document, counted before it is parsed.
        pub max_tokens: usize = env.number("GRAPHQL_MAX_TOKENS", 15_000)?,
        /// `GRAPHQL_MAX_NESTING`: how deep `{`, `[` and `(` may nest in one document.
        pub max_nesting: usize = env.number("GRAPHQL_MAX_NESTING", 64)?,
        /// `GRAPHQL_MAX_SELECTIONS`: fields and fragments of the document once every fragment
        /// spread is expanded (counted without expanding).
        pub max_selections: usize = env.number("GRAPHQL_MAX_SELECTIONS", 2_000)?,
        /// `GRAPHQL_MAX_FRAGMENT_SPREADS`: fragment spreads of the expanded document.
        pub max_fragment_spreads: usize = env.number("GRAPHQL_MAX_FRAGMENT_SPREADS", 500)?,
    }
}

settings! {
    /// Stripe settings.
    #[derive(Clone, Debug)]
    pub struct StripeConfig(env) {
        /// Signing secrets of `/webhooks/stripe` (`STRIPE_WEBHOOK_SECRET`, then
        /// `STRIPE_WEBHOOK_SECRET_PREVIOUS` during a rotation).
        pub webhook_secrets: Vec<SecretString> = secrets_list(env, "STRIPE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET_PREVIOUS"),
        /// Signing secrets of `/webhooks/stripe/connect` (`STRIPE_CONNECT_WEBHOOK_SECRET`,
        /// `STRIPE_CONNECT_WEBHOOK_SECRET_PREVIOUS`).
        pub connect_webhook_secrets: Vec<SecretString> =
            secrets_list(env, "STRIPE_CONNECT_WEBHOOK_SECRET", "STRIPE_CONNECT_WEBHOOK_SECRET_PREVIOUS"),
        /// Signature timestamp tolerance in seconds (`STRIPE_WEBHOOK_TOLERANCE_SECS`, 300).
        pub tolerance_secs: i64 = env.number("STRIPE_WEBHOOK_TOLERANCE_SECS", 300)?,
        /// The platform's secret key (`STRIPE_SECRET_KEY`); without it, onboarding, checkout
        /// and refunds answer UNAVAILABLE.
        pub secret_key: Option<SecretString> = env.secret("STRIPE_SECRET_KEY"),
        /// Stripe's API base URL (`STRIPE_API_BASE`, default `https://api.stripe.com`).
        pub api_base: String = env.text_or("STRIPE_API_BASE", DEFAULT_STRIPE_API_BASE),
        /// First retry wait of Stripe calls (`STRIPE_RETRY_BACKOFF_MS`, 250; doubled per retry).
        pub retry_backoff: Duration = env.millis("STRIPE_RETRY_BACKOFF_MS", 250)?,
        /// The platform's application fee in basis points of each checkout (`PLATFORM_FEE_BPS`, 0).
        pub platform_fee_bps: u32 = match env.number("PLATFORM_FEE_BPS", 0u32)? {
            bps if bps > 10_000 => {
                return Err(ConfigError(format!("PLATFORM_FEE_BPS must be 0 to 10000 basis points, not {bps}")));
            }
            bps => bps,
        },
        /// How long a checkout waits for payment before it expires (`CHECKOUT_EXPIRY_SECS`, 1800).
        pub checkout_expiry: Duration = env.secs("CHECKOUT_EXPIRY_SECS", 1800)?,
        /// How long after a checkout a paid PaymentIntent without an order is reported
        /// (`RECONCILE_AFTER_SECS`, 900).
        pub reconcile_after: Duration = env.secs("RECONCILE_AFTER_SECS", 900)?,
        /// How often the expiry and reconciliation job runs (`PAYMENT_JOBS_INTERVAL_SECS`, 60;
        /// 0 turns the job off).
        pub jobs_interval: Duration = env.secs("PAYMENT_JOBS_INTERVAL_SECS", 60)?,
    }
}

settings! {
    /// How long each kind of data is kept (`RETENTION_*`).
    #[derive(Clone, Copy, Debug)]
    pub struct RetentionConfig(env) {
        /// `RETENTION_STRIPE_EVENTS_DAYS` (30): raw Stripe event bodies, from receipt.
        pub stripe_events: Duration = env.days("RETENTION_STRIPE_EVENTS_DAYS", 30)?,
        /// `RETENTION_ABANDONED_CHECKOUTS_DAYS` (30): expired or cancelled checkouts, from
        /// their last change.
        pub abandoned_checkouts: Duration = env.days("RETENTION_ABANDONED_CHECKOUTS_DAYS", 30)?,
        /// `RETENTION_UNVERIFIED_DINERS_DAYS` (30): unverified diner statements, from their
        /// last change (and only once none of their orders is open).
        pub unverified_diners: Duration = env.days("RETENTION_UNVERIFIED_DINERS_DAYS", 30)?,
        /// `RETENTION_INTERVAL_SECS` (3600): how often the server runs the job; 0 turns it off
        /// (then run `venueql retention run` from a scheduler).
        pub interval: Duration = env.secs("RETENTION_INTERVAL_SECS", 3600)?,
    }
}

settings! {
    /// Thresholds and the first delay of the brute-force lockout.
    #[derive(Clone, Copy, Debug)]
    pub struct LockoutLimits(env) {
        /// Failures per identifier before delays start (`LOCKOUT_IDENTIFIER_LIMIT`, 5).
        pub per_identifier: i32 = env.number("LOCKOUT_IDENTIFIER_LIMIT", 5)?,
        /// Failures per client address before delays start (`LOCKOUT_IP_LIMIT`, 50).
        pub per_ip: i32 = env.number("LOCKOUT_IP_LIMIT", 50)?,
        /// First delay in seconds; doubles per further failure, at most 15 minutes
        /// (`LOCKOUT_BASE_DELAY_SECS`, 30).
        pub base_delay_secs: i32 = env.number("LOCKOUT_BASE_DELAY_SECS", 30)?,
    }
}

settings! {
    /// Where critical alerts go and how often (the alert pipeline's settings).
    #[derive(Clone, Debug)]
    pub struct AlertSettings(env) {
        /// The receiver (`ALERT_WEBHOOK_URL`, http or https); without one, alerts are logged
        /// and reported to Sentry only.
        pub webhook_url: Option<url::Url> = env.http_url("ALERT_WEBHOOK_URL")?,
        /// Signs each delivery (`ALERT_WEBHOOK_SECRET`, `Venueql-Signature`), so the receiver
        /// can tell it is ours.
        pub webhook_secret: Option<SecretString> = env.secret("ALERT_WEBHOOK_SECRET"),
        /// The rate-limit window per (kind, venue): one digest per window
        /// (`ALERT_DIGEST_SECS`, 300).
        pub digest: Duration = Duration::from_secs(env.positive("ALERT_DIGEST_SECS", 300u64, "")?),
    }
}

default_from_empty_env!(
    RateLimitConfig,
    MailConfig,
    GraphqlLimits,
    StripeConfig,
    RetentionConfig,
    LockoutLimits,
    AlertSettings
);

/// The audit trail's write-once copy in an S3 bucket with Object Lock (`AUDIT_S3_*`).
#[derive(Clone, Debug)]
pub struct WormSettings {
    /// The S3 endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` (`AUDIT_S3_ENDPOINT`).
    pub endpoint: url::Url,
    /// A bucket created with Object Lock enabled (`AUDIT_S3_BUCKET`).
    pub bucket: String,
    /// The bucket's region, part of every signature (`AUDIT_S3_REGION`).
    pub region: String,
    /// The access key id of a principal that may put and read objects, not delete them
    /// (`AUDIT_S3_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// Its secret (`AUDIT_S3_SECRET_ACCESS_KEY`).
    pub secret_access_key: SecretString,
    /// Compliance-mode retention of every object, in days (`AUDIT_RETENTION_DAYS`, 2557:
    /// seven years).
    pub retention_days: u32,
}

impl WormSettings {
    /// None without `AUDIT_S3_BUCKET`; with it, the endpoint, region and credentials are
    /// required.
    pub fn read(env: Env<'_>) -> Result<Option<WormSettings>, ConfigError> {
        let Some(bucket) = env.text("AUDIT_S3_BUCKET") else { return Ok(None) };
        let required = |name: &str| env.required_with(name, "AUDIT_S3_BUCKET");
        let endpoint = required("AUDIT_S3_ENDPOINT")?;
        let endpoint = env
            .http_url("AUDIT_S3_ENDPOINT")?
            .ok_or_else(|| ConfigError(format!("AUDIT_S3_ENDPOINT must be an http(s) URL, not {endpoint:?}")))?;
        Ok(Some(WormSettings {
            endpoint,
            bucket,
            region: required("AUDIT_S3_REGION")?,
            access_key_id: required("AUDIT_S3_ACCESS_KEY_ID")?,
            secret_access_key: SecretString::from(required("AUDIT_S3_SECRET_ACCESS_KEY")?),
            retention_days: env.positive("AUDIT_RETENTION_DAYS", 2557, "")?,
        }))
    }
}

/// The PEM certificate chain and private key of in-process HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `TLS_CERT_FILE`: the server's certificate first, then its intermediates.
    pub cert_file: PathBuf,
    /// `TLS_KEY_FILE`: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsFiles {
    /// Both files, neither, or an error saying which one is missing.
    pub fn read(env: Env<'_>) -> Result<Option<TlsFiles>, ConfigError> {
        match (env.path("TLS_CERT_FILE"), env.path("TLS_KEY_FILE")) {
            (None, None) => Ok(None),
            (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles { cert_file, key_file })),
            (Some(_), None) => {
                Err(ConfigError("TLS_CERT_FILE is set but TLS_KEY_FILE is not: HTTPS needs both".into()))
            }
            (None, Some(_)) => {
                Err(ConfigError("TLS_KEY_FILE is set but TLS_CERT_FILE is not: HTTPS needs both".into()))
            }
        }
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

impl DatabasePoolMode {
    /// Reads `DATABASE_POOL_MODE` (`direct` by default).
    pub fn read(env: Env<'_>) -> Result<DatabasePoolMode, ConfigError> {
        Ok(match env.choice("DATABASE_POOL_MODE", &["direct", "transaction"])? {
            "transaction" => DatabasePoolMode::Transaction,
            _ => DatabasePoolMode::Direct,
        })
    }
}

/// Reads `DATABASE_LISTEN_URL`, which defaults to `DATABASE_URL` but must be given when
/// that is a transaction pooler.
fn database_listen_url(env: Env<'_>) -> Result<Option<SecretString>, ConfigError> {
    let listen_url = env.secret("DATABASE_LISTEN_URL");
    if DatabasePoolMode::read(env)? == DatabasePoolMode::Transaction && listen_url.is_none() {
        return Err(ConfigError(
            "DATABASE_POOL_MODE=transaction needs DATABASE_LISTEN_URL: LISTEN cannot work through a transaction pooler, so it connects to PostgreSQL directly (the app role's URL without the pooler)"
                .into(),
        ));
    }
    Ok(listen_url)
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
    Offline(PathBuf),
}

impl BreachMode {
    /// Reads `HIBP_MODE` (default `online`), `HIBP_API_BASE`, `HIBP_TIMEOUT_MS` and
    /// `HIBP_OFFLINE_FILE`.
    pub fn read(env: Env<'_>) -> Result<BreachMode, ConfigError> {
        Ok(match env.choice("HIBP_MODE", &["online", "offline", "off"])? {
            "off" => BreachMode::Off,
            "offline" => {
                let path = env
                    .raw("HIBP_OFFLINE_FILE")
                    .ok_or_else(|| ConfigError("HIBP_MODE=offline needs HIBP_OFFLINE_FILE".into()))?;
                if !std::path::Path::new(&path).is_file() {
                    return Err(ConfigError(format!("HIBP_OFFLINE_FILE {path:?} is not a readable file")));
                }
                BreachMode::Offline(path.into())
            }
            _ => BreachMode::Online {
                base: env.raw("HIBP_API_BASE").unwrap_or_else(|| "https://api.pwnedpasswords.com".into()),
                timeout: env.millis("HIBP_TIMEOUT_MS", 3000)?,
            },
        })
    }
}

settings! {
    /// The breached-password check's settings (`HIBP_*`).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct BreachSettings(env) {
        /// Accept the password (with a warning) when the source cannot be consulted
        /// (`HIBP_FAIL_OPEN`, default true); otherwise refuse it.
        pub fail_open: bool = env.flag("HIBP_FAIL_OPEN", true)?,
        /// Where to look.
        pub mode: BreachMode = BreachMode::read(env)?,
    }
}

impl BreachSettings {
    /// No check at all.
    pub fn off() -> BreachSettings {
        BreachSettings { mode: BreachMode::Off, fail_open: true }
    }
}

/// The current and (optional) previous secret, skipping unset ones.
fn secrets_list(env: Env<'_>, current: &str, previous: &str) -> Vec<SecretString> {
    [current, previous]
        .iter()
        .filter_map(|name| env.raw(name))
        .filter(|s| !s.is_empty())
        .map(SecretString::from)
        .collect()
}

/// The key ring from the process environment (the CLI's keys and admin commands).
pub fn key_ring_from_env() -> Result<crate::crypto::KeyRing, ConfigError> {
    key_ring(&|name| std::env::var(name).ok())
}

/// Reads `APP_KEY`, `APP_PREVIOUS_KEYS`, `IDENTITY_HMAC_KEY` and `AUDIT_HMAC_KEY` through
/// `lookup`.
pub fn key_ring(lookup: &dyn Fn(&str) -> Option<String>) -> Result<crate::crypto::KeyRing, ConfigError> {
    read_key_ring(Env::new(lookup))
}

fn read_key_ring(env: Env<'_>) -> Result<crate::crypto::KeyRing, ConfigError> {
    use crate::crypto::{Key, MasterKeys};
    let master = match env.text("APP_KEY") {
        Some(current) => {
            let current = Key::from_bytes(decode_key("APP_KEY", &current)?);
            let mut previous = Vec::new();
            for raw in env.raw("APP_PREVIOUS_KEYS").unwrap_or_default().split(',').filter(|k| !k.trim().is_empty()) {
                previous.push(Key::from_bytes(decode_key("APP_PREVIOUS_KEYS", raw)?));
            }
            Some(Arc::new(MasterKeys::new(current, previous)))
        }
        None => None,
    };
    let identity = hmac_key(env, "IDENTITY_HMAC_KEY")?;
    let audit = hmac_key(env, "AUDIT_HMAC_KEY")?;
    Ok(crate::crypto::KeyRing { master, identity, audit })
}

/// An HMAC key: base64 of at least 32 bytes, when set.
fn hmac_key(env: Env<'_>, name: &str) -> Result<Option<Arc<SecretBox<Vec<u8>>>>, ConfigError> {
    let Some(raw) = env.text(name) else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| ConfigError(format!("{name} must be base64 (standard alphabet)")))?;
    if bytes.len() < 32 {
        return Err(ConfigError(format!("{name} must decode to at least 32 bytes, not {}", bytes.len())));
    }
    Ok(Some(Arc::new(SecretBox::new(Box::new(bytes)))))
}

fn decode_key(name: &str, raw: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| ConfigError(format!("{name} must be base64 (standard alphabet)")))?;
    bytes.try_into().map_err(|b: Vec<u8>| ConfigError(format!("{name} must decode to 32 bytes, not {}", b.len())))
}

/// Decodes `APP_KEY` (base64 of exactly 32 bytes), or makes a random one when unset.
fn parse_app_key(raw: Option<String>) -> Result<SecretBox<[u8; 32]>, ConfigError> {
    let mut key = [0u8; 32];
    match raw.filter(|k| !k.trim().is_empty()) {
        Some(raw) => key = decode_key("APP_KEY", &raw)?,
        None => {
            tracing::warn!("APP_KEY is not set: using a random key; login pages will not survive a restart");
            getrandom::fill(&mut key).expect("the OS random source is available");
        }
    }
    Ok(SecretBox::new(Box::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_are_what_an_empty_environment_reads_and_errors_name_the_variable() {
        let config = read(&[("DATABASE_URL", "postgres://app@db/venueql")]).unwrap();
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(config.limits.max_fragment_spreads, GraphqlLimits::default().max_fragment_spreads);
        assert_eq!(config.rate_limits.checkout_per_address, 10);
        assert_eq!(config.stripe.api_base, DEFAULT_STRIPE_API_BASE);
        assert!(read(&[]).unwrap_err().0.starts_with("DATABASE_URL is not set"));
        let wrong = |name: &str, value: &str| {
            read(&[("DATABASE_URL", "postgres://app@db/venueql"), (name, value)]).unwrap_err().0
        };
        assert_eq!(wrong("REQUEST_TIMEOUT_SECS", "soon"), "REQUEST_TIMEOUT_SECS has an invalid value \"soon\"");
        assert_eq!(wrong("RATE_LIMITS", "maybe"), "RATE_LIMITS must be on or off, not \"maybe\"");
        assert_eq!(
            wrong("RATE_LIMIT_CHECKOUT_PER_ADDRESS", "0"),
            "RATE_LIMIT_CHECKOUT_PER_ADDRESS must be at least 1 (per minute)"
        );
        assert_eq!(wrong("GRAPHIQL", "sure"), "GRAPHIQL must be true or false, not \"sure\"");
        assert_eq!(wrong("HIBP_MODE", "cloud"), "HIBP_MODE must be online, offline or off, not \"cloud\"");
        assert_eq!(wrong("PLATFORM_FEE_BPS", "10001"), "PLATFORM_FEE_BPS must be 0 to 10000 basis points, not 10001");
        assert_eq!(wrong("ALERT_WEBHOOK_URL", "ftp://x"), "ALERT_WEBHOOK_URL must be an http(s) URL, not \"ftp://x\"");
        assert_eq!(wrong("AUDIT_S3_BUCKET", "trail"), "AUDIT_S3_ENDPOINT is required when AUDIT_S3_BUCKET is set");
        assert!(wrong("DATABASE_POOL_MODE", "transaction").contains("needs DATABASE_LISTEN_URL"));
        assert_eq!(wrong("AUDIT_HMAC_KEY", "c2hvcnQ="), "AUDIT_HMAC_KEY must decode to at least 32 bytes, not 5");
    }
}
