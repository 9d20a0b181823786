//! The hosted login's logic as plain functions: a person's password and second factor
//! checked under the lockout, re-authentication for credential changes, listing their
//! venues, and the signed ticket that carries an authenticated person from one step of a
//! hosted page to the next without server-side session state. `http::login` only parses
//! forms and renders pages around these.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::lockout::{self, Attempt, Checked, SecretKind};
use super::passwords;
use super::totp;
use crate::access::Permissions;
use crate::config::LockoutLimits;
use crate::crypto::MasterKeys;
use crate::error::AppError;
use crate::tenancy::{Db, VenueId};

/// How long a login ticket (password done, venue not chosen) stays valid.
const TICKET_TTL_SECS: u64 = 600;

/// A venue a person may log in to.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StaffVenue {
    /// Venue id.
    pub venue_id: Uuid,
    /// Slug.
    pub slug: String,
    /// Display name.
    pub name: String,
}

/// Checks `password` for the person with `email`. `None` for an unknown email or a wrong
/// password alike (callers must not tell them apart).
pub async fn verify_password(db: &Db, email: &str, password: &str) -> Result<Option<Uuid>, AppError> {
    if email.len() > 254 || password.len() > 1024 {
        return Ok(None);
    }
    let found: Option<(Uuid, String)> = sqlx::query_as("SELECT staff_id, password_hash FROM private.staff_login($1)")
        .bind(email)
        .fetch_optional(db.platform_level())
        .await?;
    let (staff, hash) = match found {
        Some((staff, hash)) => (Some(staff), hash),
        None => (None, passwords::dummy_hash().to_string()),
    };
    let matches = passwords::verify(hash, password.to_string()).await?;
    Ok(staff.filter(|_| matches))
}

/// A password sign-in: who claims to be signing in, from where.
#[derive(Clone, Copy, Debug)]
pub struct PasswordSignIn<'a> {
    /// The email typed.
    pub email: &'a str,
    /// The password typed.
    pub password: &'a str,
    /// The client's address.
    pub ip: IpAddr,
    /// The trusted-device id of the browser, when its cookie is genuine for this email.
    pub device: Option<&'a str>,
}

/// Checks a password under the lockout (per email, per address).
pub async fn sign_in_with_password(
    db: &Db,
    limits: LockoutLimits,
    sign_in: PasswordSignIn<'_>,
) -> Result<Checked<Uuid>, AppError> {
    let attempt = Attempt {
        kind: SecretKind::Password,
        identifiers: vec![sign_in.email],
        ip: Some(sign_in.ip),
        device: sign_in.device,
    };
    lockout::check(db, limits, attempt, verify_password(db, sign_in.email, sign_in.password)).await
}

/// A code (TOTP or recovery) a person typed, from an address.
#[derive(Clone, Copy, Debug)]
pub struct CodeAttempt<'a> {
    /// The person.
    pub staff: Uuid,
    /// The code typed.
    pub code: &'a str,
    /// The client's address.
    pub ip: IpAddr,
}

impl CodeAttempt<'_> {
    /// Counted per person and per address, like every code.
    fn counted<'i>(&self, identifier: &'i str) -> Attempt<'i> {
        Attempt::new(SecretKind::Totp, identifier, Some(self.ip))
    }
}

/// Checks a TOTP or recovery code under the lockout (per person, per address).
pub async fn second_factor(
    db: &Db,
    limits: LockoutLimits,
    master: &MasterKeys,
    typed: CodeAttempt<'_>,
) -> Result<Checked<()>, AppError> {
    let identifier = typed.staff.to_string();
    let verify = async { Ok(totp::verify(db, master, typed.staff, typed.code).await?.then_some(())) };
    lockout::check(db, limits, typed.counted(&identifier), verify).await
}

/// Confirms a TOTP enrolment with a first code, under the lockout like any code; returns
/// the recovery codes (shown once). A wrong code is BAD_USER_INPUT, too many RATE_LIMITED.
pub async fn confirm_totp(
    db: &Db,
    limits: LockoutLimits,
    master: &MasterKeys,
    typed: CodeAttempt<'_>,
) -> Result<Vec<String>, AppError> {
    let identifier = typed.staff.to_string();
    let confirm = totp::confirm_enrollment(db, master, typed.staff, typed.code);
    match lockout::check(db, limits, typed.counted(&identifier), confirm).await? {
        Checked::Passed(codes) => Ok(codes),
        Checked::Wrong => Err(AppError::bad_input(
            "that code is not valid; check the authenticator app's clock and try the next code",
        )),
        Checked::Locked(wait) => Err(AppError::locked_out(wait)),
    }
}

/// What a signed-in person shows to change a credential (step-up): their current
/// password, or a code from their authenticator.
#[derive(Clone, Debug)]
pub enum Reauth {
    /// The current password.
    Password(String),
    /// A TOTP (or recovery) code.
    TotpCode(String),
}

