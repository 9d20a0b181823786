//! Diners and their health data (SPEC §4). A diner is known to a venue by the keyed hash
//! of their email or phone; their allergens and dietary notes are stored only as
//! ciphertext under the venue's data key, bound to the venue, row and column. They are
//! decrypted only for callers holding DINER_ALLERGENS_VIEW, and never logged. A diner who
//! proved their email (`verification`) may share their allergen profile across venues;
//! another venue reads it only through the database's consent gate
//! (`private.shared_diner_profile`), and only for a diner who paid and proved their email
//! there.

pub mod graphql;
pub mod identity;
pub mod verification;

use chrono::{DateTime, Utc};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::{self, Change, Who};
use crate::crypto::KeyRing;
use crate::crypto::{self, MasterKeys, Place};
use crate::error::AppError;
use crate::keys;
use crate::menu::Allergen;
use crate::tenancy::{VenueId, VenueTx};

/// Most characters of dietary notes.
pub const MAX_NOTES_CHARS: usize = 500;

/// What a diner tells the venue at checkout.
#[derive(Clone, Debug, Default)]
pub struct DinerDetails {
    /// Email (one of email or phone identifies the diner).
    pub email: Option<String>,
    /// Phone, E.164.
    pub phone: Option<String>,
    /// Declared allergens.
    pub allergens: Vec<Allergen>,
    /// Free-text dietary notes.
    pub dietary_notes: Option<String>,
    /// Share the allergen profile with other venues: `Some(true)` gives consent,
    /// `Some(false)` withdraws it at once, `None` leaves it as it is. Needs `verified`.
    pub share_allergen_profile: Option<bool>,
    /// Whether the diner proved control of the email at this venue
    /// ([`verification::proves`]): only then may the checkout touch the shared profile.
    pub verified: bool,
}

fn place<'a>(venue: &'a str, row: &'a str, column: &'a str) -> Place<'a> {
    Place { scope: venue, table: "diners", row, column }
}

