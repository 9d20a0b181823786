//! Brute-force lockout for every secret check (passwords, TOTP, PINs, client secrets):
//! independent limits per identifier and per client IP in a one-hour sliding window,
//! growing delays that expire, kept in PostgreSQL so all replicas share them. A browser
//! holding a trusted-device cookie for the identifier counts only its own failures.

use std::net::IpAddr;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::tenancy::Db;

/// Thresholds and the first delay (`LOCKOUT_IDENTIFIER_LIMIT`, `LOCKOUT_IP_LIMIT`,
/// `LOCKOUT_BASE_DELAY_SECS`).
#[derive(Clone, Copy, Debug)]
pub struct LockoutLimits {
    /// Failures per identifier before delays start (default 5).
    pub per_identifier: i32,
    /// Failures per client IP before delays start (default 50).
    pub per_ip: i32,
    /// First delay in seconds; doubles per further failure, at most 15 minutes (default 30).
    pub base_delay_secs: i32,
}

impl Default for LockoutLimits {
    fn default() -> Self {
        LockoutLimits { per_identifier: 5, per_ip: 50, base_delay_secs: 30 }
    }
}

/// One attempt to prove a secret.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// `password`, `totp`, `pin` or `client_secret`.
    pub kind: &'static str,
    /// Who it claims to be (email, client id, …); compared case-insensitively.
    pub identifier: &'a str,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The trusted-device id the browser presented for this identifier, if any.
    pub device: Option<&'a str>,
}

impl Attempt<'_> {
    fn identifier_hash(&self) -> Vec<u8> {
        Sha256::digest(format!("{}:{}", self.kind, self.identifier.trim().to_lowercase()).as_bytes()).to_vec()
    }

    fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}

/// Seconds the caller must wait before this attempt may be checked (0: go ahead).
pub async fn retry_after(db: &Db, limits: LockoutLimits, attempt: &Attempt<'_>) -> Result<u32, AppError> {
    let wait: i32 = sqlx::query_scalar("SELECT private.auth_retry_after($1, $2, $3::inet, $4, $5, $6, $7)")
        .bind(attempt.kind)
        .bind(attempt.identifier_hash())
        .bind(attempt.ip_text())
        .bind(attempt.device)
        .bind(limits.per_identifier)
        .bind(limits.per_ip)
        .bind(limits.base_delay_secs)
        .fetch_one(db.platform_level())
        .await?;
    Ok(u32::try_from(wait).unwrap_or(0))
}

/// Records a failure; when it starts a lockout, records a security event too.
pub async fn failed(db: &Db, limits: LockoutLimits, attempt: &Attempt<'_>) -> Result<(), AppError> {
    sqlx::query("SELECT private.record_auth_failure($1, $2, $3::inet, $4)")
        .bind(attempt.kind)
        .bind(attempt.identifier_hash())
        .bind(attempt.ip_text())
        .bind(attempt.device)
        .execute(db.platform_level())
        .await?;
    let wait = retry_after(db, limits, attempt).await?;
    if wait > 0 {
        tracing::warn!(kind = attempt.kind, retry_after = wait, "authentication locked out");
        sqlx::query("SELECT private.record_security_event('lockout', $1, $2::inet, $3)")
            .bind(attempt.identifier_hash())
            .bind(attempt.ip_text())
            .bind(serde_json::json!({ "kind": attempt.kind, "retry_after_secs": wait }))
            .execute(db.platform_level())
            .await?;
    }
    Ok(())
}

/// Forgets the identifier's failures from this IP after a success.
pub async fn succeeded(db: &Db, attempt: &Attempt<'_>) -> Result<(), AppError> {
    sqlx::query("SELECT private.clear_auth_failures($1, $2, $3::inet)")
        .bind(attempt.kind)
        .bind(attempt.identifier_hash())
        .bind(attempt.ip_text())
        .execute(db.platform_level())
        .await?;
    Ok(())
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
}
