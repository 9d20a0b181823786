//! GraphQL surface of orders: the live queue (ORDERS_QUEUE), history with cursor
//! pagination (ORDERS_HISTORY), one order, advancing and refunding, and the
//! `ordersQueueChanged` subscription. Refund and payment details of an order need
//! ORDERS_REFUND / PAYMENTS_VIEW (or ORDERS_HISTORY): a queue-only token sees the kitchen
//! view and nothing about money movements.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject, Subscription};
use base64::Engine;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use secrecy::SecretString;
use uuid::Uuid;

use super::refunds_and_disputes::{RefundGateway, refunds_of};
use super::{DinerAllergens, HistoryFilter, Order, OrderStatus, live::OrdersHub};
use crate::access::Permissions;
use crate::error::AppError;
use crate::graphql::context::{self, commit, staff, staff_tx};
use crate::graphql::permission_guard::{Requires, RequiresAny};
use crate::graphql::{PageInfo, parse_id};
use crate::menu::Allergen;
use crate::tenancy::{Db, VenueId, VenueTx};

fn minor(value: i64) -> i32 {
    // Order amounts are bounded by the checkout limits, far inside i32.
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// An order as staff see it, with its allergen alerts when the caller may see them.
pub struct OrderObject {
    order: Arc<Order>,
    alerts: Option<Vec<AllergenAlert>>,
    refunds: Arc<RefundBatch>,
}

/// The refunds of every order of one answer (a page, the queue, one order), loaded in one
/// statement the first time any of those orders is asked for its `refunds`: the cost of
/// a list does not grow with its length.
pub struct RefundBatch {
    checkouts: Vec<Uuid>,
    loaded: tokio::sync::OnceCell<std::collections::HashMap<Uuid, Vec<super::refunds_and_disputes::Refund>>>,
}

impl RefundBatch {
    fn of(orders: &[Arc<Order>]) -> Arc<RefundBatch> {
        Arc::new(RefundBatch {
            checkouts: orders.iter().map(|o| o.checkout_id).collect(),
            loaded: tokio::sync::OnceCell::new(),
        })
    }

    async fn for_checkout(
        &self,
        ctx: &Context<'_>,
        checkout: Uuid,
    ) -> Result<Vec<super::refunds_and_disputes::Refund>, AppError> {
        let all = self
            .loaded
            .get_or_try_init(|| async {
                let (_, mut tx) = staff_tx(ctx).await?;
                let refunds = refunds_of(&mut tx, &self.checkouts).await?;
                commit(tx).await?;
                Ok::<_, AppError>(refunds)
            })
            .await?;
        Ok(all.get(&checkout).cloned().unwrap_or_default())
    }
}

/// An ordered item that declares an allergen the diner told the venue about.
#[derive(SimpleObject, Clone)]
pub struct AllergenAlert {
    /// The item's name.
    item_name: String,
    /// The diner's allergens the item declares.
    allergens: Vec<Allergen>,
}

/// Whether presenting `orders` to a caller with `permissions` reads diners' data: only
/// for callers holding DINER_ALLERGENS_VIEW, and only when an order has a diner.
fn reads_diners(permissions: Permissions, orders: &[Arc<Order>]) -> bool {
    permissions.contains(Permissions::DINER_ALLERGENS_VIEW) && orders.iter().any(|o| o.diner_id.is_some())
}

/// The API view of orders that needs no diner data (see [`reads_diners`]): no alerts,
/// or an empty list of them for callers who may see alerts.
fn without_diners(permissions: Permissions, orders: Vec<Arc<Order>>) -> Vec<OrderObject> {
    let alerts = permissions.contains(Permissions::DINER_ALLERGENS_VIEW);
    let refunds = RefundBatch::of(&orders);
    orders
        .into_iter()
        .map(|order| OrderObject { order, alerts: alerts.then(Vec::new), refunds: refunds.clone() })
        .collect()
}

/// The API view of orders: allergen alerts are computed (one statement and one key load
/// for all the orders) only for callers holding DINER_ALLERGENS_VIEW; for others the
/// diners' data is never decrypted.
pub async fn present(
    tx: &mut VenueTx,
    permissions: Permissions,
    diners: &dyn DinerAllergens,
    orders: Vec<Arc<Order>>,
) -> Result<Vec<OrderObject>, AppError> {
    if !reads_diners(permissions, &orders) {
        return Ok(without_diners(permissions, orders));
    }
    let ids: Vec<Uuid> = orders.iter().filter_map(|o| o.diner_id).collect();
    let allergens = diners.allergens_of(tx, &ids).await?;
    let refunds = RefundBatch::of(&orders);
    Ok(orders
        .into_iter()
        .map(|order| {
            let declared = order.diner_id.and_then(|d| allergens.get(&d));
            let alerts = order
                .lines()
                .iter()
                .filter_map(|line| {
                    let hits: Vec<Allergen> =
                        declared?.iter().copied().filter(|a| line.allergens.iter().any(|l| l == a.as_str())).collect();
                    (!hits.is_empty()).then(|| AllergenAlert { item_name: line.name.clone(), allergens: hits })
                })
                .collect();
            OrderObject { order, alerts: Some(alerts), refunds: refunds.clone() }
        })
        .collect())
}

async fn present_in(
    ctx: &Context<'_>,
    tx: &mut VenueTx,
    orders: Vec<Arc<Order>>,
) -> Result<Vec<OrderObject>, AppError> {
    let permissions = staff(ctx)?.permissions;
    let diners = context::service::<Arc<dyn DinerAllergens>>(ctx)?;
    present(tx, permissions, diners.as_ref(), orders).await
}

/// One line of an order.
#[derive(SimpleObject)]
pub struct OrderItem {
    /// The menu item (null once deleted from the menu).
    menu_item_id: Option<ID>,
    /// Name when ordered.
    name: String,
    /// How many.
    quantity: i32,
    /// Price of one when ordered, minor units.
    unit_price_minor: i32,
    /// The diner's note for the kitchen.
    note: Option<String>,
}

/// How much of an order has been refunded.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum RefundState {
    /// Nothing refunded or asked for.
    None,
    /// A refund was asked for and Stripe has not confirmed it yet.
    Pending,
    /// Part of the amount is refunded.
    Partial,
    /// The whole amount is refunded.
    Full,
}

