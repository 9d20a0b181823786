//! Data keys of the envelope scheme: one active key per venue (created on first use, wrapped by the master key),
//! retired keys kept for rows not yet re-encrypted, destroyed keys gone for good; and the
//! platform data key of shared profiles. Keys are unwrapped per transaction, never cached
//! across requests, so a destroyed key stops working everywhere at once.

use std::collections::HashMap;

use serde_json::json;

use crate::audit::alerts::AlertKind;
use crate::audit::{self, Change, Who};
use crate::crypto::{self, CryptoError, Key, MasterKeys, Place};
use crate::error::AppError;
use crate::tenancy::{CrossTenantDoor, VenueId, VenueTx};

impl From<CryptoError> for AppError {
    fn from(error: CryptoError) -> AppError {
        AppError::Unreadable(error.to_string())
    }
}

/// The data keys of one venue a transaction may use, by version.
pub struct VenueKeys {
    keys: HashMap<u32, Key>,
    destroyed: Vec<u32>,
}

impl VenueKeys {
    /// The key a ciphertext names, or why it cannot be had.
    pub fn for_ciphertext(&self, ciphertext: &[u8]) -> Result<&Key, CryptoError> {
        let version = crypto::field_version(ciphertext)?;
        self.keys.get(&version).ok_or(CryptoError::KeyUnavailable(version))
    }

    /// Decrypts a field of this venue.
    pub fn decrypt(&self, place: Place<'_>, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        crypto::decrypt_field(self.for_ciphertext(ciphertext)?, place, ciphertext)
    }

    /// Whether every key of the venue was destroyed (offboarded).
    pub fn all_destroyed(&self) -> bool {
        self.keys.is_empty() && !self.destroyed.is_empty()
    }
}

fn scope(venue: VenueId) -> String {
    format!("venue:{venue}")
}

#[derive(sqlx::FromRow)]
struct StoredKey {
    version: i32,
    wrapped: Option<Vec<u8>>,
    master_key_id: String,
}

/// Every usable data key of the transaction's venue.
pub async fn venue_keys(tx: &mut VenueTx, master: &MasterKeys) -> Result<VenueKeys, AppError> {
    let stored: Vec<StoredKey> =
        sqlx::query_as("SELECT version, wrapped, master_key_id FROM venue_data_keys").fetch_all(tx.conn()).await?;
    let scope = scope(tx.venue());
    let mut keys = VenueKeys { keys: HashMap::new(), destroyed: Vec::new() };
    for key in stored {
        let version = key.version as u32;
        match key.wrapped {
            Some(wrapped) => {
                keys.keys.insert(version, master.unwrap(&wrapped, &key.master_key_id, &scope, version)?);
            }
            None => keys.destroyed.push(version),
        }
    }
    Ok(keys)
}

/// The venue's active data key, created (version 1, or the next) when it has none.
pub async fn active_key(tx: &mut VenueTx, master: &MasterKeys) -> Result<(u32, Key), AppError> {
    for _ in 0..2 {
        let active: Option<StoredKey> =
            sqlx::query_as("SELECT version, wrapped, master_key_id FROM venue_data_keys WHERE state = 'active'")
                .fetch_optional(tx.conn())
                .await?;
        if let Some(StoredKey { version, wrapped: Some(wrapped), master_key_id }) = active {
            let version = version as u32;
            return Ok((version, master.unwrap(&wrapped, &master_key_id, &scope(tx.venue()), version)?));
        }
        let destroyed: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM venue_data_keys WHERE state = 'destroyed')")
                .fetch_one(tx.conn())
                .await?;
        if destroyed {
            return Err(AppError::Unreadable("this venue was offboarded: its data keys are destroyed".into()));
        }
        let next: i32 = sqlx::query_scalar("SELECT coalesce(max(version), 0) + 1 FROM venue_data_keys")
            .fetch_one(tx.conn())
            .await?;
        let key = Key::random();
        let (wrapped, master_id) = master.wrap(&key, &scope(tx.venue()), next as u32);
        // A concurrent first use may win; then its key is read on the next turn.
        sqlx::query(
            "INSERT INTO venue_data_keys (venue_id, version, wrapped, master_key_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tx.venue().as_uuid())
        .bind(next)
        .bind(wrapped)
        .bind(master_id)
        .execute(tx.conn())
        .await?;
    }
    Err(AppError::internal("could not create or find the venue's active data key"))
}

