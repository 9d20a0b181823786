//! The one request context: built once by `http/` (or by a WebSocket's `connection_init`)
//! and inserted once. Resolvers read it with [`request`], [`staff`] or [`public`], and the
//! services the schema was built with through [`service`]; each has one error when what
//! it reads is missing.

use std::net::IpAddr;

use async_graphql::Context;

use crate::access::{Caller, Permissions, Principal};
use crate::audit::Who;
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// Who asks, at which venue, with what, through which request.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    /// The venue the request acts at: the credential's (staff), or the one the diner
    /// endpoint names.
    pub venue: VenueId,
    /// The authenticated caller; `None` on the diner endpoint.
    pub principal: Option<Principal>,
    /// What the caller may do at the venue (none on the diner endpoint).
    pub permissions: Permissions,
    /// The HTTP request id.
    pub request_id: String,
    /// The client's address (after the trusted proxies).
    pub client: IpAddr,
}

impl RequestCtx {
    /// An authenticated staff or integration request.
    pub fn staff(caller: Caller, request_id: String, client: IpAddr) -> RequestCtx {
        RequestCtx {
            venue: caller.venue,
            principal: Some(caller.principal),
            permissions: caller.permissions,
            request_id,
            client,
        }
    }

    /// An anonymous diner request at `venue`.
    pub fn diner(venue: VenueId, request_id: String, client: IpAddr) -> RequestCtx {
        RequestCtx { venue, principal: None, permissions: Permissions::empty(), request_id, client }
    }

    /// The audit identity of this request (`diner` on the diner endpoint).
    pub fn who(&self) -> Who {
        let actor = self.principal.as_ref().map_or_else(|| "diner".to_string(), Principal::actor);
        Who { actor, request_id: Some(self.request_id.clone()), ip: Some(self.client) }
    }

    /// The staff caller, or UNAUTHENTICATED for a diner request.
    pub fn principal(&self) -> Result<&Principal, AppError> {
        self.principal.as_ref().ok_or(AppError::Unauthenticated("authentication required"))
    }
}

/// The request context. Every request has one; its absence is a server fault.
pub fn request<'a>(ctx: &Context<'a>) -> Result<&'a RequestCtx, AppError> {
    ctx.data::<RequestCtx>().map_err(|_| AppError::internal("no request context"))
}

/// The context of an authenticated staff request, or UNAUTHENTICATED.
pub fn staff<'a>(ctx: &Context<'a>) -> Result<&'a RequestCtx, AppError> {
    let request = request(ctx)?;
    request.principal()?;
    Ok(request)
}

/// The context of a diner request (a staff request may ask public fields too).
pub fn public<'a>(ctx: &Context<'a>) -> Result<&'a RequestCtx, AppError> {
    request(ctx)
}

/// A service the schema was built with (the database, the orders hub, the settings…).
pub fn service<'a, T: Send + Sync + 'static>(ctx: &Context<'a>) -> Result<&'a T, AppError> {
    ctx.data::<T>().map_err(|_| AppError::internal(format!("{} missing from the schema", std::any::type_name::<T>())))
}

/// The server's settings.
pub fn config<'a>(ctx: &Context<'a>) -> Result<&'a crate::config::Config, AppError> {
    service::<std::sync::Arc<crate::config::Config>>(ctx).map(|config| config.as_ref())
}

/// The database.
pub fn db<'a>(ctx: &Context<'a>) -> Result<&'a Db, AppError> {
    service::<Db>(ctx)
}

/// Begins a transaction scoped to the staff caller's venue.
pub async fn staff_tx<'a>(ctx: &Context<'a>) -> Result<(&'a RequestCtx, VenueTx), AppError> {
    let staff = staff(ctx)?;
    let tx = db(ctx)?.venue_tx(staff.venue).await?;
    Ok((staff, tx))
}

/// Begins a transaction scoped to the request's venue (the diner endpoint's).
pub async fn public_tx(ctx: &Context<'_>) -> Result<VenueTx, AppError> {
    let venue = public(ctx)?.venue;
    Ok(db(ctx)?.venue_tx(venue).await?)
}

/// Commits, mapping failure to an internal error.
pub async fn commit(tx: VenueTx) -> Result<(), AppError> {
    Ok(tx.commit().await?)
}
