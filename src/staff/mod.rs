//! Staff identities (platform-level) and their memberships at venues (tenant).

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Change, Who};
use crate::auth::breach::BreachCheck;
use crate::auth::{Permissions, passwords};
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

fn normalise_email(email: &str) -> Result<String, AppError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid { Ok(email) } else { Err(AppError::bad_input(format!("{email:?} is not a valid email address"))) }
}

/// Creates a staff identity with an Argon2id password hash (stored in the private schema),
/// after the password rules and the breached-password check.
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
    audit::record(
        tx,
        who,
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
