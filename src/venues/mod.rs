//! Venues (tenants): platform-level rows, created only through the cross-tenant door,
//! and their tenant-scoped settings.

pub mod graphql;

use serde::Serialize;
use uuid::Uuid;

use crate::error::AppError;
use crate::tenancy::{Db, PlatformTx, VenueId, VenueTx};

/// A venue as the rest of the code sees it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Venue {
    /// Venue id.
    pub id: Uuid,
    /// URL name, `/v/{slug}/graphql` and `{slug}.{PUBLIC_HOST_SUFFIX}`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// ISO 4217 currency of every price at the venue.
    pub currency: String,
}

impl Venue {
    /// The venue's id as a tenant key.
    pub fn venue_id(&self) -> VenueId {
        VenueId::from_row(self.id)
    }
}

/// Checks a slug against the rules the database enforces, with a clear message.
pub fn validate_slug(slug: &str) -> Result<(), AppError> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_input(
            "slug must be 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen",
        ))
    }
}

/// Finds a venue by slug (public information: the diner page shows it).
pub async fn find_by_slug(db: &Db, slug: &str) -> Result<Option<Venue>, AppError> {
    if validate_slug(slug).is_err() {
        return Ok(None);
    }
    Ok(sqlx::query_as("SELECT id, slug, name, currency FROM venues WHERE slug = $1")
        .bind(slug)
        .fetch_optional(db.platform_level())
        .await?)
}

/// Records, in the audit log of the venue a request named (by slug or id), that a
/// credential of another venue was refused there: a critical event, alerted. Nothing is
/// recorded when the name matches no venue, nor again for the same credential within a
/// minute. Best effort: the refusal stands either way.
pub async fn record_refused_request(db: &Db, named: &str, who: &crate::audit::Who, credential_venue: VenueId) {
    let recorded = async {
        let venue: Option<Uuid> = sqlx::query_scalar("SELECT id FROM venues WHERE slug = $1 OR id::text = $1 LIMIT 1")
            .bind(named)
            .fetch_optional(db.platform_level())
            .await?;
        let Some(venue) = venue else { return Ok(()) };
        let mut tx = db.venue_tx(VenueId::from_row(venue)).await?;
        // One row per credential, venue and minute: refusals cannot flood the log.
        let within = std::time::Duration::from_secs(60);
        if crate::audit::recorded_within(&mut tx, "security.cross_venue_refused", &who.actor, within).await? {
            return Ok(());
        }
        let change = crate::audit::Change {
            action: "security.cross_venue_refused",
            target_type: "venue",
            target_id: venue.to_string(),
            before: None,
            after: Some(serde_json::json!({ "credential_venue": credential_venue.as_uuid() })),
        };
        crate::audit::record_critical(&mut tx, who, crate::audit::alerts::AlertKind::CrossVenueRefused, change).await?;
        tx.commit().await?;
        Ok::<(), AppError>(())
    };
    if let Err(error) = recorded.await {
        tracing::warn!(error = %error.client_message(), "could not record a refused cross-venue request");
    }
}

/// Finds a venue by id (the caller's own venue, from its token).
pub async fn find_by_id(db: &Db, venue: VenueId) -> Result<Option<Venue>, AppError> {
    Ok(sqlx::query_as("SELECT id, slug, name, currency FROM venues WHERE id = $1")
        .bind(venue.as_uuid())
        .fetch_optional(db.platform_level())
        .await?)
}

/// Finds a venue by slug through the door (operator commands).
pub async fn find_by_slug_platform(tx: &mut PlatformTx, slug: &str) -> Result<Venue, AppError> {
    sqlx::query_as("SELECT id, slug, name, currency FROM venues WHERE slug = $1")
        .bind(slug)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| AppError::bad_input(format!("no venue with slug {slug:?}")))
}

/// Inserts a venue (platform-level; the door has recorded why).
pub async fn insert(tx: &mut PlatformTx, slug: &str, name: &str, currency: &str) -> Result<Venue, AppError> {
    validate_slug(slug)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AppError::bad_input("name must be 1 to 200 characters"));
    }
    let currency = currency.trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(AppError::bad_input("currency must be a three-letter ISO 4217 code such as EUR"));
    }
    Ok(sqlx::query_as(
        "INSERT INTO venues (slug, name, currency) VALUES ($1, $2, $3) RETURNING id, slug, name, currency",
    )
    .bind(slug)
    .bind(name)
    .bind(&currency)
    .fetch_one(tx.conn())
    .await?)
}

/// The transaction's own venue.
pub async fn current(tx: &mut VenueTx) -> Result<Venue, AppError> {
    let id = tx.venue().as_uuid();
    Ok(sqlx::query_as("SELECT id, slug, name, currency FROM venues WHERE id = $1")
        .bind(id)
        .fetch_one(tx.conn())
        .await?)
}

/// Per-venue settings (defaults when the venue never changed them).
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Settings {
    /// Staff holding elevated permissions need TOTP to get a token here.
    pub require_mfa_for_elevated: bool,
    /// Web origins of the venue's diner pages: browsers there may call the venue's public
    /// endpoint (CORS). Empty: only pages on venueql's own origin.
    pub allowed_origins: Vec<String>,
    /// `inclusive` (prices include tax) or `exclusive` (tax added at checkout).
    pub tax_mode: String,
    /// The tax rate of items that name none.
    pub default_tax_rate_id: Option<Uuid>,
    /// The venue's VAT or tax number, for receipts.
    pub tax_id: Option<String>,
    /// The service charge, parts per million of the subtotal after discount (0: none).
    pub service_charge_ppm: i32,
    /// The tax rate of the service charge (None: untaxed).
    pub service_charge_tax_rate_id: Option<Uuid>,
    /// Whether diners may add a tip.
    pub tips_enabled: bool,
    /// The tips diners are offered, parts per million of the total before the tip.
    pub tip_presets_ppm: Vec<i32>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            require_mfa_for_elevated: false,
            allowed_origins: Vec::new(),
            tax_mode: "inclusive".into(),
            default_tax_rate_id: None,
            tax_id: None,
            service_charge_ppm: 0,
            service_charge_tax_rate_id: None,
            tips_enabled: false,
            tip_presets_ppm: Vec::new(),
        }
    }
}

