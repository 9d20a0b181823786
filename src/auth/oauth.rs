//! The OAuth 2 authorization server's shared vocabulary: token prefixes, its errors, token
//! lifetimes and answers, and clients (finding and authenticating them). The grants are
//! beside it: [`super::authorization_code`], [`super::sessions`] (refresh, client
//! credentials, listing and ending sessions) and [`super::oauth_tokens`] (verification,
//! revocation, introspection). HTTP framing (forms, RFC 6749 error bodies) lives in
//! `http::oauth` and `http::login`.

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::secrets;
use crate::error::AppError;
use crate::tenancy::Db;

/// Prefix of client ids.
pub const CLIENT_ID_PREFIX: &str = "vqc_";

/// Prefix of client secrets.
pub const CLIENT_SECRET_PREFIX: &str = "vqcs_";

/// Prefix of access tokens.
pub const ACCESS_PREFIX: &str = "vqoa_";

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "vqor_";

/// Prefix of authorization codes.
pub const CODE_PREFIX: &str = "vqoc_";

/// Lifetime of an authorization code.
pub const CODE_TTL_SECS: i32 = 60;

/// An RFC 6749 §5.2 error: `error` code plus a description for the developer.
#[derive(Debug)]
pub enum OAuthError {
    /// Missing, repeated or malformed parameter.
    InvalidRequest(String),
    /// Client authentication failed.
    InvalidClient(String),
    /// Code, refresh token or verifier is invalid, expired, revoked or someone else's.
    InvalidGrant(String),
    /// This client may not use this grant type.
    UnauthorizedClient(String),
    /// Unknown grant type.
    UnsupportedGrantType(String),
    /// Too many failed secret checks (a client secret, a PIN): 429 with `error` (an RFC
    /// 6749 code), `message` saying which secret, and Retry-After.
    SlowDown {
        /// Seconds until another attempt may be checked.
        retry_after: u32,
        /// `invalid_client` or `invalid_grant`.
        error: &'static str,
        /// What was locked, for people.
        message: String,
    },
    /// Anything else (logged; the body says only "server_error").
    Internal(AppError),
}

impl From<AppError> for OAuthError {
    fn from(error: AppError) -> OAuthError {
        match error {
            AppError::BadUserInput(message) => OAuthError::InvalidRequest(message),
            other => OAuthError::Internal(other),
        }
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(error: sqlx::Error) -> OAuthError {
        OAuthError::Internal(error.into())
    }
}

/// Token and session lifetimes from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct TokenLifetimes {
    /// Access tokens.
    pub access: Duration,
    /// Refresh tokens.
    pub refresh: Duration,
    /// A session's absolute lifetime, however often it is refreshed (`SESSION_MAX_AGE_SECS`).
    pub session: Duration,
}

/// The token endpoint's success body (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The next refresh token (authorization-code and PIN grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The permission names granted, space-separated.
    pub scope: String,
}

/// A registered client.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Client {
    /// Client id.
    pub id: String,
    /// `spa`, `integration` or `pos`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// The venue of an integration or POS client.
    pub venue_id: Option<Uuid>,
    /// Exact redirect URIs (SPA clients).
    pub redirect_uris: Vec<String>,
    /// Permissions of client-credentials tokens (integration clients).
    pub permissions: i64,
    /// Whether it has a secret.
    pub confidential: bool,
    /// Web origins a browser may call the token endpoint and the API from (SPA clients).
    pub allowed_origins: Vec<String>,
}

/// Finds an active client.
pub async fn find_client(db: &Db, id: &str) -> Result<Option<Client>, AppError> {
    if id.len() > 100 {
        return Ok(None);
    }
    Ok(sqlx::query_as(
        "SELECT id, kind, name, venue_id, redirect_uris, permissions, confidential, allowed_origins \
         FROM private.oauth_client($1)",
    )
    .bind(id)
    .fetch_optional(db.platform_level())
    .await?)
}

/// How a client authenticated at the token, revocation or introspection endpoint.
#[derive(Debug)]
pub enum ClientCredentials {
    /// A public client names itself.
    Public(String),
    /// A confidential client with its secret (Basic or POST body).
    Secret(String, String),
}

/// Resolves and authenticates the client; None when that fails. Confidential clients
/// must present their secret; public clients must not present one.
pub async fn authenticate_client(db: &Db, credentials: &ClientCredentials) -> Result<Option<Client>, AppError> {
    let id = match credentials {
        ClientCredentials::Public(id) | ClientCredentials::Secret(id, _) => id,
    };
    let Some(client) = find_client(db, id).await? else { return Ok(None) };
    match (credentials, client.confidential) {
        (ClientCredentials::Public(_), false) => Ok(Some(client)),
        (ClientCredentials::Secret(_, secret), true) => {
            let ok: bool = sqlx::query_scalar("SELECT private.authenticate_oauth_client($1, $2)")
                .bind(&client.id)
                .bind(secrets::hash(secret))
                .fetch_one(db.platform_level())
                .await?;
            Ok(ok.then_some(client))
        }
        _ => Ok(None),
    }
}
