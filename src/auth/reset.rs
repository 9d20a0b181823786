//! A person's password after sign-up: changing it (with the current one; their other
//! sessions end) and resetting it by a mailed one-time link (30 minutes, single use;
//! completing it ends every session of the person at every venue). Asking for a link
//! answers the same whether or not the email has an account, and is limited per email
//! and per address so nobody floods an inbox.
//!
//! Plain functions behind the hosted reset page (`http::login::reset`), the `changePassword`
//! mutation and `venueql admin reset-password`.

use std::net::IpAddr;
use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::breach::BreachCheck;
use super::lockout::{self, Attempt, SecretKind};
use super::login::{self, Reauth};
use super::{passwords, secrets};
use crate::audit::{self, Change, Who};
use crate::config::LockoutLimits;
use crate::crypto::MasterKeys;
use crate::error::AppError;
use crate::mail::{self, Mail};
use crate::tenancy::{Db, VenueTx};

/// Prefix of password reset link tokens.
pub const RESET_PREFIX: &str = "vqpr_";
/// How long a reset link works.
pub const RESET_TTL: Duration = Duration::from_secs(30 * 60);

/// Creates a reset link for the account of `email`, if there is one, and queues its mail
/// in the caller's transaction. Returns the person (None: no account; nothing queued).
pub async fn create_link(conn: &mut PgConnection, master: &MasterKeys, email: &str) -> Result<Option<Uuid>, AppError> {
    let token = secrets::new_secret(RESET_PREFIX);
    let ttl = i32::try_from(RESET_TTL.as_secs()).unwrap_or(i32::MAX);
    let staff: Option<Uuid> = sqlx::query_scalar("SELECT private.create_password_reset($1, $2, $3)")
        .bind(email)
        .bind(secrets::hash(&token))
        .bind(ttl)
        .fetch_one(&mut *conn)
        .await?;
    if staff.is_some() {
        let expires_at = chrono::Utc::now() + chrono::Duration::seconds(i64::from(ttl));
        let recipient = email.trim().to_lowercase();
        mail::enqueue(conn, master, &recipient, &Mail::PasswordReset { token, expires_at }).await?;
    }
    Ok(staff)
}

/// How a reset request was answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Requested {
    /// "If an account exists, a link is on its way" (the same whether or not it does).
    Accepted,
    /// Too many requests for this email or from this address: retry after this many seconds.
    Locked(u32),
}

/// A request for a reset link.
#[derive(Clone, Copy, Debug)]
pub struct ResetRequest<'a> {
    /// The email typed.
    pub email: &'a str,
    /// The client's address.
    pub ip: IpAddr,
    /// The trusted-device id of the browser, when its cookie is genuine for this email.
    pub device: Option<&'a str>,
}

/// `POST /oauth/reset` with an email. Every request counts against the address and the
/// email (a browser holding a trusted-device cookie for the email counts only its own
/// requests, so strangers asking for someone's link cannot block that person's own
/// reset), whether or not the account exists. The answer comes before the work that
/// differs: the link, its mail and the security event are made by a task after the
/// answer, so neither the body nor the time says whether the account exists.
pub async fn request(
    db: &Db,
    limits: LockoutLimits,
    master: &std::sync::Arc<MasterKeys>,
    asked: ResetRequest<'_>,
) -> Result<Requested, AppError> {
    let email = asked.email.trim();
    if email.is_empty() || email.len() > 254 {
        return Err(AppError::bad_input("give the email address of your account"));
    }
    let attempt =
        Attempt { kind: SecretKind::ResetRequest, identifiers: vec![email], ip: Some(asked.ip), device: asked.device };
    if let lockout::Gate::Wait(wait) = lockout::begin(db, limits, attempt).await? {
        return Ok(Requested::Locked(wait));
    }
    let (db, master, email, ip) = (db.clone(), master.clone(), email.to_string(), asked.ip);
    tokio::spawn(async move {
        if let Err(error) = send_link(&db, &master, &email, ip).await {
            tracing::error!(error = %error.client_message(), "a requested reset link could not be made");
        }
    });
    Ok(Requested::Accepted)
}

/// Makes the link and queues its mail when the account exists (the part of a reset
/// request whose work depends on it).
async fn send_link(db: &Db, master: &MasterKeys, email: &str, ip: IpAddr) -> Result<(), AppError> {
    let mut tx = db.resolving_tx().await?;
    let staff = create_link(tx.conn(), master, email).await?;
    tx.commit().await?;
    if let Some(staff) = staff {
        security_event(db, "password_reset_requested", staff, ip).await?;
    }
    Ok(())
}

