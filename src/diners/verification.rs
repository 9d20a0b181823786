//! A diner proving they control their email before shared health data is touched: a
//! 6-digit code mailed to the address (through the outbox; hashed, ten minutes, five
//! tries, requests and failures limited per email), exchanged for a short-lived proof
//! that a checkout at the same venue carries. Without it, what a diner states reaches
//! only this order's kitchen alert.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{hex, identity};
use crate::auth::lockout::{self, Attempt, Checked, SecretKind};
use crate::auth::secrets;
use crate::config::LockoutLimits;
use crate::crypto::KeyRing;
use crate::error::AppError;
use crate::mail::{self, Mail};
use crate::tenancy::{Db, VenueId, VenueTx};

/// How long a mailed code works.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a proof works once the code was right (long enough to pay).
pub const PROOF_TTL: Duration = Duration::from_secs(30 * 60);
/// Prefix of a proof.
const PROOF_PREFIX: &str = "vqdp_";

fn identity_of(keys: &KeyRing, email: &str) -> Result<Vec<u8>, AppError> {
    Ok(identity::hash(keys.identity_key()?, &identity::email(email)?))
}

/// `requestDinerCode`: mails a code to `email` for `venue`. The answer and the work are
/// the same whether or not the venue knows the diner (a code is mailed either way);
/// requests are limited per email (`LOCKOUT_IDENTIFIER_LIMIT` an hour) and per client
/// address (`LOCKOUT_IP_LIMIT` an hour, IPv6 per /64), so one address cannot mail-bomb
/// many inboxes. The limit is taken before the venue's transaction opens, so a burst of
/// requests never holds one pooled connection while waiting for another.
pub async fn request_code(
    db: &Db,
    venue: VenueId,
    keys: &KeyRing,
    limits: LockoutLimits,
    email: &str,
    ip: IpAddr,
) -> Result<(), AppError> {
    let identity = identity_of(keys, email)?;
    let identifier = hex(&identity);
    let gate = Attempt::new(SecretKind::DinerCodeRequest, &identifier, Some(ip));
    if let lockout::Gate::Wait(wait) = lockout::begin(db, limits, gate).await? {
        return Err(AppError::RateLimited {
            retry_after_secs: wait,
            message: format!(
                "codes were asked for this email or from this address too often; try again in {wait} seconds"
            ),
        });
    }
    let code = six_digits();
    let ttl = i32::try_from(CODE_TTL.as_secs()).unwrap_or(i32::MAX);
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("SELECT private.store_diner_code($1, $2, $3)")
        .bind(&identity)
        .bind(secrets::hash(&code))
        .bind(ttl)
        .execute(tx.conn())
        .await?;
    let venue_name = crate::venues::current(&mut tx).await?.name;
    let expires_at = Utc::now() + chrono::Duration::seconds(i64::from(ttl));
    let recipient = email.trim().to_lowercase();
    mail::enqueue(tx.conn(), keys.master()?, &recipient, &Mail::DinerCode { code, venue_name, expires_at }).await?;
    Ok(tx.commit().await?)
}

fn six_digits() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("{:06}", u32::from_be_bytes(bytes) % 1_000_000)
}

/// A proof that a diner controls an email, for checkouts at one venue until `expires_at`.
#[derive(Clone, Debug)]
pub struct Proof {
    /// The token a checkout carries (`diner.proof`).
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// The inputs of `verifyDinerCode`.
#[derive(Clone, Copy, Debug)]
pub struct CodeAttempt<'a> {
    /// The email the code was sent to.
    pub email: &'a str,
    /// The code typed.
    pub code: &'a str,
    /// The client's address.
    pub ip: IpAddr,
}

