//! Invitations: how a person joins a venue. A venue names an email and the permissions to
//! give (only bits the inviter holds); venueql mails the person a one-time link (stored as
//! a hash). The venue's answer is the same whether or not the email has an account, and
//! the invitation grants nothing until the person accepts it: a new person by choosing
//! their own password, an existing one by signing in with theirs (and their second
//! factor). Accepting, declining and revoking are audited at the venue.
//!
//! These are the plain functions behind the hosted invitation page (`http::login::invitation`)
//! and the `addStaff` / `revokeInvitation` mutations.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::access::{Permissions, staff_actor};
use crate::audit::{self, Change, Who};
use crate::auth::breach::BreachCheck;
use crate::auth::lockout;
use crate::auth::{passwords, secrets};
use crate::config::LockoutLimits;
use crate::crypto::MasterKeys;
use crate::error::AppError;
use crate::mail::{self, Mail};
use crate::tenancy::{Db, VenueId, VenueTx};

/// Prefix of invitation link tokens.
pub const INVITATION_PREFIX: &str = "vqiv_";

/// A pending invitation as its venue sees it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Invitation {
    /// Invitation id.
    pub id: Uuid,
    /// The email invited.
    pub email: String,
    /// The permissions the membership will have.
    pub permissions: i64,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When its link stops working.
    pub expires_at: DateTime<Utc>,
}

/// Normalises an email (trimmed, lower-case) and checks its shape.
pub fn normalise_email(email: &str) -> Result<String, AppError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid { Ok(email) } else { Err(AppError::bad_input(format!("{email:?} is not a valid email address"))) }
}

const INVITATION_COLUMNS: &str = "id, email, permissions, created_at, expires_at";

/// The transaction venue's invitations still waiting for an answer, newest first.
pub async fn pending(tx: &mut VenueTx) -> Result<Vec<Invitation>, AppError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {INVITATION_COLUMNS} FROM staff_invitations \
         WHERE venue_id = $1 AND status = 'pending' AND expires_at > now() ORDER BY created_at DESC"
    ))
    .bind(tx.venue().as_uuid())
    .fetch_all(tx.conn())
    .await?)
}

/// What an invitation is for: who, which bits, how long the link works.
#[derive(Clone, Copy, Debug)]
pub struct NewInvitation<'a> {
    /// The email to invite.
    pub email: &'a str,
    /// The membership's permissions once accepted.
    pub permissions: Permissions,
    /// How long the link works (`INVITATION_TTL_HOURS`).
    pub ttl: Duration,
}

/// Invites `email` to the transaction's venue and queues the mail with its link, in the
/// caller's transaction. A pending invitation of the same email is replaced. The answer
/// never depends on whether the email has an account.
pub async fn invite(
    db: &Db,
    tx: &mut VenueTx,
    who: &Who,
    caller: Permissions,
    master: &MasterKeys,
    limits: LockoutLimits,
    new: NewInvitation<'_>,
) -> Result<Invitation, AppError> {
    Permissions::check_grantable(caller, Permissions::empty(), new.permissions).map_err(AppError::Refused)?;
    let email = normalise_email(new.email)?;
    let member: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM public.staff_of_current_venue() WHERE email = $1)")
            .bind(&email)
            .fetch_one(tx.conn())
            .await?;
    if member {
        return Err(AppError::bad_input("this person already works at this venue; use setStaffPermissions"));
    }
    // Each invitation mails the address: a venue may not flood someone's inbox.
    let sender = format!("{}:{email}", tx.venue());
    let mail_gate = lockout::Attempt::new(lockout::SecretKind::InvitationMail, &sender, None);
    if let lockout::Gate::Wait(wait) = lockout::begin(db, limits, mail_gate).await? {
        return Err(AppError::RateLimited {
            retry_after_secs: wait,
            message: format!("this email was invited too often; try again in {wait} seconds"),
        });
    }
    let replaced: Option<Uuid> = sqlx::query_scalar(
        "UPDATE staff_invitations SET status = 'revoked', decided_at = now() \
         WHERE venue_id = $1 AND email = $2 AND status = 'pending' RETURNING id",
    )
    .bind(tx.venue().as_uuid())
    .bind(&email)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(old) = replaced {
        sqlx::query("SELECT private.forget_invitation_token($1)").bind(old).execute(tx.conn()).await?;
    }
    let ttl = chrono::Duration::from_std(new.ttl).map_err(AppError::internal)?;
    let invitation: Invitation = sqlx::query_as(&format!(
        "INSERT INTO staff_invitations (venue_id, email, permissions, invited_by, expires_at) \
         VALUES ($1, $2, $3, $4, now() + $5) RETURNING {INVITATION_COLUMNS}"
    ))
    .bind(tx.venue().as_uuid())
    .bind(&email)
    .bind(new.permissions.to_db())
    .bind(&who.actor)
    .bind(ttl)
    .fetch_one(tx.conn())
    .await?;
    let token = secrets::new_secret(INVITATION_PREFIX);
    sqlx::query("SELECT private.store_invitation_token($1, $2, $3, $4)")
        .bind(secrets::hash(&token))
        .bind(invitation.id)
        .bind(&email)
        .bind(invitation.expires_at)
        .execute(tx.conn())
        .await?;
    let venue_name = crate::venues::current(tx).await?.name;
    let message = Mail::Invitation { token, venue_name, expires_at: invitation.expires_at };
    mail::enqueue(tx.conn(), master, &email, &message).await?;
    let after = json!({ "email": email, "permissions": new.permissions.names(), "expires_at": invitation.expires_at,
        "replaces": replaced });
    let change = Change {
        action: "staff.invited",
        target_type: "staff_invitation",
        target_id: invitation.id.to_string(),
        before: None,
        after: Some(after),
    };
    audit::record(tx, who, change).await?;
    Ok(invitation)
}

