//! OAuth access and refresh tokens once issued: verifying an access token on each request
//! (the session's facts re-read), revocation (RFC 7009) and introspection (RFC 7662).

use std::time::Duration;
use uuid::Uuid;

use super::oauth::{ACCESS_PREFIX, Client, REFRESH_PREFIX};
use super::sessions::{SessionRow, revoke_grant, session_state};
use super::{INVALID_TOKEN, secrets};
use crate::access::{Caller, Principal};
use crate::audit::Who;
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    venue_id: Uuid,
    grant_id: Uuid,
    kind: String,
    issued_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
    live: bool,
}

/// A token's row and its live session, under the token's venue (None when anything is off).
pub(super) async fn live_token(
    db: &Db,
    token: &str,
    max_age: Duration,
) -> Result<Option<(TokenRow, SessionRow, VenueTx)>, AppError> {
    let mut tx = db.resolving_tx().await?;
    let row: Option<TokenRow> = sqlx::query_as("SELECT * FROM private.lookup_oauth_token($1)")
        .bind(secrets::hash(token))
        .fetch_optional(tx.conn())
        .await?;
    let Some(row) = row.filter(|r| r.live) else { return Ok(None) };
    let mut tx = tx.into_venue(VenueId::from_credential(row.venue_id)).await?;
    let session = session_state(&mut tx, row.grant_id, max_age).await?;
    Ok(session.filter(SessionRow::live).map(|session| (row, session, tx)))
}

/// Verifies an OAuth access token: live, its session live (see [`SessionRow::live`]).
/// Permissions are those of [`SessionFacts`] now, so a membership change or the venue
/// turning on its MFA rule takes effect on the next request.
pub async fn verify_access_token(db: &Db, token: &str, max_age: Duration) -> Result<Caller, AppError> {
    if !secrets::looks_like(token, ACCESS_PREFIX) {
        return Err(INVALID_TOKEN);
    }
    let Some((row, grant, tx)) = live_token(db, token, max_age).await? else { return Err(INVALID_TOKEN) };
    tx.commit().await?;
    if row.kind != "access" {
        return Err(INVALID_TOKEN);
    }
    let principal = match grant.staff_id {
        Some(staff_id) => Principal::Staff { staff_id, grant_id: row.grant_id },
        None => Principal::Client { client_id: grant.client_id.clone(), grant_id: row.grant_id },
    };
    Ok(Caller {
        venue: VenueId::from_credential(row.venue_id),
        principal,
        permissions: grant.facts().permissions(),
        client_id: Some(grant.client_id.clone()),
    })
}

/// RFC 7009 revocation by the client the token was issued to. Revoking a refresh token
/// ends its whole grant; revoking an access token ends that token. Unknown tokens and
/// other clients' tokens are ignored (the endpoint answers 200 either way).
pub async fn revoke(db: &Db, client: &Client, token: &str) -> Result<(), AppError> {
    if !secrets::looks_like(token, ACCESS_PREFIX) && !secrets::looks_like(token, REFRESH_PREFIX) {
        return Ok(());
    }
    let mut tx = db.resolving_tx().await?;
    let row: Option<TokenRow> = sqlx::query_as("SELECT * FROM private.lookup_oauth_token($1)")
        .bind(secrets::hash(token))
        .fetch_optional(tx.conn())
        .await?;
    let Some(row) = row else { return Ok(()) };
    let mut tx = tx.into_venue(VenueId::from_credential(row.venue_id)).await?;
    let owner: Option<String> =
        sqlx::query_scalar("SELECT client_id FROM oauth_grants WHERE venue_id = $1 AND id = $2")
            .bind(row.venue_id)
            .bind(row.grant_id)
            .fetch_optional(tx.conn())
            .await?;
    if owner.as_deref() != Some(client.id.as_str()) {
        return Ok(());
    }
    if row.kind == "refresh" {
        let who = Who::outside_http(crate::access::client_actor(&client.id));
        revoke_grant(&mut tx, row.grant_id, "revoked_by_client", &who).await?;
    } else {
        sqlx::query("SELECT private.revoke_oauth_token($1)").bind(secrets::hash(token)).execute(tx.conn()).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// RFC 7662 introspection for a confidential client. Tokens of another venue than the
/// client's, and anything expired, revoked or unknown, are `{"active": false}`.
pub async fn introspect(
    db: &Db,
    issuer: &str,
    client: &Client,
    token: &str,
    max_age: Duration,
) -> Result<serde_json::Value, AppError> {
    let inactive = serde_json::json!({ "active": false });
    if !secrets::looks_like(token, ACCESS_PREFIX) && !secrets::looks_like(token, REFRESH_PREFIX) {
        return Ok(inactive);
    }
    let Some((row, grant, tx)) = live_token(db, token, max_age).await? else { return Ok(inactive) };
    tx.commit().await?;
    if client.venue_id != Some(row.venue_id) {
        return Ok(inactive);
    }
    let subject = grant.staff_id.map_or_else(|| grant.client_id.clone(), |s| s.to_string());
    Ok(serde_json::json!({
        "active": true,
        "scope": grant.facts().permissions().names().join(" "),
        "client_id": grant.client_id,
        "token_type": if row.kind == "access" { "access_token" } else { "refresh_token" },
        "exp": row.expires_at.timestamp(),
        "iat": row.issued_at.timestamp(),
        "sub": subject,
        "iss": issuer,
        "venue_id": row.venue_id,
    }))
}
