//! Keyed seals of the audit chain. The chain itself (migration 0001) is plain SHA-256
//! computed inside PostgreSQL, so a superuser who edits a row can recompute it forward.
//! Each row's chain hash is therefore also sealed with HMAC-SHA256 under
//! `AUDIT_HMAC_KEY`, a key that never enters the database: without it no one can make
//! seals for rewritten rows, and `venueql audit verify` reports them.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::AppError;

/// The audit sealing key (`AUDIT_HMAC_KEY`) and its public id.
pub struct SealKey {
    key: SecretBox<Vec<u8>>,
    id: String,
}

impl SealKey {
    /// Wraps the key bytes (at least 32).
    pub fn new(bytes: Vec<u8>) -> Result<SealKey, String> {
        if bytes.len() < 32 {
            return Err(format!("AUDIT_HMAC_KEY must decode to at least 32 bytes, not {}", bytes.len()));
        }
        let mut label = Hmac::<Sha256>::new_from_slice(&bytes).expect("HMAC takes any key length");
        label.update(b"venueql.audit.key-id");
        let id: String = label.finalize().into_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(SealKey { key: SecretBox::new(Box::new(bytes)), id })
    }

    /// Names the key in each seal (an HMAC of a fixed label: it says which key, not what
    /// the key is), so a verifier holding several keys knows which one to use.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The seal of one audit row: HMAC-SHA256 over a label, the venue, the row's place in
    /// the chain and its chain hash (which covers its content and every row before it).
    pub fn mac(&self, venue: Uuid, seq: i64, row_hash: &[u8]) -> Vec<u8> {
        self.keyed(venue, seq, row_hash).finalize().into_bytes().to_vec()
    }

    /// Whether `seal` is this key's seal of the row (constant time).
    pub fn verifies(&self, venue: Uuid, seq: i64, row_hash: &[u8], seal: &[u8]) -> bool {
        self.keyed(venue, seq, row_hash).verify_slice(seal).is_ok()
    }

    fn keyed(&self, venue: Uuid, seq: i64, row_hash: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret()).expect("HMAC takes any key length");
        mac.update(b"venueql.audit.seal.v1");
        mac.update(venue.as_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(row_hash);
        mac
    }
}

static KEY: OnceLock<SealKey> = OnceLock::new();

/// Makes `key` the process's sealing key. A process seals with one key only: installing
/// a different one later is refused (installing the same one again is fine).
pub fn install(key: SealKey) -> Result<(), String> {
    let id = key.id.clone();
    if KEY.get_or_init(|| key).id == id {
        Ok(())
    } else {
        Err("a different AUDIT_HMAC_KEY is already in use in this process".into())
    }
}

/// The installed sealing key, or why audit rows cannot be written.
pub fn installed() -> Result<&'static SealKey, AppError> {
    KEY.get().ok_or_else(|| {
        AppError::Unavailable(
            "AUDIT_HMAC_KEY is not set: audit rows cannot be sealed (see `venueql keys generate`)".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_depends_on_every_input_and_the_key() {
        let key = SealKey::new(vec![7; 32]).unwrap();
        let other = SealKey::new(vec![8; 32]).unwrap();
        let venue = Uuid::from_u128(1);
        let seal = key.mac(venue, 3, b"hash");
        assert!(key.verifies(venue, 3, b"hash", &seal));
        assert!(!key.verifies(venue, 4, b"hash", &seal));
        assert!(!key.verifies(Uuid::from_u128(2), 3, b"hash", &seal));
        assert!(!key.verifies(venue, 3, b"hasH", &seal));
        assert!(!other.verifies(venue, 3, b"hash", &seal));
        assert_ne!(key.id(), other.id());
        assert!(SealKey::new(vec![1; 31]).is_err());
    }
}
