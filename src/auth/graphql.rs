//! `me`: who the caller is, at which venue, with which permissions.

use async_graphql::{Context, ID, Object, Result, SimpleObject};

use crate::graphql::context::{commit, staff_tx};
use crate::{staff, venues};

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
        let venue = venues::current(&mut tx).await?;
        let person = match caller.principal.staff_id() {
            Some(id) => staff::at_current_venue(&mut tx, id).await?,
            None => None,
        };
        commit(tx).await?;
        Ok(Me {
            venue: MeVenue { id: venue.id.into(), slug: venue.slug, name: venue.name, currency: venue.currency },
            person: person.map(|p| Person { id: p.id.into(), email: p.email, display_name: p.display_name }),
            permissions: caller.permissions.names().into_iter().map(String::from).collect(),
            actor: caller.principal.actor(),
        })
    }
}
