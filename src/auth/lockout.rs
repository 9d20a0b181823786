//! Brute-force lockout for every secret check (passwords, TOTP, PINs, client secrets):
//! independent limits per identifier and per client address in a one-hour sliding window,
//! growing delays that expire, kept in PostgreSQL so all replicas share them. A browser
//! holding a trusted-device cookie for the identifier counts only its own failures.
//!
//! An attempt is counted before its secret is checked: [`begin`] records it as a failure
//! in the same statement that decides whether it may go ahead (serialised per identifier
//! and per address in the database), so N concurrent wrong attempts let at most the limit
//! through to a real check. [`Checking::succeeded`] then forgets the failures.

use std::net::{IpAddr, Ipv6Addr};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::audit::alerts::AlertKind;
use crate::audit::{Change, Who};
use crate::config::LockoutLimits;
use crate::error::AppError;
use crate::tenancy::{Db, VenueId};

/// What kind of secret an attempt proves; each kind has its own counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A person's password (identifier: their email).
    Password,
    /// A TOTP or recovery code (identifier: the person's id).
    Totp,
    /// A cashier PIN (identifiers: the terminal and the person at the venue).
    Pin,
    /// An OAuth client secret (identifier: the client id).
    ClientSecret,
    /// A password reset request (identifier: the email), so nobody floods an inbox.
    ResetRequest,
    /// A one-time link (invitation or reset) that turned out unknown (identifier: the address).
    Link,
    /// An invitation mail (identifier: venue and email), so no venue floods an inbox.
    InvitationMail,
    /// A diner asking for an email code (identifier: the diner's identity hash).
    DinerCodeRequest,
    /// A diner's email code (identifier: the diner's identity hash).
    DinerCode,
}

impl SecretKind {
    fn as_str(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::Totp => "totp",
            SecretKind::Pin => "pin",
            SecretKind::ClientSecret => "client_secret",
            SecretKind::ResetRequest => "reset_request",
            SecretKind::Link => "link",
            SecretKind::InvitationMail => "invitation_mail",
            SecretKind::DinerCodeRequest => "diner_code_request",
            SecretKind::DinerCode => "diner_code",
        }
    }
}

/// One attempt to prove a secret.
#[derive(Clone, Debug)]
pub struct Attempt<'a> {
    /// What is being proved.
    pub kind: SecretKind,
    /// Who it claims to be (email, client id, …); compared case-insensitively. Several
    /// when one secret is checked against several counters (a PIN: terminal and person).
    pub identifiers: Vec<&'a str>,
    /// The client's address (see `http::client_addr`).
    pub ip: Option<IpAddr>,
    /// The trusted-device id the browser presented for this identifier, if any.
    pub device: Option<&'a str>,
}

impl<'a> Attempt<'a> {
    /// An attempt at one identifier from `ip`.
    pub fn new(kind: SecretKind, identifier: &'a str, ip: Option<IpAddr>) -> Attempt<'a> {
        Attempt { kind, identifiers: vec![identifier], ip, device: None }
    }

    fn identifier_hashes(&self) -> Vec<Vec<u8>> {
        self.identifiers
            .iter()
            .map(|i| Sha256::digest(format!("{}:{}", self.kind.as_str(), i.trim().to_lowercase()).as_bytes()).to_vec())
            .collect()
    }

    fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| counted_address(ip).to_string())
    }
}

/// The address an attempt is counted under: IPv4 as it is, IPv6 by its /64 (one
/// customer's whole allocation, which they can cycle through at will).
pub fn counted_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

/// What [`begin`] decided.
#[derive(Debug)]
pub enum Gate<'a> {
    /// Check the secret now (the attempt is already counted as a failure).
    Check(Checking<'a>),
    /// Locked out: retry after this many seconds; the secret must not be checked.
    Wait(u32),
}

/// An attempt that may check its secret; report how it went.
#[derive(Debug)]
pub struct Checking<'a> {
    attempt: Attempt<'a>,
    limits: LockoutLimits,
}

