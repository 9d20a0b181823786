//! Typed settings read from the environment (names from SPEC §11); secrets are
//! `SecretString`s so they cannot end up in logs through `Debug`.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

/// Everything `venueql serve` needs to run; built once at start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The app role's connection (`DATABASE_URL`).
    pub database_url: SecretString,
    /// Where the server listens (`LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Suffix of venue host names, `{slug}.{suffix}` (`PUBLIC_HOST_SUFFIX`).
    pub public_host_suffix: Option<String>,
    /// Maximum connections in the app pool (`DATABASE_MAX_CONNECTIONS`).
    pub database_max_connections: u32,
    /// Whether GraphQL introspection is answered (`GRAPHQL_INTROSPECTION`).
    pub introspection: bool,
    /// Whether `GET /graphql` serves GraphiQL (`GRAPHIQL`; `venueql dev` turns it on).
    pub graphiql: bool,
    /// Query limits applied to every GraphQL request.
    pub limits: GraphqlLimits,
    /// Largest accepted request body (`MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Time limit for one request (`REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// Contact line of `/.well-known/security.txt` (`SECURITY_CONTACT`).
    pub security_contact: String,
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
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        GraphqlLimits {
            max_depth: 10,
            max_complexity: 1000,
            max_aliases: 30,
            max_batch: 10,
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
        let database_url = lookup("DATABASE_URL").ok_or_else(|| {
            ConfigError("DATABASE_URL is not set: it must be the app role's PostgreSQL URL".into())
        })?;
        let defaults = GraphqlLimits::default();
        Ok(Config {
            database_url: database_url.into(),
            listen_addr: parse_or(
                &lookup,
                "LISTEN_ADDR",
                "127.0.0.1:8080".parse().expect("valid default"),
            )?,
            public_host_suffix: lookup("PUBLIC_HOST_SUFFIX")
                .filter(|s| !s.is_empty())
                .map(|s| s.to_ascii_lowercase()),
            database_max_connections: parse_or(&lookup, "DATABASE_MAX_CONNECTIONS", 16)?,
            introspection: parse_bool_or(&lookup, "GRAPHQL_INTROSPECTION", false)?,
            graphiql: parse_bool_or(&lookup, "GRAPHIQL", false)?,
            limits: GraphqlLimits {
                max_depth: parse_or(&lookup, "GRAPHQL_MAX_DEPTH", defaults.max_depth)?,
                max_complexity: parse_or(
                    &lookup,
                    "GRAPHQL_MAX_COMPLEXITY",
                    defaults.max_complexity,
                )?,
                max_aliases: parse_or(&lookup, "GRAPHQL_MAX_ALIASES", defaults.max_aliases)?,
                max_batch: parse_or(&lookup, "GRAPHQL_MAX_BATCH", defaults.max_batch)?,
            },
            max_body_bytes: parse_or(&lookup, "MAX_BODY_BYTES", 1024 * 1024)?,
            request_timeout: Duration::from_secs(parse_or(&lookup, "REQUEST_TIMEOUT_SECS", 30)?),
            security_contact: lookup("SECURITY_CONTACT")
                .unwrap_or_else(|| "mailto:security@venueql.invalid".into()),
        })
    }
}

fn parse_or<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, ConfigError> {
    match lookup(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name} has an invalid value {raw:?}"))),
    }
}

fn parse_bool_or(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match lookup(name).as_deref().map(str::trim) {
        None => Ok(default),
        Some("1" | "true" | "on" | "yes") => Ok(true),
        Some("0" | "false" | "off" | "no") => Ok(false),
        Some(other) => Err(ConfigError(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}
