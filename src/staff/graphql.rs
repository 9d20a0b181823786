//! Staff management in GraphQL: list (STAFF_VIEW); invite, set permissions, remove,
//! revoke an invitation (STAFF_MANAGE); cashier PINs; and `me` (who the caller is, at
//! which venue, with which permissions). Nobody grants, removes or sets a credential for
//! bits they do not hold, and no venue sets or learns a password.

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::Member;
use crate::access::{Permission, Permissions};
use crate::auth::graphql::{ReauthInput, step_up};
use crate::auth::pins::{self, PinTarget};
use crate::error::AppError;
use crate::graphql::context::{self, RequestCtx, commit, staff_tx};
use crate::graphql::parse_id;
use crate::graphql::permission_guard::Requires;
use crate::staff::invitations::{self, Invitation, NewInvitation};

/// Where a person stands with the venue.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaffStatus {
    /// A member: works here with these permissions.
    Active,
    /// Invited and not yet answered: holds nothing until they accept.
    Invited,
}

/// A person working at the venue, or invited to.
#[derive(SimpleObject)]
pub struct StaffMember {
    /// Staff id (ACTIVE), or the invitation's id (INVITED; revoke it with `revokeInvitation`).
    id: ID,
    /// Email.
    email: String,
    /// Display name (may be empty; empty for invitations).
    display_name: String,
    /// Permissions at this venue (for an invitation: once accepted).
    permissions: Vec<Permission>,
    /// Member or invited.
    status: StaffStatus,
    /// When an invitation's link stops working (null for members).
    invitation_expires_at: Option<DateTime<Utc>>,
}

impl From<Member> for StaffMember {
    fn from(m: Member) -> StaffMember {
        StaffMember {
            id: m.id.into(),
            email: m.email,
            display_name: m.display_name,
            permissions: Permission::list(Permissions::from_db(m.permissions)),
            status: StaffStatus::Active,
            invitation_expires_at: None,
        }
    }
}

impl From<Invitation> for StaffMember {
    fn from(i: Invitation) -> StaffMember {
        StaffMember {
            id: i.id.into(),
            email: i.email,
            display_name: String::new(),
            permissions: Permission::list(Permissions::from_db(i.permissions)),
            status: StaffStatus::Invited,
            invitation_expires_at: Some(i.expires_at),
        }
    }
}

/// Input of `addStaff`.
#[derive(InputObject)]
pub struct AddStaffInput {
    /// The person's email: they get a one-time link to accept (new people choose their own
    /// password there; people with an account sign in with theirs).
    email: String,
    /// Their permissions here once they accept (only bits the caller holds).
    permissions: Vec<Permission>,
}

/// Staff queries.
#[derive(Default)]
pub struct StaffMembersQuery;

#[Object]
impl StaffMembersQuery {
    /// Everyone who works at the venue, then pending invitations (newest first).
    /// Requires STAFF_VIEW.
    #[graphql(guard = "Requires(Permissions::STAFF_VIEW)")]
    async fn staff(&self, ctx: &Context<'_>) -> Result<Vec<StaffMember>> {
        let (_, mut tx) = staff_tx(ctx).await?;
        let members = super::members(&mut tx).await?;
        let invited = invitations::pending(&mut tx).await?;
        commit(tx).await?;
        Ok(members.into_iter().map(StaffMember::from).chain(invited.into_iter().map(StaffMember::from)).collect())
    }
}

/// Whose PIN a mutation changes: the caller's own (after re-authenticating) or, with
/// STAFF_MANAGE, another member's whose every bit the caller holds.
async fn pin_target(
    ctx: &Context<'_>,
    caller: &RequestCtx,
    staff_id: Option<&ID>,
    reauth: Option<&ReauthInput>,
) -> Result<PinTarget, AppError> {
    let own = caller.principal()?.staff_id();
    let target = match staff_id {
        Some(id) => parse_id(id, "staffId")?,
        None => own.ok_or(AppError::Refused("only a person has a PIN of their own; name the staffId".into()))?,
    };
    if Some(target) == own {
        step_up(ctx, target, reauth).await?;
        return Ok(PinTarget::Own(target));
    }
    if !caller.permissions.contains(Permissions::STAFF_MANAGE) {
        return Err(AppError::Forbidden);
    }
    Ok(PinTarget::Other { staff: target, caller: caller.permissions })
}

/// Staff mutations; each writes an audit event.
#[derive(Default)]
pub struct StaffMembersMutation;

