//! Envelope encryption with AES-256-GCM (the RustCrypto `aes-gcm` crate): the master key (`APP_KEY`, with retired
//! ones in `APP_PREVIOUS_KEYS`) wraps data keys stored in the database; data keys encrypt
//! fields. Every ciphertext is bound by its associated data to where it lives (venue,
//! table, row, column, key version), so a ciphertext copied anywhere else fails to
//! decrypt with a clear error instead of yielding someone else's data.
//!
//! Field ciphertext format, version 1: `0x01 ‖ key version (u32, big-endian) ‖ 96-bit
//! random nonce ‖ AES-256-GCM ciphertext and tag`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

/// The format byte of version-1 field ciphertexts.
const FORMAT_V1: u8 = 1;
/// AES-GCM's 96-bit nonce.
const NONCE_LEN: usize = 12;
/// AES-GCM's 128-bit tag, appended to the ciphertext.
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// Why a ciphertext could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Not a ciphertext of a known format.
    #[error("the stored value is not a venueql ciphertext (unknown format)")]
    Format,
    /// Authentication failed: wrong key, or the ciphertext belongs to another row,
    /// column, venue or key version (it was copied or altered).
    #[error("the ciphertext does not belong here or was altered (authentication failed)")]
    Authentication,
    /// The data key it needs was destroyed (crypto-shredding) or is unknown.
    #[error("the data key (version {0}) is destroyed or unknown")]
    KeyUnavailable(u32),
    /// The wrapping master key is not configured (`APP_KEY`/`APP_PREVIOUS_KEYS`).
    #[error("the master key {0} that wrapped this data key is not configured (APP_KEY / APP_PREVIOUS_KEYS)")]
    MasterUnavailable(String),
}

/// A 256-bit key held in memory that is zeroed on drop.
pub struct Key(SecretBox<[u8; 32]>);

impl Key {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(SecretBox::new(Box::new(bytes)))
    }

    /// A fresh random key.
    pub fn random() -> Key {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source is available");
        Key::from_bytes(bytes)
    }

    fn aead(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.expose_secret().into())
    }

    /// A short public fingerprint naming this key (never the key itself).
    pub fn id(&self) -> String {
        let digest = Sha256::new().chain_update(b"venueql key id\0").chain_update(self.0.expose_secret()).finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

/// Encrypts `plaintext` under `key` with `aad`: random nonce ‖ ciphertext ‖ tag.
pub fn seal(key: &Key, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the OS random source is available");
    let body = key
        .aead()
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("AES-GCM sealing cannot fail for in-range lengths");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&body);
    sealed
}

/// Opens what [`seal`] produced with the same key and `aad`.
pub fn open(key: &Key, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Format);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    key.aead().decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad }).map_err(|_| CryptoError::Authentication)
}

/// Where a field ciphertext lives; all of it is bound into the associated data.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    /// The venue (or `platform` for platform-level rows).
    pub scope: &'a str,
    /// Table name.
    pub table: &'a str,
    /// Row id (or another stable row key, hex-encoded).
    pub row: &'a str,
    /// Column name.
    pub column: &'a str,
}

fn field_aad(place: Place<'_>, version: u32) -> Vec<u8> {
    format!("venueql/field/v1|{}|{}|{}|{}|{version}", place.scope, place.table, place.row, place.column).into_bytes()
}

/// Encrypts a field value with data key `version`.
pub fn encrypt_field(key: &Key, version: u32, place: Place<'_>, plaintext: &[u8]) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&seal(key, &field_aad(place, version), plaintext));
    out
}

/// The data key version a field ciphertext names.
pub fn field_version(ciphertext: &[u8]) -> Result<u32, CryptoError> {
    if ciphertext.len() < HEADER_LEN || ciphertext[0] != FORMAT_V1 {
        return Err(CryptoError::Format);
    }
    Ok(u32::from_be_bytes(ciphertext[1..5].try_into().expect("4 bytes")))
}

