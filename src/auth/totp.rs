//! TOTP (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps, ±1 step of clock skew) with
//! replay protection (a step is accepted once), enrolment with an otpauth URI and a QR
//! code, and single-use recovery codes stored as hashes. Secrets are stored sealed under
//! the platform data key, bound to the person and column; a secret stored in plain bytes
//! by an earlier version is sealed on its next use.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use uuid::Uuid;

use super::secrets;
use crate::crypto::{self, MasterKeys, Place};
use crate::error::AppError;
use crate::keys;
use crate::tenancy::Db;

const STEP_SECS: u64 = 30;
const RECOVERY_CODES: usize = 10;

/// RFC 4648 base32 without padding (the otpauth secret format).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let (mut buffer, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for c in text.chars().filter(|c| !matches!(c, '=' | ' ' | '-')) {
        let value = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u64 - 'A' as u64,
            c @ '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// The 6-digit code of `secret` (base32) for the current time step plus `offset` steps.
pub fn current_code(secret_base32: &str, offset: i64) -> Option<String> {
    let secret = base32_decode(secret_base32)?;
    Some(code_at(&secret, now_step().checked_add_signed(offset)?, 6))
}

/// The code for `step` with `digits` digits (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: u64, digits: u32) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[19] & 0x0f) as usize;
    let binary = u32::from_be_bytes([hash[offset] & 0x7f, hash[offset + 1], hash[offset + 2], hash[offset + 3]]);
    format!("{:0width$}", binary % 10u32.pow(digits), width = digits as usize)
}

fn now_step() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) / STEP_SECS
}

/// The step (now ±1) whose code matches, if any.
fn matching_step(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    [now, now.saturating_sub(1), now + 1].into_iter().find(|&step| code_at(secret, step, 6) == code)
}

/// What an authenticator app needs to enrol.
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// The secret in base32, for manual entry.
    pub secret: String,
    /// `otpauth://totp/…` for authenticator apps.
    pub otpauth_uri: String,
    /// The otpauth URI as a QR code (SVG).
    pub qr_svg: String,
}

/// Where a person's TOTP secret is sealed (the associated data of its ciphertext).
fn secret_place(staff: &str) -> Place<'_> {
    Place { scope: "platform", table: "staff_totp", row: staff, column: "secret" }
}

/// A secret stored by an earlier version: 20 plain bytes.
const LEGACY_SECRET_LEN: usize = 20;

async fn seal_secret(db: &Db, master: &MasterKeys, staff: Uuid, secret: &[u8]) -> Result<Vec<u8>, AppError> {
    let mut tx = db.resolving_tx().await?;
    let (version, key) = keys::platform_key(tx.conn(), master, None).await?;
    tx.commit().await?;
    Ok(crypto::encrypt_field(&key, version, secret_place(&staff.to_string()), secret))
}

/// Opens a stored secret; a legacy plain one is sealed in place on the way.
async fn open_secret(db: &Db, master: &MasterKeys, staff: Uuid, stored: Vec<u8>) -> Result<Vec<u8>, AppError> {
    if stored.len() == LEGACY_SECRET_LEN {
        let sealed = seal_secret(db, master, staff, &stored).await?;
        sqlx::query("SELECT private.reseal_totp($1, $2, $3)")
            .bind(staff)
            .bind(&stored)
            .bind(sealed)
            .execute(db.platform_level())
            .await?;
        return Ok(stored);
    }
    let mut tx = db.resolving_tx().await?;
    let (_, key) = keys::platform_key(tx.conn(), master, Some(crypto::field_version(&stored)?)).await?;
    tx.commit().await?;
    Ok(crypto::decrypt_field(&key, secret_place(&staff.to_string()), &stored)?)
}