fn profile_place<'a>(identity_hex: &'a str, column: &'a str) -> Place<'a> {
    Place { scope: "platform", table: "diner_profiles", row: identity_hex, column }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn allergen_names(allergens: &[Allergen]) -> Vec<u8> {
    serde_json::to_vec(&allergens.iter().map(|a| a.as_str()).collect::<Vec<_>>()).expect("a list of names")
}

fn parse_allergens(plain: &[u8]) -> Result<Vec<Allergen>, AppError> {
    let names: Vec<String> = serde_json::from_slice(plain).map_err(|_| AppError::Unreadable("allergens".into()))?;
    Ok(names.iter().filter_map(|n| Allergen::from_stored(n)).collect())
}

/// What a checkout recorded about its diner; the sharing request waits on the checkout
/// until the payment is verified.
#[derive(Debug)]
pub struct Recorded {
    /// The diner at this venue.
    pub diner_id: Uuid,
    /// Share (true) or stop sharing (false) the allergen profile; None: no change.
    pub share_consent: Option<bool>,
    /// The profile to share, sealed under the platform key (when sharing).
    pub shared_allergens: Option<Vec<u8>>,
    /// The notes to share, sealed under the platform key.
    pub shared_notes: Option<Vec<u8>>,
    /// Whether the diner proved their email at this checkout.
    pub verified: bool,
}

/// Records the diner at the transaction's venue from an anonymous checkout. Nobody has
/// proved who they are yet, so this can only add: allergens join those already held
/// (an unverified request never removes a warning), and notes are kept when some are
/// already held. The shared profile is prepared here but changed only when the payment
/// is verified ([`Recorded`], applied by the payment handler).
pub async fn record(tx: &mut VenueTx, keys: &KeyRing, details: &DinerDetails) -> Result<Recorded, AppError> {
    let identifier = match (&details.email, &details.phone) {
        (Some(email), None) => identity::email(email)?,
        (None, Some(phone)) => identity::phone(phone)?,
        _ => return Err(AppError::bad_input("diner needs exactly one of email or phone")),
    };
    if details.share_allergen_profile.is_some() && !details.verified {
        return Err(AppError::bad_input(
            "sharing or withdrawing the allergen profile needs a verified email: requestDinerCode, verifyDinerCode, \
             then give its proof as diner.proof",
        ));
    }
    if details.dietary_notes.as_ref().is_some_and(|n| n.chars().count() > MAX_NOTES_CHARS) {
        return Err(AppError::bad_input(format!("diner.dietaryNotes must be at most {MAX_NOTES_CHARS} characters")));
    }
    let master = keys.master()?;
    let identity = identity::hash(keys.identity_key()?, &identifier);
    let (version, key) = keys::active_key(tx, master).await?;
    // The upsert locks the row until commit: concurrent checkouts of one diner merge in turn.
    let diner_id: Uuid = sqlx::query_scalar(
        "INSERT INTO diners (venue_id, identity_hash) VALUES ($1, $2) \
         ON CONFLICT (venue_id, identity_hash) DO UPDATE SET updated_at = now() RETURNING id",
    )
    .bind(tx.venue().as_uuid())
    .bind(&identity)
    .fetch_one(tx.conn())
    .await?;
    let stored = find(tx, diner_id).await?.ok_or_else(|| AppError::internal("the diner row vanished"))?;
    let held = if stored.allergens.is_some() || stored.dietary_notes.is_some() {
        open(&keys::venue_keys(tx, master).await?, tx.venue(), &stored)?
    } else {
        HealthData::default()
    };
    let mut allergens = held.allergens.clone();
    for allergen in &details.allergens {
        if !allergens.contains(allergen) {
            allergens.push(*allergen);
        }
    }
    let stated_notes = details.dietary_notes.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let notes = held.dietary_notes.as_deref().or(stated_notes);
    let venue = tx.venue().to_string();
    let row = stored.id.to_string();
    let sealed_allergens =
        crypto::encrypt_field(&key, version, place(&venue, &row, "allergens"), &allergen_names(&allergens));
    let sealed_notes =
        notes.map(|n| crypto::encrypt_field(&key, version, place(&venue, &row, "dietary_notes"), n.as_bytes()));
    sqlx::query(
        "UPDATE diners SET allergens = $2, dietary_notes = $3, updated_at = now(), \
                verified_at = CASE WHEN $4 THEN now() ELSE verified_at END WHERE id = $1",
    )
    .bind(stored.id)
    .bind(sealed_allergens)
    .bind(sealed_notes)
    .bind(details.verified)
    .execute(tx.conn())
    .await?;
    let mut recorded = Recorded {
        diner_id: stored.id,
        share_consent: details.share_allergen_profile,
        shared_allergens: None,
        shared_notes: None,
        verified: details.verified,
    };
    if details.share_allergen_profile == Some(true) {
        // What the diner states now is what they share.
        let (platform_version, platform_key) = keys::platform_key(tx.conn(), master, None).await?;
        let identity_hex = hex(&identity);
        let stated = allergen_names(&details.allergens);
        recorded.shared_allergens = Some(crypto::encrypt_field(
            &platform_key,
            platform_version,
            profile_place(&identity_hex, "allergens"),
            &stated,
        ));
        recorded.shared_notes = stated_notes.map(|n| {
            crypto::encrypt_field(
                &platform_key,
                platform_version,
                profile_place(&identity_hex, "dietary_notes"),
                n.as_bytes(),
            )
        });
    }
    Ok(recorded)
}

/// A diner as stored (ciphertexts still sealed).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredDiner {
    /// Diner id.
    pub id: Uuid,
    identity_hash: Vec<u8>,
    allergens: Option<Vec<u8>>,
    dietary_notes: Option<Vec<u8>>,
    /// First seen.
    pub created_at: DateTime<Utc>,
    /// Last checkout.
    pub updated_at: DateTime<Utc>,
    /// Paid orders at this venue (from `orders`).
    #[sqlx(default)]
    pub order_count: i64,
}

const DINER_SELECT: &str =
    "SELECT d.id, d.identity_hash, d.allergens, d.dietary_notes, d.created_at, d.updated_at FROM diners d";

