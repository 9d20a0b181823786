//! `me`: who the caller is, at which venue, with which permissions.

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use uuid::Uuid;

use super::{login, totp};
use crate::audit::{self, Change};
use crate::error::AppError;
use crate::graphql::context::{self, StaffCtx, commit, staff_tx};
use crate::tenancy::Db;
use crate::{staff, venues};

/// The caller's venue.
#[derive(SimpleObject)]
pub struct MeVenue {
    /// Venue id.
    id: ID,
    /// Slug.
    slug: String,
    /// Display name.
    name: String,
    /// Currency of every price.
    currency: String,
}

/// A person (staff member).
#[derive(SimpleObject)]
pub struct Person {
    /// Staff id.
    id: ID,
    /// Email.
    email: String,
    /// Display name (may be empty).
    display_name: String,
}

/// The caller.
#[derive(SimpleObject)]
pub struct Me {
    /// The one venue the credential is bound to.
    venue: MeVenue,
    /// The person, when the caller is one (null for API tokens and integrations).
    person: Option<Person>,
    /// Permission names the caller holds at this venue now.
    permissions: Vec<String>,
    /// How the caller appears in the audit log (`staff:…`, `api_token:…`, `oauth_client:…`).
    actor: String,
}

/// The identity query.
#[derive(Default)]
pub struct MeQuery;

#[Object]
impl MeQuery {
    /// Who is calling. Needs no permission: any valid credential may ask.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let (caller, mut tx) = staff_tx(ctx).await?;
        let venue = venues::current(&mut tx).await?;
        let person = match caller.principal.staff_id() {
            Some(id) => staff::at_current_venue(&mut tx, id).await?,
            None => None,
        };
        commit(tx).await?;
        Ok(Me {
            venue: MeVenue { id: venue.id.into(), slug: venue.slug, name: venue.name, currency: venue.currency },
            person: person.map(|p| Person { id: p.id.into(), email: p.email, display_name: p.display_name }),
            permissions: caller.permissions.names().into_iter().map(String::from).collect(),
            actor: caller.principal.actor(),
        })
    }
}

/// What an authenticator app needs to enrol.
#[derive(SimpleObject)]
pub struct TotpEnrollment {
    /// The shared secret in base32, for manual entry.
    secret: String,
    /// `otpauth://` URI for authenticator apps.
    otpauth_uri: String,
    /// The URI as a QR code (SVG document).
    qr_code_svg: String,
}

/// The signed-in person, or FORBIDDEN for API tokens and integrations.
fn person(caller: &StaffCtx) -> Result<Uuid, AppError> {
    caller.principal.staff_id().ok_or(AppError::Forbidden)
}

fn db<'a>(ctx: &Context<'a>) -> Result<&'a Db, AppError> {
    ctx.data::<Db>().map_err(|_| AppError::internal("no database in the request context"))
}

async fn audit_mfa(ctx: &Context<'_>, action: &str, staff: Uuid) -> Result<(), AppError> {
    let (caller, mut tx) = staff_tx(ctx).await?;
    let change = Change { action, target_type: "staff", target_id: staff.to_string(), before: None, after: None };
    audit::record(&mut tx, &caller.who(), change).await?;
    commit(tx).await
}

/// Two-factor authentication of the signed-in person. Needs no permission bits, only a
/// person's token (API tokens and integrations have no second factor to manage).
#[derive(Default)]
pub struct MfaMutation;

#[Object]
impl MfaMutation {
    /// Starts (or restarts) TOTP enrolment; confirm it with `confirmTotpEnrollment`.
    async fn begin_totp_enrollment(&self, ctx: &Context<'_>) -> Result<TotpEnrollment> {
        let caller = context::staff(ctx)?;
        let staff = person(caller)?;
        let db = db(ctx)?;
        let email = login::email_of(db, staff).await?.ok_or(AppError::Forbidden)?;
        let enrollment = totp::begin_enrollment(db, staff, &email).await?;
        Ok(TotpEnrollment {
            secret: enrollment.secret,
            otpauth_uri: enrollment.otpauth_uri,
            qr_code_svg: enrollment.qr_svg,
        })
    }

    /// Turns TOTP on with a first code; returns 10 single-use recovery codes (shown once).
    async fn confirm_totp_enrollment(&self, ctx: &Context<'_>, code: String) -> Result<Vec<String>> {
        let staff = person(context::staff(ctx)?)?;
        let codes = totp::confirm_enrollment(db(ctx)?, staff, &code).await?;
        audit_mfa(ctx, "mfa.enabled", staff).await?;
        Ok(codes)
    }

    /// Turns TOTP off. Requires the current password (a fresh sign-in).
    async fn disable_totp(&self, ctx: &Context<'_>, password: String) -> Result<bool> {
        let staff = person(context::staff(ctx)?)?;
        let db = db(ctx)?;
        let email = login::email_of(db, staff).await?.ok_or(AppError::Forbidden)?;
        if login::verify_password(db, &email, &password).await? != Some(staff) {
            return Err(AppError::bad_input("the password is incorrect").into());
        }
        totp::disable(db, staff).await?;
        audit_mfa(ctx, "mfa.disabled", staff).await?;
        Ok(true)
    }
}