async fn security_event(db: &Db, kind: &str, staff: Uuid, ip: IpAddr) -> Result<(), AppError> {
    sqlx::query("SELECT private.record_security_event($1, NULL, $2::inet, $3)")
        .bind(kind)
        .bind(ip.to_string())
        .bind(serde_json::json!({ "staff_id": staff }))
        .execute(db.platform_level())
        .await?;
    Ok(())
}

/// A live reset link's person and email, checked under the link lockout.
async fn live_link(
    db: &Db,
    limits: LockoutLimits,
    token: &str,
    ip: IpAddr,
) -> Result<Option<(Uuid, String)>, AppError> {
    let lookup = async {
        if !secrets::looks_like(token, RESET_PREFIX) {
            return Ok(None);
        }
        Ok(sqlx::query_as("SELECT staff_id, email FROM private.password_reset_live($1)")
            .bind(secrets::hash(token))
            .fetch_optional(db.platform_level())
            .await?)
    };
    lockout::check_link(db, limits, ip, lookup).await
}

/// The email a live reset link is for (None: used, expired or unknown).
pub async fn open(db: &Db, limits: LockoutLimits, token: &str, ip: IpAddr) -> Result<Option<String>, AppError> {
    Ok(live_link(db, limits, token, ip).await?.map(|(_, email)| email))
}

/// Uses a live link: the new password (rules and breach check first, so a refused one
/// does not use up the link) replaces the old, and every session of the person ends.
pub async fn complete(
    db: &Db,
    limits: LockoutLimits,
    breach: &BreachCheck,
    token: &str,
    password: &str,
    ip: IpAddr,
) -> Result<Uuid, AppError> {
    let gone = || AppError::NotFound("reset link (it was used or has expired; ask for a new one)");
    live_link(db, limits, token, ip).await?.ok_or_else(gone)?;
    passwords::check_policy(password)?;
    breach.check(password).await?;
    let hash = passwords::hash_password(password)?;
    let staff: Option<Uuid> = sqlx::query_scalar("SELECT private.complete_password_reset($1, $2)")
        .bind(secrets::hash(token))
        .bind(hash)
        .fetch_one(db.platform_level())
        .await?;
    let staff = staff.ok_or_else(gone)?;
    security_event(db, "password_reset", staff, ip).await?;
    Ok(staff)
}

/// A signed-in person changing their own password.
#[derive(Clone, Debug)]
pub struct PasswordChange<'a> {
    /// The person.
    pub staff: Uuid,
    /// The session making the change (it keeps going; every other one ends).
    pub session: Option<Uuid>,
    /// Their current password (checked under the lockout).
    pub current: &'a str,
    /// The new password.
    pub new: &'a str,
    /// The client address.
    pub ip: IpAddr,
}

/// Changes a person's password: the current one checked like a sign-in, the new one
/// against the rules and the breach corpus; their other sessions end at every venue.
/// Audited at the transaction's venue (`staff.password_changed`, no secret in it).
#[allow(clippy::too_many_arguments)]
pub async fn change_password(
    db: &Db,
    tx: &mut VenueTx,
    who: &Who,
    limits: LockoutLimits,
    breach: &BreachCheck,
    master: &MasterKeys,
    change: PasswordChange<'_>,
) -> Result<(), AppError> {
    let proof = Reauth::Password(change.current.to_string());
    login::reauthenticate(db, limits, master, change.staff, &proof, change.ip, change.session).await?;
    if change.new == change.current {
        return Err(AppError::bad_input("the new password must differ from the current one"));
    }
    passwords::check_policy(change.new)?;
    breach.check(change.new).await?;
    let hash = passwords::hash_password(change.new)?;
    sqlx::query("SELECT private.change_staff_password($1, $2, $3)")
        .bind(change.staff)
        .bind(hash)
        .bind(change.session)
        .execute(tx.conn())
        .await?;
    let record = Change {
        action: "staff.password_changed",
        target_type: "staff",
        target_id: change.staff.to_string(),
        before: None,
        after: Some(serde_json::json!({ "other_sessions_ended": true })),
    };
    audit::record(tx, who, record).await
}
