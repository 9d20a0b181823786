//! Credentials: verifying a bearer token into an `access::Caller` (venue API tokens, OAuth
//! access tokens), the OAuth server and client registration (`clients`), sessions, the
//! hosted login's decisions, the lockout and the breached-password check, and a person's
//! own credentials (passwords, TOTP, PINs, resets). Permissions and the caller are
//! `crate::access`.

pub mod api_tokens;
pub mod authorization_code;
pub mod breach;
pub mod clients;
pub mod graphql;
pub mod lockout;
pub mod login;
pub mod oauth;
pub mod oauth_tokens;
pub mod passwords;
pub mod pins;
pub mod reset;
pub mod secrets;
pub mod sessions;
pub mod totp;

use crate::access::Caller;

use secrecy::{ExposeSecret, SecretString};

use crate::error::AppError;
use crate::tenancy::Db;

/// Verifies a bearer token of any kind (venue API token or OAuth access token; a session
/// lives at most `session_max_age`). Every failure is the same "invalid or revoked token".
pub async fn authenticate_bearer(
    db: &Db,
    token: &SecretString,
    session_max_age: std::time::Duration,
) -> Result<Caller, AppError> {
    let text = token.expose_secret();
    if text.starts_with(api_tokens::TOKEN_PREFIX) {
        api_tokens::verify(db, text).await
    } else if text.starts_with(oauth::ACCESS_PREFIX) {
        oauth_tokens::verify_access_token(db, text, session_max_age).await
    } else {
        Err(INVALID_TOKEN)
    }
}

/// The one answer to a bad bearer token.
pub const INVALID_TOKEN: AppError = AppError::Unauthenticated("invalid or revoked token");
