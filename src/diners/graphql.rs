//! GraphQL surface of diners: `diners` and `diner(id)` (DINERS_VIEW), their allergens and
//! dietary notes (only with DINER_ALLERGENS_VIEW: otherwise null and never decrypted),
//! `exportDiner` and `eraseDiner` (DINERS_MANAGE, audited).

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::{HealthData, StoredDiner};
use crate::access::Permissions;
use crate::crypto::KeyRing;
use crate::graphql::context::{self, commit, staff_tx};
use crate::graphql::parse_id;
use crate::graphql::permission_guard::Requires;
use crate::menu::Allergen;

/// Allergens and dietary notes.
#[derive(SimpleObject, Clone)]
pub struct AllergenProfile {
    /// Declared allergens.
    allergens: Vec<Allergen>,
    /// Free-text dietary notes.
    dietary_notes: Option<String>,
}

impl From<HealthData> for AllergenProfile {
    fn from(h: HealthData) -> AllergenProfile {
        AllergenProfile { allergens: h.allergens, dietary_notes: h.dietary_notes }
    }
}

/// A diner of the venue.
#[derive(SimpleObject)]
pub struct Diner {
    /// Diner id.
    id: ID,
    /// First checkout here.
    created_at: DateTime<Utc>,
    /// Last checkout here.
    updated_at: DateTime<Utc>,
    /// Paid orders here.
    order_count: i32,
    /// What the diner told this venue (DINER_ALLERGENS_VIEW; null without it).
    allergen_profile: Option<AllergenProfile>,
    /// The profile the diner shares across venues, while they consent
    /// (DINER_ALLERGENS_VIEW; null without it or without consent).
    shared_allergen_profile: Option<AllergenProfile>,
}

/// Builds the API view; decrypts only when the caller holds DINER_ALLERGENS_VIEW.
async fn present(ctx: &Context<'_>, diners: Vec<StoredDiner>) -> Result<Vec<Diner>> {
    let (staff, mut tx) = staff_tx(ctx).await?;
    let may_read = staff.permissions.contains(Permissions::DINER_ALLERGENS_VIEW);
    let venue = tx.venue();
    let master = if may_read { Some(context::service::<KeyRing>(ctx)?.master()?) } else { None };
    let keys = match master {
        Some(master) if !diners.is_empty() => Some(crate::keys::venue_keys(&mut tx, master).await?),
        _ => None,
    };
    let mut out = Vec::with_capacity(diners.len());
    for diner in diners {
        let (own, shared) = match (&keys, master) {
            (Some(keys), Some(master)) => (
                Some(super::open(keys, venue, &diner)?.into()),
                super::shared_profile(&mut tx, master, &diner).await?.map(AllergenProfile::from),
            ),
            _ => (None, None),
        };
        out.push(Diner {
            id: diner.id.into(),
            created_at: diner.created_at,
            updated_at: diner.updated_at,
            order_count: i32::try_from(diner.order_count).unwrap_or(i32::MAX),
            allergen_profile: own,
            shared_allergen_profile: shared,
        });
    }
    commit(tx).await?;
    Ok(out)
}

/// Staff queries about diners.
#[derive(Default)]
pub struct DinersQuery;

#[Object]
impl DinersQuery {
    /// The venue's diners by id (`first` 1 to 100, default 50; `after` the last id seen).
    #[graphql(guard = "Requires(Permissions::DINERS_VIEW)")]
    async fn diners(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        after: Option<ID>,
    ) -> Result<Vec<Diner>> {
        let after = after.as_ref().map(|a| parse_id(a, "after")).transpose()?;
        let (_, mut tx) = staff_tx(ctx).await?;
        let diners = super::list(&mut tx, i64::from(first), after).await?;
        commit(tx).await?;
        present(ctx, diners).await
    }

    /// One diner of the venue.
    #[graphql(guard = "Requires(Permissions::DINERS_VIEW)")]
    async fn diner(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Diner>> {
        let id = parse_id(&id, "id")?;
        let (_, mut tx) = staff_tx(ctx).await?;
        let diner = super::find(&mut tx, id).await?;
        commit(tx).await?;
        Ok(present(ctx, diner.into_iter().collect()).await?.pop())
    }
}

/// Staff mutations on diners' data.
#[derive(Default)]
pub struct DinersMutation;

#[Object]
impl DinersMutation {
    /// Everything held about a diner at this venue, as a JSON document (audited; needs
    /// DINERS_MANAGE and DINER_ALLERGENS_VIEW, since it holds their health data).
    #[graphql(guard = "Requires(Permissions::DINERS_MANAGE.union(Permissions::DINER_ALLERGENS_VIEW))")]
    async fn export_diner(&self, ctx: &Context<'_>, id: ID) -> Result<String> {
        let id = parse_id(&id, "id")?;
        let master = context::service::<KeyRing>(ctx)?.master()?;
        let (staff, mut tx) = staff_tx(ctx).await?;
        let export = super::export(&mut tx, master, &staff.who(), id).await?;
        commit(tx).await?;
        Ok(export.to_string())
    }

    /// Erases a diner at this venue: their record and health data are deleted, their
    /// orders stay without a link to them, their shared profile is withdrawn (audited).
    #[graphql(guard = "Requires(Permissions::DINERS_MANAGE)")]
    async fn erase_diner(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let id = parse_id(&id, "id")?;
        let (staff, mut tx) = staff_tx(ctx).await?;
        super::erase(&mut tx, &staff.who(), id).await?;
        commit(tx).await?;
        Ok(true)
    }
}

/// A proof that the diner controls their email, for checkouts at this venue.
#[derive(SimpleObject)]
pub struct DinerProof {
    /// Give it as `diner.proof` in `startCheckout`.
    proof: String,
    /// When it stops working.
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// A diner proving their email (the diner endpoint).
#[derive(Default)]
pub struct PublicDinerMutation;

#[Object]
impl PublicDinerMutation {
    /// Mails a 6-digit code to `email` (valid 10 minutes). Needed before a checkout may
    /// share or withdraw the diner's allergen profile with other venues. Always true when
    /// accepted; limited per email and per address.
    async fn request_diner_code(&self, ctx: &Context<'_>, email: String) -> Result<bool> {
        let config = context::config(ctx)?;
        let keys = context::service::<KeyRing>(ctx)?;
        let db = context::db(ctx)?;
        let diner = context::public(ctx)?;
        super::verification::request_code(db, diner.venue, keys, config.lockout, &email, diner.client).await?;
        Ok(true)
    }

    /// Exchanges the mailed code for a proof (valid 30 minutes at this venue). Five tries
    /// per code; failures are limited per email and per address.
    async fn verify_diner_code(&self, ctx: &Context<'_>, email: String, code: String) -> Result<DinerProof> {
        let config = context::config(ctx)?;
        let keys = context::service::<KeyRing>(ctx)?;
        let db = context::db(ctx)?;
        let ip = context::public(ctx)?.client;
        let app_key = secrecy::ExposeSecret::expose_secret(config.app_key.as_ref());
        let mut tx = context::public_tx(ctx).await?;
        let attempt = super::verification::CodeAttempt { email: &email, code: &code, ip };
        let proof = super::verification::verify_code(db, &mut tx, keys, config.lockout, app_key, attempt).await?;
        commit(tx).await?;
        Ok(DinerProof { proof: proof.token, expires_at: proof.expires_at })
    }
}
