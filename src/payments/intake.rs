//! Webhook intake: a verified event is stored by id and applied in one transaction (a
//! duplicate id is acknowledged without effect; any failure rolls both back, so Stripe's
//! retry finds nothing stored). An event whose object venueql cannot read is never
//! acknowledged: it is kept aside with a critical alert and answered with an error, so
//! Stripe retries. The event store is [`super::events`], the translation of each event
//! into state is [`super::effects`].

use super::events::{Endpoint, EventEnvelope, store};
use crate::audit::alerts::AlertKind;
use crate::error::AppError;
use crate::orders::live::OrdersHub;
use crate::tenancy::{Db, VenueId};

/// What happened to a verified delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// First delivery: stored and applied; the outcome says what it did, at which venue.
    Applied {
        /// What the event did.
        outcome: String,
        /// The venue it was applied at (none for events routed nowhere).
        venue: Option<VenueId>,
    },
    /// Seen before: acknowledged without effect.
    Duplicate,
}

/// Stores a verified event and applies its effects in one transaction: a duplicate id is
/// acknowledged without effect; any failure rolls back both, so Stripe's retry finds
/// nothing stored and the event is applied then. Returns only after the commit.
///
/// An event whose `livemode` differs from the secret key's is stored and acknowledged but
/// takes no effect, and is a security event (a test-mode event must never make a live
/// order, nor the reverse).
pub async fn ingest(
    db: &Db,
    payments: &super::Payments,
    hub: Option<&OrdersHub>,
    endpoint: Endpoint,
    event: &EventEnvelope,
    raw: &str,
) -> Result<Ingested, AppError> {
    let mut tx = db.resolving_tx().await?;
    if !store(tx.conn(), endpoint, event, raw).await? {
        tx.commit().await?;
        return Ok(Ingested::Duplicate);
    }
    if let Some(outcome) = payments.mode_mismatch(event.livemode) {
        tracing::error!(event_id = %event.id, alert = true, "Stripe event in the wrong mode ignored");
        sqlx::query("SELECT private.record_security_event('stripe_livemode_mismatch', NULL, NULL, $1)")
            .bind(serde_json::json!({ "event_id": event.id, "livemode": event.livemode }))
            .execute(tx.conn())
            .await?;
        sqlx::query("SELECT private.finish_stripe_event($1, NULL, $2)")
            .bind(&event.id)
            .bind(&outcome)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        return Ok(Ingested::Applied { outcome, venue: None });
    }
    match super::effects::apply(tx, hub, endpoint, event).await {
        Ok((outcome, venue)) => Ok(Ingested::Applied { outcome, venue }),
        Err(AppError::Unreadable(why)) => Err(keep_unreadable(db, endpoint, event, raw, why).await),
        Err(error) => Err(error),
    }
}

/// An event whose object venueql cannot read (its effects rolled back, nothing stored as
/// received): kept for the operator, a critical alert on its first delivery, and an error
/// so that the webhook is answered 500 and Stripe delivers it again (a fixed reader, or
/// `venueql stripe replay`, then applies it once).
async fn keep_unreadable(db: &Db, endpoint: Endpoint, event: &EventEnvelope, raw: &str, why: String) -> AppError {
    tracing::error!(event_id = %event.id, event_type = %event.event_type, alert = true, reason = %why,
        "Stripe event could not be read; not acknowledged");
    let first: Result<bool, sqlx::Error> =
        sqlx::query_scalar("SELECT private.record_unreadable_stripe_event($1, $2, $3, $4, $5)")
            .bind(&event.id)
            .bind(endpoint.as_str())
            .bind(&event.event_type)
            .bind(&why)
            .bind(raw)
            .fetch_one(db.platform_level())
            .await;
    match first {
        Ok(true) => {
            let summary =
                format!("Stripe event {} ({}) could not be read; Stripe will retry", event.id, event.event_type);
            if let Err(error) = crate::audit::alerts::raise(db, AlertKind::StripeEventUnreadable, None, &summary).await
            {
                return error;
            }
        }
        Ok(false) => {}
        Err(error) => return error.into(),
    }
    AppError::Unreadable(format!(
        "venueql could not read this event ({why}); it is kept, and applied when delivered again"
    ))
}
