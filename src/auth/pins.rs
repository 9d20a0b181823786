//! Cashier PINs and the PIN grant: a registered POS terminal (confidential client bound to
//! one venue) exchanges a staff member's email and PIN for a short-lived access token with
//! that person's permissions there. PINs are 4-8 digits, Argon2id-hashed, never readable,
//! and have their own lockout per terminal and per staff member.

use std::net::IpAddr;

use uuid::Uuid;

use super::lockout::{self, Attempt, LockoutLimits};
use super::oauth::{Client, OAuthError, TokenLifetimes, TokenResponse};
use super::passwords;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// The `grant_type` of the PIN grant.
pub const PIN_GRANT: &str = "urn:venueql:params:oauth:grant-type:pin";

fn check_format(pin: &str) -> Result<(), AppError> {
    if (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(AppError::bad_input("a PIN is 4 to 8 digits"))
    }
}

/// Sets `staff`'s PIN at the transaction's venue (audited; the PIN itself is not).
pub async fn set(tx: &mut VenueTx, who: &Who, staff: Uuid, pin: &str) -> Result<(), AppError> {
    check_format(pin)?;
    let hash = passwords::hash_password(pin)?;
    let saved: bool =
        sqlx::query_scalar("SELECT private.set_staff_pin($1, $2)").bind(staff).bind(hash).fetch_one(tx.conn()).await?;
    if !saved {
        return Err(AppError::NotFound("staff member"));
    }
    let change = Change {
        action: "staff.pin_set",
        target_type: "staff",
        target_id: staff.to_string(),
        before: None,
        after: None,
    };
    audit::record(tx, who, change).await
}

/// The PIN grant. Both lockouts (this terminal, this person at this venue) are checked
/// before the PIN and both count a failure.
pub async fn grant(
    db: &Db,
    lifetimes: TokenLifetimes,
    limits: LockoutLimits,
    client: &Client,
    username: &str,
    pin: &str,
    ip: IpAddr,
) -> Result<TokenResponse, OAuthError> {
    let venue = match (client.kind.as_str(), client.venue_id) {
        ("pos", Some(venue)) if client.confidential => VenueId::from_uuid(venue),
        _ => return Err(OAuthError::UnauthorizedClient("only POS terminal clients may use the PIN grant".into())),
    };
    let terminal = format!("terminal:{}", client.id);
    let person = format!("staff:{venue}:{}", username.trim().to_lowercase());
    let attempts = [
        Attempt { kind: "pin", identifier: &terminal, ip: Some(ip), device: None },
        Attempt { kind: "pin", identifier: &person, ip: Some(ip), device: None },
    ];
    let mut wait = 0;
    for attempt in &attempts {
        wait = wait.max(lockout::retry_after(db, limits, attempt).await?);
    }
    if wait > 0 {
        return Err(OAuthError::SlowDown(wait));
    }
    let mut tx = db.venue_tx(venue).await?;
    let found: Option<(Uuid, String)> = sqlx::query_as("SELECT staff_id, pin_hash FROM private.staff_pin($1)")
        .bind(username)
        .fetch_optional(tx.conn())
        .await?;
    let hash = found.as_ref().map_or_else(|| passwords::dummy_hash().to_string(), |(_, hash)| hash.clone());
    let matches = passwords::verify(hash, pin.to_string()).await?;
    let Some((staff, _)) = found.filter(|_| matches && check_format(pin).is_ok()) else {
        drop(tx);
        for attempt in &attempts {
            lockout::failed(db, limits, attempt).await?;
        }
        return Err(OAuthError::InvalidGrant("the staff member or PIN is wrong".into()));
    };
    for attempt in &attempts {
        lockout::succeeded(db, attempt).await?;
    }
    let (_, response) = super::oauth::staff_grant(&mut tx, client, staff, "pin", lifetimes, false).await?;
    tx.commit().await?;
    Ok(response)
}