/// Revokes the pending invitations `inviter` (an audit actor) sent at the transaction's
/// venue that give bits outside `still_held` (all of them when it is empty): an invitation
/// may never grant more than its sender holds now. Returns how many were revoked.
pub async fn revoke_sent_by(
    tx: &mut VenueTx,
    who: &Who,
    inviter: &str,
    still_held: Permissions,
) -> Result<u64, AppError> {
    let revoked: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE staff_invitations SET status = 'revoked', decided_at = now() \
         WHERE venue_id = $1 AND invited_by = $2 AND status = 'pending' AND (permissions & ~$3::bigint) <> 0 \
         RETURNING id",
    )
    .bind(tx.venue().as_uuid())
    .bind(inviter)
    .bind(if still_held.is_empty() { 0 } else { still_held.to_db() })
    .fetch_all(tx.conn())
    .await?;
    for id in &revoked {
        sqlx::query("SELECT private.forget_invitation_token($1)").bind(id).execute(tx.conn()).await?;
        let change = Change {
            action: "staff.invitation_revoked",
            target_type: "staff_invitation",
            target_id: id.to_string(),
            before: Some(json!({ "status": "pending" })),
            after: Some(json!({ "status": "revoked", "reason": "the inviter no longer holds its permissions" })),
        };
        audit::record(tx, who, change).await?;
    }
    Ok(revoked.len() as u64)
}

/// Revokes a pending invitation of the transaction's venue (its link stops working).
pub async fn revoke(tx: &mut VenueTx, who: &Who, id: Uuid) -> Result<(), AppError> {
    let revoked: Option<String> = sqlx::query_scalar(
        "UPDATE staff_invitations SET status = 'revoked', decided_at = now() \
         WHERE venue_id = $1 AND id = $2 AND status = 'pending' RETURNING email",
    )
    .bind(tx.venue().as_uuid())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    let email = revoked.ok_or(AppError::NotFound("pending invitation"))?;
    sqlx::query("SELECT private.forget_invitation_token($1)").bind(id).execute(tx.conn()).await?;
    let change = Change {
        action: "staff.invitation_revoked",
        target_type: "staff_invitation",
        target_id: id.to_string(),
        before: Some(json!({ "email": email, "status": "pending" })),
        after: Some(json!({ "status": "revoked" })),
    };
    audit::record(tx, who, change).await
}

/// An invitation as its link shows it to the person invited.
#[derive(Clone, Debug)]
pub struct Opened {
    /// The venue inviting.
    pub venue: VenueId,
    /// Its display name.
    pub venue_name: String,
    /// The invitation.
    pub invitation: Uuid,
    /// The email invited (the person signs in with it).
    pub email: String,
    /// The person who already has an account under that email, if any.
    pub account: Option<Uuid>,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
}

/// The request an invitee acts through (for the audit rows).
#[derive(Clone, Debug)]
pub struct Through {
    /// The HTTP request id.
    pub request_id: String,
    /// The client address.
    pub ip: IpAddr,
}

impl Through {
    fn who(&self, actor: String) -> Who {
        Who { actor, request_id: Some(self.request_id.clone()), ip: Some(self.ip) }
    }
}

/// The pending invitation a link points to, in a transaction scoped to its venue (None
/// for an unknown, expired or already decided link).
async fn resolve(db: &Db, token: &str) -> Result<Option<(Opened, VenueTx)>, AppError> {
    if !secrets::looks_like(token, INVITATION_PREFIX) {
        return Ok(None);
    }
    let mut tx = db.resolving_tx().await?;
    let found: Option<(Uuid, Uuid, Option<Uuid>)> =
        sqlx::query_as("SELECT venue_id, invitation_id, staff_id FROM private.invitation_by_token($1)")
            .bind(secrets::hash(token))
            .fetch_optional(tx.conn())
            .await?;
    let Some((venue, invitation, account)) = found else { return Ok(None) };
    let mut tx = tx.into_venue(VenueId::from_credential(venue)).await?;
    let row: Option<(String, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT i.email, i.expires_at, v.name FROM staff_invitations i JOIN venues v ON v.id = i.venue_id \
         WHERE i.venue_id = $1 AND i.id = $2 AND i.status = 'pending' AND i.expires_at > now() FOR UPDATE OF i",
    )
    .bind(venue)
    .bind(invitation)
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.map(|(email, expires_at, venue_name)| {
        let opened =
            Opened { venue: VenueId::from_credential(venue), venue_name, invitation, email, account, expires_at };
        (opened, tx)
    }))
}

