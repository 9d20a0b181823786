//! The effects of verified Stripe events, applied in the transaction that stored the event.
//!
//! Routing: payment, charge, refund and dispute events name a PaymentIntent, which the
//! private index maps to the venue and checkout that created it (the PaymentIntent's
//! metadata must agree); `account.updated` names the connected account. The handler then
//! runs under that venue's scope only.
//!
//! Order independence: every state an event sets carries the event's `created` time and
//! id, and an older event never overwrites a newer one; a success is never undone by a
//! later failure or cancellation; refunded amounts only grow. So the final state is the
//! same whatever order, and however often, events arrive.
//!
//! This module holds the only `INSERT INTO orders` of the code base: [`payment_succeeded`].

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::events::{Endpoint, EventEnvelope};
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{ResolvingTx, VenueId, VenueTx};

/// Event types with effects; everything else is stored and acknowledged.
pub const HANDLED_TYPES: &[&str] = &[
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "charge.refund.updated",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "account.updated",
];

/// When an event's state was produced, and how to break ties of the same second.
struct Stamp<'a> {
    at: DateTime<Utc>,
    event: &'a str,
}

impl Stamp<'_> {
    /// The tie-break stored as `state_event`: `"<rank>:<event id>"`. Within one second a
    /// more final state (higher rank, one digit) wins, then the higher event id; so the
    /// winner never depends on the arrival order.
    fn key(&self, rank: u8) -> String {
        format!("{}:{}", rank.min(9), self.event)
    }
}

/// How final a Stripe refund or dispute status is (the tie-break rank).
fn finality(status: &str) -> u8 {
    match status {
        "pending" | "needs_response" | "warning_needs_response" => 0,
        "requires_action" | "under_review" | "warning_under_review" => 1,
        _ => 2,
    }
}

enum Route {
    Venue { venue: VenueId, checkout: Option<Uuid> },
    Nowhere(String),
}

/// Routes and applies a freshly stored event, marks it processed and commits; returns
/// what it did and at which venue.
pub(super) async fn apply(
    mut tx: ResolvingTx,
    endpoint: Endpoint,
    event: &EventEnvelope,
    body: &Value,
) -> Result<(String, Option<VenueId>), AppError> {
    let object = &body["data"]["object"];
    match route(&mut tx, endpoint, event, object).await? {
        Route::Venue { venue, checkout } => {
            let mut tx = tx.into_venue(venue).await?;
            let stamp = Stamp { at: DateTime::from_timestamp(event.created, 0).unwrap_or_default(), event: &event.id };
            let outcome = handle(&mut tx, event, object, checkout, &stamp).await?;
            finish(tx.conn(), &event.id, Some(venue), &outcome).await?;
            tx.commit().await?;
            Ok((outcome, Some(venue)))
        }
        Route::Nowhere(outcome) => {
            finish(tx.conn(), &event.id, None, &outcome).await?;
            tx.commit().await?;
            Ok((outcome, None))
        }
    }
}

async fn finish(
    conn: &mut sqlx::PgConnection,
    id: &str,
    venue: Option<VenueId>,
    outcome: &str,
) -> Result<(), AppError> {
    sqlx::query("SELECT private.finish_stripe_event($1, $2, $3)")
        .bind(id)
        .bind(venue.map(|v| v.as_uuid()))
        .bind(outcome)
        .execute(conn)
        .await?;
    Ok(())
}

