//! Who is calling and what they may do: permission flags, venue API tokens, the OAuth
//! server, and a person's own credentials (passwords, TOTP, PINs, invitations, resets).

pub mod api_tokens;
pub mod breach;
pub mod clients;
pub mod graphql;
pub mod invitations;
pub mod lockout;
pub mod login;
pub mod oauth;
pub mod passwords;
pub mod permissions;
pub mod pins;
pub mod reset;
pub mod secrets;
pub mod totp;

pub use permissions::{Permission, Permissions};

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::error::AppError;
use crate::tenancy::{Db, VenueId};

/// The authenticated caller behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A venue API token (integration bearer token).
    ApiToken(Uuid),
    /// A person, through an OAuth grant (hosted login or PIN).
    Staff {
        /// The person.
        staff_id: Uuid,
        /// The grant (session) the token belongs to.
        grant_id: Uuid,
    },
    /// An integration, through a client-credentials grant.
    Client {
        /// The OAuth client.
        client_id: String,
        /// The grant the token belongs to.
        grant_id: Uuid,
    },
}

impl Principal {
    /// The actor string written into audit rows.
    pub fn actor(&self) -> String {
        match self {
            Principal::ApiToken(id) => format!("api_token:{id}"),
            Principal::Staff { staff_id, .. } => staff_actor(*staff_id),
            Principal::Client { client_id, .. } => client_actor(client_id),
        }
    }

    /// The key a credential's rate limits are kept under: the API token, the session
    /// (every access token of one sign-in shares it), or the integration client.
    pub fn credential_key(&self) -> String {
        match self {
            Principal::ApiToken(id) => format!("api_token:{id}"),
            Principal::Staff { grant_id, .. } => format!("session:{grant_id}"),
            Principal::Client { client_id, .. } => client_actor(client_id),
        }
    }

    /// The person behind the request, if it is one.
    pub fn staff_id(&self) -> Option<Uuid> {
        match self {
            Principal::Staff { staff_id, .. } => Some(*staff_id),
            _ => None,
        }
    }
}

/// The audit actor of a person.
pub fn staff_actor(staff: Uuid) -> String {
    format!("staff:{staff}")
}

/// The audit actor of an OAuth client.
pub fn client_actor(client: &str) -> String {
    format!("oauth_client:{client}")
}

/// What a verified bearer credential proves: who, at which venue, allowed to do what.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The one venue the credential is bound to.
    pub venue: VenueId,
    /// Who is calling.
    pub principal: Principal,
    /// What they may do there now.
    pub permissions: Permissions,
    /// The OAuth client the token was issued to (None for a venue API token): a browser
    /// request from another origin must come from one of this client's origins.
    pub client_id: Option<String>,
}

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
        oauth::verify_access_token(db, text, session_max_age).await
    } else {
        Err(INVALID_TOKEN)
    }
}

/// The one answer to a bad bearer token.
pub const INVALID_TOKEN: AppError = AppError::Unauthenticated("invalid or revoked token");
