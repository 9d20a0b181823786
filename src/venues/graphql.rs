//! Venue settings in GraphQL (VENUE_SETTINGS).

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};

use crate::access::Permissions;
use crate::graphql::context::{commit, public_tx, staff_tx};
use crate::graphql::permission_guard::Requires;

/// The venue's settings.
#[derive(SimpleObject)]
pub struct VenueSettings {
    /// Staff holding STAFF_MANAGE, PAYMENTS_MANAGE, VENUE_SETTINGS, API_CLIENTS_MANAGE or
    /// ORDERS_REFUND get no token for this venue without two-factor authentication.
    require_mfa_for_elevated: bool,
    /// Web origins of the venue's diner pages (e.g. `https://cafe.example.com`): browsers
    /// there may call the venue's public endpoint `/v/{slug}/graphql` (CORS). Empty: none.
    allowed_origins: Vec<String>,
    /// Whether menu prices include tax (INCLUSIVE, the default) or tax is added at
    /// checkout (EXCLUSIVE).
    tax_mode: TaxMode,
    /// The tax rate of items that name none (a rate of `taxRates`); null: untaxed.
    default_tax_rate_id: Option<ID>,
    /// The venue's VAT or tax number, printed on receipts.
    tax_id: Option<String>,
    /// The service charge in parts per million of the subtotal after discount (0: none;
    /// 12.5% is 125000).
    service_charge_ppm: i32,
    /// The tax rate of the service charge; null: untaxed.
    service_charge_tax_rate_id: Option<ID>,
    /// Whether diners may add a tip (untaxed, and carrying no platform fee).
    tips_enabled: bool,
    /// The tips diners are offered, parts per million of the total before the tip (e.g.
    /// 100000, 125000, 150000).
    tip_presets_ppm: Vec<i32>,
}

/// Whether a venue's menu prices include tax.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaxMode {
    /// Prices include tax (EU style): the tax is the part of each price that is tax.
    Inclusive,
    /// Tax is added at checkout (US style).
    Exclusive,
}

impl TaxMode {
    fn stored(self) -> &'static str {
        match self {
            TaxMode::Inclusive => "inclusive",
            TaxMode::Exclusive => "exclusive",
        }
    }
}

impl From<super::Settings> for VenueSettings {
    fn from(settings: super::Settings) -> VenueSettings {
        VenueSettings {
            require_mfa_for_elevated: settings.require_mfa_for_elevated,
            allowed_origins: settings.allowed_origins,
            tax_mode: if settings.tax_mode == "exclusive" { TaxMode::Exclusive } else { TaxMode::Inclusive },
            default_tax_rate_id: settings.default_tax_rate_id.map(ID::from),
            tax_id: settings.tax_id,
            service_charge_ppm: settings.service_charge_ppm,
            service_charge_tax_rate_id: settings.service_charge_tax_rate_id.map(ID::from),
            tips_enabled: settings.tips_enabled,
            tip_presets_ppm: settings.tip_presets_ppm,
        }
    }
}

/// Input of `updateVenueSettings`; omitted fields keep their value.
#[derive(InputObject)]
pub struct UpdateVenueSettingsInput {
    /// See `VenueSettings.requireMfaForElevated`.
    require_mfa_for_elevated: Option<bool>,
    /// See `VenueSettings.allowedOrigins`; the whole list (https, or http on localhost;
    /// no wildcard; at most 20).
    allowed_origins: Option<Vec<String>>,
    /// See `VenueSettings.taxMode`.
    tax_mode: Option<TaxMode>,
    /// See `VenueSettings.defaultTaxRateId`; `clearDefaultTaxRate: true` removes it.
    default_tax_rate_id: Option<ID>,
    /// Leaves items that name no rate untaxed.
    clear_default_tax_rate: Option<bool>,
    /// See `VenueSettings.taxId` (1 to 50 characters; an empty string removes it).
    tax_id: Option<String>,
    /// See `VenueSettings.serviceChargePpm` (0 to 1000000).
    service_charge_ppm: Option<i32>,
    /// See `VenueSettings.serviceChargeTaxRateId`.
    service_charge_tax_rate_id: Option<ID>,
    /// Leaves the service charge untaxed.
    clear_service_charge_tax_rate: Option<bool>,
    /// See `VenueSettings.tipsEnabled`.
    tips_enabled: Option<bool>,
    /// See `VenueSettings.tipPresetsPpm` (the whole list: at most 5, each 1 to 1000000).
    tip_presets_ppm: Option<Vec<i32>>,
}