async fn route(
    tx: &mut ResolvingTx,
    endpoint: Endpoint,
    event: &EventEnvelope,
    object: &Value,
) -> Result<Route, AppError> {
    let kind = event.event_type.as_str();
    if !HANDLED_TYPES.contains(&kind) {
        return Ok(Route::Nowhere(format!("ignored: {kind} has no effect here")));
    }
    // Destination charges report payments to the platform endpoint; the Connect endpoint
    // only reports connected accounts. Anything else there is not ours to apply.
    let expected = match endpoint {
        Endpoint::Connect => kind == "account.updated",
        Endpoint::Platform => kind != "account.updated",
    };
    if !expected {
        return Ok(Route::Nowhere(format!("ignored: {kind} is not expected on this endpoint")));
    }
    if kind == "account.updated" {
        let account = event.account.as_deref().or(object["id"].as_str()).unwrap_or_default();
        let venue: Option<Uuid> =
            sqlx::query_scalar("SELECT private.stripe_account_venue($1)").bind(account).fetch_one(tx.conn()).await?;
        return Ok(match venue {
            Some(venue) => Route::Venue { venue: VenueId::from_uuid(venue), checkout: None },
            None => Route::Nowhere("ignored: the account is not connected to any venue".into()),
        });
    }
    let payment_intent =
        if kind.starts_with("payment_intent.") { object["id"].as_str() } else { object["payment_intent"].as_str() };
    let Some(payment_intent) = payment_intent else {
        return Ok(Route::Nowhere("ignored: the object names no PaymentIntent".into()));
    };
    let found: Option<(Uuid, Uuid)> =
        sqlx::query_as("SELECT venue_id, checkout_id FROM private.payment_intent_route($1)")
            .bind(payment_intent)
            .fetch_optional(tx.conn())
            .await?;
    match found {
        Some((venue, checkout)) => Ok(Route::Venue { venue: VenueId::from_uuid(venue), checkout: Some(checkout) }),
        None => {
            if object["metadata"]["venue_id"].is_string() {
                let detail = json!({ "event": event.id, "type": kind, "payment_intent": payment_intent,
                    "metadata": object["metadata"] });
                tracing::error!(alert = true, event_id = %event.id, payment_intent, "Stripe event for a PaymentIntent venueql never created");
                sqlx::query("SELECT private.record_security_event('stripe.unknown_payment_intent', NULL, NULL, $1)")
                    .bind(detail)
                    .execute(tx.conn())
                    .await?;
            }
            Ok(Route::Nowhere("ignored: unknown PaymentIntent".into()))
        }
    }
}

fn who(event: &EventEnvelope) -> Who {
    Who::outside_http(format!("stripe_event:{}", event.id))
}

async fn handle(
    tx: &mut VenueTx,
    event: &EventEnvelope,
    object: &Value,
    checkout: Option<Uuid>,
    stamp: &Stamp<'_>,
) -> Result<String, AppError> {
    let who = who(event);
    // Events of one checkout apply one after another (Stripe delivers related events at once).
    if let Some(checkout) = checkout {
        sqlx::query("SELECT 1 FROM checkouts WHERE id = $1 FOR UPDATE").bind(checkout).execute(tx.conn()).await?;
    }
    match (event.event_type.as_str(), checkout) {
        ("payment_intent.succeeded", Some(checkout)) => payment_succeeded(tx, &who, object, checkout, stamp).await,
        ("payment_intent.payment_failed", Some(checkout)) => payment_ended(tx, object, checkout, "failed", stamp).await,
        ("payment_intent.canceled", Some(checkout)) => payment_ended(tx, object, checkout, "canceled", stamp).await,
        ("charge.refunded", Some(checkout)) => charge_refunded(tx, &who, object, checkout, stamp).await,
        ("refund.created" | "refund.updated" | "charge.refund.updated", Some(checkout)) => {
            refund_changed(tx, &who, object, checkout, stamp).await
        }
        (kind, Some(checkout)) if kind.starts_with("charge.dispute.") => {
            dispute_changed(tx, &who, kind, object, checkout, stamp).await
        }
        ("account.updated", None) => super::accounts::apply_account(tx, &who, object, stamp.at, &stamp.key(0)).await,
        (kind, _) => Ok(format!("ignored: {kind} could not be routed")),
    }
}

