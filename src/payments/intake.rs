//! Webhook intake: a verified event is stored by id and applied in one transaction (a
//! duplicate id is acknowledged without effect; any failure rolls both back, so Stripe's
//! retry finds nothing stored). The event store is [`super::events`], the translation of
//! each event into state is [`super::effects`].

use super::events::{Endpoint, EventEnvelope, store};
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
    let (outcome, venue) = super::effects::apply(tx, hub, endpoint, event).await?;
    Ok(Ingested::Applied { outcome, venue })
}
