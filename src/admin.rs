//! Operator commands (`venueql admin …`): each goes through the cross-tenant door with a
//! reason, and writes the venue's own audit row for what it changed. The command line,
//! `venueql dev`'s seeding and the tests all call these same functions.

use serde::Serialize;
use uuid::Uuid;

use crate::access::Permissions;
use crate::audit::{self, Change, Who};
use crate::auth::breach::BreachCheck;
use crate::auth::{api_tokens, clients};
use crate::error::AppError;
use crate::staff;
use crate::tenancy::{CrossTenantDoor, VenueId};
use crate::venues::{self, Venue};

/// The operator name recorded as the actor of admin commands: `operator:$USER`.
pub fn operator_actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("operator:{user}")
}

/// Output of `admin issue-token`.
#[derive(Debug, Serialize)]
pub struct IssuedTokenOut {
    /// Token id, for revocation.
    pub token_id: Uuid,
    /// The bearer token (shown once).
    pub token: String,
    /// Venue slug the token is bound to.
    pub venue: String,
    /// Permission names the token holds.
    pub permissions: Vec<&'static str>,
}

/// `admin create-venue`.
pub async fn create_venue(
    door: &CrossTenantDoor,
    actor: &str,
    slug: &str,
    name: &str,
    currency: &str,
) -> Result<Venue, AppError> {
    let mut tx = door.open_cross_tenant(actor, "admin create-venue").await?;
    let venue = venues::insert(&mut tx, slug, name, currency).await?;
    let mut tx = tx.into_venue(venue.venue_id()).await?;
    let after = serde_json::to_value(&venue).map_err(AppError::internal)?;
    let change = Change {
        action: "venue.created",
        target_type: "venue",
        target_id: venue.id.to_string(),
        before: None,
        after: Some(after),
    };
    audit::record(&mut tx, &Who::operator(actor), change).await?;
    tx.commit().await?;
    Ok(venue)
}

/// `admin create-staff`.
pub async fn create_staff(
    door: &CrossTenantDoor,
    actor: &str,
    email: &str,
    password: &str,
    breach: &BreachCheck,
) -> Result<staff::Staff, AppError> {
    let mut tx = door.open_cross_tenant(actor, "admin create-staff").await?;
    let created = staff::create(&mut tx, email, password, breach).await?;
    tx.commit().await?;
    Ok(created)
}

/// `admin grant`: sets a staff member's permissions at a venue.
pub async fn grant(
    door: &CrossTenantDoor,
    actor: &str,
    venue_slug: &str,
    email: &str,
    permissions: Permissions,
) -> Result<(), AppError> {
    let mut tx = door.open_cross_tenant(actor, "admin grant").await?;
    let venue = venues::find_by_slug_platform(&mut tx, venue_slug).await?;
    let member = staff::find_by_email(&mut tx, email).await?;
    let mut tx = tx.into_venue(venue.venue_id()).await?;
    staff::grant(&mut tx, &Who::operator(actor), &member, permissions).await?;
    tx.commit().await?;
    Ok(())
}

/// `admin issue-token`.
pub async fn issue_token(
    door: &CrossTenantDoor,
    actor: &str,
    venue_slug: &str,
    name: &str,
    permissions: Permissions,
) -> Result<IssuedTokenOut, AppError> {
    use secrecy::ExposeSecret;
    let mut tx = door.open_cross_tenant(actor, "admin issue-token").await?;
    let venue = venues::find_by_slug_platform(&mut tx, venue_slug).await?;
    let mut tx = tx.into_venue(venue.venue_id()).await?;
    let issued = api_tokens::issue(&mut tx, &Who::operator(actor), name, permissions).await?;
    tx.commit().await?;
    Ok(IssuedTokenOut {
        token_id: issued.token_id,
        token: issued.token.expose_secret().to_string(),
        venue: venue.slug,
        permissions: permissions.names(),
    })
}

/// `admin revoke-token`.
pub async fn revoke_token(
    door: &CrossTenantDoor,
    actor: &str,
    venue_slug: &str,
    token_id: Uuid,
) -> Result<(), AppError> {
    let mut tx = door.open_cross_tenant(actor, "admin revoke-token").await?;
    let venue = venues::find_by_slug_platform(&mut tx, venue_slug).await?;
    let mut tx = tx.into_venue(venue.venue_id()).await?;
    api_tokens::revoke(&mut tx, &Who::operator(actor), token_id).await?;
    tx.commit().await?;
    Ok(())
}

