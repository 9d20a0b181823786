//! Staff identities (platform-level), their memberships at venues (tenant), and
//! invitations (`invitations`): how a person joins a venue.

pub mod graphql;
pub mod invitations;

use serde::Serialize;
use uuid::Uuid;

use crate::access::Permissions;
use crate::audit::alerts::AlertKind;
use crate::audit::{self, Change, Who};
use crate::auth::breach::BreachCheck;
use crate::auth::passwords;
use crate::error::AppError;
use crate::tenancy::{PlatformTx, VenueTx};

/// A staff identity.
#[derive(Clone, Debug, Serialize)]
pub struct Staff {
    /// Staff id.
    pub id: Uuid,
    /// Normalised (lower-case) email.
    pub email: String,
}

use crate::staff::invitations::normalise_email;

/// Creates a staff identity with an Argon2id password hash (stored in the private schema),
/// after the password rules and the breached-password check. Operators only (`venueql
/// admin create-staff` and the dev seed): the one place an initial password is set by
/// someone else; everyone else joins through an invitation and chooses their own.
pub async fn create(tx: &mut PlatformTx, email: &str, password: &str, breach: &BreachCheck) -> Result<Staff, AppError> {
    let email = normalise_email(email)?;
    passwords::check_policy(password)?;
    breach.check(password).await?;
    let hash = passwords::hash_password(password)?;
    let id: Uuid = sqlx::query_scalar("INSERT INTO staff (email) VALUES ($1) RETURNING id")
        .bind(&email)
        .fetch_one(tx.conn())
        .await?;
    sqlx::query("SELECT private.set_staff_password($1, $2)").bind(id).bind(hash).execute(tx.conn()).await?;
    Ok(Staff { id, email })
}

/// Finds a staff identity by email (operator commands).
pub async fn find_by_email(tx: &mut PlatformTx, email: &str) -> Result<Staff, AppError> {
    let email = normalise_email(email)?;
    let id: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM staff WHERE email = $1").bind(&email).fetch_optional(tx.conn()).await?;
    id.map(|id| Staff { id, email: email.clone() })
        .ok_or_else(|| AppError::bad_input(format!("no staff member with email {email:?}")))
}

/// Sets a staff member's permissions at the transaction's venue (creating the membership),
/// with an audit row.
pub async fn grant(tx: &mut VenueTx, who: &Who, staff: &Staff, permissions: Permissions) -> Result<(), AppError> {
    let before: Option<i64> = sqlx::query_scalar("SELECT permissions FROM memberships WHERE staff_id = $1")
        .bind(staff.id)
        .fetch_optional(tx.conn())
        .await?;
    sqlx::query(
        "INSERT INTO memberships (venue_id, staff_id, permissions) VALUES ($1, $2, $3) \
         ON CONFLICT (venue_id, staff_id) DO UPDATE SET permissions = EXCLUDED.permissions",
    )
    .bind(tx.venue().as_uuid())
    .bind(staff.id)
    .bind(permissions.to_db())
    .execute(tx.conn())
    .await?;
    let held = before.map(Permissions::from_db).unwrap_or_else(Permissions::empty);
    audit::record_as(
        tx,
        who,
        elevation(held, permissions),
        Change {
            action: "membership.granted",
            target_type: "staff",
            target_id: staff.id.to_string(),
            before: before.map(|bits| serde_json::json!({ "permissions": Permissions::from_db(bits).names() })),
            after: Some(serde_json::json!({ "permissions": permissions.names() })),
        },
    )
    .await
}

/// A staff member as their venue sees them.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Colleague {
    /// Staff id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
}

/// A staff member of the transaction's venue (None when they do not belong to it).
pub async fn at_current_venue(tx: &mut VenueTx, staff: Uuid) -> Result<Option<Colleague>, AppError> {
    Ok(sqlx::query_as("SELECT id, email, display_name FROM public.staff_of_current_venue() WHERE id = $1")
        .bind(staff)
        .fetch_optional(tx.conn())
        .await?)
}

/// A member of the transaction's venue with their permissions there.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Member {
    /// Staff id.
    pub id: Uuid,
    /// Email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Permission bits at this venue.
    pub permissions: i64,
}

const MEMBER_QUERY: &str = "SELECT s.id, s.email, s.display_name, m.permissions FROM public.staff_of_current_venue() s \
     JOIN memberships m ON m.venue_id = $1 AND m.staff_id = s.id";