/// The platform data key of `version` (or the active one), created when there is none.
pub async fn platform_key(
    conn: &mut sqlx::PgConnection,
    master: &MasterKeys,
    version: Option<u32>,
) -> Result<(u32, Key), AppError> {
    for _ in 0..2 {
        let found: Option<(i32, Vec<u8>, String)> =
            sqlx::query_as("SELECT version, wrapped, master_key_id FROM private.platform_data_key($1)")
                .bind(version.map(|v| v as i32))
                .fetch_optional(&mut *conn)
                .await?;
        if let Some((v, wrapped, master_id)) = found {
            return Ok((v as u32, master.unwrap(&wrapped, &master_id, "platform", v as u32)?));
        }
        if version.is_some() {
            return Err(CryptoError::KeyUnavailable(version.unwrap_or_default()).into());
        }
        let key = Key::random();
        let next: i32 =
            sqlx::query_scalar("SELECT coalesce(max(version), 0) + 1 FROM private.platform_data_keys_all()")
                .fetch_one(&mut *conn)
                .await?;
        let (wrapped, master_id) = master.wrap(&key, "platform", next as u32);
        sqlx::query("SELECT private.add_platform_data_key($1, $2, $3)")
            .bind(next)
            .bind(wrapped)
            .bind(master_id)
            .execute(&mut *conn)
            .await?;
    }
    Err(AppError::internal("could not create or find the platform data key"))
}

/// `venueql keys rotate-master`: re-wraps every venue's data keys and the platform keys
/// under the current master key (run after deploying `APP_KEY` = new key with the old one
/// in `APP_PREVIOUS_KEYS`). Returns how many keys were re-wrapped.
pub async fn rotate_master(door: &CrossTenantDoor, actor: &str, master: &MasterKeys) -> Result<usize, AppError> {
    let mut tx = door.open_cross_tenant(actor, "keys rotate-master").await?;
    let venues: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM venues ORDER BY id").fetch_all(tx.conn()).await?;
    let platform: Vec<(i32, Vec<u8>, String)> =
        sqlx::query_as("SELECT version, wrapped, master_key_id FROM private.platform_data_keys_all()")
            .fetch_all(tx.conn())
            .await?;
    let mut rewrapped = 0;
    for (version, wrapped, master_id) in platform {
        let rewrapped_key = rewrap(master, &wrapped, &master_id, "platform", version)?;
        store_rewrapped(tx.conn(), "SELECT private.rewrap_platform_data_key($1, $2, $3)", version, rewrapped_key)
            .await?;
        rewrapped += 1;
    }
    tx.commit().await?;
    for venue in venues {
        let venue = VenueId::from_door(venue);
        let mut tx = door.open_cross_tenant(actor, "keys rotate-master").await?.into_venue(venue).await?;
        let stored: Vec<StoredKey> = sqlx::query_as(
            "SELECT version, wrapped, master_key_id FROM venue_data_keys WHERE wrapped IS NOT NULL FOR UPDATE",
        )
        .fetch_all(tx.conn())
        .await?;
        for key in stored {
            let wrapped = key.wrapped.as_deref().unwrap_or_default();
            let rewrapped_key = rewrap(master, wrapped, &key.master_key_id, &scope(venue), key.version)?;
            let statement = "UPDATE venue_data_keys SET wrapped = $2, master_key_id = $3 WHERE version = $1";
            store_rewrapped(tx.conn(), statement, key.version, rewrapped_key).await?;
            rewrapped += 1;
        }
        tx.commit().await?;
    }
    Ok(rewrapped)
}

