//! The Stripe event store: every verified delivery is recorded by event id before anything
//! else, so duplicates are acknowledged without effect and nothing acknowledged is lost.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::error::AppError;
use crate::tenancy::Db;

/// Which endpoint an event arrived at (or, for a replay, would have).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /webhooks/stripe`: the platform's own events (payments, refunds, disputes).
    Platform,
    /// `POST /webhooks/stripe/connect`: connected accounts' events (`account.updated`).
    Connect,
}

impl Endpoint {
    /// The endpoint's name, as stored with its events.
    pub(super) fn as_str(self) -> &'static str {
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

/// Records a verified event; `false` when it was recorded before (a duplicate delivery).
pub(super) async fn store(
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