/// The verified Stripe payment of an order.
#[derive(SimpleObject)]
pub struct Payment {
    /// Stripe PaymentIntent id.
    payment_intent_id: String,
    /// Stripe charge id.
    charge_id: Option<String>,
    /// Amount paid, minor units.
    amount_minor: i32,
    /// ISO 4217.
    currency: String,
    /// The platform's application fee, minor units.
    application_fee_minor: i32,
}

/// A refund of an order.
#[derive(SimpleObject)]
pub struct OrderRefund {
    /// Refund id.
    id: ID,
    /// Stripe's refund id, once Stripe accepted it.
    stripe_refund_id: Option<String>,
    /// Minor units.
    amount_minor: i32,
    /// requested, pending, requires_action, succeeded, failed or canceled.
    status: String,
    /// Why.
    reason: Option<String>,
    /// Who asked for it (`stripe` for refunds made in Stripe's Dashboard).
    requested_by: Option<String>,
    /// When.
    created_at: DateTime<Utc>,
}

#[Object(name = "Order")]
impl OrderObject {
    /// Order id.
    async fn id(&self) -> ID {
        self.order.id.into()
    }
    /// Per-venue order number, increasing.
    async fn number(&self) -> i32 {
        i32::try_from(self.order.number).unwrap_or(i32::MAX)
    }
    /// Kitchen status.
    async fn status(&self) -> OrderStatus {
        self.order.status()
    }
    /// Total paid, minor units of `currency`.
    async fn amount_minor(&self) -> i32 {
        minor(self.order.amount_minor)
    }
    /// ISO 4217 currency code.
    async fn currency(&self) -> &str {
        &self.order.currency
    }
    /// The diner's table, if given.
    async fn table_ref(&self) -> Option<&str> {
        self.order.table_ref.as_deref()
    }
    /// When the payment was confirmed.
    async fn created_at(&self) -> DateTime<Utc> {
        self.order.created_at
    }
    /// Last change.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.order.updated_at
    }
    /// What was ordered.
    async fn items(&self) -> Vec<OrderItem> {
        self.order
            .lines()
            .iter()
            .map(|line| OrderItem {
                menu_item_id: line.menu_item_id.map(ID::from),
                name: line.name.clone(),
                quantity: line.quantity,
                unit_price_minor: minor(line.unit_price_minor),
                note: line.note.clone(),
            })
            .collect()
    }
    /// Items of this order that declare one of the diner's allergens (empty when none, or
    /// when the diner told the venue nothing); null unless the caller holds
    /// DINER_ALLERGENS_VIEW.
    async fn allergen_alerts(&self) -> Option<Vec<AllergenAlert>> {
        self.alerts.clone()
    }
    /// Confirmed refunds, minor units (ORDERS_REFUND or ORDERS_HISTORY).
    #[graphql(guard = "RequiresAny(Permissions::ORDERS_REFUND | Permissions::ORDERS_HISTORY)")]
    async fn refunded_minor(&self) -> i32 {
        minor(self.order.refunded_minor)
    }
    /// Refunds asked for, awaiting Stripe's confirmation, minor units.
    #[graphql(guard = "RequiresAny(Permissions::ORDERS_REFUND | Permissions::ORDERS_HISTORY)")]
    async fn refund_pending_minor(&self) -> i32 {
        minor(self.order.refund_pending_minor)
    }
    /// Summary of the refunds.
    #[graphql(guard = "RequiresAny(Permissions::ORDERS_REFUND | Permissions::ORDERS_HISTORY)")]
    async fn refund_state(&self) -> RefundState {
        let order = &self.order;
        if order.refunded_minor >= order.amount_minor {
            RefundState::Full
        } else if order.refund_pending_minor > 0 {
            RefundState::Pending
        } else if order.refunded_minor > 0 {
            RefundState::Partial
        } else {
            RefundState::None
        }
    }
    /// Every refund of this order, newest first.
    #[graphql(guard = "RequiresAny(Permissions::ORDERS_REFUND | Permissions::ORDERS_HISTORY)")]
    async fn refunds(&self, ctx: &Context<'_>) -> Result<Vec<OrderRefund>> {
        let refunds = self.refunds.for_checkout(ctx, self.order.checkout_id).await?;
        Ok(refunds
            .into_iter()
            .map(|r| OrderRefund {
                id: r.id.into(),
                stripe_refund_id: r.provider_refund_id,
                amount_minor: minor(r.amount_minor),
                status: r.status.as_str().to_string(),
                reason: r.reason,
                requested_by: r.requested_by,
                created_at: r.created_at,
            })
            .collect())
    }
    /// The payment (PAYMENTS_VIEW or ORDERS_HISTORY).
    #[graphql(guard = "RequiresAny(Permissions::PAYMENTS_VIEW | Permissions::ORDERS_HISTORY)")]
    async fn payment(&self) -> Payment {
        Payment {
            payment_intent_id: self.order.payment_intent_id.clone(),
            charge_id: self.order.charge_id.clone(),
            amount_minor: minor(self.order.amount_minor),
            currency: self.order.currency.clone(),
            application_fee_minor: minor(self.order.application_fee_minor),
        }
    }
    /// Status of the newest chargeback, if the diner disputed the payment.
    #[graphql(guard = "RequiresAny(Permissions::PAYMENTS_VIEW | Permissions::ORDERS_HISTORY)")]
    async fn dispute_status(&self) -> Option<&str> {
        self.order.dispute_status.as_deref()
    }
}