/// Fills in the diners' order counts (one statement for all of them).
async fn with_order_counts(tx: &mut VenueTx, mut diners: Vec<StoredDiner>) -> Result<Vec<StoredDiner>, AppError> {
    let ids: Vec<Uuid> = diners.iter().map(|d| d.id).collect();
    let counts = crate::orders::count_by_diner(tx, &ids).await?;
    for diner in &mut diners {
        diner.order_count = counts.get(&diner.id).copied().unwrap_or(0);
    }
    Ok(diners)
}

/// Most diners in one page.
pub const MAX_PAGE: i64 = 100;

/// A page of the venue's diners by id.
pub async fn list(tx: &mut VenueTx, first: i64, after: Option<Uuid>) -> Result<Vec<StoredDiner>, AppError> {
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(AppError::bad_input(format!("first must be 1 to {MAX_PAGE}")));
    }
    let sql = format!("{DINER_SELECT} WHERE ($1::uuid IS NULL OR d.id > $1) ORDER BY d.id LIMIT $2");
    let diners = sqlx::query_as(&sql).bind(after).bind(first).fetch_all(tx.conn()).await?;
    with_order_counts(tx, diners).await
}

/// One diner of the venue.
pub async fn find(tx: &mut VenueTx, id: Uuid) -> Result<Option<StoredDiner>, AppError> {
    let sql = format!("{DINER_SELECT} WHERE d.id = $1");
    let diner: Option<StoredDiner> = sqlx::query_as(&sql).bind(id).fetch_optional(tx.conn()).await?;
    Ok(with_order_counts(tx, diner.into_iter().collect()).await?.pop())
}

/// A diner's health data, decrypted.
#[derive(Clone, Debug, Default)]
pub struct HealthData {
    /// Allergens.
    pub allergens: Vec<Allergen>,
    /// Dietary notes.
    pub dietary_notes: Option<String>,
}

/// Decrypts the venue's own record of a diner.
pub fn open(keys: &keys::VenueKeys, venue: VenueId, diner: &StoredDiner) -> Result<HealthData, AppError> {
    let venue = venue.to_string();
    let row = diner.id.to_string();
    let allergens = match &diner.allergens {
        Some(sealed) => parse_allergens(&keys.decrypt(place(&venue, &row, "allergens"), sealed)?)?,
        None => Vec::new(),
    };
    let dietary_notes = match &diner.dietary_notes {
        Some(sealed) => Some(
            String::from_utf8(keys.decrypt(place(&venue, &row, "dietary_notes"), sealed)?)
                .map_err(|_| AppError::Unreadable("dietary notes".into()))?,
        ),
        None => None,
    };
    Ok(HealthData { allergens, dietary_notes })
}

