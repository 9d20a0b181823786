//! Who is calling and what they may do: permission flags, venue API tokens, passwords.

pub mod api_tokens;
pub mod passwords;
pub mod permissions;

pub use permissions::Permissions;

use uuid::Uuid;

/// The authenticated caller behind a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A venue API token (integration bearer token).
    ApiToken(Uuid),
}

impl Principal {
    /// The actor string written into audit rows.
    pub fn actor(&self) -> String {
        match self {
            Principal::ApiToken(id) => format!("api_token:{id}"),
        }
    }
}