/// Narrows the order history.
#[derive(InputObject, Default)]
pub struct OrderFilter {
    /// Only orders in these statuses.
    statuses: Option<Vec<OrderStatus>>,
    /// Created at or after.
    created_from: Option<DateTime<Utc>>,
    /// Created before.
    created_before: Option<DateTime<Utc>>,
}

/// An order and its cursor.
#[derive(SimpleObject)]
pub struct OrderEdge {
    /// Opaque position, for `after`.
    cursor: String,
    /// The order.
    node: OrderObject,
}

/// A page of order history, newest first.
#[derive(SimpleObject)]
pub struct OrderConnection {
    /// Orders with their cursors.
    edges: Vec<OrderEdge>,
    /// Paging.
    page_info: PageInfo,
}

fn cursor(number: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("order:{number}"))
}

fn parse_cursor(cursor: &str) -> Result<i64, AppError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("order:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| AppError::bad_input("after is not a cursor returned by orders"))
}

/// Staff queries on orders.
#[derive(Default)]
pub struct OrdersQuery;

#[Object]
impl OrdersQuery {
    /// Open orders (placed, preparing, ready) with their items, oldest first.
    #[graphql(guard = "Requires(Permissions::ORDERS_QUEUE)")]
    async fn orders_queue(&self, ctx: &Context<'_>) -> Result<Vec<OrderObject>> {
        let staff = staff(ctx)?;
        let orders = context::service::<OrdersHub>(ctx)?.queue(context::db(ctx)?, staff.venue).await?;
        if !reads_diners(staff.permissions, &orders) {
            return Ok(without_diners(staff.permissions, orders));
        }
        let (_, mut tx) = staff_tx(ctx).await?;
        let objects = present_in(ctx, &mut tx, orders).await?;
        commit(tx).await?;
        Ok(objects)
    }