/// The diner's shared profile, through the database's consent gate (None without consent).
pub async fn shared_profile(
    tx: &mut VenueTx,
    master: &MasterKeys,
    diner: &StoredDiner,
) -> Result<Option<HealthData>, AppError> {
    let found: Option<(Vec<u8>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT allergens, dietary_notes FROM private.shared_diner_profile($1)")
            .bind(&diner.identity_hash)
            .fetch_optional(tx.conn())
            .await?;
    let Some((allergens, notes)) = found else { return Ok(None) };
    let (_, key) = keys::platform_key(tx.conn(), master, Some(crypto::field_version(&allergens)?)).await?;
    let identity_hex = hex(&diner.identity_hash);
    let allergens =
        parse_allergens(&crypto::decrypt_field(&key, profile_place(&identity_hex, "allergens"), &allergens)?)?;
    let dietary_notes = match notes {
        Some(sealed) => Some(
            String::from_utf8(crypto::decrypt_field(&key, profile_place(&identity_hex, "dietary_notes"), &sealed)?)
                .map_err(|_| AppError::Unreadable("dietary notes".into()))?,
        ),
        None => None,
    };
    Ok(Some(HealthData { allergens, dietary_notes }))
}

/// The diners' allergens of orders' diners, by diner id: one statement and one key load
/// for any number of orders.
pub async fn allergens_of(
    tx: &mut VenueTx,
    master: &MasterKeys,
    diner_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<Allergen>>, AppError> {
    let mut found = std::collections::HashMap::new();
    if diner_ids.is_empty() {
        return Ok(found);
    }
    let rows: Vec<(Uuid, Option<Vec<u8>>)> = sqlx::query_as("SELECT id, allergens FROM diners WHERE id = ANY($1)")
        .bind(diner_ids)
        .fetch_all(tx.conn())
        .await?;
    let keys = keys::venue_keys(tx, master).await?;
    let venue = tx.venue().to_string();
    for (id, sealed) in rows {
        if let Some(sealed) = sealed {
            let row = id.to_string();
            found.insert(id, parse_allergens(&keys.decrypt(place(&venue, &row, "allergens"), &sealed)?)?);
        }
    }
    Ok(found)
}

/// `exportDiner`: everything held about the diner at this venue, as JSON (audited).
pub async fn export(tx: &mut VenueTx, master: &MasterKeys, who: &Who, id: Uuid) -> Result<Value, AppError> {
    let diner = find(tx, id).await?.ok_or(AppError::NotFound("diner"))?;
    let keys = keys::venue_keys(tx, master).await?;
    let health = open(&keys, tx.venue(), &diner)?;
    let shared = shared_profile(tx, master, &diner).await?;
    let orders = crate::orders::of_diner(tx, id).await?;
    let names = |a: &[Allergen]| a.iter().map(|x| x.as_str()).collect::<Vec<_>>();
    let export = json!({
        "exported_at": Utc::now(),
        "venue_id": tx.venue(),
        "diner": {
            "id": diner.id, "created_at": diner.created_at, "updated_at": diner.updated_at,
            "identity": "kept only as a keyed hash of the email or phone given at checkout",
            "allergens": names(&health.allergens), "dietary_notes": health.dietary_notes,
        },
        "shared_allergen_profile": shared.map(|s| json!({ "allergens": names(&s.allergens), "dietary_notes": s.dietary_notes })),
        "orders": orders.iter().map(|o| json!({
            "number": o.number, "created_at": o.created_at, "amount_minor": o.amount_minor, "currency": o.currency,
            "status": o.status().as_str(), "items": o.lines() })).collect::<Vec<_>>(),
    });
    let change =
        Change { action: "diner.exported", target_type: "diner", target_id: id.to_string(), before: None, after: None };
    audit::record(tx, who, change).await?;
    Ok(export)
}

/// `eraseDiner`: deletes the diner at this venue (their orders stay, unlinked) and
/// withdraws their shared profile (audited; no identifier or health data in the row).
pub async fn erase(tx: &mut VenueTx, who: &Who, id: Uuid) -> Result<(), AppError> {
    let identity: Option<Vec<u8>> = sqlx::query_scalar("SELECT identity_hash FROM diners WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    let identity = identity.ok_or(AppError::NotFound("diner"))?;
    let withdrew: bool =
        sqlx::query_scalar("SELECT private.withdraw_diner_profile($1)").bind(&identity).fetch_one(tx.conn()).await?;
    sqlx::query("DELETE FROM diners WHERE id = $1").bind(id).execute(tx.conn()).await?;
    let change = Change {
        action: "diner.erased",
        target_type: "diner",
        target_id: id.to_string(),
        before: None,
        after: Some(json!({ "shared_profile_withdrawn": withdrew })),
    };
    audit::record(tx, who, change).await
}

/// A diner row's id and its two sealed columns.
type SealedRow = (Uuid, Option<Vec<u8>>, Option<Vec<u8>>);

/// Rows re-encrypted per transaction by [`rotate_venue_key`].
pub const REKEY_BATCH: i64 = 200;

/// `venueql keys rotate-venue`: a new data key becomes the venue's active one
/// ([`keys::new_venue_key`]), then the venue's diner rows are re-encrypted under it in
/// batches, each its own short transaction, while the server keeps serving. Returns the
/// new version and the rows re-encrypted.
pub async fn rotate_venue_key(
    door: &crate::tenancy::CrossTenantDoor,
    actor: &str,
    master: &MasterKeys,
    venue: VenueId,
) -> Result<(u32, usize), AppError> {
    let (version, key) = keys::new_venue_key(door, actor, master, venue).await?;
    let prefix: Vec<u8> = std::iter::once(1u8).chain(version.to_be_bytes()).collect();
    let mut rows = 0;
    loop {
        let mut tx = door.open_cross_tenant(actor, "keys rotate-venue batch").await?.into_venue(venue).await?;
        let keys = keys::venue_keys(&mut tx, master).await?;
        let batch: Vec<SealedRow> = sqlx::query_as(
            "SELECT id, allergens, dietary_notes FROM diners \
             WHERE (allergens IS NOT NULL AND substring(allergens FROM 1 FOR 5) <> $1) \
                OR (dietary_notes IS NOT NULL AND substring(dietary_notes FROM 1 FOR 5) <> $1) \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(&prefix)
        .bind(REKEY_BATCH)
        .fetch_all(tx.conn())
        .await?;
        if batch.is_empty() {
            tx.commit().await?;
            return Ok((version, rows));
        }
        let venue_scope = venue.to_string();
        for (id, allergens, notes) in batch {
            let row = id.to_string();
            let reencrypt = |column: &'static str, value: Option<Vec<u8>>| -> Result<Option<Vec<u8>>, AppError> {
                let Some(value) = value else { return Ok(None) };
                let place = place(&venue_scope, &row, column);
                let plain = keys.decrypt(place, &value)?;
                Ok(Some(crypto::encrypt_field(&key, version, place, &plain)))
            };
            let allergens = reencrypt("allergens", allergens)?;
            let notes = reencrypt("dietary_notes", notes)?;
            sqlx::query("UPDATE diners SET allergens = $2, dietary_notes = $3 WHERE id = $1")
                .bind(id)
                .bind(allergens)
                .bind(notes)
                .execute(tx.conn())
                .await?;
            rows += 1;
        }
        tx.commit().await?;
    }
}

impl crate::orders::DinerAllergens for KeyRing {
    fn allergens_of<'a>(
        &'a self,
        tx: &'a mut VenueTx,
        diners: &'a [Uuid],
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<std::collections::HashMap<Uuid, Vec<Allergen>>, AppError>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move { allergens_of(tx, self.master()?, diners).await })
    }
}

/// What a verified payment confirms about the checkout's diner.
#[derive(Clone, Copy, Debug)]
pub struct PaidDiner<'a> {
    /// The diner.
    pub diner_id: Uuid,
    /// Whether they proved their email at this checkout.
    pub verified: bool,
    /// Their sharing request at the checkout (None: leave as it is).
    pub share_consent: Option<bool>,
    /// The profile to share, sealed under the platform key at checkout.
    pub shared_allergens: Option<&'a [u8]>,
    /// The notes to share, sealed likewise.
    pub shared_notes: Option<&'a [u8]>,
}

/// The diner paid at the transaction's venue: a verified diner's sharing request takes
/// effect now (the database's consent gate decides, `private.diner_paid`).
pub async fn paid(tx: &mut VenueTx, diner: &PaidDiner<'_>) -> Result<(), AppError> {
    sqlx::query("SELECT private.diner_paid(d.identity_hash, $2, $3, $4, $5) FROM diners d WHERE d.id = $1")
        .bind(diner.diner_id)
        .bind(diner.verified)
        .bind(diner.share_consent)
        .bind(diner.shared_allergens)
        .bind(diner.shared_notes)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Deletes the venue's unverified diner statements untouched since `before`, except
/// those of `still_needed` (an open order or checkout uses them); returns how many.
pub async fn delete_unverified(
    tx: &mut VenueTx,
    before: DateTime<Utc>,
    still_needed: &[Uuid],
) -> Result<u64, AppError> {
    let deleted =
        sqlx::query("DELETE FROM diners WHERE verified_at IS NULL AND updated_at < $1 AND NOT (id = ANY($2))")
            .bind(before)
            .bind(still_needed)
            .execute(tx.conn())
            .await?;
    Ok(deleted.rows_affected())
}