/// `verifyDinerCode`: checks the code (under the lockout, per email and address, and five
/// tries per code) and returns a proof bound to this venue and email.
pub async fn verify_code(
    db: &Db,
    tx: &mut VenueTx,
    keys: &KeyRing,
    limits: LockoutLimits,
    app_key: &[u8; 32],
    attempt: CodeAttempt<'_>,
) -> Result<Proof, AppError> {
    let identity = identity_of(keys, attempt.email)?;
    let identifier = hex(&identity);
    let code = attempt.code.trim();
    let well_formed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
    let lock = Attempt::new(SecretKind::DinerCode, &identifier, Some(attempt.ip));
    let check = async {
        if !well_formed {
            return Ok(None);
        }
        let right: bool = sqlx::query_scalar("SELECT private.check_diner_code($1, $2)")
            .bind(&identity)
            .bind(secrets::hash(code))
            .fetch_one(tx.conn())
            .await?;
        Ok(right.then_some(()))
    };
    match lockout::check(db, limits, lock, check).await? {
        Checked::Passed(()) => Ok(sign(
            app_key,
            tx.venue(),
            &identity,
            Utc::now() + chrono::Duration::from_std(PROOF_TTL).expect("30 minutes"),
        )),
        Checked::Wrong => {
            Err(AppError::bad_input("the code is not right, or has expired, or was tried too often: ask for a new one"))
        }
        Checked::Locked(wait) => Err(AppError::locked_out(wait)),
    }
}

fn mac(app_key: &[u8; 32], venue: VenueId, identity: &[u8], expires: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_key).expect("HMAC takes any key length");
    mac.update(format!("venueql-diner-proof-v1|{venue}|{}|{expires}", hex(identity)).as_bytes());
    mac
}

fn sign(app_key: &[u8; 32], venue: VenueId, identity: &[u8], expires_at: DateTime<Utc>) -> Proof {
    let expires = expires_at.timestamp();
    let tag = mac(app_key, venue, identity, expires).finalize().into_bytes();
    let token = format!("{PROOF_PREFIX}{expires}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag));
    Proof { token, expires_at }
}

/// Whether `token` proves control of `email` at `venue` now.
pub fn proves(app_key: &[u8; 32], keys: &KeyRing, venue: VenueId, email: &str, token: &str) -> Result<bool, AppError> {
    let identity = identity_of(keys, email)?;
    let Some(rest) = token.strip_prefix(PROOF_PREFIX) else { return Ok(false) };
    let Some((expires, tag)) = rest.split_once('_') else { return Ok(false) };
    let (Ok(expires), Ok(tag)) = (expires.parse::<i64>(), base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag))
    else {
        return Ok(false);
    };
    if expires < Utc::now().timestamp() {
        return Ok(false);
    }
    Ok(mac(app_key, venue, &identity, expires).verify_slice(&tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_holds_only_for_its_venue_email_and_time() {
        let keys = KeyRing {
            master: None,
            identity: Some(std::sync::Arc::new(secrecy::SecretBox::new(Box::new(vec![9u8; 32])))),
            audit: None,
        };
        let (key, venue) = ([5u8; 32], VenueId::for_tests());
        let identity = identity_of(&keys, "Ann@Example.com").unwrap();
        let proof = sign(&key, venue, &identity, Utc::now() + chrono::Duration::minutes(5));
        assert!(proves(&key, &keys, venue, "ann@example.com", &proof.token).unwrap());
        assert!(!proves(&key, &keys, venue, "bob@example.com", &proof.token).unwrap(), "another email");
        let other = VenueId::for_tests();
        assert!(!proves(&key, &keys, other, "ann@example.com", &proof.token).unwrap(), "another venue");
        assert!(!proves(&[6u8; 32], &keys, venue, "ann@example.com", &proof.token).unwrap(), "another key");
        let stale = sign(&key, venue, &identity, Utc::now() - chrono::Duration::seconds(1));
        assert!(!proves(&key, &keys, venue, "ann@example.com", &stale.token).unwrap(), "expired");
        assert!(!proves(&key, &keys, venue, "ann@example.com", "vqdp_garbage").unwrap());
        assert_eq!(six_digits().len(), 6);
    }
}