    /// Order history, newest first (`first` 1 to 100, default 20). Its query cost is
    /// `first` times the cost of what is asked of each order.
    #[graphql(
        guard = "Requires(Permissions::ORDERS_HISTORY)",
        complexity = "1 + first.clamp(1, 100) as usize * child_complexity"
    )]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        filter: Option<OrderFilter>,
    ) -> Result<OrderConnection> {
        let before = after.as_deref().map(parse_cursor).transpose()?;
        let filter = filter.unwrap_or_default();
        let filter = HistoryFilter {
            statuses: filter.statuses.unwrap_or_default(),
            created_from: filter.created_from,
            created_before: filter.created_before,
        };
        let (_, mut tx) = staff_tx(ctx).await?;
        let (orders, more) = super::history(&mut tx, i64::from(first), before, &filter).await?;
        let end_cursor = orders.last().map(|o| cursor(o.number));
        let objects = present_in(ctx, &mut tx, orders.into_iter().map(Arc::new).collect()).await?;
        commit(tx).await?;
        Ok(OrderConnection {
            edges: objects.into_iter().map(|o| OrderEdge { cursor: cursor(o.order.number), node: o }).collect(),
            page_info: PageInfo { has_next_page: more, end_cursor },
        })
    }

    /// One order (ORDERS_QUEUE or ORDERS_HISTORY).
    #[graphql(guard = "RequiresAny(Permissions::ORDERS_QUEUE | Permissions::ORDERS_HISTORY)")]
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<OrderObject>> {
        let id = parse_id(&id, "id")?;
        let (_, mut tx) = staff_tx(ctx).await?;
        let order = super::find(&mut tx, id).await?;
        let object = present_in(ctx, &mut tx, order.into_iter().map(Arc::new).collect()).await?.pop();
        commit(tx).await?;
        Ok(object)
    }
}

/// Staff mutations on orders. There is deliberately no mutation that creates an order.
#[derive(Default)]
pub struct OrdersMutation;

async fn reload(ctx: &Context<'_>, id: Uuid) -> Result<OrderObject> {
    let (_, mut tx) = staff_tx(ctx).await?;
    let order = super::find(&mut tx, id).await?.ok_or(AppError::NotFound("order"))?;
    let object = present_in(ctx, &mut tx, vec![Arc::new(order)]).await?.pop();
    commit(tx).await?;
    Ok(object.ok_or(AppError::NotFound("order"))?)
}

#[Object]
impl OrdersMutation {
    /// Moves an order on: placed → preparing → ready → served, or to cancelled.
    #[graphql(guard = "Requires(Permissions::ORDERS_QUEUE)")]
    async fn advance_order(&self, ctx: &Context<'_>, id: ID, status: OrderStatus) -> Result<OrderObject> {
        let id = parse_id(&id, "id")?;
        let (staff, mut tx) = staff_tx(ctx).await?;
        super::advance(&mut tx, &staff.who(), id, status).await?;
        super::live::commit(tx, Some(context::service::<OrdersHub>(ctx)?)).await?;
        reload(ctx, id).await
    }

