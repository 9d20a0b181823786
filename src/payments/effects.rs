//! The effects of verified Stripe events, applied in the transaction that stored the event:
//! the translation of each event into this room's checkouts and accounts and into calls
//! of `orders` (placing a paid order, refund and dispute reports). Objects are read into
//! the typed structs of [`super::objects`].
//!
//! Routing: payment, charge, refund and dispute events name a PaymentIntent, which the
//! private index maps to the venue and checkout that created it (the PaymentIntent's
//! metadata must agree); `account.updated` names the connected account. The handler then
//! runs under that venue's scope only.
//!
//! Order independence: every state an event sets carries the event's `created` time and
//! id ([`Stamp`]), and an older event never overwrites a newer one; a success is never
//! undone by a later failure or cancellation. So the final state is the same whatever
//! order, and however often, events arrive.

use chrono::DateTime;
use serde_json::{Value, json};
use uuid::Uuid;

use super::checkout::CheckoutStatus;
use super::events::{Endpoint, EventEnvelope};
use super::objects::{self, Charge, Dispute, PaymentIntent, Refund};
use crate::audit::alerts::AlertKind;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::orders::OrderLine;
use crate::orders::live::OrdersHub;
use crate::orders::place::{self, PaidOrder, PaymentRecord};
use crate::orders::refunds_and_disputes::{self, DisputeReport, ReportedDispute, ReportedRefund, Stamp};
use crate::tenancy::{ResolvingTx, VenueId, VenueTx};

/// The event types with effects; everything else is stored and acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handled {
    PaymentSucceeded,
    PaymentFailed,
    PaymentCanceled,
    ChargeRefunded,
    RefundChanged,
    DisputeOpened,
    DisputeUpdated,
    DisputeClosed,
    AccountUpdated,
}

impl Handled {
    fn of(kind: &str) -> Option<Handled> {
        Some(match kind {
            "payment_intent.succeeded" => Handled::PaymentSucceeded,
            "payment_intent.payment_failed" => Handled::PaymentFailed,
            "payment_intent.canceled" => Handled::PaymentCanceled,
            "charge.refunded" => Handled::ChargeRefunded,
            "refund.created" | "refund.updated" | "charge.refund.updated" => Handled::RefundChanged,
            "charge.dispute.created" => Handled::DisputeOpened,
            "charge.dispute.updated" => Handled::DisputeUpdated,
            "charge.dispute.closed" => Handled::DisputeClosed,
            "account.updated" => Handled::AccountUpdated,
            _ => return None,
        })
    }
}

enum Route {
    Venue { venue: VenueId, checkout: Option<Uuid> },
    Nowhere(String),
}