/// Reads the invitation behind a link (None when it is not live), under the link
/// lockout (per address).
pub async fn open(db: &Db, limits: LockoutLimits, token: &str, ip: IpAddr) -> Result<Option<Opened>, AppError> {
    let lookup = async {
        match resolve(db, token).await? {
            Some((opened, tx)) => {
                tx.commit().await?;
                Ok(Some(opened))
            }
            None => Ok(None),
        }
    };
    lockout::check_link(db, limits, ip, lookup).await
}

/// The link is no longer live (used, expired, revoked or unknown).
const GONE: AppError = AppError::NotFound("invitation (the link was used, revoked or has expired)");

/// Marks the invitation accepted by `staff`, creates the membership and forgets the link.
async fn accept(tx: &mut VenueTx, opened: &Opened, staff: Uuid, through: &Through) -> Result<(), AppError> {
    let permissions: i64 = sqlx::query_scalar(
        "UPDATE staff_invitations SET status = 'accepted', decided_at = now(), staff_id = $3 \
         WHERE venue_id = $1 AND id = $2 AND status = 'pending' RETURNING permissions",
    )
    .bind(opened.venue.as_uuid())
    .bind(opened.invitation)
    .bind(staff)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(GONE)?;
    sqlx::query("INSERT INTO memberships (venue_id, staff_id, permissions) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(opened.venue.as_uuid())
        .bind(staff)
        .bind(permissions)
        .execute(tx.conn())
        .await?;
    sqlx::query("SELECT private.forget_invitation_token($1)").bind(opened.invitation).execute(tx.conn()).await?;
    let change = Change {
        action: "staff.invitation_accepted",
        target_type: "staff_invitation",
        target_id: opened.invitation.to_string(),
        before: Some(json!({ "status": "pending" })),
        after: Some(json!({ "status": "accepted", "staff_id": staff,
            "permissions": Permissions::from_db(permissions).names() })),
    };
    audit::record(tx, &through.who(staff_actor(staff)), change).await
}

/// A new person accepts: they choose their password here (rules and breach check), which
/// creates their account; nobody else ever knew it.
pub async fn accept_as_new_person(
    db: &Db,
    breach: &BreachCheck,
    token: &str,
    password: &str,
    through: &Through,
) -> Result<(Opened, Uuid), AppError> {
    passwords::check_policy(password)?;
    breach.check(password).await?;
    let hash = passwords::hash_password(password)?;
    let (opened, mut tx) = resolve(db, token).await?.ok_or(GONE)?;
    if opened.account.is_some() {
        return Err(AppError::bad_input("this email already has an account: sign in with its password to accept"));
    }
    let staff: Uuid = sqlx::query_scalar("SELECT private.create_invited_staff($1, $2)")
        .bind(secrets::hash(token))
        .bind(hash)
        .fetch_one(tx.conn())
        .await?;
    accept(&mut tx, &opened, staff, through).await?;
    tx.commit().await?;
    Ok((opened, staff))
}

/// A person who already has an account accepts, having signed in with their own
/// credentials as `staff` (the caller checked them under the lockout).
pub async fn accept_as_member(db: &Db, token: &str, staff: Uuid, through: &Through) -> Result<Opened, AppError> {
    let (opened, mut tx) = resolve(db, token).await?.ok_or(GONE)?;
    if opened.account != Some(staff) {
        return Err(AppError::Refused("this invitation is for another email address".into()));
    }
    accept(&mut tx, &opened, staff, through).await?;
    tx.commit().await?;
    Ok(opened)
}

/// The person declines (holding the link is enough: it reached their inbox).
pub async fn decline(db: &Db, token: &str, through: &Through) -> Result<Opened, AppError> {
    let (opened, mut tx) = resolve(db, token).await?.ok_or(GONE)?;
    sqlx::query(
        "UPDATE staff_invitations SET status = 'declined', decided_at = now() \
         WHERE venue_id = $1 AND id = $2 AND status = 'pending'",
    )
    .bind(opened.venue.as_uuid())
    .bind(opened.invitation)
    .execute(tx.conn())
    .await?;
    sqlx::query("SELECT private.forget_invitation_token($1)").bind(opened.invitation).execute(tx.conn()).await?;
    // Holding the link is all a decline proves, and the venue must not learn from its
    // audit log whether the email has an account: the actor is the invitee, never a person.
    let actor = format!("invitee:{}", opened.invitation);
    let change = Change {
        action: "staff.invitation_declined",
        target_type: "staff_invitation",
        target_id: opened.invitation.to_string(),
        before: Some(json!({ "status": "pending" })),
        after: Some(json!({ "status": "declined" })),
    };
    audit::record(&mut tx, &through.who(actor), change).await?;
    tx.commit().await?;
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(normalise_email("  Chef@Example.COM ").unwrap(), "chef@example.com");
        for bad in ["", "chef", "@example.com", "chef@localhost", "chef @example.com"] {
            assert!(normalise_email(bad).is_err(), "{bad:?}");
        }
    }
}