/// Decrypts a field value; `key` must be the data key of the version it names.
pub fn decrypt_field(key: &Key, place: Place<'_>, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let version = field_version(ciphertext)?;
    open(key, &field_aad(place, version), &ciphertext[5..])
}

/// The associated data of a wrapped data key: bound to its owner and version.
pub fn wrap_aad(scope: &str, version: u32) -> Vec<u8> {
    format!("venueql/data-key/v1|{scope}|{version}").into_bytes()
}

/// The master keys: the current one wraps new data keys; retired ones still unwrap.
pub struct MasterKeys {
    current: Key,
    previous: Vec<Key>,
}

impl MasterKeys {
    /// The current key and any retired ones.
    pub fn new(current: Key, previous: Vec<Key>) -> MasterKeys {
        MasterKeys { current, previous }
    }

    /// The key new data keys are wrapped with.
    pub fn current(&self) -> &Key {
        &self.current
    }

    /// The master key with this id, current or retired.
    pub fn find(&self, id: &str) -> Result<&Key, CryptoError> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id() == id)
            .ok_or_else(|| CryptoError::MasterUnavailable(id.to_string()))
    }

    /// Wraps a data key for `scope`/`version` under the current master key.
    pub fn wrap(&self, data_key: &Key, scope: &str, version: u32) -> (Vec<u8>, String) {
        (seal(&self.current, &wrap_aad(scope, version), data_key.0.expose_secret()), self.current.id())
    }

    /// Unwraps a stored data key.
    pub fn unwrap(&self, wrapped: &[u8], master_id: &str, scope: &str, version: u32) -> Result<Key, CryptoError> {
        let master = self.find(master_id)?;
        let bytes = open(master, &wrap_aad(scope, version), wrapped)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Format)?;
        Ok(Key::from_bytes(bytes))
    }
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys")
            .field("current", &self.current.id())
            .field("previous", &self.previous.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place<'a>(row: &'a str, column: &'a str) -> Place<'a> {
        Place { scope: "venue-a", table: "diners", row, column }
    }

    #[test]
    fn a_field_opens_only_where_it_was_sealed() {
        let key = Key::random();
        let sealed = encrypt_field(&key, 3, place("row-1", "allergens"), b"PEANUTS");
        assert_eq!(field_version(&sealed).unwrap(), 3);
        assert_eq!(decrypt_field(&key, place("row-1", "allergens"), &sealed).unwrap(), b"PEANUTS");
        assert!(!sealed.windows(7).any(|w| w == b"PEANUTS"), "no plaintext in the stored bytes");
        for other in [place("row-2", "allergens"), place("row-1", "dietary_notes")] {
            assert_eq!(decrypt_field(&key, other, &sealed), Err(CryptoError::Authentication));
        }
        let elsewhere = Place { scope: "venue-b", ..place("row-1", "allergens") };
        assert_eq!(decrypt_field(&key, elsewhere, &sealed), Err(CryptoError::Authentication));
        let mut relabelled = sealed.clone();
        relabelled[4] = 4; // claims another key version
        assert_eq!(decrypt_field(&key, place("row-1", "allergens"), &relabelled), Err(CryptoError::Authentication));
        assert_eq!(
            decrypt_field(&Key::random(), place("row-1", "allergens"), &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(decrypt_field(&key, place("row-1", "allergens"), b"\x02garbage"), Err(CryptoError::Format));
        assert_ne!(sealed, encrypt_field(&key, 3, place("row-1", "allergens"), b"PEANUTS"), "random nonces");
    }

    #[test]
    fn data_keys_unwrap_under_current_or_retired_masters_only() {
        let old = [7u8; 32];
        let data = Key::random();
        let (wrapped, id) = MasterKeys::new(Key::from_bytes(old), vec![]).wrap(&data, "venue-a", 1);
        let rotated = MasterKeys::new(Key::random(), vec![Key::from_bytes(old)]);
        let unwrapped = rotated.unwrap(&wrapped, &id, "venue-a", 1).unwrap();
        assert_eq!(unwrapped.id(), data.id());
        assert_eq!(rotated.unwrap(&wrapped, &id, "venue-b", 1).unwrap_err(), CryptoError::Authentication);
        let forgotten = MasterKeys::new(Key::random(), vec![]);
        assert!(matches!(forgotten.unwrap(&wrapped, &id, "venue-a", 1), Err(CryptoError::MasterUnavailable(_))));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    /// Ciphertexts written by the earlier AES-GCM implementation (ring) still open: the
    /// stored format (nonce ‖ ciphertext ‖ tag) did not change with the crate.
    #[test]
    fn ciphertexts_written_by_the_earlier_implementation_still_open() {
        let key = Key::from_bytes([0x11; 32]);
        let place = Place {
            scope: "7d1c3e52-0c5a-4f0e-9a55-3b1f0c2d9e01",
            table: "diners",
            row: "0b7e0f6a-9f1d-4c3b-8a2e-5d6c7b8a9f10",
            column: "allergens",
        };
        let field = hex(
            "01000000036a6708c68dc83ec781a8e84ede51677ee2b8871419eb2044d9a0a22f9487fd0133b9535567314664f8062174878a",
        );
        assert_eq!(decrypt_field(&key, place, &field).unwrap(), b"[\"PEANUTS\",\"MILK\"]");
        let master = MasterKeys::new(Key::from_bytes([0x22; 32]), vec![]);
        let wrapped = hex(
            "587039c860123d516f28b6cae6f431771ae6fa9b9d630412ba58839ca192709ec6dd0282c24ca1df9faa0006a499078b5b7750baaa5d98ac7799f8fc",
        );
        assert_eq!(master.current().id(), "9b1a6d6d5d83c838");
        let unwrapped = master.unwrap(&wrapped, "9b1a6d6d5d83c838", "platform", 1).unwrap();
        assert_eq!(unwrapped.id(), Key::from_bytes([0x33; 32]).id());
    }
}

/// The keys of the server: the master keys (`APP_KEY` + `APP_PREVIOUS_KEYS`) that wrap
/// every data key, and the key of the diners' identity HMAC (`IDENTITY_HMAC_KEY`). Either
/// may be missing from the configuration; what needs it is then refused with UNAVAILABLE.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    /// `APP_KEY` + `APP_PREVIOUS_KEYS`, when `APP_KEY` is set.
    pub master: Option<std::sync::Arc<MasterKeys>>,
    /// `IDENTITY_HMAC_KEY`.
    pub identity: Option<std::sync::Arc<secrecy::SecretBox<Vec<u8>>>>,
    /// `AUDIT_HMAC_KEY`: seals every audit row (kept outside the database).
    pub audit: Option<std::sync::Arc<secrecy::SecretBox<Vec<u8>>>>,
}

impl KeyRing {
    /// The master keys, or why data under them cannot be handled.
    pub fn master(&self) -> Result<&MasterKeys, crate::error::AppError> {
        self.master.as_deref().ok_or_else(|| {
            crate::error::AppError::Unavailable("diner data is not enabled on this server (APP_KEY is not set)".into())
        })
    }

    /// The identity HMAC key, or why diners cannot be identified.
    pub fn identity_key(&self) -> Result<&[u8], crate::error::AppError> {
        use secrecy::ExposeSecret;
        self.identity.as_deref().map(|k| k.expose_secret().as_slice()).ok_or_else(|| {
            crate::error::AppError::Unavailable(
                "diner data is not enabled on this server (IDENTITY_HMAC_KEY is not set)".into(),
            )
        })
    }
}

/// A new random 32-byte key in standard base64 (`APP_KEY`, `IDENTITY_HMAC_KEY`).
pub fn random_key_base64() -> String {
    use base64::Engine;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the OS random source is available");
    base64::engine::general_purpose::STANDARD.encode(key)
}