    /// Asks Stripe to refund `amountMinor` of an order; the order shows the refund as
    /// pending until Stripe's webhook confirms it.
    #[graphql(guard = "Requires(Permissions::ORDERS_REFUND)")]
    async fn refund_order(
        &self,
        ctx: &Context<'_>,
        id: ID,
        amount_minor: i32,
        reason: Option<String>,
    ) -> Result<OrderObject> {
        let id = parse_id(&id, "id")?;
        let staff = staff(ctx)?;
        let gateway = context::service::<Arc<dyn RefundGateway>>(ctx)?;
        let hub = context::service::<OrdersHub>(ctx)?;
        let ask = super::refunds_and_disputes::RefundAsk {
            order_id: id,
            amount_minor: i64::from(amount_minor),
            reason: reason.as_deref(),
        };
        let db = context::db(ctx)?;
        super::refunds_and_disputes::request_refund(db, gateway.as_ref(), Some(hub), &staff.who(), staff.venue, ask)
            .await?;
        reload(ctx, id).await
    }
}

/// Live updates for staff screens.
#[derive(Default)]
pub struct OrdersSubscription;

/// The credential a WebSocket connection authenticated with, checked again before each
/// update so a revoked or expired token stops receiving orders.
#[derive(Clone)]
pub struct ConnectionToken {
    /// The bearer token.
    pub token: SecretString,
    /// The absolute session lifetime it is checked against (`SESSION_MAX_AGE_SECS`).
    pub session_max_age: std::time::Duration,
}

#[Subscription]
impl OrdersSubscription {
    /// Every new or changed order of the venue (an order leaving the queue arrives with its
    /// final status). Over `/graphql/ws` (graphql-transport-ws), token in `connection_init`.
    #[graphql(guard = "Requires(Permissions::ORDERS_QUEUE)")]
    async fn orders_queue_changed(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Result<OrderObject>>> {
        let venue = staff(ctx)?.venue;
        let feed = LiveFeed {
            db: context::db(ctx)?.clone(),
            token: context::service::<ConnectionToken>(ctx)?.clone(),
            keys: context::service::<Arc<dyn DinerAllergens>>(ctx)?.clone(),
            venue,
        };
        let receiver = context::service::<OrdersHub>(ctx)?.subscribe(venue).await?;
        Ok(futures_util::stream::unfold(Some((receiver, feed)), move |state| async move {
            let (mut receiver, feed) = state?;
            loop {
                let order_id = match receiver.recv().await {
                    Ok(id) => id,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                match feed.next_update_patiently(order_id).await {
                    Ok(Some(order)) => return Some((Ok(order), Some((receiver, feed)))),
                    Ok(None) => continue,
                    // Credential gone (or the database gone for good): send the error, then
                    // end the subscription.
                    Err(error) => return Some((Err(error.into()), None)),
                }
            }
        }))
    }
}

/// How long an update waits for the database to come back before the subscription ends.
const DATABASE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// What one live subscription needs to turn a changed order's id into its update.
struct LiveFeed {
    db: Db,
    token: ConnectionToken,
    keys: Arc<dyn DinerAllergens>,
    venue: VenueId,
}

impl LiveFeed {
    /// [`LiveFeed::next_update`], retried while the database is unreachable (a restart, a
    /// failover): the subscriber gets the update once it is back instead of losing the
    /// subscription.
    async fn next_update_patiently(&self, id: Uuid) -> Result<Option<OrderObject>, AppError> {
        let deadline = tokio::time::Instant::now() + DATABASE_PATIENCE;
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            match self.next_update(id).await {
                Err(error @ (AppError::Internal(_) | AppError::Unavailable(_)))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::warn!(?error, "live order update waits for the database");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                outcome => return outcome,
            }
        }
    }

    /// The order as this subscriber may see it now (its token re-checked: revoked or
    /// stripped of ORDERS_QUEUE ends the subscription), or None when it is not there.
    async fn next_update(&self, id: Uuid) -> Result<Option<OrderObject>, AppError> {
        let (db, token, keys, venue) = (&self.db, &self.token, &self.keys, self.venue);
        let caller = crate::auth::authenticate_bearer(db, &token.token, token.session_max_age).await?;
        if caller.venue != venue || !caller.permissions.contains(Permissions::ORDERS_QUEUE) {
            return Err(AppError::Forbidden);
        }
        let mut tx = db.venue_tx(venue).await?;
        let order = super::find(&mut tx, id).await?;
        let orders = order.into_iter().map(Arc::new).collect();
        let object = present(&mut tx, caller.permissions, keys.as_ref(), orders).await?.pop();
        tx.commit().await?;
        Ok(object)
    }
}