/// The id of the venue with `slug` (through the door, recording why).
pub async fn venue_id(door: &CrossTenantDoor, actor: &str, slug: &str, reason: &str) -> Result<VenueId, AppError> {
    let mut tx = door.open_cross_tenant(actor, reason).await?;
    let venue = venues::find_by_slug_platform(&mut tx, slug).await?;
    tx.commit().await?;
    Ok(venue.venue_id())
}

/// `admin offboard-venue`: destroys the venue's data keys (crypto-shredding its diners'
/// health data) and records it in the venue's audit log.
pub async fn offboard_venue(door: &CrossTenantDoor, actor: &str, slug: &str) -> Result<u64, AppError> {
    let venue = venue_id(door, actor, slug, "admin offboard-venue").await?;
    crate::keys::shred_venue(door, actor, venue).await
}

/// `admin reset-password`: mails the person a password reset link (through the outbox: a
/// running server delivers it). Recorded in the platform audit with the person's id.
pub async fn reset_password(
    door: &CrossTenantDoor,
    actor: &str,
    email: &str,
    master: &crate::crypto::MasterKeys,
) -> Result<uuid::Uuid, AppError> {
    let mut tx = door.open_cross_tenant(actor, "admin reset-password").await?;
    let person = staff::find_by_email(&mut tx, email).await?;
    tx.note(&format!("reset link sent to staff {}", person.id)).await?;
    crate::auth::reset::create_link(tx.conn(), master, &person.email).await?;
    tx.commit().await?;
    Ok(person.id)
}

/// `admin reset-mfa`: removes the person's TOTP and recovery codes (they lost their
/// authenticator) and ends their sessions. Recorded in the platform audit.
pub async fn reset_mfa(door: &CrossTenantDoor, actor: &str, email: &str) -> Result<uuid::Uuid, AppError> {
    let mut tx = door.open_cross_tenant(actor, "admin reset-mfa").await?;
    let person = staff::find_by_email(&mut tx, email).await?;
    tx.note(&format!("two-factor authentication removed and sessions ended for staff {}", person.id)).await?;
    sqlx::query("SELECT private.disable_totp($1)").bind(person.id).execute(tx.conn()).await?;
    sqlx::query("SELECT private.cut_off_sessions($1, NULL)").bind(person.id).execute(tx.conn()).await?;
    tx.commit().await?;
    Ok(person.id)
}

/// `admin create-client`: registers an OAuth client (SPA: public, any venue of its person
/// unless `venue_slug` binds it to one; integration and POS: confidential, bound to
/// `venue_slug`).
pub async fn create_client(
    door: &CrossTenantDoor,
    actor: &str,
    new: &clients::NewClient<'_>,
    venue_slug: Option<&str>,
) -> Result<clients::CreatedClient, AppError> {
    let mut tx = door.open_cross_tenant(actor, "admin create-client").await?;
    let venue = match venue_slug {
        Some(slug) => Some(venues::find_by_slug_platform(&mut tx, slug).await?),
        None => None,
    };
    let created = clients::create_client(&mut tx, new, venue.as_ref()).await?;
    match venue {
        Some(venue) => {
            let mut tx = tx.into_venue(venue.venue_id()).await?;
            let after = serde_json::json!({ "client_id": created.client_id, "kind": created.kind, "name": created.name,
                "permissions": created.permissions, "redirect_uris": created.redirect_uris,
                "allowed_origins": created.allowed_origins });
            let change = Change {
                action: "oauth_client.created",
                target_type: "oauth_client",
                target_id: created.client_id.clone(),
                before: None,
                after: Some(after),
            };
            audit::record(&mut tx, &Who::operator(actor), change).await?;
            tx.commit().await?;
        }
        None => tx.commit().await?,
    }
    Ok(created)
}

/// `admin update-client`: replaces an SPA client's redirect URIs and web origins.
pub async fn update_client(
    door: &CrossTenantDoor,
    actor: &str,
    client_id: &str,
    redirect_uris: &[String],
    allowed_origins: &[String],
) -> Result<clients::UpdatedClient, AppError> {
    let mut tx = door.open_cross_tenant(actor, "admin update-client").await?;
    let updated = clients::update_spa_client(&mut tx, client_id, redirect_uris, allowed_origins).await?;
    tx.note(&format!(
        "spa client {client_id}: redirect URIs {:?}, origins {:?}",
        updated.redirect_uris, updated.allowed_origins
    ))
    .await?;
    tx.commit().await?;
    Ok(updated)
}
