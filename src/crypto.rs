//! Envelope encryption with AES-256-GCM (ring): the master key (`APP_KEY`, with retired
//! ones in `APP_PREVIOUS_KEYS`) wraps data keys stored in the database; data keys encrypt
//! fields. Every ciphertext is bound by its associated data to where it lives (venue,
//! table, row, column, key version), so a ciphertext copied anywhere else fails to
//! decrypt with a clear error instead of yielding someone else's data.
//!
//! Field ciphertext format, version 1: `0x01 ‖ key version (u32, big-endian) ‖ 96-bit
//! random nonce ‖ AES-256-GCM ciphertext and tag`.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

/// The format byte of version-1 field ciphertexts.
const FORMAT_V1: u8 = 1;
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

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, self.0.expose_secret()).expect("32-byte AES-256 key"))
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
    let mut buffer = plaintext.to_vec();
    key.aead()
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buffer)
        .expect("AES-GCM sealing cannot fail for in-range lengths");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&buffer);
    sealed
}

/// Opens what [`seal`] produced with the same key and `aad`.
pub fn open(key: &Key, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(CryptoError::Format);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Format)?;
    let mut buffer = body.to_vec();
    let plaintext =
        key.aead().open_in_place(nonce, Aad::from(aad), &mut buffer).map_err(|_| CryptoError::Authentication)?;
    Ok(plaintext.to_vec())
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
}
