//! Diner identity: the email or phone a diner gives is normalised and reduced to an
//! HMAC-SHA256 under `IDENTITY_HMAC_KEY`; only that hash is stored. Without the key the
//! hash cannot be recomputed from a guessed identifier, so a copied database does not
//! reveal who the diners are.
//!
//! Normalisation: Unicode NFKC, surrounding whitespace trimmed; an email is lower-cased
//! whole (local part included: venues treat `Ann@x.com` and `ann@x.com` as one diner); a
//! phone must be E.164 (`+`, country code, 8–15 digits in all), with spaces, dots,
//! hyphens and parentheses removed first.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;

use crate::error::AppError;

/// A normalised identifier (never stored, never logged).
pub struct Identifier(String);

fn nfkc_trimmed(raw: &str) -> String {
    raw.nfkc().collect::<String>().trim().to_string()
}

/// Normalises an email; the error never repeats the input.
pub fn email(raw: &str) -> Result<Identifier, AppError> {
    let email = nfkc_trimmed(raw).to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if !valid {
        return Err(AppError::bad_input("diner.email is not an email address (name@domain)"));
    }
    Ok(Identifier(format!("email:{email}")))
}

/// Normalises a phone number to E.164; the error never repeats the input.
pub fn phone(raw: &str) -> Result<Identifier, AppError> {
    let compact: String = nfkc_trimmed(raw).chars().filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')')).collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    let valid =
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if !valid {
        return Err(AppError::bad_input("diner.phone must be in international E.164 form, e.g. +353 1 234 5678"));
    }
    Ok(Identifier(format!("phone:+{digits}")))
}

/// HMAC-SHA256 of the identifier under the identity key.
pub fn hash(key: &[u8], identifier: &Identifier) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(identifier.0.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_normalise_to_one_identity() {
        let key = b"0123456789abcdef0123456789abcdef";
        let a = hash(key, &email("  Ann.Diner@Example.COM ").unwrap());
        // Full-width characters fold under NFKC.
        let b = hash(key, &email("ａnn.diner@example.com").unwrap());
        assert_eq!(a, b);
        assert_ne!(a, hash(b"another key, another hash space!", &email("ann.diner@example.com").unwrap()));
        for bad in ["", "no-at-sign", "@example.com", "ann@", "ann@localhost", "a b@example.com"] {
            let error = email(bad).err().expect(bad);
            assert!(!error.client_message().contains(bad) || bad.is_empty(), "the error repeats the input");
        }
    }

    #[test]
    fn phones_must_be_e164() {
        let key = b"0123456789abcdef0123456789abcdef";
        let a = hash(key, &phone("+353 (1) 234-5678").unwrap());
        assert_eq!(a, hash(key, &phone("+35312345678").unwrap()));
        assert_ne!(a, hash(key, &email("35312345678@example.com").unwrap()), "emails and phones never collide");
        for bad in ["012345678", "+0123456789", "+12", "+1234567890123456", "+353 12a4567"] {
            assert!(phone(bad).is_err(), "{bad}");
        }
    }
}