/// Counts the attempt and decides whether it may check its secret.
pub async fn begin<'a>(db: &Db, limits: LockoutLimits, attempt: Attempt<'a>) -> Result<Gate<'a>, AppError> {
    let wait: i32 = sqlx::query_scalar("SELECT private.begin_auth_attempt($1, $2, $3::inet, $4, $5, $6, $7)")
        .bind(attempt.kind.as_str())
        .bind(attempt.identifier_hashes())
        .bind(attempt.ip_text())
        .bind(attempt.device)
        .bind(limits.per_identifier)
        .bind(limits.per_ip)
        .bind(limits.base_delay_secs)
        .fetch_one(db.platform_level())
        .await?;
    Ok(match u32::try_from(wait).unwrap_or(0) {
        0 => Gate::Check(Checking { attempt, limits }),
        wait => Gate::Wait(wait),
    })
}

impl Checking<'_> {
    /// The secret was right: forget the identifiers' failures from this address.
    pub async fn succeeded(self, db: &Db) -> Result<(), AppError> {
        sqlx::query("SELECT private.auth_attempt_succeeded($1, $2, $3::inet)")
            .bind(self.attempt.kind.as_str())
            .bind(self.attempt.identifier_hashes())
            .bind(self.attempt.ip_text())
            .execute(db.platform_level())
            .await?;
        Ok(())
    }

    /// The secret was wrong (already counted); when this failure starts a lockout, a
    /// security event records it.
    pub async fn failed(self, db: &Db) -> Result<(), AppError> {
        let attempt = &self.attempt;
        for hash in attempt.identifier_hashes() {
            let wait: i32 = sqlx::query_scalar("SELECT private.auth_retry_after($1, $2, $3::inet, $4, $5, $6, $7)")
                .bind(attempt.kind.as_str())
                .bind(&hash)
                .bind(attempt.ip_text())
                .bind(attempt.device)
                .bind(self.limits.per_identifier)
                .bind(self.limits.per_ip)
                .bind(self.limits.base_delay_secs)
                .fetch_one(db.platform_level())
                .await?;
            if wait > 0 {
                tracing::warn!(kind = attempt.kind.as_str(), retry_after = wait, "authentication locked out");
                sqlx::query("SELECT private.record_security_event('lockout', $1, $2::inet, $3)")
                    .bind(&hash)
                    .bind(attempt.ip_text())
                    .bind(serde_json::json!({ "kind": attempt.kind.as_str(), "retry_after_secs": wait }))
                    .execute(db.platform_level())
                    .await?;
                // Best effort: a failure to record must not turn a wrong secret into an error.
                if let Err(error) = record_lockout(db, attempt, wait).await {
                    tracing::error!(error = %error.client_message(), "could not record a lockout in the audit log");
                }
            }
        }
        Ok(())
    }
}

