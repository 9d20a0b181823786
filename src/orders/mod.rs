//! Orders: the tables `orders`, `order_counters`, `payments` (an order's payment),
//! `refunds` and `disputes`, the kitchen queue and its live notifications. Orders are read
//! as whole objects (lines, refund and dispute state, payment) in one set-based statement
//! whatever their number, so the queue costs the same SQL for 5 orders as for 50.
//!
//! An order is placed only by [`place::place_paid_order`], which `payments` calls for a
//! verified payment; staff advance orders through the kitchen ([`advance`]) and refund
//! them ([`refunds_and_disputes::request_refund`], through the provider `payments` implements). Orders
//! never call the payment provider themselves.

pub mod graphql;
pub mod live;
pub mod place;
pub mod refunds_and_disputes;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::menu::Allergen;
use crate::tenancy::VenueTx;

/// The allergens diners told the venue, by diner, for the kitchen alerts of their orders.
/// `diners` implements it (only it opens diners' sealed records); orders never read
/// diners' data themselves.
pub trait DinerAllergens: Send + Sync {
    /// The allergens of these diners of the transaction's venue (one statement, one key
    /// load, whatever their number); diners who stated none are absent.
    #[allow(clippy::type_complexity)]
    fn allergens_of<'a>(
        &'a self,
        tx: &'a mut VenueTx,
        diners: &'a [Uuid],
    ) -> Pin<Box<dyn Future<Output = Result<HashMap<Uuid, Vec<Allergen>>, AppError>> + Send + 'a>>;
}

/// Where an order is in the kitchen (or that it was cancelled or refunded).
#[derive(async_graphql::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// Paid, not started.
    Placed,
    /// Being prepared.
    Preparing,
    /// Ready for the diner.
    Ready,
    /// Handed over (final).
    Served,
    /// Cancelled by staff (final; refund separately).
    Cancelled,
    /// Fully refunded (final; set by confirmed refunds).
    Refunded,
}

impl OrderStatus {
    const NAMES: [(OrderStatus, &'static str); 6] = [
        (OrderStatus::Placed, "placed"),
        (OrderStatus::Preparing, "preparing"),
        (OrderStatus::Ready, "ready"),
        (OrderStatus::Served, "served"),
        (OrderStatus::Cancelled, "cancelled"),
        (OrderStatus::Refunded, "refunded"),
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(s, _)| *s == self).map(|(_, n)| *n).unwrap_or("placed")
    }

    fn from_stored(name: &str) -> OrderStatus {
        Self::NAMES.iter().find(|(_, n)| *n == name).map(|(s, _)| *s).unwrap_or(OrderStatus::Placed)
    }

    /// Whether staff may move an order from `self` to `to`.
    pub fn may_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (Placed, Preparing) | (Preparing, Ready) | (Ready, Served) | (Placed | Preparing | Ready, Cancelled)
        )
    }
}

/// One line of an order, as priced at checkout.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderLine {
    /// The menu item (null once deleted from the menu).
    pub menu_item_id: Option<Uuid>,
    /// Name at checkout.
    pub name: String,
    /// Price at checkout, minor units.
    pub unit_price_minor: i64,
    /// How many.
    pub quantity: i32,
    /// The diner's note.
    pub note: Option<String>,
    /// Allergens the item declared at checkout.
    pub allergens: Vec<String>,
}

/// An order with everything the API shows about it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Order {
    /// Order id.
    pub id: Uuid,
    /// Per-venue number.
    pub number: i64,
    #[sqlx(rename = "status")]
    status_name: String,
    /// Total paid, minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// The diner's table.
    pub table_ref: Option<String>,
    /// When it was paid.
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub updated_at: DateTime<Utc>,
    /// The checkout it came from.
    pub checkout_id: Uuid,
    #[sqlx(json)]
    lines: Vec<OrderLine>,
    /// Confirmed refunds, minor units.
    pub refunded_minor: i64,
    /// Refunds asked for and not yet confirmed, minor units.
    pub refund_pending_minor: i64,
    /// Status of the newest dispute, if any.
    pub dispute_status: Option<String>,
    /// The diner, if they gave details at checkout.
    pub diner_id: Option<Uuid>,
    /// The PaymentIntent.
    pub payment_intent_id: String,
    /// The charge.
    pub charge_id: Option<String>,
    /// The platform's fee.
    pub application_fee_minor: i64,
}

impl Order {
    /// Kitchen status.
    pub fn status(&self) -> OrderStatus {
        OrderStatus::from_stored(&self.status_name)
    }

    /// The lines.
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }
}