/// The checkout fields a payment is checked against, and what is already known about it.
#[derive(sqlx::FromRow)]
struct CheckoutForPayment {
    amount_minor: i64,
    currency: String,
    application_fee_minor: i64,
    payment_intent_id: Option<String>,
    table_ref: Option<String>,
    /// The venue's connected account.
    account: Option<String>,
    /// The order number, when this checkout already has its order.
    existing_number: Option<i64>,
    /// Refund or dispute events arrived before this one.
    has_money_events: bool,
    /// The diner who checked out, if they gave details.
    diner_id: Option<Uuid>,
    /// Their sharing request at this checkout, applied now that the payment is verified.
    share_consent: Option<bool>,
    shared_allergens: Option<Vec<u8>>,
    shared_notes: Option<Vec<u8>>,
    /// Whether the diner proved their email at this checkout.
    diner_verified: bool,
}

/// What does not match between a succeeded PaymentIntent and the checkout it names.
fn payment_mismatches(venue: VenueId, checkout_id: Uuid, checkout: &CheckoutForPayment, intent: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, seen: Value, wanted: Value| {
        if seen != wanted {
            problems.push(format!("{what}: Stripe says {seen}, the checkout says {wanted}"));
        }
    };
    expect("payment_intent", intent["id"].clone(), json!(checkout.payment_intent_id));
    expect("amount", intent["amount"].clone(), json!(checkout.amount_minor));
    expect("amount_received", intent["amount_received"].clone(), json!(checkout.amount_minor));
    expect("currency", json!(intent["currency"].as_str().map(str::to_ascii_uppercase)), json!(checkout.currency));
    expect("metadata.venue_id", intent["metadata"]["venue_id"].clone(), json!(venue.to_string()));
    expect("metadata.checkout_id", intent["metadata"]["checkout_id"].clone(), json!(checkout_id.to_string()));
    expect("transfer_data.destination", intent["transfer_data"]["destination"].clone(), json!(checkout.account));
    // Stripe renders "no fee" as null.
    let fee = intent["application_fee_amount"].as_i64().unwrap_or(0);
    expect("application_fee_amount", json!(fee), json!(checkout.application_fee_minor));
    problems
}

