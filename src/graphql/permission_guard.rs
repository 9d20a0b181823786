//! `#[graphql(guard = "Requires(Permissions::X)")]`: every staff field and mutation
//! declares the permission bits it needs; the guard runs before the resolver.

use async_graphql::{Context, Guard, Result};

use super::context;
use crate::access::Permissions;
use crate::error::AppError;

/// Requires all of the given permission bits at the caller's venue.
pub struct Requires(pub Permissions);

impl Guard for Requires {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let staff = context::staff(ctx)?;
        if staff.permissions.contains(self.0) { Ok(()) } else { Err(AppError::Forbidden.into()) }
    }
}

/// Requires at least one of the given permission bits (fields several roles may read).
pub struct RequiresAny(pub Permissions);

impl Guard for RequiresAny {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let staff = context::staff(ctx)?;
        if staff.permissions.intersects(self.0) { Ok(()) } else { Err(AppError::Forbidden.into()) }
    }
}