/// Routes and applies a freshly stored event, marks it processed and commits (through
/// `orders::live::commit`, as it may have changed orders); returns what it did and where.
pub(super) async fn apply(
    mut tx: ResolvingTx,
    hub: Option<&OrdersHub>,
    endpoint: Endpoint,
    event: &EventEnvelope,
) -> Result<(String, Option<VenueId>), AppError> {
    let object = &event.body["data"]["object"];
    match route(&mut tx, endpoint, event, object).await? {
        Route::Venue { venue, checkout } => {
            let mut tx = tx.into_venue(venue).await?;
            let at = DateTime::from_timestamp(event.created, 0).unwrap_or_default();
            let stamp = Stamp { at, event: event.id.clone() };
            let outcome = handle(&mut tx, event, object, checkout, &stamp).await?;
            finish(tx.conn(), &event.id, Some(venue), &outcome).await?;
            crate::orders::live::commit(tx, hub).await?;
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

/// An object of a verified event that venueql cannot read: never acknowledged as handled
/// (the intake keeps it, alerts, and Stripe retries).
fn unreadable(why: String) -> AppError {
    AppError::Unreadable(why)
}

/// The PaymentIntent an event's object names (its own id for `payment_intent.*`).
fn payment_intent_of(handled: Handled, object: &Value) -> Result<Option<String>, AppError> {
    Ok(match handled {
        Handled::PaymentSucceeded | Handled::PaymentFailed | Handled::PaymentCanceled => {
            Some(objects::read::<PaymentIntent>("PaymentIntent", object).map_err(unreadable)?.id)
        }
        Handled::ChargeRefunded => objects::read::<Charge>("charge", object).map_err(unreadable)?.payment_intent,
        Handled::RefundChanged => objects::read::<Refund>("refund", object).map_err(unreadable)?.payment_intent,
        Handled::DisputeOpened | Handled::DisputeUpdated | Handled::DisputeClosed => {
            objects::read::<Dispute>("dispute", object).map_err(unreadable)?.payment_intent
        }
        Handled::AccountUpdated => None,
    })
}

async fn route(
    tx: &mut ResolvingTx,
    endpoint: Endpoint,
    event: &EventEnvelope,
    object: &Value,
) -> Result<Route, AppError> {
    let kind = event.event_type.as_str();
    let Some(handled) = Handled::of(kind) else {
        return Ok(Route::Nowhere(format!("ignored: {kind} has no effect here")));
    };
    // Destination charges report payments to the platform endpoint; the Connect endpoint
    // only reports connected accounts. Anything else there is not ours to apply.
    let expected = match endpoint {
        Endpoint::Connect => handled == Handled::AccountUpdated,
        Endpoint::Platform => handled != Handled::AccountUpdated,
    };
    if !expected {
        return Ok(Route::Nowhere(format!("ignored: {kind} is not expected on this endpoint")));
    }
    if handled == Handled::AccountUpdated {
        let account = match &event.account {
            Some(account) => account.clone(),
            None => objects::read::<objects::Account>("account", object).map_err(unreadable)?.id,
        };
        let venue: Option<Uuid> =
            sqlx::query_scalar("SELECT private.stripe_account_venue($1)").bind(&account).fetch_one(tx.conn()).await?;
        return Ok(match venue {
            Some(venue) => Route::Venue { venue: VenueId::from_payment_route(venue), checkout: None },
            None => Route::Nowhere("ignored: the account is not connected to any venue".into()),
        });
    }
    let Some(payment_intent) = payment_intent_of(handled, object)? else {
        return Ok(Route::Nowhere("ignored: the object names no PaymentIntent".into()));
    };
    let found: Option<(Uuid, Uuid)> =
        sqlx::query_as("SELECT venue_id, checkout_id FROM private.payment_intent_route($1)")
            .bind(&payment_intent)
            .fetch_optional(tx.conn())
            .await?;
    match found {
        Some((venue, checkout)) => {
            Ok(Route::Venue { venue: VenueId::from_payment_route(venue), checkout: Some(checkout) })
        }
        None => {
            let metadata = &object["metadata"];
            if metadata["venue_id"].is_string() {
                let detail = json!({ "event": event.id, "type": kind, "payment_intent": payment_intent,
                    "metadata": metadata });
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
    stamp: &Stamp,
) -> Result<String, AppError> {
    let who = who(event);
    let kind = event.event_type.as_str();
    let (Some(handled), Some(checkout)) = (Handled::of(kind), checkout) else {
        return match Handled::of(kind) {
            Some(Handled::AccountUpdated) => {
                let account = objects::read("account", object).map_err(unreadable)?;
                super::accounts::apply_account(tx, &who, &account, stamp).await
            }
            _ => Ok(format!("ignored: {kind} could not be routed")),
        };
    };
    // Events of one checkout apply one after another (Stripe delivers related events at once).
    sqlx::query("SELECT 1 FROM checkouts WHERE id = $1 FOR UPDATE").bind(checkout).execute(tx.conn()).await?;
    match handled {
        Handled::PaymentSucceeded => {
            let intent = objects::read("PaymentIntent", object).map_err(unreadable)?;
            payment_succeeded(tx, &who, &intent, checkout, stamp).await
        }
        Handled::PaymentFailed | Handled::PaymentCanceled => {
            let intent = objects::read("PaymentIntent", object).map_err(unreadable)?;
            let status =
                if handled == Handled::PaymentCanceled { CheckoutStatus::Canceled } else { CheckoutStatus::Failed };
            payment_ended(tx, &intent, checkout, status, stamp).await
        }
        Handled::ChargeRefunded => {
            let charge = objects::read("charge", object).map_err(unreadable)?;
            charge_refunded(tx, &who, &charge, checkout, stamp).await
        }
        Handled::RefundChanged => {
            let refund = objects::read::<Refund>("refund", object).map_err(unreadable)?;
            match reported_refund(&refund) {
                Some(reported) => refunds_and_disputes::refund_reported(tx, &who, checkout, &reported, stamp).await,
                None => Ok(format!("ignored: refund {} in a state venueql does not know", refund.id)),
            }
        }
        Handled::DisputeOpened | Handled::DisputeUpdated | Handled::DisputeClosed => {
            let report = match handled {
                Handled::DisputeOpened => DisputeReport::Opened,
                Handled::DisputeClosed => DisputeReport::Closed,
                _ => DisputeReport::Updated,
            };
            let dispute = objects::read::<Dispute>("dispute", object).map_err(unreadable)?;
            match reported_dispute(&dispute) {
                Some(reported) => {
                    refunds_and_disputes::dispute_reported(tx, &who, checkout, &reported, report, stamp).await
                }
                None => Ok(format!("ignored: dispute {} in a state venueql does not know", dispute.id)),
            }
        }
        Handled::AccountUpdated => Ok(format!("ignored: {kind} names a checkout")),
    }
}

/// The checkout fields a payment is checked against, and its lines.
#[derive(sqlx::FromRow)]
struct CheckoutForPayment {
    amount_minor: i64,
    currency: String,
    application_fee_minor: i64,
    payment_intent_id: Option<String>,
    table_ref: Option<String>,
    /// The venue's connected account.
    account: Option<String>,
    #[sqlx(json)]
    lines: Vec<OrderLine>,
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
fn payment_mismatches(
    venue: VenueId,
    checkout_id: Uuid,
    checkout: &CheckoutForPayment,
    intent: &PaymentIntent,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, seen: Value, wanted: Value| {
        if seen != wanted {
            problems.push(format!("{what}: Stripe says {seen}, the checkout says {wanted}"));
        }
    };
    expect("payment_intent", json!(intent.id), json!(checkout.payment_intent_id));
    expect("amount", json!(intent.amount), json!(checkout.amount_minor));
    expect("amount_received", json!(intent.amount_received), json!(checkout.amount_minor));
    expect("currency", json!(intent.currency.to_ascii_uppercase()), json!(checkout.currency));
    expect("metadata.venue_id", json!(intent.metadata.get("venue_id")), json!(venue.to_string()));
    expect("metadata.checkout_id", json!(intent.metadata.get("checkout_id")), json!(checkout_id.to_string()));
    let destination = intent.transfer_data.as_ref().map(|t| t.destination.as_str());
    expect("transfer_data.destination", json!(destination), json!(checkout.account));
    // Stripe renders "no fee" as null.
    expect(
        "application_fee_amount",
        json!(intent.application_fee_amount.unwrap_or(0)),
        json!(checkout.application_fee_minor),
    );
    problems
}

/// `payment_intent.succeeded`: after checking that amount, currency, venue, checkout,
/// destination and fee all match the checkout, the checkout succeeds and orders places
/// its order (the only way an order comes to be).
async fn payment_succeeded(
    tx: &mut VenueTx,
    who: &Who,
    intent: &PaymentIntent,
    checkout_id: Uuid,
    stamp: &Stamp,
) -> Result<String, AppError> {
    let venue = tx.venue();
    let checkout: Option<CheckoutForPayment> = sqlx::query_as(
        "SELECT c.amount_minor, c.currency, c.application_fee_minor, c.payment_intent_id, c.table_ref, c.diner_id, \
                c.share_consent, c.shared_allergens, c.shared_notes, c.diner_verified, \
                (SELECT a.account_id FROM stripe_accounts a) AS account, \
                (SELECT coalesce(jsonb_agg(jsonb_build_object('menu_item_id', i.menu_item_id, 'name', i.name, \
                            'unit_price_minor', i.unit_price_minor, 'quantity', i.quantity, 'note', i.note, \
                            'allergens', i.allergens) ORDER BY i.line), '[]'::jsonb) \
                   FROM checkout_items i WHERE i.checkout_id = c.id) AS lines \
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
            after: Some(json!({ "event": stamp.event, "payment_intent": intent.id, "problems": problems })),
        };
        audit::record_critical(tx, who, AlertKind::PaymentMismatch, change).await?;
        return Ok(format!("mismatch, no order: {}", problems.join("; ")));
    }
    if let Some(number) = place::number_of_checkout(tx, checkout_id).await? {
        return Ok(format!("order #{number} already exists for this checkout"));
    }
    sqlx::query(
        "UPDATE checkouts SET status = $4, failure_reason = NULL, state_at = $2, state_event = $3, updated_at = now() \
         WHERE id = $1",
    )
    .bind(checkout_id)
    .bind(stamp.at)
    .bind(stamp.key(9))
    .bind(CheckoutStatus::Succeeded.as_str())
    .execute(tx.conn())
    .await?;
    sqlx::query("SELECT private.settle_payment_intent($1)").bind(&intent.id).execute(tx.conn()).await?;
    if let Some(diner_id) = checkout.diner_id {
        // The diner is now known to have paid here: their sharing request takes effect.
        let diner = crate::diners::PaidDiner {
            diner_id,
            verified: checkout.diner_verified,
            share_consent: checkout.share_consent,
            shared_allergens: checkout.shared_allergens.as_deref(),
            shared_notes: checkout.shared_notes.as_deref(),
        };
        crate::diners::paid(tx, &diner).await?;
    }
    let paid = PaidOrder {
        checkout_id,
        amount_minor: checkout.amount_minor,
        currency: &checkout.currency,
        table_ref: checkout.table_ref.as_deref(),
        lines: &checkout.lines,
        diner_id: checkout.diner_id,
        payment: PaymentRecord {
            payment_intent_id: &intent.id,
            charge_id: intent.latest_charge.as_deref(),
            application_fee_minor: checkout.application_fee_minor,
        },
        event: &stamp.event,
    };
    let number = place::place_paid_order(tx, who, &paid).await?;
    Ok(format!("order #{number} placed"))
}

/// `payment_intent.payment_failed` / `.canceled`: the checkout failed, unless it already
/// succeeded (never undone) or expired, or a newer event decided its state.
async fn payment_ended(
    tx: &mut VenueTx,
    intent: &PaymentIntent,
    checkout_id: Uuid,
    status: CheckoutStatus,
    stamp: &Stamp,
) -> Result<String, AppError> {
    let error = intent.last_payment_error.as_ref().and_then(|e| e.message.as_deref());
    let reason = error.or(intent.cancellation_reason.as_deref());
    let canceled = status == CheckoutStatus::Canceled;
    let changed = sqlx::query(
        "UPDATE checkouts SET status = $2, failure_reason = $3, state_at = $4, state_event = $5, updated_at = now() \
         WHERE id = $1 AND status NOT IN ('succeeded', 'expired') AND (state_at, state_event) < ($4, $5)",
    )
    .bind(checkout_id)
    .bind(status.as_str())
    .bind(reason.map(|r| r.chars().take(500).collect::<String>()))
    .bind(stamp.at)
    .bind(stamp.key(if canceled { 2 } else { 1 }))
    .execute(tx.conn())
    .await?
    .rows_affected();
    if canceled {
        sqlx::query("SELECT private.settle_payment_intent($1)").bind(&intent.id).execute(tx.conn()).await?;
    }
    Ok(if changed == 1 {
        format!("checkout {}", status.as_str())
    } else {
        "no change: the checkout's state is newer or final".into()
    })
}

/// A Stripe refund as orders take it (None for a status venueql does not know).
fn reported_refund(refund: &Refund) -> Option<ReportedRefund<'_>> {
    use objects::RefundStatus as Stripe;
    let status = match refund.status? {
        Stripe::Pending => refunds_and_disputes::RefundStatus::Pending,
        Stripe::RequiresAction => refunds_and_disputes::RefundStatus::RequiresAction,
        Stripe::Succeeded => refunds_and_disputes::RefundStatus::Succeeded,
        Stripe::Failed => refunds_and_disputes::RefundStatus::Failed,
        Stripe::Canceled => refunds_and_disputes::RefundStatus::Canceled,
        Stripe::Other => return None,
    };
    let ours = refund.metadata.as_ref().and_then(|m| m.get("refund_id")).and_then(|id| Uuid::parse_str(id).ok());
    Some(ReportedRefund {
        provider_id: &refund.id,
        ours,
        status,
        amount_minor: refund.amount,
        currency: &refund.currency,
        reason: refund.reason.as_deref(),
    })
}

/// A Stripe dispute as orders take it (None for a status venueql does not know).
fn reported_dispute(dispute: &Dispute) -> Option<ReportedDispute<'_>> {
    let objects::DisputeStatusOnWire::Known(status) = dispute.status else { return None };
    Some(ReportedDispute {
        provider_id: &dispute.id,
        status,
        amount_minor: dispute.amount,
        currency: &dispute.currency,
        reason: &dispute.reason,
    })
}

/// `charge.refunded`: the charge's cumulative refunded amount (kept on the checkout; it
/// only grows), then the refunds it carries, for orders.
async fn charge_refunded(
    tx: &mut VenueTx,
    who: &Who,
    charge: &Charge,
    checkout_id: Uuid,
    stamp: &Stamp,
) -> Result<String, AppError> {
    sqlx::query(
        "UPDATE checkouts SET charge_amount_refunded = greatest(charge_amount_refunded, $2), updated_at = now() WHERE id = $1",
    )
    .bind(checkout_id)
    .bind(charge.amount_refunded)
    .execute(tx.conn())
    .await?;
    let refunds: Vec<ReportedRefund<'_>> =
        charge.refunds.iter().flat_map(|list| &list.data).filter_map(reported_refund).collect();
    refunds_and_disputes::charge_refunded(tx, who, checkout_id, charge.amount_refunded, &refunds, stamp).await
}