/// `payment_intent.succeeded`: the one place an order is created, after checking that
/// amount, currency, venue, checkout, destination and fee all match the checkout.
///
/// Statements are ordered so that the venue-wide serialisation (the order counter row and
/// the audit chain) is taken last and held for as few round trips as possible.
async fn payment_succeeded(
    tx: &mut VenueTx,
    who: &Who,
    intent: &Value,
    checkout_id: Uuid,
    stamp: &Stamp<'_>,
) -> Result<String, AppError> {
    let venue = tx.venue();
    let checkout: Option<CheckoutForPayment> = sqlx::query_as(
        "SELECT c.amount_minor, c.currency, c.application_fee_minor, c.payment_intent_id, c.table_ref, c.diner_id, \
                c.share_consent, c.shared_allergens, c.shared_notes, c.diner_verified, \
                (SELECT a.account_id FROM stripe_accounts a) AS account, \
                (SELECT o.number FROM orders o WHERE o.checkout_id = c.id) AS existing_number, \
                (c.charge_amount_refunded > 0 OR EXISTS (SELECT 1 FROM refunds r WHERE r.checkout_id = c.id) \
                 OR EXISTS (SELECT 1 FROM disputes d WHERE d.checkout_id = c.id)) AS has_money_events \
         FROM checkouts c WHERE c.id = $1",
    )
    .bind(checkout_id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(checkout) = checkout else {
        return Err(AppError::internal(format!("routed checkout {checkout_id} is missing at venue {venue}")));
    };
    let problems = payment_mismatches(venue, checkout_id, &checkout, intent);
    if !problems.is_empty() {
        let change = Change {
            action: "payment.mismatch",
            target_type: "checkout",
            target_id: checkout_id.to_string(),
            before: None,
            after: Some(json!({ "event": stamp.event, "payment_intent": intent["id"], "problems": problems })),
        };
        audit::record_critical(tx, who, change).await?;
        return Ok(format!("mismatch, no order: {}", problems.join("; ")));
    }
    if let Some(number) = checkout.existing_number {
        return Ok(format!("order #{number} already exists for this checkout"));
    }
    sqlx::query(
        "UPDATE checkouts SET status = 'succeeded', failure_reason = NULL, state_at = $2, state_event = $3, updated_at = now() \
         WHERE id = $1",
    )
    .bind(checkout_id)
    .bind(stamp.at)
    .bind(stamp.key(9))
    .execute(tx.conn())
    .await?;
    sqlx::query("SELECT private.settle_payment_intent($1)").bind(intent["id"].as_str()).execute(tx.conn()).await?;
    if let Some(diner) = checkout.diner_id {
        // The diner is now known to have paid here: their sharing request takes effect.
        sqlx::query("SELECT private.diner_paid(d.identity_hash, $2, $3, $4, $5) FROM diners d WHERE d.id = $1")
            .bind(diner)
            .bind(checkout.diner_verified)
            .bind(checkout.share_consent)
            .bind(&checkout.shared_allergens)
            .bind(&checkout.shared_notes)
            .execute(tx.conn())
            .await?;
    }
    // Number, order and payment in one statement.
    let (order_id, number): (Uuid, i64) = sqlx::query_as(&format!(
        "WITH counter AS ( \
             INSERT INTO order_counters (venue_id, last_number) VALUES ($1, 1) \
             ON CONFLICT (venue_id) DO UPDATE SET last_number = order_counters.last_number + 1 RETURNING last_number), \
         placed AS ( \
             INSERT INTO orders (venue_id, number, checkout_id, amount_minor, currency, table_ref, created_by_event, lines, diner_id) \
             SELECT $1, counter.last_number, $2, $3, $4, $5, $6, ({}), $10 FROM counter RETURNING id, number), \
         paid AS ( \
             INSERT INTO payments (venue_id, order_id, payment_intent_id, charge_id, amount_minor, currency, application_fee_minor) \
             SELECT $1, placed.id, $7, $8, $3, $4, $9 FROM placed) \
         SELECT id, number FROM placed",
        crate::orders::LINES_OF_CHECKOUT.replace("$1", "$2")
    ))
    .bind(venue.as_uuid())
    .bind(checkout_id)
    .bind(checkout.amount_minor)
    .bind(&checkout.currency)
    .bind(&checkout.table_ref)
    .bind(stamp.event)
    .bind(intent["id"].as_str())
    .bind(intent["latest_charge"].as_str())
    .bind(checkout.application_fee_minor)
    .bind(checkout.diner_id)
    .fetch_one(tx.conn())
    .await?;
    let change = Change {
        action: "order.placed",
        target_type: "order",
        target_id: order_id.to_string(),
        before: None,
        after: Some(json!({ "number": number, "amount_minor": checkout.amount_minor, "currency": checkout.currency,
            "payment_intent": intent["id"], "checkout": checkout_id })),
    };
    audit::record(tx, who, change).await?;
    if checkout.has_money_events {
        crate::orders::sync_money(tx, who, checkout_id).await?;
    }
    Ok(format!("order #{number} placed"))
}

/// `payment_intent.payment_failed` / `.canceled`: the checkout failed, unless it already
/// succeeded (never undone) or expired, or a newer event decided its state.
async fn payment_ended(
    tx: &mut VenueTx,
    intent: &Value,
    checkout_id: Uuid,
    status: &str,
    stamp: &Stamp<'_>,
) -> Result<String, AppError> {
    let reason = intent["last_payment_error"]["message"].as_str().or(intent["cancellation_reason"].as_str());
    let changed = sqlx::query(
        "UPDATE checkouts SET status = $2, failure_reason = $3, state_at = $4, state_event = $5, updated_at = now() \
         WHERE id = $1 AND status NOT IN ('succeeded', 'expired') AND (state_at, state_event) < ($4, $5)",
    )
    .bind(checkout_id)
    .bind(status)
    .bind(reason.map(|r| r.chars().take(500).collect::<String>()))
    .bind(stamp.at)
    .bind(stamp.key(if status == "canceled" { 2 } else { 1 }))
    .execute(tx.conn())
    .await?
    .rows_affected();
    if status == "canceled" {
        sqlx::query("SELECT private.settle_payment_intent($1)").bind(intent["id"].as_str()).execute(tx.conn()).await?;
    }
    Ok(if changed == 1 {
        format!("checkout {status}")
    } else {
        "no change: the checkout's state is newer or final".into()
    })
}

/// `charge.refunded`: the charge's cumulative refunded amount (only grows), plus any
/// refund objects it carries.
async fn charge_refunded(
    tx: &mut VenueTx,
    who: &Who,
    charge: &Value,
    checkout_id: Uuid,
    stamp: &Stamp<'_>,
) -> Result<String, AppError> {
    let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
    sqlx::query(
        "UPDATE checkouts SET charge_amount_refunded = greatest(charge_amount_refunded, $2), updated_at = now() WHERE id = $1",
    )
    .bind(checkout_id)
    .bind(refunded)
    .execute(tx.conn())
    .await?;
    for refund in charge["refunds"]["data"].as_array().into_iter().flatten() {
        upsert_refund(tx, who, refund, checkout_id, stamp).await?;
    }
    confirm_covered_refunds(tx, checkout_id, refunded, stamp).await?;
    crate::orders::sync_money(tx, who, checkout_id).await?;
    Ok(format!("charge refunded {refunded} in total"))
}

/// Stripe's cumulative `amount_refunded` counts refunds as soon as they are made: refunds
/// still in flight here that it covers (oldest first) are confirmed by it. A newer
/// `refund.updated` (a refund that failed after all) still overrides this.
async fn confirm_covered_refunds(
    tx: &mut VenueTx,
    checkout_id: Uuid,
    charge_refunded: i64,
    stamp: &Stamp<'_>,
) -> Result<(), AppError> {
    sqlx::query(
        "WITH confirmed AS (SELECT coalesce(sum(amount_minor), 0) AS total FROM refunds WHERE checkout_id = $1 AND status = 'succeeded'), \
              in_flight AS (SELECT id, sum(amount_minor) OVER (ORDER BY created_at, id) AS running FROM refunds \
                            WHERE checkout_id = $1 AND status IN ('requested', 'pending', 'requires_action')) \
         UPDATE refunds r SET status = 'succeeded', state_at = $3, state_event = $4, updated_at = now() \
         FROM in_flight f, confirmed c \
         WHERE r.id = f.id AND c.total + f.running <= $2 AND (r.state_at, r.state_event) < ($3, $4)",
    )
    .bind(checkout_id)
    .bind(charge_refunded)
    .bind(stamp.at)
    .bind(stamp.key(2))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// `refund.*`: one refund's state.
async fn refund_changed(
    tx: &mut VenueTx,
    who: &Who,
    refund: &Value,
    checkout_id: Uuid,
    stamp: &Stamp<'_>,
) -> Result<String, AppError> {
    let outcome = upsert_refund(tx, who, refund, checkout_id, stamp).await?;
    crate::orders::sync_money(tx, who, checkout_id).await?;
    Ok(outcome)
}

const REFUND_STATES: &[&str] = &["pending", "requires_action", "succeeded", "failed", "canceled"];

async fn upsert_refund(
    tx: &mut VenueTx,
    who: &Who,
    refund: &Value,
    checkout_id: Uuid,
    stamp: &Stamp<'_>,
) -> Result<String, AppError> {
    let (Some(stripe_id), Some(status), Some(amount)) =
        (refund["id"].as_str(), refund["status"].as_str(), refund["amount"].as_i64())
    else {
        return Ok("ignored: refund without id, status or amount".into());
    };
    if !REFUND_STATES.contains(&status) || amount <= 0 {
        return Ok(format!("ignored: refund state {status:?} or amount {amount} not understood"));
    }
    let ours = refund["metadata"]["refund_id"].as_str().and_then(|id| Uuid::parse_str(id).ok());
    let updated: Option<Uuid> = match ours {
        Some(ours) => {
            sqlx::query_scalar(
                "UPDATE refunds SET stripe_refund_id = $2, status = $3, state_at = $4, state_event = $5, updated_at = now() \
                 WHERE id = $1 AND checkout_id = $6 AND (state_at, state_event) < ($4, $5) RETURNING id",
            )
            .bind(ours)
            .bind(stripe_id)
            .bind(status)
            .bind(stamp.at)
            .bind(stamp.key(finality(status)))
            .bind(checkout_id)
            .fetch_optional(tx.conn())
            .await?
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO refunds (venue_id, checkout_id, stripe_refund_id, amount_minor, currency, status, reason, \
                                      requested_by, state_at, state_event) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'stripe', $8, $9) \
                 ON CONFLICT (venue_id, stripe_refund_id) DO UPDATE \
                   SET status = EXCLUDED.status, state_at = EXCLUDED.state_at, state_event = EXCLUDED.state_event, updated_at = now() \
                   WHERE (refunds.state_at, refunds.state_event) < (EXCLUDED.state_at, EXCLUDED.state_event) \
                 RETURNING id",
            )
            .bind(tx.venue().as_uuid())
            .bind(checkout_id)
            .bind(stripe_id)
            .bind(amount)
            .bind(refund["currency"].as_str().unwrap_or_default().to_ascii_uppercase())
            .bind(status)
            .bind(refund["reason"].as_str())
            .bind(stamp.at)
            .bind(stamp.key(finality(status)))
            .fetch_optional(tx.conn())
            .await?
        }
    };
    let Some(refund_id) = updated else {
        return Ok(format!("refund {stripe_id}: no change (a newer state is recorded)"));
    };
    let change = Change {
        action: "refund.updated",
        target_type: "refund",
        target_id: refund_id.to_string(),
        before: None,
        after: Some(json!({ "stripe_refund": stripe_id, "status": status, "amount_minor": amount })),
    };
    audit::record(tx, who, change).await?;
    Ok(format!("refund {stripe_id} {status}"))
}

