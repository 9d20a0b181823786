//! Staff management in GraphQL: list (STAFF_VIEW); add, set permissions, remove
//! (STAFF_MANAGE). Nobody grants or removes bits they do not hold.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};

use super::Member;
use crate::auth::breach::BreachCheck;
use crate::auth::{Permission, Permissions};
use crate::error::AppError;
use crate::graphql::context::{commit, staff_tx};
use crate::graphql::guard::Requires;
use crate::menu::graphql::parse_id;

/// A person working at the venue.
#[derive(SimpleObject)]
pub struct StaffMember {
    /// Staff id.
    id: ID,
    /// Email.
    email: String,
    /// Display name (may be empty).
    display_name: String,
    /// Permissions at this venue.
    permissions: Vec<Permission>,
}

impl From<Member> for StaffMember {
    fn from(m: Member) -> StaffMember {
        StaffMember {
            id: m.id.into(),
            email: m.email,
            display_name: m.display_name,
            permissions: Permission::list(Permissions::from_db(m.permissions)),
        }
    }
}

/// Input of `addStaff`.
#[derive(InputObject)]
pub struct AddStaffInput {
    /// The person's email.
    email: String,
    /// Initial password, required when the person has no account yet (at least 12
    /// characters with upper and lower case, a digit and a symbol; not breached).
    password: Option<String>,
    /// Their permissions here (only bits the caller holds).
    permissions: Vec<Permission>,
}

/// Staff queries.
#[derive(Default)]
pub struct StaffMembersQuery;

#[Object]
impl StaffMembersQuery {
    /// Everyone who works at the venue. Requires STAFF_VIEW.
    #[graphql(guard = "Requires(Permissions::STAFF_VIEW)")]
    async fn staff(&self, ctx: &Context<'_>) -> Result<Vec<StaffMember>> {
        let (_, mut tx) = staff_tx(ctx).await?;
        let members = super::members(&mut tx).await?;
        commit(tx).await?;
        Ok(members.into_iter().map(StaffMember::from).collect())
    }
}

/// Staff mutations; each writes an audit event.
#[derive(Default)]
pub struct StaffMembersMutation;

#[Object]
impl StaffMembersMutation {
    /// Adds a person to the venue. Requires STAFF_MANAGE.
    #[graphql(guard = "Requires(Permissions::STAFF_MANAGE)")]
    async fn add_staff(&self, ctx: &Context<'_>, input: AddStaffInput) -> Result<StaffMember> {
        let breach = ctx.data::<BreachCheck>().map_err(|_| AppError::internal("no breach check configured"))?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        let wanted = Permission::set(&input.permissions);
        let added = super::add(
            &mut tx,
            &caller.who(),
            caller.permissions,
            &input.email,
            input.password.as_deref(),
            wanted,
            breach,
        )
        .await?;
        commit(tx).await?;
        Ok(added.into())
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

    /// Sets a cashier PIN (4-8 digits) for the POS terminals of this venue: the caller's own
    /// (omit `staffId`), or anyone's with STAFF_MANAGE. The PIN is never readable.
    async fn set_staff_pin(&self, ctx: &Context<'_>, staff_id: Option<ID>, pin: String) -> Result<bool> {
        let (caller, mut tx) = staff_tx(ctx).await?;
        let own = caller.principal.staff_id();
        let target = match &staff_id {
            Some(id) => parse_id(id, "staffId")?,
            None => own.ok_or(AppError::Refused("only a person can set their own PIN; name the staffId".into()))?,
        };
        if Some(target) != own && !caller.permissions.contains(Permissions::STAFF_MANAGE) {
            return Err(AppError::Forbidden.into());
        }
        crate::auth::pins::set(&mut tx, &caller.who(), target, &pin).await?;
        commit(tx).await?;
        Ok(true)
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
