//! Cashier PINs and the PIN grant: a registered POS terminal (confidential client bound to
//! one venue) exchanges a staff member's email and PIN for a short-lived access token.
//! PINs are 4-8 digits, Argon2id-hashed, never readable, and have their own lockout per
//! terminal and per staff member at that terminal. A PIN is one factor: its token never
//! holds more than the terminal's ceiling, nor an elevated bit where the venue requires
//! MFA for those, nor a bit that whoever set the PIN did not hold when they set it (a
//! PIN set by a manager keeps the manager's authority as its cap, however far the member
//! is raised later).

use std::net::IpAddr;

use uuid::Uuid;

use super::lockout::{self, Attempt, Checked, SecretKind};
use super::oauth::{Client, OAuthError, TokenLifetimes, TokenResponse};
use super::passwords;
use super::sessions::NewSession;
use crate::access::Permissions;
use crate::audit::{self, Change, Who};
use crate::config::LockoutLimits;
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

/// Whose PIN a request changes, as far as the rules care.
#[derive(Clone, Copy, Debug)]
pub enum PinTarget {
    /// The caller's own (they re-authenticated in the same request).
    Own(Uuid),
    /// Another member's: the caller must hold every bit the member holds.
    Other {
        /// The member.
        staff: Uuid,
        /// The caller's permissions.
        caller: Permissions,
    },
}

impl PinTarget {
    fn staff(self) -> Uuid {
        match self {
            PinTarget::Own(staff) | PinTarget::Other { staff, .. } => staff,
        }
    }

    /// The most the PIN may ever yield: its setter's permissions when someone else set
    /// it, nothing beyond the membership when the member set their own.
    fn authority(self) -> Option<Permissions> {
        match self {
            PinTarget::Own(_) => None,
            PinTarget::Other { caller, .. } => Some(caller),
        }
    }
}

/// Applies the granting rule to another member's PIN: a PIN is a credential for the
/// member's whole membership, so only someone holding every bit they hold may set it.
async fn check_target(tx: &mut VenueTx, target: PinTarget) -> Result<(), AppError> {
    let PinTarget::Other { staff, caller } = target else { return Ok(()) };
    let bits: Option<i64> =
        sqlx::query_scalar("SELECT permissions FROM memberships WHERE venue_id = $1 AND staff_id = $2")
            .bind(tx.venue().as_uuid())
            .bind(staff)
            .fetch_optional(tx.conn())
            .await?;
    let held = Permissions::from_db(bits.ok_or(AppError::NotFound("staff member"))?);
    Permissions::check_grantable(caller, Permissions::empty(), held)
        .map_err(|_| AppError::Refused("you may only set the PIN of someone whose permissions you all hold".into()))
}

/// Sets a member's PIN at the transaction's venue (audited; the PIN itself is not).
pub async fn set(tx: &mut VenueTx, who: &Who, target: PinTarget, pin: &str) -> Result<(), AppError> {
    check_format(pin)?;
    check_target(tx, target).await?;
    let hash = passwords::hash_password(pin)?;
    let authority = target.authority();
    let saved: bool = sqlx::query_scalar("SELECT private.set_staff_pin($1, $2, $3)")
        .bind(target.staff())
        .bind(hash)
        .bind(authority.map(Permissions::to_db))
        .fetch_one(tx.conn())
        .await?;
    if !saved {
        return Err(AppError::NotFound("staff member"));
    }
    let after = match authority {
        Some(cap) => serde_json::json!({ "set_by": "another member", "authority": cap.names() }),
        None => serde_json::json!({ "set_by": "the member" }),
    };
    let change = Change {
        action: "staff.pin_set",
        target_type: "staff",
        target_id: target.staff().to_string(),
        before: None,
        after: Some(after),
    };
    audit::record(tx, who, change).await
}

/// Clears a member's PIN at the transaction's venue (audited); false when there was none.
pub async fn clear(tx: &mut VenueTx, who: &Who, target: PinTarget) -> Result<bool, AppError> {
    check_target(tx, target).await?;
    let cleared: bool =
        sqlx::query_scalar("SELECT private.clear_staff_pin($1)").bind(target.staff()).fetch_one(tx.conn()).await?;
    if cleared {
        record(tx, who, "staff.pin_cleared", target.staff()).await?;
    }
    Ok(cleared)
}

async fn record(tx: &mut VenueTx, who: &Who, action: &str, staff: Uuid) -> Result<(), AppError> {
    let change = Change { action, target_type: "staff", target_id: staff.to_string(), before: None, after: None };
    audit::record(tx, who, change).await
}

/// The PIN grant. The attempt counts against this terminal and this person at this
/// terminal at once, before the PIN is checked: failures at one till lock neither the
/// person's other tills nor their sign-in.
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
        ("pos", Some(venue)) if client.confidential => VenueId::from_credential(venue),
        _ => return Err(OAuthError::UnauthorizedClient("only POS terminal clients may use the PIN grant".into())),
    };
    let terminal = format!("terminal:{}", client.id);
    let person = format!("staff:{venue}:{}:at:{}", username.trim().to_lowercase(), client.id);
    let attempt = Attempt { kind: SecretKind::Pin, identifiers: vec![&terminal, &person], ip: Some(ip), device: None };
    let checked = lockout::check(db, limits, attempt, pin_holder(db, venue, username, pin)).await?;
    let (staff, authority) = match checked {
        Checked::Passed(holder) => holder,
        Checked::Wrong => return Err(OAuthError::InvalidGrant("the staff member or PIN is wrong".into())),
        Checked::Locked(wait) => {
            let message = format!("too many failed PIN attempts at this terminal; retry after {wait} seconds");
            return Err(OAuthError::SlowDown { retry_after: wait, error: "invalid_grant", message });
        }
    };
    let mut tx = db.venue_tx(venue).await?;
    let cap = authority.map(Permissions::from_db);
    let session = NewSession { staff, grant_type: "pin", mfa: false, with_refresh: false, cap };
    let (_, response) = super::sessions::staff_grant(&mut tx, client, session, lifetimes).await?;
    tx.commit().await?;
    Ok(response)
}

/// The member of `venue` whose email is `username` and whose PIN is `pin`, if any, with
/// the PIN's authority (the same time either way).
async fn pin_holder(
    db: &Db,
    venue: VenueId,
    username: &str,
    pin: &str,
) -> Result<Option<(Uuid, Option<i64>)>, AppError> {
    let mut tx = db.venue_tx(venue).await?;
    let found: Option<(Uuid, String, Option<i64>)> =
        sqlx::query_as("SELECT staff_id, pin_hash, authority FROM private.staff_pin($1)")
            .bind(username)
            .fetch_optional(tx.conn())
            .await?;
    tx.commit().await?;
    let hash = found.as_ref().map_or_else(|| passwords::dummy_hash().to_string(), |(_, hash, _)| hash.clone());
    let matches = passwords::verify(hash, pin.to_string()).await?;
    Ok(found.filter(|_| matches && check_format(pin).is_ok()).map(|(staff, _, authority)| (staff, authority)))
}