/// Everyone who works at the transaction's venue.
pub async fn members(tx: &mut VenueTx) -> Result<Vec<Member>, AppError> {
    Ok(sqlx::query_as(&format!("{MEMBER_QUERY} ORDER BY s.email"))
        .bind(tx.venue().as_uuid())
        .fetch_all(tx.conn())
        .await?)
}

async fn member(tx: &mut VenueTx, staff: Uuid) -> Result<Member, AppError> {
    sqlx::query_as(&format!("{MEMBER_QUERY} WHERE s.id = $2"))
        .bind(tx.venue().as_uuid())
        .bind(staff)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(AppError::NotFound("staff member"))
}

/// Refuses to leave the venue without a STAFF_MANAGE holder. Locks the holders' rows so
/// two managers cannot remove each other at once.
async fn keep_a_manager(tx: &mut VenueTx, target: Uuid, keeps_manage: bool) -> Result<(), AppError> {
    let holders: Vec<Uuid> = sqlx::query_scalar(
        "SELECT staff_id FROM memberships WHERE venue_id = $1 AND (permissions & $2) <> 0 FOR UPDATE",
    )
    .bind(tx.venue().as_uuid())
    .bind(Permissions::STAFF_MANAGE.to_db())
    .fetch_all(tx.conn())
    .await?;
    if !keeps_manage && holders.iter().all(|h| *h == target) && holders.contains(&target) {
        return Err(AppError::Refused("the last member with STAFF_MANAGE cannot be removed or lose it".into()));
    }
    Ok(())
}

fn member_json(member: &Member) -> serde_json::Value {
    serde_json::json!({ "email": member.email, "permissions": Permissions::from_db(member.permissions).names() })
}

/// Replaces a member's permissions; the caller may only add or remove bits they hold.
pub async fn set_permissions(
    tx: &mut VenueTx,
    who: &Who,
    caller: Permissions,
    staff: Uuid,
    permissions: Permissions,
) -> Result<Member, AppError> {
    let before = member(tx, staff).await?;
    Permissions::check_grantable(caller, Permissions::from_db(before.permissions), permissions)
        .map_err(AppError::Refused)?;
    keep_a_manager(tx, staff, permissions.contains(Permissions::STAFF_MANAGE)).await?;
    sqlx::query("UPDATE memberships SET permissions = $3 WHERE venue_id = $1 AND staff_id = $2")
        .bind(tx.venue().as_uuid())
        .bind(staff)
        .bind(permissions.to_db())
        .execute(tx.conn())
        .await?;
    let after = member(tx, staff).await?;
    crate::staff::invitations::revoke_sent_by(tx, who, &crate::access::staff_actor(staff), permissions).await?;
    let change = Change {
        action: "staff.permissions_set",
        target_type: "staff",
        target_id: staff.to_string(),
        before: Some(member_json(&before)),
        after: Some(member_json(&after)),
    };
    let gained = elevation(Permissions::from_db(before.permissions), Permissions::from_db(after.permissions));
    audit::record_as(tx, who, gained, change).await?;
    Ok(after)
}

/// An elevated grant (critical, alerted): permissions that manage staff, money, settings
/// or credentials which the person did not hold before.
fn elevation(before: Permissions, after: Permissions) -> Option<AlertKind> {
    let gained = (after & crate::access::ELEVATED).difference(before);
    (!gained.is_empty()).then_some(AlertKind::ElevatedGrant)
}

/// Removes a member from the venue and ends their sessions there. Refused for someone
/// holding bits the caller lacks, and for the last STAFF_MANAGE holder.
pub async fn remove(tx: &mut VenueTx, who: &Who, caller: Permissions, staff: Uuid) -> Result<(), AppError> {
    let before = member(tx, staff).await?;
    Permissions::check_grantable(caller, Permissions::from_db(before.permissions), Permissions::empty())
        .map_err(AppError::Refused)?;
    keep_a_manager(tx, staff, false).await?;
    sqlx::query("DELETE FROM memberships WHERE venue_id = $1 AND staff_id = $2")
        .bind(tx.venue().as_uuid())
        .bind(staff)
        .execute(tx.conn())
        .await?;
    crate::auth::sessions::end_sessions_at_venue(tx, staff, "staff_removed").await?;
    crate::staff::invitations::revoke_sent_by(tx, who, &crate::access::staff_actor(staff), Permissions::empty())
        .await?;
    let change = Change {
        action: "staff.removed",
        target_type: "staff",
        target_id: staff.to_string(),
        before: Some(member_json(&before)),
        after: None,
    };
    audit::record(tx, who, change).await
}
