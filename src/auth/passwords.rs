//! Password hashing: Argon2id with OWASP's recommended parameters (m=19 MiB, t=2, p=1).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::AppError;

fn hasher() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters"),
    )
}

/// Hashes `password` into a PHC string for storage.
pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AppError::internal(e.to_string()))
}

/// A hash to verify against when the account is unknown, so that "no such person" and
/// "wrong secret" take the same time (computed once).
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("dummy-Password-1!").unwrap_or_default())
}

/// Checks `secret` against a stored PHC hash off the async threads (Argon2 is slow by
/// design). A malformed hash never matches.
pub async fn verify(hash: String, secret: String) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| hasher().verify_password(secret.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(AppError::internal)
}

/// The minimum password rules (SPEC §3), naming the rule that failed.
pub fn check_policy(password: &str) -> Result<(), AppError> {
    let missing = [
        (password.chars().count() >= 12, "at least 12 characters"),
        (password.chars().any(char::is_uppercase), "an upper-case letter"),
        (password.chars().any(char::is_lowercase), "a lower-case letter"),
        (password.chars().any(|c| c.is_ascii_digit()), "a digit"),
        (password.chars().any(|c| !c.is_alphanumeric() && !c.is_whitespace()), "a symbol"),
    ];
    let failed: Vec<&str> = missing.iter().filter(|(ok, _)| !ok).map(|(_, rule)| *rule).collect();
    if failed.is_empty() { Ok(()) } else { Err(AppError::bad_input(format!("password needs {}", failed.join(", ")))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let hash = hash_password("Correct-Horse-9").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(hasher().verify_password(b"Correct-Horse-9", &parsed).is_ok());
        assert!(hasher().verify_password(b"wrong", &parsed).is_err());
    }

    #[test]
    fn policy_names_every_missing_rule() {
        assert!(check_policy("Correct-Horse-9").is_ok());
        let message = check_policy("short").unwrap_err().client_message();
        assert!(
            message.contains("12 characters") && message.contains("digit") && message.contains("symbol"),
            "{message}"
        );
    }
}
