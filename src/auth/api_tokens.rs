//! Venue API tokens: opaque bearer tokens bound to one venue, shown once, stored only as
//! a SHA-256 hash in the private schema, revocable with effect on the next request.

use secrecy::SecretString;
use uuid::Uuid;

use super::{INVALID_TOKEN, secrets};
use crate::access::{Caller, Permissions, Principal};
use crate::audit::alerts::AlertKind;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// Prefix that makes a venueql API token recognisable (secret scanners, logs review).
pub const TOKEN_PREFIX: &str = "vqat_";

/// A freshly issued token: the only time the token text exists outside the caller.
pub struct IssuedToken {
    /// Token id (for revocation and audit).
    pub token_id: Uuid,
    /// The bearer token itself.
    pub token: SecretString,
}

/// Issues a token at the transaction's venue, with an audit row.
pub async fn issue(tx: &mut VenueTx, who: &Who, name: &str, permissions: Permissions) -> Result<IssuedToken, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AppError::bad_input("token name must be 1 to 200 characters"));
    }
    let token = secrets::new_secret(TOKEN_PREFIX);
    let token_id: Uuid =
        sqlx::query_scalar("INSERT INTO api_tokens (venue_id, name, permissions) VALUES ($1, $2, $3) RETURNING id")
            .bind(tx.venue().as_uuid())
            .bind(name)
            .bind(permissions.to_db())
            .fetch_one(tx.conn())
            .await?;
    sqlx::query("SELECT private.store_api_token_hash($1, $2)")
        .bind(token_id)
        .bind(secrets::hash(&token))
        .execute(tx.conn())
        .await?;
    let after = serde_json::json!({ "name": name, "permissions": permissions.names() });
    let elevated = permissions.intersects(crate::access::ELEVATED).then_some(AlertKind::ElevatedGrant);
    audit::record_as(
        tx,
        who,
        elevated,
        Change {
            action: "api_token.issued",
            target_type: "api_token",
            target_id: token_id.to_string(),
            before: None,
            after: Some(after),
        },
    )
    .await?;
    Ok(IssuedToken { token_id, token: token.into() })
}

/// Revokes a token of the transaction's venue, with an audit row. Revoking twice is
/// refused; another venue's token is "not found".
pub async fn revoke(tx: &mut VenueTx, who: &Who, token_id: Uuid) -> Result<(), AppError> {
    let revoked: Option<bool> = sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM api_tokens WHERE id = $1")
        .bind(token_id)
        .fetch_optional(tx.conn())
        .await?;
    match revoked {
        None => return Err(AppError::NotFound("API token")),
        Some(true) => return Err(AppError::bad_input("this token is already revoked")),
        Some(false) => {}
    }
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE id = $1").bind(token_id).execute(tx.conn()).await?;
    audit::record(
        tx,
        who,
        Change {
            action: "api_token.revoked",
            target_type: "api_token",
            target_id: token_id.to_string(),
            before: Some(serde_json::json!({ "revoked": false })),
            after: Some(serde_json::json!({ "revoked": true })),
        },
    )
    .await
}

/// Checks a venue API token: well-formed, known, not revoked.
pub async fn verify(db: &Db, token: &str) -> Result<Caller, AppError> {
    if !secrets::looks_like(token, TOKEN_PREFIX) {
        return Err(INVALID_TOKEN);
    }
    // One round trip: the private mirror holds the live token's permissions.
    let found: Option<(Uuid, Uuid, i64)> =
        sqlx::query_as("SELECT venue_id, token_id, permissions FROM private.verify_api_token($1)")
            .bind(secrets::hash(token))
            .fetch_optional(db.platform_level())
            .await?;
    let (venue, token_id, permissions) = found.ok_or(INVALID_TOKEN)?;
    let venue = VenueId::from_credential(venue);
    Ok(Caller {
        venue,
        principal: Principal::ApiToken(token_id),
        permissions: Permissions::from_db(permissions),
        client_id: None,
    })
}
