//! Schema assembly, above every feature: one `#[Object]` per feature, merged; limits and
//! the guardrails applied the same way to both schemas; the services resolvers use
//! inserted once, when the schema is built. Without services (`venueql schema`, tests of
//! the SDL) a schema needs no database.

use std::sync::Arc;

use crate::graphql::request_guardrails::{Guarded, Rules};
use async_graphql::{
    EmptySubscription, MergedObject, MergedSubscription, ObjectType, Schema, SchemaBuilder, SubscriptionType,
};

use crate::audit_graphql::AuditLogQuery;
use crate::auth::breach::BreachCheck;
use crate::auth::graphql::{AccessMutation, AccessQuery, MfaMutation};
use crate::config::{Config, GraphqlLimits};
use crate::crypto::KeyRing;
use crate::diners::graphql::{DinersMutation, DinersQuery, PublicDinerMutation};
use crate::menu::graphql::{MenuMutation, MenuQuery, PublicMenuQuery};
use crate::observability::Metrics;
use crate::orders::DinerAllergens;
use crate::orders::graphql::{OrdersMutation, OrdersQuery, OrdersSubscription};
use crate::orders::live::OrdersHub;
use crate::orders::refunds_and_disputes::RefundGateway;
use crate::payments::Payments;
use crate::payments::graphql::{PaymentsMutation, PaymentsQuery, PublicCheckoutMutation, PublicCheckoutQuery};
use crate::staff::graphql::{MeQuery, StaffMembersMutation, StaffMembersQuery};
use crate::tenancy::Db;
use crate::venues::graphql::{PublicVenueQuery, VenueSettingsMutation, VenueSettingsQuery};

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
    AuditLogQuery,
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
pub struct PublicQuery(PublicVenueQuery, PublicMenuQuery, PublicCheckoutQuery);

/// Root mutation of the diner endpoint.
#[derive(MergedObject, Default)]
pub struct PublicMutation(PublicCheckoutMutation, PublicDinerMutation);

/// The staff/integration schema, behind the guardrails.
pub type StaffSchema = Guarded<Schema<StaffQuery, StaffMutation, StaffSubscription>>;
/// The diner schema, behind the guardrails.
pub type PublicSchema = Guarded<Schema<PublicQuery, PublicMutation, EmptySubscription>>;

/// The services resolvers use (each read with `graphql::context::service`), inserted into
/// both schemas once, when they are built.
#[derive(Clone)]
pub struct Services {
    /// The app role's pool, behind the tenancy API.
    pub db: Db,
    /// Settings.
    pub config: Arc<Config>,
    /// Stripe: onboarding and checkouts.
    pub payments: Payments,
    /// The same Stripe, as orders see it: where refunds are asked for.
    pub refunds: Arc<dyn RefundGateway>,
    /// Diners' allergens, as orders see them (kitchen alerts).
    pub diner_allergens: Arc<dyn DinerAllergens>,
    /// Live order changes and queue snapshots.
    pub orders_hub: OrdersHub,
    /// The master and identity keys.
    pub keys: KeyRing,
    /// The breached-password check.
    pub breach: BreachCheck,
}

/// How a schema is built at run time.
#[derive(Clone, Default)]
pub struct SchemaOptions {
    /// Query limits.
    pub limits: GraphqlLimits,
    /// Answer introspection queries.
    pub introspection: bool,
    /// Where per-operation metrics go.
    pub metrics: Option<Arc<Metrics>>,
    /// The services (none for a schema only printed as SDL).
    pub services: Option<Services>,
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
    if let Some(services) = options.services.clone() {
        builder = builder
            .data(services.db)
            .data(services.config)
            .data(services.payments)
            .data(services.refunds)
            .data(services.diner_allergens)
            .data(services.orders_hub)
            .data(services.keys)
            .data(services.breach);
    }
    let rules =
        Rules { limits: options.limits, metrics: options.metrics.clone(), introspection: options.introspection };
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
