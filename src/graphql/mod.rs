//! Schema assembly: one `#[Object]` per feature, merged; limits and the guardrails
//! applied the same way to both schemas. Schemas are built without runtime
//! data (the pool and caller arrive per request), so `venueql schema` needs no database.

pub mod context;
pub mod error;
pub mod guard;
pub mod guardrails;

use std::sync::Arc;

use async_graphql::{
    EmptySubscription, MergedObject, MergedSubscription, ObjectType, Schema, SchemaBuilder, SubscriptionType,
};
use guardrails::{Guarded, Rules};

use crate::auth::graphql::{AccessMutation, AccessQuery, MeQuery, MfaMutation};
use crate::config::GraphqlLimits;
use crate::diners::graphql::{DinersMutation, DinersQuery, PublicDinerMutation};
use crate::menu::graphql::{MenuMutation, MenuQuery, PublicMenuQuery};
use crate::observability::Metrics;
use crate::orders::graphql::{OrdersMutation, OrdersQuery, OrdersSubscription};
use crate::payments::graphql::{PaymentsMutation, PaymentsQuery, PublicCheckoutMutation, PublicCheckoutQuery};
use crate::staff::graphql::{StaffMembersMutation, StaffMembersQuery};
use crate::venues::graphql::{VenueSettingsMutation, VenueSettingsQuery};

/// Root query of the staff/integration endpoint (`/graphql`).
#[derive(MergedObject, Default)]
pub struct StaffQuery(
    MeQuery,
    MenuQuery,
    VenueSettingsQuery,
    StaffMembersQuery,
    AccessQuery,
    OrdersQuery,
    PaymentsQuery,
    DinersQuery,
);

/// Root mutation of the staff/integration endpoint.
#[derive(MergedObject, Default)]
pub struct StaffMutation(
    MenuMutation,
    MfaMutation,
    VenueSettingsMutation,
    StaffMembersMutation,
    AccessMutation,
    OrdersMutation,
    PaymentsMutation,
    DinersMutation,
);

/// Root subscription of the staff endpoint (`/graphql/ws`).
#[derive(MergedSubscription, Default)]
pub struct StaffSubscription(OrdersSubscription);

/// Root query of the diner endpoint (`/v/{slug}/graphql`).
#[derive(MergedObject, Default)]
pub struct PublicQuery(PublicMenuQuery, PublicCheckoutQuery);

/// Root mutation of the diner endpoint.
#[derive(MergedObject, Default)]
pub struct PublicMutation(PublicCheckoutMutation, PublicDinerMutation);

/// The staff/integration schema, behind the guardrails.
pub type StaffSchema = Guarded<Schema<StaffQuery, StaffMutation, StaffSubscription>>;
/// The diner schema, behind the guardrails.
pub type PublicSchema = Guarded<Schema<PublicQuery, PublicMutation, EmptySubscription>>;

/// How a schema is built at run time.
#[derive(Clone, Default)]
pub struct SchemaOptions {
    /// Query limits.
    pub limits: GraphqlLimits,
    /// Answer introspection queries.
    pub introspection: bool,
    /// Where per-operation metrics go.
    pub metrics: Option<Arc<Metrics>>,
}

fn with_limits<Q, M, S>(builder: SchemaBuilder<Q, M, S>, options: &SchemaOptions) -> Guarded<Schema<Q, M, S>>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    let mut builder = builder
        .limit_depth(options.limits.max_depth)
        .limit_complexity(options.limits.max_complexity)
        .limit_recursive_depth(32)
        .limit_directives(8);
    if !options.introspection {
        builder = builder.disable_introspection().disable_suggestions();
    }
    let rules = Rules {
        max_aliases: options.limits.max_aliases,
        metrics: options.metrics.clone(),
        introspection: options.introspection,
    };
    Guarded::new(builder.finish(), rules)
}

/// Builds the staff schema.
pub fn staff_schema(options: &SchemaOptions) -> StaffSchema {
    with_limits(Schema::build(StaffQuery::default(), StaffMutation::default(), StaffSubscription::default()), options)
}

/// Builds the diner schema.
pub fn public_schema(options: &SchemaOptions) -> PublicSchema {
    with_limits(Schema::build(PublicQuery::default(), PublicMutation::default(), EmptySubscription), options)
}

/// SDL of the staff schema, as committed in `schema.graphql`.
pub fn staff_sdl() -> String {
    staff_schema(&SchemaOptions::default()).inner().sdl()
}

/// SDL of the diner schema, as committed in `schema.public.graphql`.
pub fn public_sdl() -> String {
    public_schema(&SchemaOptions::default()).inner().sdl()
}
