//! Opaque secrets (tokens, codes, client secrets): random, prefixed so they can be
//! recognised, and stored only as their SHA-256.

use base64::Engine;
use sha2::{Digest, Sha256};

/// A new secret: `prefix` + 32 random bytes in URL-safe base64 (43 characters).
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `text` has the shape of a secret made by [`new_secret`] with `prefix`.
pub fn looks_like(text: &str, prefix: &str) -> bool {
    text.len() == prefix.len() + 43
        && text.starts_with(prefix)
        && text[prefix.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The stored form of a secret. A fast hash is right here: the secrets carry 256 bits of
/// randomness, so there is nothing to brute-force.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_recognisable() {
        let a = new_secret("vqx_");
        assert!(looks_like(&a, "vqx_"));
        assert_ne!(a, new_secret("vqx_"));
        assert!(!looks_like(&a, "vqy_"));
        assert!(!looks_like("vqx_short", "vqx_"));
        assert_eq!(hash(&a).len(), 32);
    }
}
