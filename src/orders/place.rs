//! Placing an order: the only `INSERT INTO orders` of the code base. It is called by
//! `payments` once a verified payment matched its checkout; no API mutation reaches it.

use serde_json::json;
use uuid::Uuid;

use super::OrderLine;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::VenueTx;

/// The provider's record of the payment that pays an order.
#[derive(Clone, Copy, Debug)]
pub struct PaymentRecord<'a> {
    /// The provider's payment id (`pi_…`).
    pub payment_intent_id: &'a str,
    /// The charge that paid it.
    pub charge_id: Option<&'a str>,
    /// The platform's fee, minor units.
    pub application_fee_minor: i64,
}

/// A paid checkout, to become an order.
#[derive(Clone, Copy, Debug)]
pub struct PaidOrder<'a> {
    /// The checkout it pays.
    pub checkout_id: Uuid,
    /// What was paid, minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: &'a str,
    /// The diner's table.
    pub table_ref: Option<&'a str>,
    /// The checkout's lines, as priced.
    pub lines: &'a [OrderLine],
    /// The diner, if they gave details.
    pub diner_id: Option<Uuid>,
    /// The payment.
    pub payment: PaymentRecord<'a>,
    /// The provider event that confirmed it.
    pub event: &'a str,
}

/// The number of the checkout's order, if it has one already.
pub async fn number_of_checkout(tx: &mut VenueTx, checkout_id: Uuid) -> Result<Option<i64>, AppError> {
    Ok(sqlx::query_scalar("SELECT number FROM orders WHERE checkout_id = $1")
        .bind(checkout_id)
        .fetch_optional(tx.conn())
        .await?)
}

/// Places the order of a paid checkout: its number, the order and its payment in one
/// statement (the venue's counter row is the last lock taken), then its audit row; and if
/// refunds or disputes of the payment arrived before the payment did, the order's money
/// state at once. Returns the order number.
pub async fn place_paid_order(tx: &mut VenueTx, who: &Who, paid: &PaidOrder<'_>) -> Result<i64, AppError> {
    let venue = tx.venue();
    let (order_id, number, money_seen): (Uuid, i64, bool) = sqlx::query_as(
        "WITH counter AS ( \
             INSERT INTO order_counters (venue_id, last_number) VALUES ($1, 1) \
             ON CONFLICT (venue_id) DO UPDATE SET last_number = order_counters.last_number + 1 RETURNING last_number), \
         placed AS ( \
             INSERT INTO orders (venue_id, number, checkout_id, amount_minor, currency, table_ref, created_by_event, lines, diner_id) \
             SELECT $1, counter.last_number, $2, $3, $4, $5, $6, $11, $10 FROM counter RETURNING id, number), \
         paid AS ( \
             INSERT INTO payments (venue_id, order_id, payment_intent_id, charge_id, amount_minor, currency, application_fee_minor) \
             SELECT $1, placed.id, $7, $8, $3, $4, $9 FROM placed) \
         SELECT id, number, (EXISTS (SELECT 1 FROM refunds r WHERE r.checkout_id = $2) \
                             OR EXISTS (SELECT 1 FROM disputes d WHERE d.checkout_id = $2)) \
           FROM placed",
    )
    .bind(venue.as_uuid())
    .bind(paid.checkout_id)
    .bind(paid.amount_minor)
    .bind(paid.currency)
    .bind(paid.table_ref)
    .bind(paid.event)
    .bind(paid.payment.payment_intent_id)
    .bind(paid.payment.charge_id)
    .bind(paid.payment.application_fee_minor)
    .bind(paid.diner_id)
    .bind(sqlx::types::Json(paid.lines))
    .fetch_one(tx.conn())
    .await?;
    let change = Change {
        action: "order.placed",
        target_type: "order",
        target_id: order_id.to_string(),
        before: None,
        after: Some(json!({ "number": number, "amount_minor": paid.amount_minor, "currency": paid.currency,
            "payment_intent": paid.payment.payment_intent_id, "checkout": paid.checkout_id })),
    };
    audit::record(tx, who, change).await?;
    if money_seen {
        super::refunds_and_disputes::sync_money(tx, who, paid.checkout_id).await?;
    }
    Ok(number)
}