/// Writes a lockout of a staff member (password or TOTP) into the audit log of every venue
/// they belong to, as a critical event; a lockout at a sign-in of anyone else (an unknown
/// email, a PIN, a client secret) raises a platform alert. Both are rate-limited alerts.
/// Lockouts of the other counters (reset requests, links, invitation mail) are floods of
/// mail or guesses of links, logged and kept in the security events only.
async fn record_lockout(db: &Db, attempt: &Attempt<'_>, wait: i32) -> Result<(), AppError> {
    if !matches!(attempt.kind, SecretKind::Password | SecretKind::Totp | SecretKind::Pin | SecretKind::ClientSecret) {
        return Ok(());
    }
    let staff: Option<uuid::Uuid> = match (attempt.kind, attempt.identifiers.first()) {
        (SecretKind::Password, Some(email)) => {
            sqlx::query_scalar("SELECT staff_id FROM private.staff_login($1)")
                .bind(*email)
                .fetch_optional(db.platform_level())
                .await?
        }
        (SecretKind::Totp, Some(id)) => uuid::Uuid::parse_str(id).ok(),
        _ => None,
    };
    let venues: Vec<uuid::Uuid> = match staff {
        Some(staff) => {
            sqlx::query_scalar("SELECT venue_id FROM private.venues_of_staff($1)")
                .bind(staff)
                .fetch_all(db.platform_level())
                .await?
        }
        None => Vec::new(),
    };
    let (Some(staff), false) = (staff, venues.is_empty()) else {
        let summary = format!("{} locked out for {wait} s (not a staff member of any venue)", attempt.kind.as_str());
        return crate::audit::alerts::raise(db, AlertKind::Lockout, None, &summary).await;
    };
    let who = Who { actor: "venueql:lockout".into(), request_id: None, ip: attempt.ip };
    for venue in venues {
        let mut tx = db.venue_tx(VenueId::from_credential(venue)).await?;
        let change = Change {
            action: "security.lockout",
            target_type: "staff",
            target_id: staff.to_string(),
            before: None,
            after: Some(serde_json::json!({ "secret": attempt.kind.as_str(), "retry_after_secs": wait })),
        };
        crate::audit::record_critical(&mut tx, &who, AlertKind::Lockout, change).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// How a secret check under the lockout went.
#[derive(Debug)]
pub enum Checked<T> {
    /// The secret was right; here is what proved it.
    Passed(T),
    /// The secret (or the identifier) was wrong.
    Wrong,
    /// Too many failures: retry after this many seconds (the secret was not checked).
    Locked(u32),
}

/// Checks a secret under the lockout: counts the attempt first, runs `verify` (which
/// answers `None` for a wrong secret) only when the attempt may go ahead, and records the
/// outcome. The one way venueql checks a secret.
pub async fn check<T>(
    db: &Db,
    limits: LockoutLimits,
    attempt: Attempt<'_>,
    verify: impl std::future::Future<Output = Result<Option<T>, AppError>>,
) -> Result<Checked<T>, AppError> {
    match begin(db, limits, attempt).await? {
        Gate::Wait(seconds) => Ok(Checked::Locked(seconds)),
        Gate::Check(checking) => match verify.await? {
            Some(proof) => {
                checking.succeeded(db).await?;
                Ok(Checked::Passed(proof))
            }
            None => {
                checking.failed(db).await?;
                Ok(Checked::Wrong)
            }
        },
    }
}

/// Looks up a one-time link (invitation, password reset) under the lockout, counted per
/// address: unknown, used and expired links count as failures, so links cannot be
/// guessed at speed. `lookup` answers None for a link that is not live.
pub async fn check_link<T>(
    db: &Db,
    limits: LockoutLimits,
    ip: IpAddr,
    lookup: impl std::future::Future<Output = Result<Option<T>, AppError>>,
) -> Result<Option<T>, AppError> {
    let address = counted_address(ip).to_string();
    let attempt = Attempt::new(SecretKind::Link, &address, Some(ip));
    match check(db, limits, attempt, lookup).await? {
        Checked::Passed(found) => Ok(Some(found)),
        Checked::Wrong => Ok(None),
        Checked::Locked(wait) => Err(AppError::locked_out(wait)),
    }
}

fn device_mac(key: &[u8; 32], device: &str, identifier: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("venueql-trusted-device-v1|{device}|{}", identifier.trim().to_lowercase()).as_bytes());
    mac
}

/// A trusted-device cookie value for `identifier` (a new device id unless `device` given).
pub fn device_cookie(key: &[u8; 32], device: Option<&str>, identifier: &str) -> String {
    let device = device.map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let tag = device_mac(key, &device, identifier).finalize().into_bytes();
    format!("{device}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag))
}

/// The device id of a genuine trusted-device cookie for `identifier`.
pub fn trusted_device<'a>(key: &[u8; 32], cookie: &'a str, identifier: &str) -> Option<&'a str> {
    let (device, tag) = cookie.split_once('.')?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
    device_mac(key, device, identifier).verify_slice(&tag).ok()?;
    Some(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_cookies_are_bound_to_key_and_identifier() {
        let key = [3u8; 32];
        let cookie = device_cookie(&key, None, "Chef@Alpha.test");
        let device = trusted_device(&key, &cookie, "chef@alpha.test").expect("same identifier, any case");
        assert_eq!(device_cookie(&key, Some(device), "chef@alpha.test"), cookie);
        assert!(trusted_device(&key, &cookie, "other@alpha.test").is_none());
        assert!(trusted_device(&[4u8; 32], &cookie, "chef@alpha.test").is_none());
        assert!(trusted_device(&key, "forged.AAAA", "chef@alpha.test").is_none());
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(counted_address(a), counted_address(b));
        assert_ne!(counted_address(a), counted_address(other));
        assert_eq!(counted_address(a).to_string(), "2001:db8:1:2::");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(counted_address(mapped).to_string(), "192.0.2.7");
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(counted_address(v4), v4);
    }
}
