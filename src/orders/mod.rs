//! Orders: read as whole objects (lines, refund and dispute state, payment) in one
//! set-based statement whatever the number of orders, so the queue costs the same SQL for
//! 5 orders as for 50. Orders are created only by the payment webhook (see
//! `payments::effects`); staff advance them through the kitchen and refund them.

pub mod graphql;
pub mod live;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::payments::Payments;
use crate::payments::stripe::{Params, StripeError, metadata};
use crate::tenancy::{Db, VenueId, VenueTx};

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
#[derive(Clone, Debug, Deserialize)]
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
/// but the payment comes from the order row itself (see `sync_money`), so the cost does
/// not depend on how many checkouts, lines or refunds the venue has.
pub(crate) const ORDER_SELECT: &str = "\
SELECT o.id, o.number, o.status, o.amount_minor, o.currency, o.table_ref, o.created_at, o.updated_at, o.checkout_id,
       o.lines, o.refunded_minor, o.refund_pending_minor, o.dispute_status, o.diner_id,
       p.payment_intent_id, p.charge_id, p.application_fee_minor
  FROM orders o
  JOIN payments p ON (p.venue_id, p.order_id) = (o.venue_id, o.id)";

/// The order's lines as stored on the order (the checkout's lines when it was paid).
pub(crate) const LINES_OF_CHECKOUT: &str = "\
SELECT coalesce(jsonb_agg(jsonb_build_object('menu_item_id', i.menu_item_id, 'name', i.name,
           'unit_price_minor', i.unit_price_minor, 'quantity', i.quantity, 'note', i.note,
           'allergens', i.allergens) ORDER BY i.line), '[]'::jsonb)
  FROM checkout_items i WHERE i.checkout_id = $1";

/// Recomputes the refund and dispute state of the checkout's order from its refunds and
/// disputes; marks it refunded once confirmed refunds cover it, and gives it back its
/// kitchen status if such a refund fails after all (both audited). Runs after every
/// change to those, in the same transaction.
pub(crate) async fn sync_money(tx: &mut VenueTx, who: &Who, checkout_id: Uuid) -> Result<(), AppError> {
    // Lock first, in its own statement: the recompute below then reads a snapshot taken
    // after any concurrent writer of this order committed.
    sqlx::query("SELECT 1 FROM orders WHERE checkout_id = $1 FOR UPDATE").bind(checkout_id).execute(tx.conn()).await?;
    let changed: Option<(Uuid, String, String)> = sqlx::query_as(
        "WITH r AS (SELECT coalesce(sum(amount_minor) FILTER (WHERE status = 'succeeded'), 0)::bigint AS confirmed, \
                           coalesce(sum(amount_minor) FILTER (WHERE status IN ('requested', 'pending', 'requires_action')), 0)::bigint AS in_flight \
                    FROM refunds WHERE checkout_id = $1), \
              m AS (SELECT r.confirmed AS refunded, r.confirmed, r.in_flight FROM r), \
              d AS (SELECT status FROM disputes WHERE checkout_id = $1 ORDER BY created_at DESC, stripe_dispute_id LIMIT 1), \
              next AS (SELECT o.id, m.refunded, greatest(0, m.confirmed + m.in_flight - m.refunded) AS pending, \
                              (SELECT status FROM d) AS dispute, \
                              CASE WHEN m.refunded >= o.amount_minor THEN 'refunded' \
                                   WHEN o.status = 'refunded' THEN coalesce(o.status_before_refund, 'placed') \
                                   ELSE o.status END AS status, \
                              o.status AS before \
                       FROM orders o, m WHERE o.checkout_id = $1) \
         UPDATE orders o SET refunded_minor = n.refunded, refund_pending_minor = n.pending, dispute_status = n.dispute, \
                status = n.status, updated_at = now(), \
                status_before_refund = CASE WHEN n.status = 'refunded' AND o.status <> 'refunded' THEN o.status \
                                            ELSE o.status_before_refund END \
         FROM next n \
         WHERE o.id = n.id AND (o.refunded_minor, o.refund_pending_minor, o.dispute_status, o.status) \
               IS DISTINCT FROM (n.refunded, n.pending, n.dispute, n.status) \
         RETURNING o.id, n.before, n.status",
    )
    .bind(checkout_id)
    .fetch_optional(tx.conn())
    .await?;
    if let Some((order_id, before, after)) = changed
        && before != after
    {
        let action = if after == "refunded" { "order.refunded" } else { "order.refund_reversed" };
        let change = Change {
            action,
            target_type: "order",
            target_id: order_id.to_string(),
            before: Some(json!({ "status": before })),
            after: Some(json!({ "status": after })),
        };
        audit::record(tx, who, change).await?;
    }
    Ok(())
}

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