/// Starts (or restarts) TOTP enrolment for `staff`; refused while TOTP is enabled.
pub async fn begin_enrollment(db: &Db, master: &MasterKeys, staff: Uuid, email: &str) -> Result<Enrollment, AppError> {
    let mut secret = [0u8; 20];
    getrandom::fill(&mut secret).expect("the OS random source is available");
    let sealed = seal_secret(db, master, staff, &secret).await?;
    let started: bool = sqlx::query_scalar("SELECT private.begin_totp($1, $2)")
        .bind(staff)
        .bind(sealed)
        .fetch_one(db.platform_level())
        .await?;
    if !started {
        return Err(AppError::bad_input("two-factor authentication is already enabled; disable it first"));
    }
    let encoded = base32(&secret);
    let label = percent_encoding::utf8_percent_encode(&format!("venueql:{email}"), percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let otpauth_uri =
        format!("otpauth://totp/{label}?secret={encoded}&issuer=venueql&algorithm=SHA1&digits=6&period=30");
    let qr_svg = qrcode::QrCode::new(otpauth_uri.as_bytes())
        .map_err(|e| AppError::internal(e.to_string()))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    Ok(Enrollment { secret: encoded, otpauth_uri, qr_svg })
}

async fn state(db: &Db, staff: Uuid) -> Result<Option<(Vec<u8>, bool, i64)>, AppError> {
    Ok(sqlx::query_as("SELECT secret, confirmed, last_step FROM private.totp_state($1)")
        .bind(staff)
        .fetch_optional(db.platform_level())
        .await?)
}

/// Whether `staff` has confirmed TOTP.
pub async fn is_enrolled(db: &Db, staff: Uuid) -> Result<bool, AppError> {
    Ok(state(db, staff).await?.is_some_and(|(_, confirmed, _)| confirmed))
}

async fn accept(db: &Db, master: &MasterKeys, staff: Uuid, code: &str, confirm: bool) -> Result<bool, AppError> {
    let Some((stored, _, last_step)) = state(db, staff).await? else { return Ok(false) };
    let secret = open_secret(db, master, staff, stored).await?;
    let Some(step) = matching_step(&secret, code, now_step()) else { return Ok(false) };
    if i64::try_from(step).unwrap_or(i64::MAX) <= last_step {
        return Ok(false);
    }
    Ok(sqlx::query_scalar("SELECT private.accept_totp_step($1, $2, $3)")
        .bind(staff)
        .bind(step as i64)
        .bind(confirm)
        .fetch_one(db.platform_level())
        .await?)
}

fn normalise_recovery(code: &str) -> String {
    code.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase()
}

/// Confirms enrolment with a first code and returns fresh recovery codes (shown once).
/// None for a wrong code (or an enrolment already confirmed). Callers check it under the
/// lockout (`login::confirm_totp`).
pub async fn confirm_enrollment(
    db: &Db,
    master: &MasterKeys,
    staff: Uuid,
    code: &str,
) -> Result<Option<Vec<String>>, AppError> {
    if !accept(db, master, staff, code, true).await? {
        return Ok(None);
    }
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let raw = secrets::new_secret("").to_lowercase().replace(['-', '_'], "");
            format!("{}-{}", &raw[..5], &raw[5..10])
        })
        .collect();
    let hashes: Vec<Vec<u8>> = codes.iter().map(|c| secrets::hash(&normalise_recovery(c))).collect();
    sqlx::query("SELECT private.replace_recovery_codes($1, $2)")
        .bind(staff)
        .bind(hashes)
        .execute(db.platform_level())
        .await?;
    Ok(Some(codes))
}

/// Checks a TOTP code (each step once) or an unused recovery code.
pub async fn verify(db: &Db, master: &MasterKeys, staff: Uuid, code: &str) -> Result<bool, AppError> {
    if accept(db, master, staff, code, false).await? {
        return Ok(true);
    }
    let normalised = normalise_recovery(code);
    if normalised.len() != 10 {
        return Ok(false);
    }
    Ok(sqlx::query_scalar("SELECT private.use_recovery_code($1, $2)")
        .bind(staff)
        .bind(secrets::hash(&normalised))
        .fetch_one(db.platform_level())
        .await?)
}

/// Removes TOTP and the recovery codes.
pub async fn disable(db: &Db, staff: Uuid) -> Result<(), AppError> {
    sqlx::query("SELECT private.disable_totp($1)").bind(staff).execute(db.platform_level()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, expected) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_234_567_890, "89005924"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(secret, time / 30, 8), expected, "T = {time}");
        }
    }

    #[test]
    fn codes_match_within_one_step_of_skew_only() {
        let secret = b"12345678901234567890";
        let now = 1000;
        assert_eq!(matching_step(secret, &code_at(secret, now - 1, 6), now), Some(now - 1));
        assert_eq!(matching_step(secret, &code_at(secret, now + 1, 6), now), Some(now + 1));
        assert_eq!(matching_step(secret, &code_at(secret, now - 2, 6), now), None);
        assert_eq!(matching_step(secret, "12345", now), None);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"12345678901234567890"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(base32_decode("mzxw6ytboi").unwrap(), b"foobar");
        assert_eq!(base32_decode(&base32(&[1, 2, 3, 250, 251])).unwrap(), [1, 2, 3, 250, 251]);
    }
}