#[Object]
impl StaffMembersMutation {
    /// Invites a person to the venue: they get a one-time link by email and hold nothing
    /// here until they accept it with their own credentials. The answer is the same
    /// whether or not the email has an account. Inviting an email again replaces its
    /// pending invitation. Requires STAFF_MANAGE.
    #[graphql(guard = "Requires(Permissions::STAFF_MANAGE)")]
    async fn add_staff(&self, ctx: &Context<'_>, input: AddStaffInput) -> Result<StaffMember> {
        let config = context::config(ctx)?;
        let master = config.keys.master()?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        let new = NewInvitation {
            email: &input.email,
            permissions: Permission::set(&input.permissions),
            ttl: config.invitation_ttl,
        };
        let who = caller.who();
        let db = context::db(ctx)?;
        let invitation =
            invitations::invite(db, &mut tx, &who, caller.permissions, master, config.lockout, new).await?;
        commit(tx).await?;
        Ok(invitation.into())
    }

    /// Revokes a pending invitation; its link stops working. Requires STAFF_MANAGE.
    #[graphql(guard = "Requires(Permissions::STAFF_MANAGE)")]
    async fn revoke_invitation(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let invitation = parse_id(&id, "id")?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        invitations::revoke(&mut tx, &caller.who(), invitation).await?;
        commit(tx).await?;
        Ok(id)
    }

    /// Replaces a member's permissions. Requires STAFF_MANAGE.
    #[graphql(guard = "Requires(Permissions::STAFF_MANAGE)")]
    async fn set_staff_permissions(
        &self,
        ctx: &Context<'_>,
        staff_id: ID,
        permissions: Vec<Permission>,
    ) -> Result<StaffMember> {
        let staff = parse_id(&staff_id, "staffId")?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        let member =
            super::set_permissions(&mut tx, &caller.who(), caller.permissions, staff, Permission::set(&permissions))
                .await?;
        commit(tx).await?;
        Ok(member.into())
    }

    /// Sets a cashier PIN (4-8 digits) for this venue's POS terminals. Your own (omit
    /// `staffId`): needs `reauth` (your current password or a code). Someone else's: needs
    /// STAFF_MANAGE and every permission they hold. The PIN is never readable.
    async fn set_staff_pin(
        &self,
        ctx: &Context<'_>,
        staff_id: Option<ID>,
        pin: String,
        reauth: Option<ReauthInput>,
    ) -> Result<bool> {
        let caller = context::staff(ctx)?;
        let target = pin_target(ctx, caller, staff_id.as_ref(), reauth.as_ref()).await?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        pins::set(&mut tx, &caller.who(), target, &pin).await?;
        commit(tx).await?;
        Ok(true)
    }

    /// Clears a cashier PIN, under the same rules as `setStaffPin`; false when there was
    /// none.
    async fn clear_staff_pin(
        &self,
        ctx: &Context<'_>,
        staff_id: Option<ID>,
        reauth: Option<ReauthInput>,
    ) -> Result<bool> {
        let caller = context::staff(ctx)?;
        let target = pin_target(ctx, caller, staff_id.as_ref(), reauth.as_ref()).await?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        let cleared = pins::clear(&mut tx, &caller.who(), target).await?;
        commit(tx).await?;
        Ok(cleared)
    }

    /// Removes a member from the venue and ends their sessions here; returns their id.
    /// Requires STAFF_MANAGE.
    #[graphql(guard = "Requires(Permissions::STAFF_MANAGE)")]
    async fn remove_staff(&self, ctx: &Context<'_>, staff_id: ID) -> Result<ID> {
        let staff = parse_id(&staff_id, "staffId")?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        super::remove(&mut tx, &caller.who(), caller.permissions, staff).await?;
        commit(tx).await?;
        Ok(staff_id)
    }
}

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
        let venue = crate::venues::current(&mut tx).await?;
        let person = match caller.principal()?.staff_id() {
            Some(id) => super::at_current_venue(&mut tx, id).await?,
            None => None,
        };
        commit(tx).await?;
        Ok(Me {
            venue: MeVenue { id: venue.id.into(), slug: venue.slug, name: venue.name, currency: venue.currency },
            person: person.map(|p| Person { id: p.id.into(), email: p.email, display_name: p.display_name }),
            permissions: caller.permissions.names().into_iter().map(String::from).collect(),
            actor: caller.principal()?.actor(),
        })
    }
}
