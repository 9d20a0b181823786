//! The Stripe event store: every verified delivery is recorded by event id before anything
//! else, so duplicates are acknowledged without effect and nothing acknowledged is lost.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::error::AppError;
use crate::tenancy::{Db, VenueId};

/// Which endpoint an event arrived at (or, for a replay, would have).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /webhooks/stripe`: the platform's own events (payments, refunds, disputes).
    Platform,
    /// `POST /webhooks/stripe/connect`: connected accounts' events (`account.updated`).
    Connect,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Platform => "platform",
            Endpoint::Connect => "connect",
        }
    }
}

/// The envelope fields of a Stripe event (API v1 snapshot events).
#[derive(Debug, Deserialize)]
pub struct EventEnvelope {
    /// `evt_…`
    pub id: String,
    /// Always `event`.
    pub object: String,
    /// e.g. `payment_intent.succeeded`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unix seconds.
    pub created: i64,
    /// Live or test mode.
    pub livemode: bool,
    /// The API version the event was rendered with.
    pub api_version: Option<String>,
    /// The connected account, for Connect events.
    pub account: Option<String>,
    /// The whole event, parsed once here for the handlers.
    #[serde(skip)]
    pub body: serde_json::Value,
}

/// Parses the envelope of a verified body, refusing anything that is not a Stripe event.
pub fn parse(body: &[u8]) -> Result<EventEnvelope, AppError> {
    let not_event = |e: serde_json::Error| AppError::bad_input(format!("the body is not a Stripe event object: {e}"));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(not_event)?;
    let mut envelope = EventEnvelope::deserialize(&value).map_err(not_event)?;
    envelope.body = value;
    let id_ok = envelope.id.starts_with("evt_") && envelope.id.len() <= 255;
    if envelope.object != "event" || !id_ok || envelope.event_type.is_empty() {
        return Err(AppError::bad_input("the body is not a Stripe event object (object must be \"event\", id evt_…)"));
    }
    Ok(envelope)
}

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
    hub: Option<&crate::orders::live::OrdersHub>,
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

/// Records a verified event; `false` when it was recorded before (a duplicate delivery).
async fn store(
    conn: &mut sqlx::PgConnection,
    endpoint: Endpoint,
    event: &EventEnvelope,
    raw: &str,
) -> Result<bool, AppError> {
    Ok(sqlx::query_scalar("SELECT private.store_stripe_event($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&event.id)
        .bind(endpoint.as_str())
        .bind(&event.event_type)
        .bind(&event.account)
        .bind(event.livemode)
        .bind(&event.api_version)
        .bind(event.created)
        .bind(raw)
        .fetch_one(conn)
        .await?)
}

/// Drops the raw bodies of the venue's events received before `before` (they may hold a
/// customer's billing details); the id, type and outcome stay, so a late duplicate is
/// still recognised. Returns how many.
pub async fn purge_bodies(tx: &mut crate::tenancy::VenueTx, before: DateTime<Utc>) -> Result<u64, AppError> {
    let dropped: i32 =
        sqlx::query_scalar("SELECT private.purge_stripe_event_bodies($1)").bind(before).fetch_one(tx.conn()).await?;
    Ok(u64::try_from(dropped).unwrap_or(0))
}

/// The same for events never routed to a venue (platform-level).
pub async fn purge_unrouted_bodies(db: &Db, before: DateTime<Utc>) -> Result<u64, AppError> {
    let mut tx = db.resolving_tx().await?;
    let dropped: i32 = sqlx::query_scalar("SELECT private.purge_unrouted_stripe_event_bodies($1)")
        .bind(before)
        .fetch_one(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(u64::try_from(dropped).unwrap_or(0))
}