/// Checks a step-up proof of `staff` under the lockout. A proof made in a signed-in
/// session counts against that session (its failures, and the address's), not the
/// person's global counters: strangers failing at the person's email from elsewhere
/// cannot stop them changing a compromised password. A wrong proof is BAD_USER_INPUT; too
/// many are RATE_LIMITED.
pub async fn reauthenticate(
    db: &Db,
    limits: LockoutLimits,
    master: &MasterKeys,
    staff: Uuid,
    proof: &Reauth,
    ip: IpAddr,
    session: Option<Uuid>,
) -> Result<(), AppError> {
    let device = session.map(|grant| format!("session:{grant}"));
    let device = device.as_deref();
    let checked = match proof {
        Reauth::Password(password) => {
            let email = email_of(db, staff).await?.ok_or(AppError::Forbidden)?;
            let sign_in = PasswordSignIn { email: &email, password, ip, device };
            match sign_in_with_password(db, limits, sign_in).await? {
                Checked::Passed(who) if who == staff => Checked::Passed(()),
                Checked::Passed(_) | Checked::Wrong => Checked::Wrong,
                Checked::Locked(wait) => Checked::Locked(wait),
            }
        }
        Reauth::TotpCode(code) => {
            let identifier = staff.to_string();
            let attempt = Attempt { kind: SecretKind::Totp, identifiers: vec![&identifier], ip: Some(ip), device };
            let verify = async { Ok(totp::verify(db, master, staff, code).await?.then_some(())) };
            lockout::check(db, limits, attempt, verify).await?
        }
    };
    match checked {
        Checked::Passed(()) => Ok(()),
        Checked::Wrong => Err(AppError::bad_input("the current password or authentication code is incorrect")),
        Checked::Locked(wait) => Err(AppError::RateLimited {
            retry_after_secs: wait,
            message: format!("too many failed step-up attempts in this session; try again in {wait} seconds"),
        }),
    }
}

/// The venues `staff` belongs to, by name.
pub async fn venues_of(db: &Db, staff: Uuid) -> Result<Vec<StaffVenue>, AppError> {
    Ok(sqlx::query_as("SELECT venue_id, slug, name FROM private.venues_of_staff($1)")
        .bind(staff)
        .fetch_all(db.platform_level())
        .await?)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn ticket_mac(key: &[u8; 32], staff: Uuid, expires: u64, bound_to: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("venueql-login-ticket-v1|{staff}|{expires}|{bound_to}").as_bytes());
    mac
}

/// A ticket saying `staff` passed the password step of the authorization request
/// described by `bound_to` (client, redirect URI and PKCE challenge).
pub fn sign_ticket(key: &[u8; 32], staff: Uuid, bound_to: &str) -> String {
    let expires = now_secs() + TICKET_TTL_SECS;
    let tag = ticket_mac(key, staff, expires, bound_to).finalize().into_bytes();
    format!("{staff}.{expires}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag))
}

/// The person a ticket vouches for, if it is genuine, unexpired and for this request.
pub fn verify_ticket(key: &[u8; 32], ticket: &str, bound_to: &str) -> Option<Uuid> {
    let mut parts = ticket.splitn(3, '.');
    let staff: Uuid = parts.next()?.parse().ok()?;
    let expires: u64 = parts.next()?.parse().ok()?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    if expires < now_secs() {
        return None;
    }
    ticket_mac(key, staff, expires, bound_to).verify_slice(&tag).ok()?;
    Some(staff)
}

/// A person's email (for the authenticator label).
pub async fn email_of(db: &Db, staff: Uuid) -> Result<Option<String>, AppError> {
    Ok(sqlx::query_scalar("SELECT email FROM private.staff_email($1)")
        .bind(staff)
        .fetch_optional(db.platform_level())
        .await?)
}

/// Whether `venue` requires MFA of `staff`: the venue demands it for elevated permissions
/// and the person holds one there.
pub async fn mfa_required(db: &Db, venue: VenueId, staff: Uuid) -> Result<bool, AppError> {
    let mut tx = db.venue_tx(venue).await?;
    let row: Option<(bool, i64)> = sqlx::query_as(
        "SELECT COALESCE((SELECT require_mfa_for_elevated FROM venue_settings WHERE venue_id = $1), false), m.permissions \
         FROM memberships m WHERE m.venue_id = $1 AND m.staff_id = $2",
    )
    .bind(venue.as_uuid())
    .bind(staff)
    .fetch_optional(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(row.is_some_and(|(required, bits)| required && Permissions::from_db(bits).intersects(crate::access::ELEVATED)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_verify_only_for_the_same_key_and_request() {
        let key = [7u8; 32];
        let staff = Uuid::new_v4();
        let ticket = sign_ticket(&key, staff, "client|uri|challenge");
        assert_eq!(verify_ticket(&key, &ticket, "client|uri|challenge"), Some(staff));
        assert_eq!(verify_ticket(&key, &ticket, "client|uri|other"), None);
        assert_eq!(verify_ticket(&[8u8; 32], &ticket, "client|uri|challenge"), None);
        let forged = ticket.replacen(&staff.to_string(), &Uuid::new_v4().to_string(), 1);
        assert_eq!(verify_ticket(&key, &forged, "client|uri|challenge"), None);
    }
}