/// Stores a rewrapped key with `statement` (`$1` version, `$2` wrapped key, `$3` master key id).
async fn store_rewrapped(
    conn: &mut sqlx::PgConnection,
    statement: &str,
    version: i32,
    (wrapped, master_id): (Vec<u8>, String),
) -> Result<(), AppError> {
    sqlx::query(statement).bind(version).bind(wrapped).bind(master_id).execute(conn).await?;
    Ok(())
}

/// Unwraps a data key with whichever master wrapped it and wraps it under the current one.
fn rewrap(
    master: &MasterKeys,
    wrapped: &[u8],
    master_id: &str,
    scope: &str,
    version: i32,
) -> Result<(Vec<u8>, String), AppError> {
    let key = master.unwrap(wrapped, master_id, scope, version as u32)?;
    Ok(master.wrap(&key, scope, version as u32))
}

/// `venueql keys rotate-venue`, first half: a new data key becomes the venue's active one
/// (the old one is retired, still able to decrypt), audited. Returns its version and key;
/// the rooms that hold the venue's sealed rows then re-encrypt them.
pub async fn new_venue_key(
    door: &CrossTenantDoor,
    actor: &str,
    master: &MasterKeys,
    venue: VenueId,
) -> Result<(u32, Key), AppError> {
    let mut tx = door.open_cross_tenant(actor, "keys rotate-venue").await?.into_venue(venue).await?;
    let next: i32 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) + 1 FROM venue_data_keys").fetch_one(tx.conn()).await?;
    let key = Key::random();
    let (wrapped, master_id) = master.wrap(&key, &scope(venue), next as u32);
    sqlx::query("UPDATE venue_data_keys SET state = 'retired' WHERE state = 'active'").execute(tx.conn()).await?;
    sqlx::query("INSERT INTO venue_data_keys (venue_id, version, wrapped, master_key_id) VALUES ($1, $2, $3, $4)")
        .bind(venue.as_uuid())
        .bind(next)
        .bind(wrapped)
        .bind(master_id)
        .execute(tx.conn())
        .await?;
    let change = Change {
        action: "data_key.rotated",
        target_type: "venue_data_key",
        target_id: next.to_string(),
        before: None,
        after: Some(json!({ "version": next })),
    };
    if next > 1 {
        audit::record_critical(&mut tx, &Who::operator(actor), AlertKind::KeyRotation, change).await?;
    } else {
        audit::record(&mut tx, &Who::operator(actor), change).await?;
    }
    tx.commit().await?;
    Ok((next as u32, key))
}

/// `venueql admin offboard-venue`: destroys every data key of the venue
/// (crypto-shredding: its diners' allergens and notes can never be read again) and
/// records it in the venue's audit log. Returns how many keys were destroyed.
pub async fn shred_venue(door: &CrossTenantDoor, actor: &str, venue: VenueId) -> Result<u64, AppError> {
    let mut tx = door.open_cross_tenant(actor, "offboard venue: destroy data keys").await?.into_venue(venue).await?;
    let destroyed = sqlx::query(
        "UPDATE venue_data_keys SET wrapped = NULL, state = 'destroyed', destroyed_at = now() WHERE state <> 'destroyed'",
    )
    .execute(tx.conn())
    .await?
    .rows_affected();
    // No key may be created after offboarding: a destroyed marker stays even when the
    // venue never had one.
    if destroyed == 0 {
        sqlx::query(
            "INSERT INTO venue_data_keys (venue_id, version, wrapped, master_key_id, state, destroyed_at) \
             SELECT $1, coalesce(max(version), 0) + 1, NULL, 'none', 'destroyed', now() FROM venue_data_keys \
             WHERE NOT EXISTS (SELECT 1 FROM venue_data_keys WHERE state = 'destroyed')",
        )
        .bind(venue.as_uuid())
        .execute(tx.conn())
        .await?;
    }
    let change = Change {
        action: "venue.offboarded",
        target_type: "venue",
        target_id: venue.to_string(),
        before: None,
        after: Some(json!({ "data_keys_destroyed": destroyed })),
    };
    audit::record_critical(&mut tx, &Who::operator(actor), AlertKind::VenueOffboarded, change).await?;
    tx.commit().await?;
    Ok(destroyed)
}