/// Refunds of at least this share of an order (in percent) raise a critical audit event.
pub const LARGE_REFUND_PERCENT: i64 = 100;

/// `refundOrder`: records the refund as requested, asks Stripe (idempotency key = the
/// refund's id, so a retry cannot refund twice), and leaves it pending until the webhook
/// confirms it. Refuses more than what is left to refund, counting refunds in flight.
pub async fn refund(
    db: &Db,
    payments: &Payments,
    venue: VenueId,
    who: &Who,
    order_id: Uuid,
    amount_minor: i64,
    reason: Option<&str>,
) -> Result<(), AppError> {
    if amount_minor <= 0 {
        return Err(AppError::bad_input("amountMinor must be a positive number of minor units"));
    }
    if reason.is_some_and(|r| r.chars().count() > 500) {
        return Err(AppError::bad_input("reason must be at most 500 characters"));
    }
    let client = payments.client()?;
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE").bind(order_id).fetch_optional(tx.conn()).await?;
    let order = find(&mut tx, order_id).await?.ok_or(AppError::NotFound("order"))?;
    let left = order.amount_minor - order.refunded_minor - order.refund_pending_minor;
    if amount_minor > left {
        let message = format!(
            "amountMinor {amount_minor} is more than what is left to refund on this order ({left} of {} {}, counting refunds in progress)",
            order.amount_minor, order.currency
        );
        return Err(AppError::bad_input(message));
    }
    let refund_id: Uuid = sqlx::query_scalar(
        "INSERT INTO refunds (venue_id, checkout_id, amount_minor, currency, status, reason, requested_by) \
         VALUES ($1, $2, $3, $4, 'requested', $5, $6) RETURNING id",
    )
    .bind(venue.as_uuid())
    .bind(order.checkout_id)
    .bind(amount_minor)
    .bind(&order.currency)
    .bind(reason)
    .bind(&who.actor)
    .fetch_one(tx.conn())
    .await?;
    let change = Change {
        action: "refund.requested",
        target_type: "order",
        target_id: order_id.to_string(),
        before: Some(
            json!({ "refunded_minor": order.refunded_minor, "refund_pending_minor": order.refund_pending_minor }),
        ),
        after: Some(json!({ "refund": refund_id, "amount_minor": amount_minor, "reason": reason })),
    };
    if amount_minor * 100 >= order.amount_minor * LARGE_REFUND_PERCENT {
        audit::record_critical(&mut tx, who, change).await?;
    } else {
        audit::record(&mut tx, who, change).await?;
    }
    sync_money(&mut tx, who, order.checkout_id).await?;
    tx.commit().await?;

    let params = refund_params(&order.payment_intent_id, amount_minor, venue, refund_id);
    let key = refund_key(refund_id);
    let outcome = client.post("/v1/refunds", &key, &params).await;
    // Stripe said no (a definite 4xx): the refund failed and frees its amount. Anything
    // else (no answer, 409, 429, 5xx after retries) may have refunded: it stays
    // `requested`, still counted against what is left, until Stripe's webhook or a retry
    // with the same idempotency key settles it.
    let refused = matches!(&outcome, Err(StripeError::Api { status, .. }) if (400..500).contains(status) && *status != 409 && *status != 429);
    let mut tx = db.venue_tx(venue).await?;
    match &outcome {
        Ok(stripe_refund) => {
            mark_accepted(&mut tx, refund_id, stripe_refund["id"].as_str()).await?;
        }
        Err(_) if refused => {
            sqlx::query(
                "UPDATE refunds SET status = 'failed', updated_at = now() WHERE id = $1 AND status = 'requested'",
            )
            .bind(refund_id)
            .execute(tx.conn())
            .await?;
        }
        Err(_) => {}
    }
    sync_money(&mut tx, who, order.checkout_id).await?;
    tx.commit().await?;
    match outcome {
        Ok(_) => Ok(()),
        Err(error) if refused => Err(AppError::bad_input(format!("Stripe refused the refund: {error}"))),
        Err(error) => {
            tracing::warn!(error = %error, refund = %refund_id, "refund outcome unknown; left requested");
            Err(AppError::Unavailable(
                "Stripe did not confirm the refund; it stays pending and is retried with the same idempotency key, so it cannot be made twice".into(),
            ))
        }
    }
}

