//! Background payment work, run periodically by the server and on demand by
//! `venueql stripe reconcile`: unpaid checkouts past their expiry are expired (their
//! PaymentIntent cancelled at Stripe), and a PaymentIntent that Stripe reports succeeded
//! but that has no order after the reconciliation delay raises a critical audit event.
//! Refunds Stripe did not answer are asked again with their own idempotency key.
//! `venueql stripe replay EVENT_ID` fetches an event from Stripe's API and runs it through
//! the webhook's own store-and-apply path, so even a recovered order comes from an event.

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::Payments;
use super::events::{self, Endpoint};
use super::intake::{self, Ingested};
use super::objects::{self, PaymentIntent, PaymentIntentStatus};
use crate::audit::alerts::AlertKind;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId};

/// What one pass did.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Open PaymentIntents looked at.
    pub checked: usize,
    /// Checkouts expired (PaymentIntent cancelled).
    pub expired: usize,
    /// Paid PaymentIntents without an order (critical audit events raised).
    pub paid_without_order: Vec<String>,
    /// PaymentIntents that could not be checked (Stripe unavailable); retried next pass.
    pub errors: usize,
    /// Refunds Stripe had not answered for, now accepted on a retry.
    pub refunds_retried: usize,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    payment_intent_id: String,
    venue_id: Uuid,
    checkout_id: Uuid,
}

#[derive(sqlx::FromRow)]
struct CheckoutState {
    status: String,
    expired: bool,
    old_enough: bool,
}

/// One pass over open PaymentIntents older than the expiry or reconciliation delay.
pub async fn run_once(db: &Db, payments: &Payments) -> Result<Report, AppError> {
    let client = payments.client()?;
    let older_than = payments.checkout_expiry.min(payments.reconcile_after);
    let mut tx = db.resolving_tx().await?;
    let candidates: Vec<Candidate> = sqlx::query_as(
        "SELECT payment_intent_id, venue_id, checkout_id FROM private.unsettled_payment_intents(make_interval(secs => $1), 200)",
    )
    .bind(older_than.as_secs_f64())
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    let mut report = Report { checked: candidates.len(), ..Report::default() };
    let venues = db.scan_venues("venueql:payment-jobs", "ask Stripe again for refunds it did not answer").await?;
    for venue in venues {
        match crate::orders::refunds_and_disputes::retry_requested_refunds(db, payments, venue).await {
            Ok(accepted) => report.refunds_retried += accepted,
            Err(error) => tracing::warn!(error = ?error, "refund retry failed"),
        }
    }
    for candidate in candidates {
        match check(db, payments, client, &candidate).await {
            Ok(Outcome::Expired) => report.expired += 1,
            Ok(Outcome::PaidWithoutOrder) => report.paid_without_order.push(candidate.payment_intent_id.clone()),
            Ok(Outcome::Nothing) => {}
            Err(error) => {
                tracing::warn!(payment_intent = %candidate.payment_intent_id, error = ?error, "reconciliation check failed");
                report.errors += 1;
            }
        }
    }
    Ok(report)
}

enum Outcome {
    Expired,
    PaidWithoutOrder,
    Nothing,
}