/// `charge.dispute.*`: the dispute's state, with a critical audit event on opening and
/// closing.
async fn dispute_changed(
    tx: &mut VenueTx,
    who: &Who,
    kind: &str,
    dispute: &Value,
    checkout_id: Uuid,
    stamp: &Stamp<'_>,
) -> Result<String, AppError> {
    let (Some(id), Some(status)) = (dispute["id"].as_str(), dispute["status"].as_str()) else {
        return Ok("ignored: dispute without id or status".into());
    };
    let amount = dispute["amount"].as_i64().unwrap_or(0);
    let reason = dispute["reason"].as_str().unwrap_or("general");
    let changed: Option<String> = sqlx::query_scalar(
        "INSERT INTO disputes (venue_id, stripe_dispute_id, checkout_id, amount_minor, currency, reason, status, state_at, state_event) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (venue_id, stripe_dispute_id) DO UPDATE \
           SET status = EXCLUDED.status, amount_minor = EXCLUDED.amount_minor, reason = EXCLUDED.reason, \
               state_at = EXCLUDED.state_at, state_event = EXCLUDED.state_event, updated_at = now() \
           WHERE (disputes.state_at, disputes.state_event) < (EXCLUDED.state_at, EXCLUDED.state_event) \
         RETURNING status",
    )
    .bind(tx.venue().as_uuid())
    .bind(id)
    .bind(checkout_id)
    .bind(amount)
    .bind(dispute["currency"].as_str().unwrap_or_default().to_ascii_uppercase())
    .bind(reason)
    .bind(status)
    .bind(stamp.at)
    .bind(stamp.key(finality(status)))
    .fetch_optional(tx.conn())
    .await?;
    crate::orders::sync_money(tx, who, checkout_id).await?;
    let action = match kind {
        "charge.dispute.created" => Some("dispute.created"),
        "charge.dispute.closed" => Some("dispute.closed"),
        _ => None,
    };
    if let Some(action) = action {
        let change = Change {
            action,
            target_type: "dispute",
            target_id: id.to_string(),
            before: None,
            after: Some(json!({ "status": status, "reason": reason, "amount_minor": amount, "checkout": checkout_id })),
        };
        audit::record_critical(tx, who, change).await?;
    }
    Ok(match changed {
        Some(status) => format!("dispute {id} {status}"),
        None => format!("dispute {id}: no change (a newer state is recorded)"),
    })
}