/// The parameters of the refund request: the transfer to the venue and the platform's
/// fee are reversed in proportion, and the refund names its row for the webhook.
fn refund_params(payment_intent: &str, amount_minor: i64, venue: VenueId, refund_id: Uuid) -> Params {
    let mut params: Params = vec![
        ("payment_intent".into(), payment_intent.to_string()),
        ("amount".into(), amount_minor.to_string()),
        ("reverse_transfer".into(), "true".into()),
        ("refund_application_fee".into(), "true".into()),
    ];
    metadata(&mut params, &[("venue_id", venue.to_string()), ("refund_id", refund_id.to_string())]);
    params
}

/// One idempotency key per refund row: no retry can refund twice.
fn refund_key(refund_id: Uuid) -> String {
    format!("venueql-refund-{refund_id}")
}

/// Stripe accepted the refund: it is pending until the webhook confirms it.
async fn mark_accepted(tx: &mut VenueTx, refund_id: Uuid, stripe_refund_id: Option<&str>) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE refunds SET stripe_refund_id = coalesce(stripe_refund_id, $2), \
                status = CASE WHEN status = 'requested' THEN 'pending' ELSE status END, updated_at = now() \
         WHERE id = $1",
    )
    .bind(refund_id)
    .bind(stripe_refund_id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Asks Stripe again, with the same idempotency key, for refunds of the venue left
/// `requested` (Stripe did not answer at the time) for over a minute; returns how many
/// Stripe has now accepted.
pub async fn retry_requested_refunds(db: &Db, payments: &Payments, venue: VenueId) -> Result<usize, AppError> {
    let client = payments.client()?;
    let mut tx = db.venue_tx(venue).await?;
    let stuck: Vec<(Uuid, i64, String)> = sqlx::query_as(
        "SELECT r.id, r.amount_minor, p.payment_intent_id FROM refunds r \
         JOIN orders o ON o.checkout_id = r.checkout_id JOIN payments p ON p.order_id = o.id \
         WHERE r.status = 'requested' AND r.created_at < now() - interval '1 minute' ORDER BY r.created_at LIMIT 50",
    )
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    let mut accepted = 0;
    for (refund_id, amount, payment_intent) in stuck {
        let params = refund_params(&payment_intent, amount, venue, refund_id);
        if let Ok(stripe_refund) = client.post("/v1/refunds", &refund_key(refund_id), &params).await {
            let mut tx = db.venue_tx(venue).await?;
            mark_accepted(&mut tx, refund_id, stripe_refund["id"].as_str()).await?;
            tx.commit().await?;
            accepted += 1;
        }
    }
    Ok(accepted)
}

/// A refund of an order.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Refund {
    /// Refund id.
    pub id: Uuid,
    /// Stripe's refund id, once known.
    pub stripe_refund_id: Option<String>,
    /// Minor units.
    pub amount_minor: i64,
    /// requested, pending, requires_action, succeeded, failed, canceled.
    pub status: String,
    /// Why.
    pub reason: Option<String>,
    /// Who asked (actor), or `stripe` for refunds made at Stripe.
    pub requested_by: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// The refunds of the order with checkout `checkout_id`.
/// The refunds of the orders of these checkouts, by checkout, newest first, in one
/// statement.
pub async fn refunds_of(
    tx: &mut VenueTx,
    checkouts: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<Refund>>, AppError> {
    let rows: Vec<(Uuid, Refund)> = sqlx::query_as::<_, RefundRow>(
        "SELECT checkout_id, id, stripe_refund_id, amount_minor, status, reason, requested_by, created_at FROM refunds \
         WHERE venue_id = $1 AND checkout_id = ANY($2) ORDER BY created_at DESC",
    )
    .bind(tx.venue().as_uuid())
    .bind(checkouts)
    .fetch_all(tx.conn())
    .await?
    .into_iter()
    .map(|row| (row.checkout_id, row.refund))
    .collect();
    let mut by_checkout: std::collections::HashMap<Uuid, Vec<Refund>> = std::collections::HashMap::new();
    for (checkout, refund) in rows {
        by_checkout.entry(checkout).or_default().push(refund);
    }
    Ok(by_checkout)
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    checkout_id: Uuid,
    #[sqlx(flatten)]
    refund: Refund,
}
