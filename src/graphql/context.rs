//! Per-request context attached by the HTTP handler: who is calling, at which venue,
//! with which permissions, through which request.

use std::net::IpAddr;

use async_graphql::Context;

use crate::audit::Who;
use crate::auth::{Permissions, Principal};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};
use crate::venues::Venue;

/// Context of an authenticated staff/integration request (`POST /graphql`).
#[derive(Clone, Debug)]
pub struct StaffCtx {
    /// The venue the credential is bound to (authoritative).
    pub venue: VenueId,
    /// Who is calling.
    pub principal: Principal,
    /// What they may do at that venue.
    pub permissions: Permissions,
    /// The HTTP request id.
    pub request_id: String,
    /// The client address.
    pub ip: Option<IpAddr>,
}

impl StaffCtx {
    /// The context of an authenticated caller at address `client`, for request `request_id`.
    pub fn new(caller: crate::auth::Caller, request_id: String, client: IpAddr) -> StaffCtx {
        StaffCtx {
            venue: caller.venue,
            principal: caller.principal,
            permissions: caller.permissions,
            request_id,
            ip: Some(client),
        }
    }

    /// The audit identity of this request.
    pub fn who(&self) -> Who {
        Who { actor: self.principal.actor(), request_id: Some(self.request_id.clone()), ip: self.ip }
    }
}

/// Context of an anonymous diner request (`POST /v/{slug}/graphql`).
#[derive(Clone, Debug)]
pub struct PublicCtx {
    /// The venue named by the path or host name.
    pub venue: Venue,
    /// The HTTP request id.
    pub request_id: String,
    /// The client address.
    pub client: IpAddr,
}

fn data<'a, T: Send + Sync + 'static>(ctx: &Context<'a>) -> Result<&'a T, AppError> {
    ctx.data::<T>().map_err(|_| AppError::Unauthenticated("authentication required"))
}

/// The staff context, or UNAUTHENTICATED.
pub fn staff<'a>(ctx: &Context<'a>) -> Result<&'a StaffCtx, AppError> {
    data::<StaffCtx>(ctx)
}

/// The public context, or UNAUTHENTICATED.
pub fn public<'a>(ctx: &Context<'a>) -> Result<&'a PublicCtx, AppError> {
    data::<PublicCtx>(ctx)
}

/// The server's settings.
pub fn config<'a>(ctx: &Context<'a>) -> Result<&'a crate::config::Config, AppError> {
    ctx.data::<std::sync::Arc<crate::config::Config>>()
        .map(|config| config.as_ref())
        .map_err(|_| AppError::internal("no settings in the request context"))
}

/// The database handle of the request.
pub fn db<'a>(ctx: &Context<'a>) -> Result<&'a Db, AppError> {
    ctx.data::<Db>().map_err(|_| AppError::internal("no database in the request context"))
}

/// Begins a transaction scoped to the caller's venue.
pub async fn staff_tx<'a>(ctx: &Context<'a>) -> Result<(&'a StaffCtx, VenueTx), AppError> {
    let staff = staff(ctx)?;
    let tx = data::<Db>(ctx)?.venue_tx(staff.venue).await?;
    Ok((staff, tx))
}

/// Begins a transaction scoped to the public endpoint's venue.
pub async fn public_tx(ctx: &Context<'_>) -> Result<VenueTx, AppError> {
    let venue = public(ctx)?.venue.venue_id();
    Ok(data::<Db>(ctx)?.venue_tx(venue).await?)
}

/// Commits, mapping failure to an internal error.
pub async fn commit(tx: VenueTx) -> Result<(), AppError> {
    Ok(tx.commit().await?)
}