/// Venue settings query.
#[derive(Default)]
pub struct VenueSettingsQuery;

#[Object]
impl VenueSettingsQuery {
    /// The venue's settings. Requires VENUE_SETTINGS.
    #[graphql(guard = "Requires(Permissions::VENUE_SETTINGS)")]
    async fn venue_settings(&self, ctx: &Context<'_>) -> Result<VenueSettings> {
        let (_, mut tx) = staff_tx(ctx).await?;
        let settings = super::settings(&mut tx).await?;
        commit(tx).await?;
        Ok(settings.into())
    }
}

/// Venue settings mutation.
#[derive(Default)]
pub struct VenueSettingsMutation;

#[Object]
impl VenueSettingsMutation {
    /// Changes the venue's settings (audited). Requires VENUE_SETTINGS.
    #[graphql(guard = "Requires(Permissions::VENUE_SETTINGS)")]
    async fn update_venue_settings(&self, ctx: &Context<'_>, input: UpdateVenueSettingsInput) -> Result<VenueSettings> {
        let (caller, mut tx) = staff_tx(ctx).await?;
        let mut wanted = super::settings(&mut tx).await?;
        if let Some(required) = input.require_mfa_for_elevated {
            wanted.require_mfa_for_elevated = required;
        }
        if let Some(origins) = input.allowed_origins {
            wanted.allowed_origins = crate::origins::normalize_all(&origins)?;
        }
        if let Some(mode) = input.tax_mode {
            wanted.tax_mode = mode.stored().to_string();
        }
        if let Some(rate) = input.default_tax_rate_id {
            wanted.default_tax_rate_id = Some(crate::graphql::parse_id(&rate, "defaultTaxRateId")?);
        }
        if input.clear_default_tax_rate == Some(true) {
            wanted.default_tax_rate_id = None;
        }
        if let Some(tax_id) = input.tax_id {
            wanted.tax_id = super::tax_id(&tax_id)?;
        }
        if let Some(share) = input.service_charge_ppm {
            wanted.service_charge_ppm = super::ppm(share, "serviceChargePpm")?;
        }
        if let Some(rate) = input.service_charge_tax_rate_id {
            wanted.service_charge_tax_rate_id = Some(crate::graphql::parse_id(&rate, "serviceChargeTaxRateId")?);
        }
        if input.clear_service_charge_tax_rate == Some(true) {
            wanted.service_charge_tax_rate_id = None;
        }
        if let Some(enabled) = input.tips_enabled {
            wanted.tips_enabled = enabled;
        }
        if let Some(presets) = input.tip_presets_ppm {
            wanted.tip_presets_ppm = super::tip_presets(&presets)?;
        }
        let saved = super::update_settings(&mut tx, &caller.who(), wanted).await?;
        commit(tx).await?;
        Ok(saved.into())
    }
}

/// The venue as diners see it.
#[derive(SimpleObject)]
pub struct PublicVenue {
    /// URL name.
    slug: String,
    /// Display name.
    name: String,
    /// Currency of every price.
    currency: String,
}

/// The diner endpoint's venue query.
#[derive(Default)]
pub struct PublicVenueQuery;

#[Object]
impl PublicVenueQuery {
    /// The venue this endpoint serves.
    async fn venue(&self, ctx: &Context<'_>) -> Result<PublicVenue> {
        let mut tx = public_tx(ctx).await?;
        let venue = super::current(&mut tx).await?;
        commit(tx).await?;
        Ok(PublicVenue { slug: venue.slug, name: venue.name, currency: venue.currency })
    }
}