/// The transaction's venue settings.
pub async fn settings(tx: &mut VenueTx) -> Result<Settings, AppError> {
    let found: Option<Settings> = sqlx::query_as(
        "SELECT require_mfa_for_elevated, allowed_origins, tax_mode, default_tax_rate_id, tax_id, \
                service_charge_ppm, service_charge_tax_rate_id, tips_enabled, tip_presets_ppm \
         FROM venue_settings WHERE venue_id = $1",
    )
    .bind(tx.venue().as_uuid())
    .fetch_optional(tx.conn())
    .await?;
    Ok(found.unwrap_or_default())
}

/// The origins the venue's public endpoint answers browsers from (its settings).
pub async fn public_origins(db: &Db, venue: VenueId) -> Result<Vec<String>, AppError> {
    let mut tx = db.venue_tx(venue).await?;
    let origins = settings(&mut tx).await?.allowed_origins;
    tx.commit().await?;
    Ok(origins)
}

/// A VAT or tax number as given: trimmed, 1 to 50 characters (empty: none).
pub fn tax_id(raw: &str) -> Result<Option<String>, AppError> {
    let tax_id = raw.trim();
    match tax_id.chars().count() {
        0 => Ok(None),
        1..=50 => Ok(Some(tax_id.to_string())),
        _ => Err(AppError::bad_input("taxId must be at most 50 characters")),
    }
}

/// A share in parts per million, 0 to 1,000,000 (`what` names the field for the error).
pub fn ppm(value: i32, what: &str) -> Result<i32, AppError> {
    if (0..=1_000_000).contains(&value) {
        Ok(value)
    } else {
        Err(AppError::bad_input(format!("{what} must be between 0 and 1000000 (parts per million: 12.5% is 125000)")))
    }
}

/// Tip presets: at most 5, each above 0 and at most 1,000,000.
pub fn tip_presets(presets: &[i32]) -> Result<Vec<i32>, AppError> {
    if presets.len() > 5 || presets.iter().any(|p| !(1..=1_000_000).contains(p)) {
        return Err(AppError::bad_input(
            "tipPresetsPpm holds at most 5 presets, each 1 to 1000000 parts per million (10% is 100000)",
        ));
    }
    Ok(presets.to_vec())
}

/// Changes the transaction's venue settings, with an audit row.
pub async fn update_settings(
    tx: &mut VenueTx,
    who: &crate::audit::Who,
    wanted: Settings,
) -> Result<Settings, AppError> {
    let before = settings(tx).await?;
    sqlx::query(
        "INSERT INTO venue_settings (venue_id, require_mfa_for_elevated, allowed_origins, tax_mode, \
                                     default_tax_rate_id, tax_id, service_charge_ppm, service_charge_tax_rate_id, \
                                     tips_enabled, tip_presets_ppm) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (venue_id) DO UPDATE SET require_mfa_for_elevated = EXCLUDED.require_mfa_for_elevated, \
             allowed_origins = EXCLUDED.allowed_origins, tax_mode = EXCLUDED.tax_mode, \
             default_tax_rate_id = EXCLUDED.default_tax_rate_id, tax_id = EXCLUDED.tax_id, \
             service_charge_ppm = EXCLUDED.service_charge_ppm, \
             service_charge_tax_rate_id = EXCLUDED.service_charge_tax_rate_id, \
             tips_enabled = EXCLUDED.tips_enabled, tip_presets_ppm = EXCLUDED.tip_presets_ppm, updated_at = now()",
    )
    .bind(tx.venue().as_uuid())
    .bind(wanted.require_mfa_for_elevated)
    .bind(&wanted.allowed_origins)
    .bind(&wanted.tax_mode)
    .bind(wanted.default_tax_rate_id)
    .bind(&wanted.tax_id)
    .bind(wanted.service_charge_ppm)
    .bind(wanted.service_charge_tax_rate_id)
    .bind(wanted.tips_enabled)
    .bind(&wanted.tip_presets_ppm)
    .execute(tx.conn())
    .await
    .map_err(|error| match &error {
        // Another venue's rate looks exactly like a rate that does not exist.
        sqlx::Error::Database(db) if db.constraint() == Some("venue_settings_default_tax_rate_fkey") => {
            AppError::NotFound("tax rate (defaultTaxRateId)")
        }
        sqlx::Error::Database(db) if db.constraint() == Some("venue_settings_service_charge_tax_rate_fkey") => {
            AppError::NotFound("tax rate (serviceChargeTaxRateId)")
        }
        _ => error.into(),
    })?;
    let change = crate::audit::Change {
        action: "venue_settings.updated",
        target_type: "venue",
        target_id: tx.venue().to_string(),
        before: Some(serde_json::to_value(before).map_err(AppError::internal)?),
        after: Some(serde_json::to_value(&wanted).map_err(AppError::internal)?),
    };
    crate::audit::record(tx, who, change).await?;
    Ok(wanted)
}