/// The one SELECT every order read uses; `WHERE` and `ORDER BY` complete it. Everything
/// but the payment comes from the order row itself (see `refunds_and_disputes::sync_money`), so the cost
/// does not depend on how many checkouts, lines or refunds the venue has. Public for the
/// benchmark's isolation-free baseline only.
pub const ORDER_SELECT: &str = "\
SELECT o.id, o.number, o.status, o.amount_minor, o.currency, o.table_ref, o.created_at, o.updated_at, o.checkout_id,
       o.lines, o.refunded_minor, o.refund_pending_minor, o.dispute_status, o.diner_id,
       p.payment_intent_id, p.charge_id, p.application_fee_minor
  FROM orders o
  JOIN payments p ON (p.venue_id, p.order_id) = (o.venue_id, o.id)";

/// Open orders (placed, preparing, ready), oldest first.
pub async fn queue(tx: &mut VenueTx) -> Result<Vec<Order>, AppError> {
    let sql =
        format!("{ORDER_SELECT} WHERE o.status IN ('placed', 'preparing', 'ready') ORDER BY o.created_at, o.number");
    Ok(sqlx::query_as(&sql).fetch_all(tx.conn()).await?)
}

/// One order by id.
pub async fn find(tx: &mut VenueTx, id: Uuid) -> Result<Option<Order>, AppError> {
    let sql = format!("{ORDER_SELECT} WHERE o.id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(tx.conn()).await?)
}

/// Filter of the order history.
#[derive(Clone, Debug, Default)]
pub struct HistoryFilter {
    /// Only these statuses (all when empty).
    pub statuses: Vec<OrderStatus>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
}

/// Most orders in one history page.
pub const MAX_PAGE: i64 = 100;

/// A page of history, newest first: orders with a number below `before_number`, plus one
/// more to tell whether another page follows.
pub async fn history(
    tx: &mut VenueTx,
    first: i64,
    before_number: Option<i64>,
    filter: &HistoryFilter,
) -> Result<(Vec<Order>, bool), AppError> {
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(AppError::bad_input(format!("first must be 1 to {MAX_PAGE}")));
    }
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let sql = format!(
        "{ORDER_SELECT} WHERE ($1::bigint IS NULL OR o.number < $1) AND (cardinality($2::text[]) = 0 OR o.status = ANY($2)) \
         AND ($3::timestamptz IS NULL OR o.created_at >= $3) AND ($4::timestamptz IS NULL OR o.created_at < $4) \
         ORDER BY o.number DESC LIMIT $5"
    );
    let mut orders: Vec<Order> = sqlx::query_as(&sql)
        .bind(before_number)
        .bind(&statuses)
        .bind(filter.created_from)
        .bind(filter.created_before)
        .bind(first + 1)
        .fetch_all(tx.conn())
        .await?;
    let more = orders.len() as i64 > first;
    orders.truncate(first as usize);
    Ok((orders, more))
}

/// `advanceOrder`: a validated status change, audited.
pub async fn advance(tx: &mut VenueTx, who: &Who, id: Uuid, to: OrderStatus) -> Result<(), AppError> {
    let current: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    let current = OrderStatus::from_stored(&current.ok_or(AppError::NotFound("order"))?);
    if !current.may_become(to) {
        let message = format!("an order that is {} cannot become {}", current.as_str(), to.as_str());
        return Err(AppError::bad_input(message));
    }
    sqlx::query("UPDATE orders SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(to.as_str())
        .execute(tx.conn())
        .await?;
    let change = Change {
        action: "order.status_changed",
        target_type: "order",
        target_id: id.to_string(),
        before: Some(json!({ "status": current.as_str() })),
        after: Some(json!({ "status": to.as_str() })),
    };
    audit::record(tx, who, change).await
}

/// How many orders each of these diners has at the transaction's venue (one statement).
pub async fn count_by_diner(tx: &mut VenueTx, diners: &[Uuid]) -> Result<HashMap<Uuid, i64>, AppError> {
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT diner_id, count(*) FROM orders WHERE diner_id = ANY($1) GROUP BY diner_id")
            .bind(diners)
            .fetch_all(tx.conn())
            .await?;
    Ok(rows.into_iter().collect())
}

/// A diner's orders at the transaction's venue, oldest first (their data export).
pub async fn of_diner(tx: &mut VenueTx, diner: Uuid) -> Result<Vec<Order>, AppError> {
    let sql = format!("{ORDER_SELECT} WHERE o.diner_id = $1 ORDER BY o.number");
    Ok(sqlx::query_as(&sql).bind(diner).fetch_all(tx.conn()).await?)
}

/// Diners of the transaction's venue with an order still in the kitchen (their
/// statements are needed for its alerts).
pub async fn diners_with_open_orders(tx: &mut VenueTx) -> Result<Vec<Uuid>, AppError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT diner_id FROM orders WHERE diner_id IS NOT NULL AND status IN ('placed', 'preparing', 'ready')",
    )
    .fetch_all(tx.conn())
    .await?)
}