async fn check(
    db: &Db,
    payments: &Payments,
    client: &super::stripe::StripeClient,
    candidate: &Candidate,
) -> Result<Outcome, AppError> {
    let venue = VenueId::from_payment_route(candidate.venue_id);
    let mut tx = db.venue_tx(venue).await?;
    let state: Option<CheckoutState> = sqlx::query_as(
        "SELECT status, expires_at < now() AS expired, created_at < now() - make_interval(secs => $2) AS old_enough \
         FROM checkouts c WHERE id = $1",
    )
    .bind(candidate.checkout_id)
    .bind(payments.reconcile_after.as_secs_f64())
    .fetch_optional(tx.conn())
    .await?;
    let has_order = crate::orders::place::number_of_checkout(&mut tx, candidate.checkout_id).await?.is_some();
    tx.commit().await?;
    let Some(state) = state else {
        return Ok(Outcome::Nothing);
    };
    let id = &candidate.payment_intent_id;
    if has_order {
        settle(db, venue, id).await?;
        return Ok(Outcome::Nothing);
    }
    let intent: PaymentIntent =
        objects::read("PaymentIntent", &client.get(&format!("/v1/payment_intents/{id}")).await?)
            .map_err(AppError::internal)?;
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("SELECT private.mark_payment_intent_checked($1)").bind(id).execute(tx.conn()).await?;
    tx.commit().await?;
    match intent.status {
        PaymentIntentStatus::Succeeded if state.old_enough => {
            let mut tx = db.venue_tx(venue).await?;
            let change = Change {
                action: "payment.without_order",
                target_type: "checkout",
                target_id: candidate.checkout_id.to_string(),
                before: None,
                after: Some(json!({ "payment_intent": id, "checkout_status": state.status,
                    "hint": "find the payment_intent.succeeded event in Stripe and run `venueql stripe replay EVENT_ID`" })),
            };
            audit::record_critical(&mut tx, &Who::operator("venueql:reconcile"), AlertKind::PaidWithoutOrder, change)
                .await?;
            sqlx::query("SELECT private.mark_payment_intent_alerted($1)").bind(id).execute(tx.conn()).await?;
            tx.commit().await?;
            Ok(Outcome::PaidWithoutOrder)
        }
        PaymentIntentStatus::Succeeded | PaymentIntentStatus::Processing => Ok(Outcome::Nothing),
        PaymentIntentStatus::Canceled => {
            expire(db, venue, candidate.checkout_id, id).await?;
            Ok(Outcome::Expired)
        }
        _ if state.expired => {
            let params = vec![("cancellation_reason".to_string(), "abandoned".to_string())];
            let key = format!("venueql-checkout-{}-cancel", candidate.checkout_id);
            match client.post(&format!("/v1/payment_intents/{id}/cancel"), &key, &params).await {
                Ok(_) => {}
                // Paid meanwhile: the succeeded event will make the order.
                Err(error) if error.code() == Some("payment_intent_unexpected_state") => return Ok(Outcome::Nothing),
                Err(error) => return Err(error.into()),
            }
            expire(db, venue, candidate.checkout_id, id).await?;
            Ok(Outcome::Expired)
        }
        _ => Ok(Outcome::Nothing),
    }
}

async fn expire(db: &Db, venue: VenueId, checkout_id: Uuid, payment_intent: &str) -> Result<(), AppError> {
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query(
        "UPDATE checkouts SET status = 'expired', updated_at = now() WHERE id = $1 AND status IN ('creating', 'pending', 'failed')",
    )
    .bind(checkout_id)
    .execute(tx.conn())
    .await?;
    sqlx::query("SELECT private.settle_payment_intent($1)").bind(payment_intent).execute(tx.conn()).await?;
    Ok(tx.commit().await?)
}

async fn settle(db: &Db, venue: VenueId, payment_intent: &str) -> Result<(), AppError> {
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("SELECT private.settle_payment_intent($1)").bind(payment_intent).execute(tx.conn()).await?;
    Ok(tx.commit().await?)
}

/// Runs [`run_once`] every `interval` until the process ends.
pub fn spawn_periodic(db: Db, payments: Payments, interval: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match run_once(&db, &payments).await {
                Ok(report) if report.checked > 0 => tracing::info!(?report, "payment jobs pass"),
                Ok(_) => {}
                Err(error) => tracing::warn!(error = ?error, "payment jobs pass failed"),
            }
        }
    });
}

/// `venueql stripe replay EVENT_ID`: fetches the event from Stripe (authenticated by the
/// secret key, so no signature is needed) and stores and applies it exactly as the
/// webhook would; a second replay is a duplicate without effect.
pub async fn replay(db: &Db, payments: &Payments, event_id: &str) -> Result<Ingested, AppError> {
    let valid = event_id.starts_with("evt_")
        && event_id.len() <= 255
        && event_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(AppError::bad_input("EVENT_ID must be a Stripe event id (evt_…)"));
    }
    let event = payments.client()?.get(&format!("/v1/events/{event_id}")).await?;
    let raw = event.to_string();
    let envelope = events::parse(raw.as_bytes())?;
    if envelope.id != event_id {
        return Err(AppError::internal("Stripe returned a different event than the one asked for"));
    }
    let endpoint = if envelope.account.is_some() { Endpoint::Connect } else { Endpoint::Platform };
    intake::ingest(db, payments, None, endpoint, &envelope, &raw).await
}
