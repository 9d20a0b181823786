//! The authorization-code grant: PKCE (S256 only), issuing a code once the hosted login
//! has authenticated the person, and exchanging it for the session's tokens.

use base64::Engine;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::oauth::{CODE_PREFIX, CODE_TTL_SECS, Client, OAuthError, TokenLifetimes, TokenResponse};
use super::secrets;
use super::sessions::{NewSession, revoke_grant, staff_grant};
use crate::audit::Who;
use crate::error::AppError;
use crate::tenancy::{Db, VenueId};

/// Whether a PKCE verifier is well-formed (RFC 7636 §4.1: 43-128 unreserved characters).
pub(super) fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `BASE64URL(SHA256(verifier))`, the S256 challenge of a verifier.
pub fn s256_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Issues an authorization code for `staff` at `venue` (the login page calls this once
/// the person has authenticated and chosen the venue); `mfa` says whether this login
/// proved a second factor, which the session then carries.
pub async fn issue_code(
    db: &Db,
    venue: VenueId,
    staff: Uuid,
    client: &Client,
    redirect_uri: &str,
    code_challenge: &str,
    mfa: bool,
) -> Result<String, AppError> {
    if client.venue_id.is_some_and(|own| own != venue.as_uuid()) {
        return Err(AppError::Refused("this app signs people in to its own venue only".into()));
    }
    let code = secrets::new_secret(CODE_PREFIX);
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("SELECT private.store_oauth_code($1, $2, $3, $4, $5, $6, $7)")
        .bind(secrets::hash(&code))
        .bind(&client.id)
        .bind(staff)
        .bind(redirect_uri)
        .bind(code_challenge)
        .bind(CODE_TTL_SECS)
        .bind(mfa)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(code)
}

#[derive(sqlx::FromRow)]
pub(super) struct CodeRow {
    client_id: String,
    staff_id: Uuid,
    venue_id: Uuid,
    redirect_uri: String,
    code_challenge: String,
    expired: bool,
    used: bool,
    grant_id: Option<Uuid>,
    mfa: bool,
}

/// `grant_type=authorization_code`: checks client, redirect URI and PKCE verifier before
/// using the code; a replayed code revokes the grant it was exchanged for.
pub async fn exchange_code(
    db: &Db,
    lifetimes: TokenLifetimes,
    client: &Client,
    code: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let verifier = verifier.ok_or_else(|| OAuthError::InvalidRequest("code_verifier is required (PKCE)".into()))?;
    if !valid_verifier(verifier) {
        return Err(OAuthError::InvalidRequest(
            "code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~".into(),
        ));
    }
    let invalid = || OAuthError::InvalidGrant("the authorization code is invalid, expired or already used".into());
    if !secrets::looks_like(code, CODE_PREFIX) {
        return Err(invalid());
    }
    let hash = secrets::hash(code);
    let mut tx = db.resolving_tx().await?;
    let row: Option<CodeRow> =
        sqlx::query_as("SELECT * FROM private.peek_oauth_code($1)").bind(&hash).fetch_optional(tx.conn()).await?;
    let row = row.ok_or_else(invalid)?;
    if row.client_id != client.id {
        return Err(invalid());
    }
    let mut tx = tx.into_venue(VenueId::from_credential(row.venue_id)).await?;
    if row.used {
        if let Some(grant) = row.grant_id {
            let who = Who::outside_http(crate::access::client_actor(&client.id));
            revoke_grant(&mut tx, grant, "authorization_code_replayed", &who).await?;
            tx.commit().await?;
        }
        return Err(invalid());
    }
    if row.expired {
        return Err(invalid());
    }
    if redirect_uri != Some(row.redirect_uri.as_str()) {
        return Err(OAuthError::InvalidGrant("redirect_uri does not match the authorization request".into()));
    }
    if s256_challenge(verifier) != row.code_challenge {
        return Err(OAuthError::InvalidGrant("code_verifier does not match the code_challenge".into()));
    }
    let redeemed: bool =
        sqlx::query_scalar("SELECT private.redeem_oauth_code($1)").bind(&hash).fetch_one(tx.conn()).await?;
    if !redeemed {
        return Err(invalid());
    }
    let session = NewSession {
        staff: row.staff_id,
        grant_type: "authorization_code",
        mfa: row.mfa,
        with_refresh: true,
        cap: None,
    };
    let (grant, response) = staff_grant(&mut tx, client, session, lifetimes).await?;
    sqlx::query("SELECT private.attach_code_grant($1, $2)").bind(&hash).bind(grant).execute(tx.conn()).await?;
    tx.commit().await?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_43_to_128_unreserved_characters() {
        assert!(valid_verifier(&"a".repeat(43)) && valid_verifier(&"a-._~".repeat(25)));
        assert!(
            !valid_verifier(&"a".repeat(42))
                && !valid_verifier(&"a".repeat(129))
                && !valid_verifier(&format!("{}+", "a".repeat(43)))
        );
    }
}
